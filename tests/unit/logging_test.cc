// Log lines: JSON escaping, redaction of secrets and URL credentials, rate limiting of repeats.
#include "bridge/logging.h"

#include <gtest/gtest.h>
#include <simdjson.h>
#include <spdlog/sinks/base_sink.h>

#include <mutex>
#include <string>
#include <vector>

namespace wsbridge {
namespace {

using namespace std::chrono_literals;

// Keeps every record it gets (level and text).
class CaptureSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  struct Line {
    spdlog::level::level_enum level;
    std::string text;
  };
  std::vector<Line> lines;

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    lines.push_back({msg.level, std::string(msg.payload.data(), msg.payload.size())});
  }
  void flush_() override {}
};

std::string Format(LogFormatter::Format f, const std::string& text,
                   spdlog::level::level_enum level = spdlog::level::info) {
  LogFormatter formatter(f);
  spdlog::details::log_msg msg("wsbridge", level, spdlog::string_view_t(text.data(), text.size()));
  spdlog::memory_buf_t buf;
  formatter.format(msg, buf);
  return std::string(buf.data(), buf.size());
}

// Parses one JSON line; returns its "msg" (and checks ts and level are there).
std::string JsonMsg(const std::string& line) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  auto err = parser.parse(line).get(doc);
  EXPECT_FALSE(err) << "not JSON: " << line;
  if (err) return "<invalid>";
  std::string_view ts, level, msg;
  EXPECT_FALSE(doc["ts"].get(ts)) << line;
  EXPECT_FALSE(doc["level"].get(level)) << line;
  EXPECT_FALSE(doc["msg"].get(msg)) << line;
  return std::string(msg);
}

TEST(LogFormatter, JsonIsOneValidObjectPerLineWithTheMessageEscaped) {
  const std::string tricky = "say \"hi\" \\ path C:\\x\n\tnext line \x01 end é€😀";
  std::string line = Format(LogFormatter::Format::kJson, tricky);
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
  EXPECT_EQ(JsonMsg(line), tricky);
  EXPECT_NE(line.find("\"level\":\"info\""), std::string::npos) << line;
  EXPECT_NE(line.find("\"ts\":\"20"), std::string::npos) << line;
}

TEST(LogFormatter, InvalidUtf8BecomesReplacementCharacter) {
  std::string bad =
      "a\xff"
      "b\xc3"
      "c\xed\xa0\x80"
      "d";  // stray byte, truncated, surrogate
  std::string line = Format(LogFormatter::Format::kJson, bad);
  std::string msg = JsonMsg(line);
  EXPECT_EQ(msg,
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD"
            "c\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
            "d");
}

TEST(LogFormatter, TextStaysOnOneLine) {
  std::string line = Format(LogFormatter::Format::kText, "one\ntwo\rthree", spdlog::level::warn);
  EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
  EXPECT_NE(line.find(" warning one\\ntwo\\rthree"), std::string::npos) << line;
}

TEST(Redaction, UrlCredentialsAnywhereInAMessage) {
  EXPECT_EQ(RedactForLog("upstream.url: not a valid URL: ws://user:pa55word@host:1/feed"),
            "upstream.url: not a valid URL: ws://<redacted>@host:1/feed");
  EXPECT_EQ(RedactForLog("proxy http://u:p@proxy:3128 and wss://tok@h/x?q=1"),
            "proxy http://<redacted>@proxy:3128 and wss://<redacted>@h/x?q=1");
  EXPECT_EQ(RedactForLog("plain ws://host:1/a@b stays"), "plain ws://host:1/a@b stays");
  EXPECT_EQ(RedactForLog("mail me at a@b.c"), "mail me at a@b.c");
}

TEST(Redaction, RegisteredSecretsAndTheirWords) {
  Config c;
  c.upstream.headers["Authorization"] = "Bearer abcdefgh12345678";
  c.upstream.headers["X-Short"] = "no";
  c.upstream.proxy = "http://proxyuser:proxypass@p:3128";
  for (const auto& s : SecretsOf(c)) RegisterLogSecret(s, SecretKind::kConfig);
  EXPECT_EQ(RedactForLog("sent Bearer abcdefgh12345678!"), "sent <redacted>!");
  EXPECT_EQ(RedactForLog("token abcdefgh12345678 alone"), "token <redacted> alone");
  EXPECT_EQ(RedactForLog("pass proxypass here"), "pass <redacted> here");
  EXPECT_EQ(RedactForLog("no secret: no"), "no secret: no");  // too short to redact
  // And the formatter applies it to every line.
  std::string line = Format(LogFormatter::Format::kJson, "header Bearer abcdefgh12345678");
  EXPECT_EQ(line.find("abcdefgh12345678"), std::string::npos) << line;
}

TEST(Redaction, RotatingSecretsAreBoundedAndConfigSecretsStay) {
  RegisterLogSecret("config-secret-0001", SecretKind::kConfig);
  const int n = static_cast<int>(kMaxRotatingSecrets) + 100;
  for (int i = 0; i < n; ++i) RegisterLogSecret("rotating-token-" + std::to_string(i));
  const std::string newest = "rotating-token-" + std::to_string(n - 1);
  const std::string oldest_kept = "rotating-token-" + std::to_string(n - kMaxRotatingSecrets);
  EXPECT_EQ(RedactForLog("a " + newest + " b"), "a <redacted> b");
  EXPECT_EQ(RedactForLog("a " + oldest_kept + " b"), "a <redacted> b");
  // Rotated out long ago: no longer sent anywhere, no longer on the list.
  EXPECT_EQ(RedactForLog("a rotating-token-0 b"), "a rotating-token-0 b");
  EXPECT_EQ(RedactForLog("a config-secret-0001 b"), "a <redacted> b");
}

class RepeatLimit : public ::testing::Test {
 protected:
  RepeatLimit() : capture_(std::make_shared<CaptureSink>()) {
    sink_ = std::make_unique<RepeatLimitSink>(capture_, 10s, 5);
    sink_->set_now_for_test([this] { return now_; });
  }
  void Log(spdlog::level::level_enum level, const std::string& text) {
    spdlog::details::log_msg msg("wsbridge", level,
                                 spdlog::string_view_t(text.data(), text.size()));
    sink_->log(msg);
  }
  size_t Count(const std::string& needle) const {
    size_t n = 0;
    for (const auto& l : capture_->lines) n += l.text.find(needle) != std::string::npos;
    return n;
  }
  std::shared_ptr<CaptureSink> capture_;
  std::unique_ptr<RepeatLimitSink> sink_;
  RepeatLimitSink::Clock::time_point now_{std::chrono::hours(1)};
};

TEST_F(RepeatLimit, SameErrorInALoopIsShownFiveTimesThenCounted) {
  for (int i = 0; i < 30; ++i) {
    Log(spdlog::level::warn,
        "upstream: TCP connect failed; retrying in " + std::to_string(i * 37) + " ms");
    now_ += 100ms;
  }
  EXPECT_EQ(Count("retrying in"), 5u);
  now_ += 10s;  // the window is over: the next log call reports what was held back
  Log(spdlog::level::info, "something else");
  ASSERT_EQ(Count("(repeated 25 times in the last 13 s)"), 1u);
  EXPECT_EQ(capture_->lines[5].level, spdlog::level::warn);
  EXPECT_NE(capture_->lines[5].text.find("retrying in 1073 ms"), std::string::npos)
      << capture_->lines[5].text;  // the last one held back
  // A new window starts afresh.
  Log(spdlog::level::warn, "upstream: TCP connect failed; retrying in 5 ms");
  EXPECT_EQ(Count("retrying in"), 7u);
}

TEST_F(RepeatLimit, DifferentErrorsAndInfoLinesAreNotHeldBack) {
  for (int i = 0; i < 20; ++i) {
    Log(spdlog::level::warn, "error kind " + std::string(1, static_cast<char>('a' + i)));
    Log(spdlog::level::info, "connected 1");
  }
  EXPECT_EQ(capture_->lines.size(), 40u);
}

TEST_F(RepeatLimit, HeldBackLinesAreReportedAtShutdown) {
  for (int i = 0; i < 8; ++i) Log(spdlog::level::err, "storage: commit failed");
  EXPECT_EQ(capture_->lines.size(), 5u);
  sink_.reset();
  ASSERT_EQ(capture_->lines.size(), 6u);
  EXPECT_EQ(capture_->lines.back().text,
            "storage: commit failed (repeated 3 times in the last 0 s)");
  EXPECT_EQ(capture_->lines.back().level, spdlog::level::err);
}

}  // namespace
}  // namespace wsbridge
