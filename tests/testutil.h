// Helpers shared by the tests: Status assertions, waiting for a condition, a temporary
// directory, whole-file I/O.
// Header-only; for test code only. Nothing here is thread-safe beyond what gtest itself is.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "common/status.h"

namespace wsbridge {
namespace testing {

inline const Status& StatusOf(const Status& s) { return s; }
template <typename T>
const Status& StatusOf(const StatusOr<T>& s) {
  return s.status();
}

// gtest predicate formatter behind ASSERT_OK / EXPECT_OK: evaluates the expression once and
// prints the Status when it is not OK.
template <typename T>
::testing::AssertionResult IsOk(const char* expr_text, const T& value) {
  const Status& s = StatusOf(value);
  if (s.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << expr_text << " is " << s.ToString();
}

// Polls `cond` every few milliseconds until it returns true or `timeout` passes (no sleeps as
// synchronisation: a wait always has a condition). Any thread.
inline bool WaitFor(const std::function<bool()>& cond,
                    std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
// Owned by the test that creates it; paths handed out stay valid until then.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/wsbridge-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror(("mkdtemp " + tmpl).c_str());
      std::abort();
    }
    path_ = tmpl;
  }
  ~TempDir() {
    if (std::getenv("WSB_KEEP_TMP") != nullptr) return;  // keep logs for a post-mortem
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name
  std::string File(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// The whole file as bytes ("" when it cannot be read; check existence separately).
inline std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Replaces the file's content; false on failure.
inline bool WriteFileBytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out.flush());
}

}  // namespace testing
}  // namespace wsbridge

// ASSERT_OK(expr) / EXPECT_OK(expr): expr is a Status or a StatusOr<T>. More context may be
// streamed after them: ASSERT_OK(s) << "while opening";
#define ASSERT_OK(expr) ASSERT_PRED_FORMAT1(::wsbridge::testing::IsOk, expr)
#define EXPECT_OK(expr) EXPECT_PRED_FORMAT1(::wsbridge::testing::IsOk, expr)

// ASSERT_OK_AND_ASSIGN(lhs, expr): expr is a StatusOr<T>; asserts it is OK, then moves its
// value into lhs (a declaration such as `auto x` or an existing variable). It expands to
// several statements: give it braces under an `if`.
#define WSB_TESTUTIL_CONCAT_(a, b) a##b
#define WSB_TESTUTIL_CONCAT(a, b) WSB_TESTUTIL_CONCAT_(a, b)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL_(WSB_TESTUTIL_CONCAT(wsb_statusor_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  ASSERT_OK(tmp);                                  \
  lhs = std::move(tmp).value()
