// Logging: the daemon's log lines on stderr (SPEC §4 log.level / log.format, G8).
//
//   LogFormatter     one line per record, `text` or `json` (one JSON object per line, the
//                    message escaped; invalid UTF-8 becomes U+FFFD). Every line is redacted
//                    first: URL credentials (scheme://user:pass@) and the registered secrets.
//   RepeatLimitSink  wraps the real sink: a warning or error that repeats (same text once
//                    digits are ignored, so "retrying in 123 ms" and "... 480 ms" are one) is
//                    shown `burst` times per `window`, then held back; when the window ends
//                    one line says "(repeated K times in the last Ns)".
//   SetupLogging()   builds both for the daemon and makes them spdlog's default logger.
//
// Threading: LogFormatter and RepeatLimitSink are used by spdlog from any thread (the sink
// locks); RegisterLogSecret() may be called from any thread at any time.
#pragma once

#include <spdlog/formatter.h>
#include <spdlog/sinks/sink.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bridge/config.h"

namespace wsbridge {

// Adds `value` to the strings that are replaced by <redacted> in every log line from now on.
// Values shorter than 4 bytes are ignored: redacting them would mangle ordinary words.
// kConfig secrets (from the configuration at start-up) are kept for good; kRotating ones (a
// header value read from ${file:...} or produced by auth_command at each attempt) are kept for
// the newest kMaxRotatingSecrets, so that a credential rotated every attempt does not grow the
// list (and the cost of every log line) without bound.
enum class SecretKind { kConfig, kRotating };
constexpr size_t kMaxRotatingSecrets = 64;
void RegisterLogSecret(const std::string& value, SecretKind kind = SecretKind::kRotating);

// The secrets of a configuration: every upstream header value (after ${file:} expansion where
// the file is readable now) and its long words, and the user:pass of upstream.url and
// upstream.proxy.
std::vector<std::string> SecretsOf(const Config& config);

// `text` with URL credentials and every registered secret replaced by <redacted>.
std::string RedactForLog(std::string_view text);

// Appends `text` to `out` as the inside of a JSON string (quotes not included).
void AppendJsonEscaped(std::string_view text, std::string* out);

class LogFormatter final : public spdlog::formatter {
 public:
  enum class Format { kText, kJson };
  explicit LogFormatter(Format format) : format_(format) {}
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override;
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<LogFormatter>(format_);
  }

 private:
  Format format_;
};

class RepeatLimitSink final : public spdlog::sinks::sink {
 public:
  using Clock = std::chrono::steady_clock;
  RepeatLimitSink(std::shared_ptr<spdlog::sinks::sink> inner, Clock::duration window, int burst,
                  spdlog::level::level_enum min_level = spdlog::level::warn);
  ~RepeatLimitSink() override;  // reports what is still held back

  void log(const spdlog::details::log_msg& msg) override;
  void flush() override;
  void set_pattern(const std::string& pattern) override { inner_->set_pattern(pattern); }
  void set_formatter(std::unique_ptr<spdlog::formatter> f) override {
    inner_->set_formatter(std::move(f));
  }

  // For tests: the time source (default: Clock::now).
  void set_now_for_test(std::function<Clock::time_point()> now) { now_ = std::move(now); }

 private:
  struct Entry {
    Clock::time_point window_start;
    int shown = 0;
    uint64_t held = 0;
    spdlog::level::level_enum level = spdlog::level::warn;
    std::string last;  // text of the last held-back line
    std::string logger;
  };
  void Summarize(Entry& e, Clock::time_point now);  // emits the "(repeated ...)" line
  void Sweep(Clock::time_point now, bool all);      // summarizes ended windows

  std::mutex mu_;
  std::shared_ptr<spdlog::sinks::sink> inner_;
  Clock::duration window_;
  int burst_;
  spdlog::level::level_enum min_level_;
  std::function<Clock::time_point()> now_;
  std::unordered_map<std::string, Entry> entries_;  // key: level + text with digits folded
  Clock::time_point last_sweep_{};
};

// Sets spdlog's default logger for the daemon: stderr, config.log.format and .level, repeats
// limited (10 s window, 5 lines), the configuration's secrets registered for redaction.
void SetupLogging(const Config& config);

}  // namespace wsbridge
