#include "bridge/logging.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>

namespace wsbridge {
namespace {

using namespace std::chrono_literals;

constexpr size_t kMinSecretBytes = 4;
constexpr size_t kMinSecretWordBytes = 8;  // words of a header value redacted on their own
constexpr size_t kMaxRepeatKeys = 1024;
constexpr const char* kRedacted = "<redacted>";

// The registered secrets, longest first (so that a secret containing another is replaced
// whole). Replaced, never mutated: a reader keeps its snapshot while a writer swaps in a new one.
// g_config_secrets and g_rotating_secrets (oldest first) are what the snapshot is built from,
// under g_secrets_mu.
std::mutex g_secrets_mu;
std::shared_ptr<const std::vector<std::string>> g_secrets =
    std::make_shared<const std::vector<std::string>>();
std::vector<std::string> g_config_secrets;
std::deque<std::string> g_rotating_secrets;

std::shared_ptr<const std::vector<std::string>> Secrets() {
  std::lock_guard<std::mutex> lock(g_secrets_mu);
  return g_secrets;
}

// "scheme://user:pass@host/..." -> "scheme://<redacted>@host/...", anywhere in the text.
void RedactUrlCredentials(std::string* s) {
  size_t pos = 0;
  while ((pos = s->find("://", pos)) != std::string::npos) {
    size_t start = pos + 3;
    size_t end = s->find_first_of("/?# \t\r\n\"'<>()[]{},;", start);
    if (end == std::string::npos) end = s->size();
    size_t at = s->rfind('@', end == 0 ? 0 : end - 1);
    if (at != std::string::npos && at >= start && at < end) {
      s->replace(start, at - start, kRedacted);
      end = start + std::strlen(kRedacted) + (end - at);
    }
    pos = end;
  }
}

// The userinfo of a URL ("user:pass"), "" when it has none.
std::string UserInfo(const std::string& url) {
  size_t scheme = url.find("://");
  if (scheme == std::string::npos) return "";
  size_t start = scheme + 3;
  size_t end = url.find_first_of("/?#", start);
  if (end == std::string::npos) end = url.size();
  size_t at = url.rfind('@', end == 0 ? 0 : end - 1);
  if (at == std::string::npos || at < start || at >= end) return "";
  return url.substr(start, at - start);
}

void AddSecretAndWords(const std::string& value, std::vector<std::string>* out) {
  if (value.size() >= kMinSecretBytes) out->push_back(value);
  size_t i = 0;
  while (i < value.size()) {
    size_t j = value.find_first_of(" \t,;:", i);
    if (j == std::string::npos) j = value.size();
    if (j - i >= kMinSecretWordBytes && j - i < value.size())
      out->push_back(value.substr(i, j - i));
    i = j + 1;
  }
}

// Decodes one UTF-8 sequence at s[i]; returns its length, or 0 when it is not valid UTF-8
// (bad lead or continuation byte, overlong form, surrogate, beyond U+10FFFF, truncated).
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF)) {
    return 0;
  }
  return n;
}

// Text lines stay one line: control characters are shown escaped.
void AppendTextSafe(std::string_view text, std::string* out) {
  for (char ch : text) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '\n') {
      *out += "\\n";
    } else if (c == '\r') {
      *out += "\\r";
    } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      *out += buf;
    } else {
      *out += ch;
    }
  }
}

void AppendTimestamp(spdlog::log_clock::time_point tp, std::string* out) {
  auto since = tp.time_since_epoch();
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(since);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(since - secs).count();
  std::time_t t = static_cast<std::time_t>(secs.count());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(micros));
  *out += buf;
}

// The repeat key: level and text with every run of digits folded to one '#'.
std::string RepeatKey(spdlog::level::level_enum level, std::string_view text) {
  std::string key(1, static_cast<char>('0' + static_cast<int>(level)));
  key.reserve(text.size() + 1);
  bool in_digits = false;
  for (char c : text) {
    bool digit = std::isdigit(static_cast<unsigned char>(c)) != 0;
    if (digit && in_digits) continue;
    key += digit ? '#' : c;
    in_digits = digit;
  }
  return key;
}

std::string RepeatSuffix(uint64_t held, RepeatLimitSink::Clock::duration span) {
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(span + 500ms).count();
  return " (repeated " + std::to_string(held) + " times in the last " + std::to_string(secs) +
         " s)";
}

}  // namespace

void RegisterLogSecret(const std::string& value, SecretKind kind) {
  if (value.size() < kMinSecretBytes) return;
  std::lock_guard<std::mutex> lock(g_secrets_mu);
  for (const auto& s : *g_secrets) {
    if (s == value) return;
  }
  if (kind == SecretKind::kConfig) {
    g_config_secrets.push_back(value);
  } else {
    g_rotating_secrets.push_back(value);
    if (g_rotating_secrets.size() > kMaxRotatingSecrets) g_rotating_secrets.pop_front();
  }
  auto next = std::make_shared<std::vector<std::string>>(g_config_secrets);
  next->insert(next->end(), g_rotating_secrets.begin(), g_rotating_secrets.end());
  std::stable_sort(next->begin(), next->end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  g_secrets = std::move(next);
}

std::vector<std::string> SecretsOf(const Config& config) {
  std::vector<std::string> out;
  for (const auto& [name, raw] : config.upstream.headers) {
    if (raw.find("${file:") != std::string::npos) {
      auto expanded = ExpandFileRefs(raw);
      if (expanded.ok()) AddSecretAndWords(*expanded, &out);
    } else {
      AddSecretAndWords(raw, &out);
    }
  }
  // protocol.socketio_auth, e.g. {"token":"..."}: the whole text and each quoted value.
  const std::string& auth = config.protocol.socketio_auth;
  if (auth.size() >= kMinSecretBytes) out.push_back(auth);
  for (size_t q = auth.find(':'); q != std::string::npos; q = auth.find(':', q + 1)) {
    size_t open = auth.find('"', q), close = open == std::string::npos ? open : auth.find('"', open + 1);
    if (close == std::string::npos) break;
    if (close - open - 1 >= kMinSecretWordBytes) out.push_back(auth.substr(open + 1, close - open - 1));
  }
  for (const std::string* url : {&config.upstream.url, &config.upstream.proxy}) {
    std::string info = UserInfo(*url);
    if (info.empty()) continue;
    out.push_back(info);
    size_t colon = info.find(':');
    if (colon != std::string::npos) out.push_back(info.substr(colon + 1));
  }
  return out;
}

std::string RedactForLog(std::string_view text) {
  std::string s(text);
  RedactUrlCredentials(&s);
  auto secrets = Secrets();
  for (const std::string& secret : *secrets) {
    for (size_t pos = s.find(secret); pos != std::string::npos;
         pos = s.find(secret, pos + std::strlen(kRedacted))) {
      s.replace(pos, secret.size(), kRedacted);
    }
  }
  return s;
}

void AppendJsonEscaped(std::string_view text, std::string* out) {
  static const char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < text.size();) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      size_t n = Utf8SequenceLength(text, i);
      if (n == 0) {
        *out += "\\ufffd";
        ++i;
      } else {
        out->append(text.data() + i, n);
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      default:
        if (c < 0x20) {
          *out += "\\u00";
          *out += kHex[c >> 4];
          *out += kHex[c & 0xF];
        } else {
          *out += static_cast<char>(c);
        }
    }
    ++i;
  }
}

void LogFormatter::format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) {
  std::string text = RedactForLog(std::string_view(msg.payload.data(), msg.payload.size()));
  auto level = spdlog::level::to_string_view(msg.level);
  std::string line;
  line.reserve(text.size() + 64);
  if (format_ == Format::kJson) {
    line += "{\"ts\":\"";
    AppendTimestamp(msg.time, &line);
    line += "\",\"level\":\"";
    line.append(level.data(), level.size());
    line += "\",\"msg\":\"";
    AppendJsonEscaped(text, &line);
    line += "\"}\n";
  } else {
    AppendTimestamp(msg.time, &line);
    line += ' ';
    line.append(level.data(), level.size());
    line += ' ';
    AppendTextSafe(text, &line);
    line += '\n';
  }
  dest.append(line.data(), line.data() + line.size());
}

RepeatLimitSink::RepeatLimitSink(std::shared_ptr<spdlog::sinks::sink> inner, Clock::duration window,
                                 int burst, spdlog::level::level_enum min_level)
    : inner_(std::move(inner)), window_(window), burst_(burst), min_level_(min_level), now_([] {
        return Clock::now();
      }) {}

RepeatLimitSink::~RepeatLimitSink() {
  std::lock_guard<std::mutex> lock(mu_);
  Sweep(now_(), true);
  inner_->flush();
}

void RepeatLimitSink::log(const spdlog::details::log_msg& msg) {
  std::lock_guard<std::mutex> lock(mu_);
  Clock::time_point now = now_();
  if (now - last_sweep_ >= 1s) Sweep(now, false);
  std::string_view text(msg.payload.data(), msg.payload.size());
  if (msg.level < min_level_) {
    inner_->log(msg);
    return;
  }
  std::string key = RepeatKey(msg.level, text);
  auto [it, inserted] = entries_.try_emplace(std::move(key));
  Entry& e = it->second;
  if (inserted || now - e.window_start >= window_) {
    std::string suffix;
    if (e.held > 0) suffix = RepeatSuffix(e.held, now - e.window_start);
    e.window_start = now;
    e.shown = 1;
    e.held = 0;
    if (suffix.empty()) {
      inner_->log(msg);
    } else {
      std::string with = std::string(text) + suffix;
      spdlog::details::log_msg m = msg;
      m.payload = spdlog::string_view_t(with.data(), with.size());
      inner_->log(m);
    }
  } else if (e.shown < burst_) {
    ++e.shown;
    inner_->log(msg);
  } else {
    ++e.held;
    e.level = msg.level;
    e.last.assign(text.data(), text.size());
    e.logger.assign(msg.logger_name.data(), msg.logger_name.size());
  }
  if (entries_.size() > kMaxRepeatKeys) {
    Sweep(now, true);
    entries_.clear();
  }
}

void RepeatLimitSink::flush() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Clock::time_point now = now_();
    if (now - last_sweep_ >= 1s) Sweep(now, false);
  }
  inner_->flush();
}

void RepeatLimitSink::Summarize(Entry& e, Clock::time_point now) {
  std::string text = e.last + RepeatSuffix(e.held, now - e.window_start);
  spdlog::details::log_msg m(spdlog::string_view_t(e.logger.data(), e.logger.size()), e.level,
                             spdlog::string_view_t(text.data(), text.size()));
  inner_->log(m);
  e.held = 0;
}

void RepeatLimitSink::Sweep(Clock::time_point now, bool all) {
  last_sweep_ = now;
  for (auto it = entries_.begin(); it != entries_.end();) {
    Entry& e = it->second;
    if (all || now - e.window_start >= window_) {
      if (e.held > 0) Summarize(e, now);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
}

void SetupLogging(const Config& config) {
  for (const std::string& s : SecretsOf(config)) RegisterLogSecret(s, SecretKind::kConfig);
  auto out = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  out->set_formatter(std::make_unique<LogFormatter>(
      config.log.format == "json" ? LogFormatter::Format::kJson : LogFormatter::Format::kText));
  auto sink = std::make_shared<RepeatLimitSink>(out, std::chrono::seconds(10), 5);
  auto logger = std::make_shared<spdlog::logger>("wsbridge", std::move(sink));
  spdlog::set_default_logger(std::move(logger));
  spdlog::set_level(spdlog::level::from_str(config.log.level));
  spdlog::flush_on(spdlog::level::info);
}

}  // namespace wsbridge
