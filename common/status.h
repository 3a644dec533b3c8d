// Status and StatusOr<T>: errors as values across module boundaries (leveldb style).
//
// A Status is cheap to copy when OK (no allocation). Functions that can fail return
// [[nodiscard]] Status or StatusOr<T>; callers must look at the result. Thread-safe as a value.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace wsbridge {

class [[nodiscard]] Status {
 public:
  enum class Code {
    kOk = 0,
    kInvalidArgument,  // bad input from a caller (config value, request bytes)
    kNotFound,
    kCorruption,       // a file that is not ours or is damaged
    kIOError,          // the disk said no (ENOSPC, EIO, SQLITE_FULL, ...)
    kFull,             // a configured bound was reached (outbox full)
    kUnavailable,      // try again later (connection down, storage paused)
  };

  Status() = default;
  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string m) { return Status(Code::kInvalidArgument, std::move(m)); }
  static Status NotFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
  static Status Corruption(std::string m) { return Status(Code::kCorruption, std::move(m)); }
  static Status IOError(std::string m) { return Status(Code::kIOError, std::move(m)); }
  static Status Full(std::string m) { return Status(Code::kFull, std::move(m)); }
  static Status Unavailable(std::string m) { return Status(Code::kUnavailable, std::move(m)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // One line, e.g. "IO error: database or disk is full".
  std::string ToString() const;

 private:
  Status(Code c, std::string m) : code_(c), message_(std::move(m)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

inline std::string Status::ToString() const {
  const char* prefix = "";
  switch (code_) {
    case Code::kOk: return "OK";
    case Code::kInvalidArgument: prefix = "invalid argument: "; break;
    case Code::kNotFound: prefix = "not found: "; break;
    case Code::kCorruption: prefix = "corruption: "; break;
    case Code::kIOError: prefix = "I/O error: "; break;
    case Code::kFull: prefix = "full: "; break;
    case Code::kUnavailable: prefix = "unavailable: "; break;
  }
  return prefix + message_;
}

// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}           // NOLINT: implicit by design
  StatusOr(Status status) : status_(std::move(status)) {}   // NOLINT: must not be OK
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace wsbridge
