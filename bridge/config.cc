// Configuration loading (SPEC §4). One table of keys (Keys() below) drives everything: the TOML
// file, the WSBRIDGE_* environment variables, --set and the short flags, validation, `sources`
// and ToToml(). A key is declared once, with its type (the type of its Config member) and its
// constraints.
//
// Every source goes through the same path: a value arrives as a toml::node (the file gives one;
// the environment and the command line give text, which TextToNode() turns into one according
// to the key's type), Loader::Apply() checks its type and constraints, expands ${NAME}, stores it
// and records where it came from.
//
// upstream.headers: a TOML table in the file (`[upstream.headers]` or an inline table); a whole
// inline table in WSBRIDGE_UPSTREAM_HEADERS='{ "X-Token" = "${TOKEN}" }' or
// --set 'upstream.headers={ ... }' (replaces the table); and one header at a time with
// --set upstream.headers.X-Token=value (adds to or overrides the table). Header names cannot be
// written in environment variable names faithfully, so WSBRIDGE_UPSTREAM_HEADERS_<NAME> is not
// supported (it is reported as an unknown variable, with a hint).
#include "bridge/config.h"

#include <toml++/toml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <set>
#include <sstream>
#include <type_traits>
#include <utility>
#include <variant>

#include "common/docs.h"
#include "common/text.h"

#ifndef WSBRIDGE_VERSION
#define WSBRIDGE_VERSION "0.0.0-unknown"
#endif

extern char** environ;  // NOLINT: POSIX, only read to find unknown WSBRIDGE_* variables

namespace wsbridge {
namespace {

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

// ---- Small string helpers

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

std::string Quote(const std::string& s) {  // a TOML basic string, also used in error messages
  std::string out = "\"";
  static const std::map<unsigned char, const char*> kEscapes = {
      {'"', "\\\""}, {'\\', "\\\\"}, {'\n', "\\n"}, {'\r', "\\r"}, {'\t', "\\t"}};
  for (unsigned char c : s) {
    if (auto it = kEscapes.find(c); it != kEscapes.end()) {
      out += it->second;
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// "ws://user:pass@host/x" -> "ws://<redacted>@host/x"; anything else unchanged.
std::string RedactUrl(const std::string& url) {
  size_t scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  size_t host = scheme + 3;
  size_t end = url.find_first_of("/?#", host);
  size_t at = url.rfind('@', end == std::string::npos ? url.size() - 1 : end - 1);
  if (at == std::string::npos || at < host) return url;
  return url.substr(0, host) + "<redacted>" + url.substr(at);
}

// A JSON field path such as "a.b": no empty segment, nothing that belongs to JSON syntax.
bool IsHeaderName(const std::string& s) {  // an RFC 9110 token
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (!std::isalnum(c) && std::strchr("!#$%&'*+-.^_`|~", c) == nullptr) return false;
  }
  return true;
}

bool IsEnvName(const std::string& s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (unsigned char c : s) {
    if (!std::isalnum(c) && c != '_') return false;
  }
  return true;
}

// Reads a whole file; on failure returns false with strerror in *error.
bool ReadFile(const std::string& path, std::string* content, std::string* error, int* err_no) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    *err_no = errno;
    *error = std::strerror(errno);
    return false;
  }
  content->clear();
  char buf[8192];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) content->append(buf, n);
  bool failed = std::ferror(f) != 0;
  *err_no = errno;
  std::fclose(f);
  if (failed) *error = std::strerror(*err_no);
  return !failed;
}

// "1GiB", "512 MiB", "10MB", "4096" -> bytes. Decimal (KB/MB/GB) and binary (KiB/MiB/GiB) units.
bool ParseBytes(const std::string& s, uint64_t* out) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i > 19) return false;
  uint64_t n = std::stoull(s.substr(0, i));
  size_t u = s.find_first_not_of(' ', i);
  std::string unit = u == std::string::npos ? "" : s.substr(u);
  static const std::map<std::string, uint64_t> kUnits = {{"", 1},
                                                         {"B", 1},
                                                         {"KB", 1000},
                                                         {"MB", 1000000},
                                                         {"GB", 1000000000},
                                                         {"KiB", 1ull << 10},
                                                         {"MiB", 1ull << 20},
                                                         {"GiB", 1ull << 30}};
  auto it = kUnits.find(unit);
  if (it == kUnits.end() || n > static_cast<uint64_t>(kInt64Max) / it->second) return false;
  *out = n * it->second;
  return true;
}

// ---- String checks used by the key table: each returns what is wrong, or nullptr

const char* CheckWsUrl(const std::string& v) {
  bool ws = StartsWith(v, "ws://") || StartsWith(v, "wss://");
  if (!ws || v.size() == v.find("://") + 3) return "must be a ws:// or wss:// URL";
  return nullptr;
}

const char* CheckProxyUrl(const std::string& v) {
  if (v.empty()) return nullptr;
  if (!StartsWith(v, "http://") || v.size() == 7) return "must be http://[user:pass@]host:port";
  return nullptr;
}

const char* CheckAppPong(const std::string& v) {
  // Same reading as Matcher::Parse: with a '=' after the first character it is field=value.
  size_t eq = v.find('=');
  if (eq == std::string::npos || eq == 0) return nullptr;
  if (!IsDottedPath(v.substr(0, eq)) || eq + 1 == v.size()) {
    return "must be field=value (e.g. type=pong) or an exact text without '=' (e.g. pong)";
  }
  return nullptr;
}

const char* CheckAckMatch(const std::string& v) {
  if (v.empty()) return nullptr;
  size_t eq = v.find('=');
  if (eq == std::string::npos || !IsDottedPath(v.substr(0, eq)) || eq + 1 == v.size()) {
    return "must be field=value (e.g. type=ack) or \"\"";
  }
  return nullptr;
}

const char* CheckOptionalPath(const std::string& v) {
  return v.empty() || IsDottedPath(v) ? nullptr
                                      : "must be a dotted field path (e.g. data.seq) or \"\"";
}

const char* CheckPath(const std::string& v) {
  return IsDottedPath(v) ? nullptr : "must be a dotted field path (e.g. id)";
}

// An octal file mode such as "0660" or "660" (at most 0777).
const char* CheckFileMode(const std::string& v) {
  if (v.empty() || v.size() > 4 || v.find_first_not_of("01234567") != std::string::npos ||
      (v.size() == 4 && v[0] != '0')) {
    return "must be an octal file mode such as \"0660\"";
  }
  return nullptr;
}

const char* CheckNamespace(const std::string& v) {
  return IsSocketIoNamespace(v) ? nullptr : "must be a socket.io namespace such as / or /chat";
}

// A first look only (FrameProtocol parses it): '{' ... '}' around the text, or "".
const char* CheckJsonObjectText(const std::string& v) {
  size_t b = v.find_first_not_of(" \t\r\n"), e = v.find_last_not_of(" \t\r\n");
  if (v.empty() || (b != std::string::npos && v[b] == '{' && v[e] == '}')) return nullptr;
  return "must be a JSON object such as {\"token\":\"...\"} or \"\"";
}

const char* CheckNonEmpty(const std::string& v) {
  return v.empty() ? "must not be empty" : nullptr;
}

const char* CheckEndpoint(const std::string& v) {
  size_t p = v.find("://");
  if (p == std::string::npos || p == 0 || p + 3 == v.size()) {
    return "must be a ZeroMQ endpoint such as tcp://127.0.0.1:5556";
  }
  return nullptr;
}

const char* CheckListen(const std::string& v) {
  if (v.empty()) return nullptr;
  size_t colon = v.rfind(':');
  const char* bad = "must be host:port (e.g. 127.0.0.1:9108) or \"\" (off)";
  if (colon == std::string::npos || colon + 1 == v.size() || v.size() - colon > 6) return bad;
  for (size_t i = colon + 1; i < v.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(v[i]))) return bad;
  }
  return std::stoi(v.substr(colon + 1)) > 65535 ? bad : nullptr;
}

const char* CheckNatsUrl(const std::string& v) {
  const bool scheme = v.rfind("nats://", 0) == 0 || v.rfind("tls://", 0) == 0;
  if (!scheme || v.size() <= v.find("://") + 3) {
    return "must be a NATS server URL such as nats://127.0.0.1:4222 or tls://host:4222";
  }
  return nullptr;
}

// JetStream's rules: a stream name has no blanks, '.', '*', '>', '/' or '\\'.
const char* CheckStreamName(const std::string& v) {
  if (v.empty() || v.find_first_of(" \t\r\n.*>/\\") != std::string::npos) {
    return "must be a JetStream stream name (no blanks, '.', '*', '>', '/' or '\\')";
  }
  return nullptr;
}

// A NATS subject of literal tokens: a.b.c, no empty token, blank or wildcard.
const char* CheckSubjectPrefix(const std::string& v) {
  const char* bad = "must be a NATS subject of literal tokens such as wsbridge or feeds.eu";
  if (v.empty() || v.front() == '.' || v.back() == '.' || v.find("..") != std::string::npos ||
      v.find_first_of(" \t\r\n*>") != std::string::npos) {
    return bad;
  }
  return nullptr;
}

// ---- The key table

// A typed pointer to the Config member a key sets; its type decides how values are read.
using Headers = std::map<std::string, std::string>;
using Replies = std::vector<ReplyRule>;
using Field = std::variant<bool*, int*, int64_t*, uint64_t*, std::string*,
                           std::vector<std::string>*, std::vector<int>*, Headers*, Replies*>;

// One configuration key: dotted name, accessor to its member, and what values it accepts. The
// chained setters keep the table one readable line per key.
struct Key {
  std::string name;
  Field (*field)(Config&);
  int64_t min = 0;  // integers and integer-list elements (nothing here may be negative)
  int64_t max = kInt64Max;
  std::vector<std::string> one_of;                     // enumerated strings
  const char* (*check)(const std::string&) = nullptr;  // more checks on a string
  bool bytes = false;                                  // also accepts "512MiB" and friends
  bool url = false;                                    // may carry user:pass@, redacted when shown
  bool secret = false;                                 // redacted when shown

  Key(std::string n, Field (*f)(Config&)) : name(std::move(n)), field(f) {}
  Key& Range(int64_t lo, int64_t hi = kInt64Max) {
    min = lo;
    max = hi;
    return *this;
  }
  Key& OneOf(std::vector<std::string> values) {
    one_of = std::move(values);
    return *this;
  }
  Key& Check(const char* (*c)(const std::string&)) {
    check = c;
    return *this;
  }
  Key& Bytes() {
    bytes = true;
    return *this;
  }
  Key& Url() {
    url = true;
    return *this;
  }
  Key& Secret() {
    secret = true;
    return *this;
  }

  std::string EnvName() const {  // upstream.tls.verify -> WSBRIDGE_UPSTREAM_TLS_VERIFY
    std::string env = "WSBRIDGE_";
    for (char c : name) env += c == '.' ? '_' : static_cast<char>(std::toupper(c));
    return env;
  }
};

// The key's name is spelled once: it is the member path inside Config.
#define WSB_KEY(path) Key(#path, [](Config& c) -> Field { return &c.path; })

// In ToToml() order: a section's own keys before its sub-tables.
const std::vector<Key>& Keys() {
  static const auto* const keys = new std::vector<Key>{
      WSB_KEY(upstream.url).Check(CheckWsUrl).Url(),
      WSB_KEY(upstream.headers),
      WSB_KEY(upstream.subprotocols),
      WSB_KEY(upstream.connect_timeout_ms).Range(1),
      WSB_KEY(upstream.max_message_bytes).Range(1),
      WSB_KEY(upstream.proxy).Check(CheckProxyUrl).Url(),
      WSB_KEY(upstream.auth_command),
      WSB_KEY(upstream.permessage_deflate),
      WSB_KEY(upstream.tls.verify),
      WSB_KEY(upstream.tls.ca_file),
      WSB_KEY(upstream.tls.cert_file),
      WSB_KEY(upstream.tls.key_file),
      WSB_KEY(heartbeat.interval_ms),
      WSB_KEY(heartbeat.timeout_ms).Range(1),
      WSB_KEY(heartbeat.app_ping),
      WSB_KEY(heartbeat.app_pong).Check(CheckAppPong),
      WSB_KEY(reconnect.base_delay_ms).Range(1),
      WSB_KEY(reconnect.max_delay_ms).Range(1),
      WSB_KEY(reconnect.jitter).OneOf({"full", "equal", "decorrelated", "none"}),
      WSB_KEY(reconnect.min_uptime_ms),
      WSB_KEY(reconnect.max_attempts),
      WSB_KEY(reconnect.fatal_close_codes).Range(1000, 4999),
      WSB_KEY(protocol.seq_field).Check(CheckOptionalPath),
      WSB_KEY(protocol.topic_field).Check(CheckOptionalPath),
      WSB_KEY(protocol.resume),
      WSB_KEY(protocol.on_open),
      WSB_KEY(protocol.ack_match).Check(CheckAckMatch),
      WSB_KEY(protocol.ack_id_field).Check(CheckPath),
      WSB_KEY(protocol.replies),
      WSB_KEY(protocol.decompress).OneOf({"none", "auto", "gzip", "zlib", "deflate"}),
      WSB_KEY(protocol.framing).OneOf({"json", "engineio"}),
      WSB_KEY(protocol.socketio_namespace).Check(CheckNamespace),
      WSB_KEY(protocol.socketio_auth).Check(CheckJsonObjectText).Secret(),
      WSB_KEY(storage.path).Check(CheckNonEmpty),
      WSB_KEY(storage.durability).OneOf({"process", "power"}),
      WSB_KEY(storage.outbox_max_messages).Range(1),
      WSB_KEY(storage.check_interval_s).Range(0),
      WSB_KEY(storage.page_size).Range(512, 65536),
      WSB_KEY(journal.max_rows),
      WSB_KEY(journal.max_bytes).Bytes(),
      WSB_KEY(journal.max_age_s),
      WSB_KEY(zmq.pub).Check(CheckEndpoint),
      WSB_KEY(zmq.send).Check(CheckEndpoint),
      WSB_KEY(zmq.replay).Check(CheckEndpoint),
      WSB_KEY(zmq.pub_hwm),
      WSB_KEY(zmq.ipc_mode).Check(CheckFileMode),
      WSB_KEY(zmq.ipc_group),
      WSB_KEY(zmq.allow_insecure),
      WSB_KEY(zmq.curve.secret_key_file),
      WSB_KEY(zmq.curve.authorized_keys_file),
      WSB_KEY(sink.jetstream.servers).Check(CheckNatsUrl).Url(),
      WSB_KEY(sink.jetstream.stream).Check(CheckStreamName),
      WSB_KEY(sink.jetstream.subject_prefix).Check(CheckSubjectPrefix),
      WSB_KEY(sink.jetstream.create_stream),
      WSB_KEY(sink.jetstream.replicas).Range(1, 5),
      WSB_KEY(sink.jetstream.user),
      WSB_KEY(sink.jetstream.password).Secret(),
      WSB_KEY(sink.jetstream.token).Secret(),
      WSB_KEY(sink.jetstream.credentials_file),
      WSB_KEY(sink.jetstream.max_pending).Range(1, 1000000),
      WSB_KEY(sink.jetstream.required),
      WSB_KEY(sink.jetstream.tls.ca_file),
      WSB_KEY(http.listen).Check(CheckListen),
      WSB_KEY(log.level).OneOf({"trace", "debug", "info", "warn", "error", "off"}),
      WSB_KEY(log.format).OneOf({"text", "json"}),
  };
  return *keys;
}

#undef WSB_KEY

const Key* FindKey(const std::string& name) {
  for (const Key& k : Keys()) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

bool IsSection(const std::string& name) {  // "upstream", "upstream.tls"
  for (const Key& k : Keys()) {
    if (StartsWith(k.name, name + ".")) return true;
  }
  return false;
}

// Short flags (SPEC §4) and the key each one sets.
const std::vector<std::pair<std::string, std::string>>& ShortFlags() {
  static const auto* const flags = new std::vector<std::pair<std::string, std::string>>{
      {"--upstream", "upstream.url"}, {"--db", "storage.path"},   {"--pub", "zmq.pub"},
      {"--send", "zmq.send"},         {"--replay", "zmq.replay"}, {"--http", "http.listen"},
      {"--log-level", "log.level"}};
  return *flags;
}

// ---- Loading

// How a value looks in an error message: strings quoted, the rest as TOML would write it.
std::string Describe(const toml::node& node) {
  if (auto s = node.value_exact<std::string>()) return Quote(*s);
  if (node.is_array()) return "an array";
  if (node.is_table()) return "a table";
  std::ostringstream out;
  node.visit([&](auto&& v) { out << v; });
  return out.str();
}

Status Bad(const std::string& key, const std::string& what, const std::string& got) {
  return Status::InvalidArgument(key + ": " + what + " (got " + got + ")");
}

// Builds a Config from its sources in precedence order; each Apply* overrides earlier values.
// Holds the env lookup (for ${NAME}) by reference: lives only inside LoadConfig().
class Loader {
 public:
  explicit Loader(const EnvLookup& env) : env_(env) {
    for (const Key& k : Keys()) config_.sources[k.name] = "default";
  }

  Status ApplyFile(const std::string& path);
  // TOML text as the file `name` would give it (`name` only appears in messages).
  Status ApplyToml(const std::string& text, const std::string& name);
  Status ApplyEnv(const std::vector<std::string>* all_names);
  Status ApplyText(const Key& key, const std::string& text, const char* source);
  Status ApplySet(const std::string& assignment);
  Status CheckCrossKey() const;
  Config Take() { return std::move(config_); }

 private:
  Status ApplyTable(const toml::table& table, const std::string& prefix, const std::string& file);
  Status Apply(const Key& key, const toml::node& node, const char* source);
  Status Expand(const std::string& key, std::string* value) const;

  // Type check, ${NAME} expansion and constraints for one member type.
  Status Read(const Key& key, const toml::node& node, bool* out) const;
  Status Read(const Key& key, const toml::node& node, int64_t* out) const;
  Status Read(const Key& key, const toml::node& node, uint64_t* out) const;
  Status Read(const Key& key, const toml::node& node, int* out) const;
  Status Read(const Key& key, const toml::node& node, std::string* out) const;
  Status Read(const Key& key, const toml::node& node, std::vector<std::string>* out) const;
  Status Read(const Key& key, const toml::node& node, std::vector<int>* out) const;
  Status Read(const Key& key, const toml::node& node, Headers* out) const;
  Status Read(const Key& key, const toml::node& node, Replies* out) const;
  Status ReadInt(const std::string& name, const Key& key, const toml::node& node, int64_t max,
                 int64_t* out) const;

  const EnvLookup& env_;
  Config config_;
};

Status Loader::Apply(const Key& key, const toml::node& node, const char* source) {
  Status s = std::visit(
      [&](auto* member) {
        std::remove_pointer_t<decltype(member)> value{};
        Status st = Read(key, node, &value);
        if (st.ok()) *member = std::move(value);
        return st;
      },
      key.field(config_));
  if (s.ok()) config_.sources[key.name] = source;
  return s;
}

// ${NAME} -> the variable's value; ${file:...} is kept for ExpandFileRefs().
Status Loader::Expand(const std::string& key, std::string* value) const {
  std::string out;
  size_t i = 0, p;
  while ((p = value->find("${", i)) != std::string::npos) {
    out.append(*value, i, p - i);
    size_t end = value->find('}', p);
    if (end == std::string::npos) return Status::InvalidArgument(key + ": unterminated \"${\"");
    i = end + 1;
    std::string name = value->substr(p + 2, end - p - 2);
    std::string v;
    if (StartsWith(name, "file:")) {
      out.append(*value, p, i - p);
    } else if (!IsEnvName(name)) {
      return Status::InvalidArgument(key + ": bad variable reference \"${" + name + "}\"");
    } else if (!env_(name, &v)) {
      return Status::InvalidArgument(key + ": environment variable " + name +
                                     " is not set (used as ${" + name + "})");
    } else {
      out += v;
    }
  }
  out.append(*value, i);
  *value = std::move(out);
  return Status::OK();
}

Status Loader::Read(const Key& key, const toml::node& node, bool* out) const {
  auto v = node.value_exact<bool>();
  if (!v) return Bad(key.name, "must be true or false", Describe(node));
  *out = *v;
  return Status::OK();
}

Status Loader::ReadInt(const std::string& name, const Key& key, const toml::node& node, int64_t max,
                       int64_t* out) const {
  auto v = node.value_exact<int64_t>();
  if (!v) return Bad(name, "must be an integer", Describe(node));
  max = std::min(max, key.max);
  if (*v < key.min || *v > max) {
    std::string range = max != kInt64Max
                            ? "between " + std::to_string(key.min) + " and " + std::to_string(max)
                        : key.min == 1 ? "> 0"
                                       : ">= " + std::to_string(key.min);
    return Bad(name, "must be " + range, std::to_string(*v));
  }
  *out = *v;
  return Status::OK();
}

Status Loader::Read(const Key& key, const toml::node& node, int64_t* out) const {
  return ReadInt(key.name, key, node, kInt64Max, out);
}

Status Loader::Read(const Key& key, const toml::node& node, int* out) const {
  int64_t v;
  Status s = ReadInt(key.name, key, node, INT_MAX, &v);
  if (s.ok()) *out = static_cast<int>(v);
  return s;
}

Status Loader::Read(const Key& key, const toml::node& node, uint64_t* out) const {
  if (auto text = node.value_exact<std::string>(); text && key.bytes) {
    if (!ParseBytes(*text, out)) {
      return Bad(key.name,
                 "must be a byte count such as 1073741824, \"1GiB\", \"512MiB\" or \"10MB\"",
                 Describe(node));
    }
    return Status::OK();
  }
  int64_t v;
  Status s = ReadInt(key.name, key, node, kInt64Max, &v);
  if (s.ok()) *out = static_cast<uint64_t>(v);
  return s;
}

Status Loader::Read(const Key& key, const toml::node& node, std::string* out) const {
  auto v = node.value_exact<std::string>();
  if (!v) return Bad(key.name, "must be a string", Describe(node));
  Status s = Expand(key.name, &*v);
  if (!s.ok()) return s;
  if (!key.one_of.empty() &&
      std::find(key.one_of.begin(), key.one_of.end(), *v) == key.one_of.end()) {
    std::string list;
    for (const auto& o : key.one_of) list += (list.empty() ? "" : ", ") + o;
    return Bad(key.name, "must be one of " + list, Quote(*v));
  }
  if (key.check != nullptr) {
    if (const char* problem = key.check(*v)) {
      return Bad(key.name, problem,
                 key.secret ? "a value not shown" : Quote(key.url ? RedactUrl(*v) : *v));
    }
  }
  *out = std::move(*v);
  return Status::OK();
}

Status Loader::Read(const Key& key, const toml::node& node, std::vector<std::string>* out) const {
  const toml::array* array = node.as_array();
  if (array == nullptr) return Bad(key.name, "must be an array of strings", Describe(node));
  for (size_t i = 0; i < array->size(); ++i) {
    std::string name = key.name + "[" + std::to_string(i) + "]";
    auto v = (*array)[i].value_exact<std::string>();
    if (!v) return Bad(name, "must be a string", Describe((*array)[i]));
    Status s = Expand(name, &*v);
    if (!s.ok()) return s;
    if (key.check != nullptr) {
      if (const char* problem = key.check(*v)) {
        return Bad(name, problem, Quote(key.url ? RedactUrl(*v) : *v));
      }
    }
    out->push_back(std::move(*v));
  }
  return Status::OK();
}

Status Loader::Read(const Key& key, const toml::node& node, std::vector<int>* out) const {
  const toml::array* array = node.as_array();
  if (array == nullptr) return Bad(key.name, "must be an array of integers", Describe(node));
  for (size_t i = 0; i < array->size(); ++i) {
    int64_t v;
    Status s = ReadInt(key.name + "[" + std::to_string(i) + "]", key, (*array)[i], INT_MAX, &v);
    if (!s.ok()) return s;
    out->push_back(static_cast<int>(v));
  }
  return Status::OK();
}

Status Loader::Read(const Key& key, const toml::node& node, Headers* out) const {
  const toml::table* table = node.as_table();
  if (table == nullptr) return Bad(key.name, "must be a table of strings", Describe(node));
  for (auto&& [k, v] : *table) {
    std::string header(k.str());
    std::string name = key.name + "." + header;
    if (!IsHeaderName(header)) return Status::InvalidArgument(name + ": not a valid header name");
    auto value = v.value_exact<std::string>();
    // Header values are secrets: never echo them.
    if (!value) return Status::InvalidArgument(name + ": must be a string");
    Status s = Expand(name, &*value);
    if (!s.ok()) return s;
    if (value->find_first_of(std::string("\r\n\0", 3)) != std::string::npos) {
      return Status::InvalidArgument(name + ": must not contain CR, LF or NUL");
    }
    (*out)[header] = std::move(*value);
  }
  return Status::OK();
}

// protocol.replies: an array of tables, [[protocol.replies]] in a file or
// [{ field = "ping", reply = "{\"pong\":{{ping}}}" }] as text. Errors name the rule's index.
Status Loader::Read(const Key& key, const toml::node& node, Replies* out) const {
  const toml::array* array = node.as_array();
  const char* shape = "must be an array of tables ([[protocol.replies]])";
  if (array == nullptr) return Bad(key.name, shape, Describe(node));
  for (size_t i = 0; i < array->size(); ++i) {
    const std::string at = key.name + "[" + std::to_string(i) + "]";
    const toml::table* table = (*array)[i].as_table();
    if (table == nullptr) return Bad(at, "must be a table", Describe((*array)[i]));
    ReplyRule rule;
    for (auto&& [k, v] : *table) {
      const std::string name(k.str());
      const std::string where = at + "." + name;
      if (name == "consume") {
        auto b = v.value_exact<bool>();
        if (!b) return Bad(where, "must be true or false", Describe(v));
        rule.consume = *b;
        continue;
      }
      std::string* member = name == "text"     ? &rule.text
                            : name == "field"  ? &rule.field
                            : name == "reply"  ? &rule.reply
                            : name == "equals" ? &rule.equals.emplace()
                                               : nullptr;
      if (member == nullptr) {
        return Status::InvalidArgument(where +
                                       ": unknown key (a rule has text or field, equals, reply, "
                                       "consume)");
      }
      auto text = v.value_exact<std::string>();
      if (!text) return Bad(where, "must be a string", Describe(v));
      Status st = Expand(where, &*text);
      if (!st.ok()) return st;
      *member = std::move(*text);
    }
    if (Status st = CheckReplyRule(rule, at); !st.ok()) return st;
    out->push_back(std::move(rule));
  }
  return Status::OK();
}

Status Loader::ApplyTable(const toml::table& table, const std::string& prefix,
                          const std::string& file) {
  for (auto&& [k, node] : table) {
    std::string name = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const Key* key = FindKey(name)) {
      Status s = Apply(*key, node, "file");
      if (!s.ok()) return s;
    } else if (IsSection(name)) {
      if (!node.is_table()) return Bad(name, "must be a table", Describe(node));
      Status s = ApplyTable(*node.as_table(), name, file);
      if (!s.ok()) return s;
    } else {
      return Status::InvalidArgument(name + ": unknown key (" + file + " line " +
                                     std::to_string(node.source().begin.line) + ")");
    }
  }
  return Status::OK();
}

Status Loader::ApplyFile(const std::string& path) {
  std::string text, error;
  int err_no;
  if (!ReadFile(path, &text, &error, &err_no)) {
    return Status::InvalidArgument("--config: cannot read " + path + ": " + error);
  }
  return ApplyToml(text, path);
}

Status Loader::ApplyToml(const std::string& text, const std::string& path) {
  toml::table table;
  try {
    table = toml::parse(text, std::string_view(path));
  } catch (const toml::parse_error& e) {
    std::string what(e.description());
    for (char& c : what) c = c == '\n' ? ' ' : c;
    return Status::InvalidArgument(path + " line " + std::to_string(e.source().begin.line) +
                                   ": TOML syntax error: " + what);
  }
  return ApplyTable(table, "", path);
}

// Text from the environment or the command line -> a node of the key's type, in a one-entry
// table under "v" (a node cannot live outside a container).
StatusOr<toml::table> TextToNode(const Key& key, const std::string& text) {
  Config scratch;
  return std::visit(
      [&](auto* member) -> StatusOr<toml::table> {
        using T = std::remove_pointer_t<decltype(member)>;
        toml::table t;
        if constexpr (std::is_same_v<T, std::string>) {
          t.insert("v", text);
        } else if constexpr (std::is_same_v<T, bool>) {
          static const std::map<std::string, bool> kBools = {{"true", true}, {"yes", true},
                                                             {"1", true},    {"false", false},
                                                             {"no", false},  {"0", false}};
          auto it = kBools.find(text);
          if (it == kBools.end()) {
            return Bad(key.name, "must be one of true, false, yes, no, 1, 0", Quote(text));
          }
          t.insert("v", it->second);
        } else if constexpr (std::is_integral_v<T>) {
          // Not an integer: kept as a string, so Read() accepts "1GiB" or reports the type.
          errno = 0;
          char* end = nullptr;
          long long v = std::strtoll(text.c_str(), &end, 10);
          bool is_int =
              !text.empty() && *end == '\0' && !std::isspace(static_cast<unsigned char>(text[0]));
          if (is_int && errno == ERANGE) return Bad(key.name, "is out of range", text);
          if (is_int) {
            t.insert("v", static_cast<int64_t>(v));
          } else {
            t.insert("v", text);
          }
        } else {
          // Arrays and the header table: a TOML literal, e.g. ["a", "b"] or { X-Token = "t" }.
          const char* example =
              std::is_same_v<T, Headers>            ? "a TOML table such as { X-Token = \"t\" }"
              : std::is_same_v<T, std::vector<int>> ? "a TOML array such as [1008, 4001]"
              : std::is_same_v<T, Replies>
                  ? "a TOML array of tables such as [{ text = \"ping\", reply = \"pong\" }]"
                  : "a TOML array such as [\"a\", \"b\"]";
          try {
            t = toml::parse("v = " + text);
          } catch (const toml::parse_error&) {
            return Bad(key.name, std::string("must be ") + example, Quote(text));
          }
          if (t.size() != 1) return Bad(key.name, std::string("must be ") + example, Quote(text));
        }
        return t;
      },
      key.field(scratch));
}

Status Loader::ApplyText(const Key& key, const std::string& text, const char* source) {
  auto t = TextToNode(key, text);
  if (!t.ok()) return t.status();
  return Apply(key, *t->get("v"), source);
}

Status Loader::ApplyEnv(const std::vector<std::string>* all_names) {
  if (all_names != nullptr) {
    std::set<std::string> known;
    for (const Key& k : Keys()) known.insert(k.EnvName());
    for (const std::string& name : *all_names) {
      if (!StartsWith(name, "WSBRIDGE_") || known.count(name) != 0) continue;
      std::string hint = StartsWith(name, "WSBRIDGE_UPSTREAM_HEADERS_")
                             ? "; set headers with WSBRIDGE_UPSTREAM_HEADERS='{ Name = \"value\" }'"
                             : "";
      return Status::InvalidArgument(name + ": unknown configuration variable (names no key" +
                                     hint + ")");
    }
  }
  for (const Key& k : Keys()) {
    std::string text;
    if (!env_(k.EnvName(), &text)) continue;
    Status s = ApplyText(k, text, "env");
    if (!s.ok()) return s;
  }
  return Status::OK();
}

// "section.key=value", or "upstream.headers.Name=value" for one header.
Status Loader::ApplySet(const std::string& assignment) {
  size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    return Status::InvalidArgument("--set: expected section.key=value (got " + Quote(assignment) +
                                   ")");
  }
  std::string name = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  const std::string kHeaders = "upstream.headers";
  if (StartsWith(name, kHeaders + ".")) {
    toml::table one;
    one.insert(name.substr(kHeaders.size() + 1), value);
    Headers parsed;
    Status s = Read(*FindKey(kHeaders), one, &parsed);
    if (!s.ok()) return s;
    for (auto& [h, v] : parsed) config_.upstream.headers[h] = v;
    config_.sources[kHeaders] = "flag";
    return Status::OK();
  }
  const Key* key = FindKey(name);
  if (key == nullptr) return Status::InvalidArgument(name + ": unknown key (in --set)");
  return ApplyText(*key, value, "flag");
}

// Constraints between keys, once every source has been applied.
Status Loader::CheckCrossKey() const {
  const Config& c = config_;
  if ((c.storage.page_size & (c.storage.page_size - 1)) != 0) {
    return Bad("storage.page_size", "must be a power of two from 512 to 65536",
               std::to_string(c.storage.page_size));
  }
  if (c.reconnect.max_delay_ms < c.reconnect.base_delay_ms) {
    return Bad(
        "reconnect.max_delay_ms",
        "must be >= reconnect.base_delay_ms (" + std::to_string(c.reconnect.base_delay_ms) + ")",
        std::to_string(c.reconnect.max_delay_ms));
  }
  if (!c.zmq.curve.secret_key_file.empty() && c.zmq.curve.authorized_keys_file.empty()) {
    return Status::InvalidArgument(
        "zmq.curve.authorized_keys_file: must be set with zmq.curve.secret_key_file (a CURVE "
        "server without a list of clients would accept every key)");
  }
  if (c.protocol.framing == "engineio" && !c.protocol.ack_match.empty()) {
    return Status::InvalidArgument(
        "protocol.ack_match: not supported with protocol.framing = \"engineio\" (socket.io "
        "acknowledgements are not upstream acks); set it to \"\"");
  }
  if (c.upstream.tls.cert_file.empty() != c.upstream.tls.key_file.empty()) {
    return Status::InvalidArgument(
        "upstream.tls.key_file: upstream.tls.cert_file and key_file must be set together");
  }
  return Status::OK();
}

// ProcessEnv()'s callable; LoadConfig() recognises it to walk `environ` for unknown names.
struct ProcessEnvLookup {
  bool operator()(const std::string& name, std::string* value) const {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return false;
    *value = v;
    return true;
  }
};

StatusOr<CommandLine> Load(int argc, const char* const* argv, const EnvLookup& env,
                           const std::vector<std::string>* env_names) {
  CommandLine cl;
  CLI::App app(
      "wsbridge: bridges a WebSocket upstream to local ZeroMQ applications, with a "
      "durable journal and outbox.",
      "wsbridge");
  app.footer(
      "Every configuration key can also be set in the file, with --set section.key=value or "
      "with WSBRIDGE_<SECTION>_<KEY>; command line beats environment beats file beats default. "
      "--print-config shows the result. `wsbridge keygen [--out PREFIX]` makes a CURVE key pair "
      "for zmq.curve.*; `wsbridge check --db FILE` checks a database file.\n" +
      DocsPointer("configuration.md"));
  std::string config_path;
  std::vector<std::string> sets;
  app.add_option("--config", config_path, "TOML configuration file")->type_name("FILE");
  app.add_option("--set", sets, "set any key (repeatable)")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
  std::vector<std::pair<CLI::Option*, std::string>> short_opts;
  std::map<std::string, std::string> short_values;
  for (const auto& [flag, key] : ShortFlags()) {
    short_opts.emplace_back(app.add_option(flag, short_values[key], "sets " + key), key);
  }
  app.add_flag("--print-config", cl.print_config, "print the effective configuration and exit");
  app.set_version_flag("--version", std::string("wsbridge ") + WSBRIDGE_VERSION);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help or --version
    cl.exit_code = app.exit(e, std::cout, std::cerr);
    cl.exit_now = true;
    return cl;
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    for (char& c : what) c = c == '\n' ? ' ' : c;
    return Status::InvalidArgument(what + " (see --help)");
  }

  Loader loader(env);
  Status s = config_path.empty() ? Status::OK() : loader.ApplyFile(config_path);
  if (s.ok()) s = loader.ApplyEnv(env_names);
  // Within the command line, short flags first, then --set in the order given.
  for (size_t i = 0; s.ok() && i < short_opts.size(); ++i) {
    if (short_opts[i].first->count() == 0) continue;
    const std::string& key = short_opts[i].second;
    s = loader.ApplyText(*FindKey(key), short_values[key], "flag");
  }
  for (size_t i = 0; s.ok() && i < sets.size(); ++i) s = loader.ApplySet(sets[i]);
  if (s.ok()) s = loader.CheckCrossKey();
  if (!s.ok()) return s;
  cl.config = loader.Take();
  return cl;
}

// ---- ToToml

std::string FormatValue(const Key& key, const Config& config) {
  std::ostringstream out;
  std::visit(
      [&](auto* member) {
        using T = std::remove_pointer_t<decltype(member)>;
        if constexpr (std::is_same_v<T, bool>) {
          out << (*member ? "true" : "false");
        } else if constexpr (std::is_integral_v<T>) {
          out << *member;
        } else if constexpr (std::is_same_v<T, std::string>) {
          out << (key.secret && !member->empty() ? Quote("<redacted>")
                                                 : Quote(key.url ? RedactUrl(*member) : *member));
        } else if constexpr (std::is_same_v<T, Replies>) {
          out << "[";
          for (size_t i = 0; i < member->size(); ++i) {
            const ReplyRule& r = (*member)[i];
            out << (i ? ", " : "") << "{ ";
            if (r.field.empty()) out << "text = " << Quote(r.text);
            else out << "field = " << Quote(r.field);
            if (r.equals) out << ", equals = " << Quote(*r.equals);
            out << ", reply = " << Quote(r.reply) << ", consume = " << (r.consume ? "true" : "false")
                << " }";
          }
          out << "]";
        } else if constexpr (std::is_same_v<T, Headers>) {
          std::string sep = " ";
          out << "{";
          for (const auto& header : *member) {
            out << sep << Quote(header.first) << " = \"<redacted>\"";
            sep = ", ";
          }
          out << (member->empty() ? "}" : " }");
        } else {  // arrays
          out << "[";
          for (size_t i = 0; i < member->size(); ++i) {
            out << (i ? ", " : "");
            if constexpr (std::is_same_v<T, std::vector<int>>) {
              out << (*member)[i];
            } else {
              out << Quote(key.url ? RedactUrl((*member)[i]) : (*member)[i]);
            }
          }
          out << "]";
        }
      },
      // Read only: the accessors are shared with loading, hence non-const.
      key.field(const_cast<Config&>(config)));
  return out.str();
}

}  // namespace

EnvLookup ProcessEnv() { return ProcessEnvLookup(); }

Status CheckReplyRule(const ReplyRule& rule, const std::string& at) {
  if (rule.text.empty() == rule.field.empty()) {
    return Status::InvalidArgument(at + ": needs exactly one of text or field");
  }
  if (!rule.field.empty() && !IsDottedPath(rule.field)) {
    return Bad(at + ".field", "must be a dotted field path (e.g. ping or params.type)",
               Quote(rule.field));
  }
  if (rule.equals && rule.field.empty()) {
    return Status::InvalidArgument(at + ".equals: only with field, not with text");
  }
  if (rule.reply.empty()) return Status::InvalidArgument(at + ".reply: must be set");
  return Status::OK();
}

bool IsSocketIoNamespace(const std::string& ns) {
  return !ns.empty() && ns[0] == '/' && ns.find_first_of(",?# \t") == std::string::npos;
}

StatusOr<CommandLine> LoadConfig(int argc, const char* const* argv, const EnvLookup& env) {
  if (env.target<ProcessEnvLookup>() == nullptr) return Load(argc, argv, env, nullptr);
  std::vector<std::string> names;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry(*e);
    names.push_back(entry.substr(0, entry.find('=')));
  }
  return Load(argc, argv, env, &names);
}

StatusOr<CommandLine> LoadConfig(int argc, const char* const* argv, const EnvMap& env) {
  std::vector<std::string> names;
  for (const auto& entry : env) names.push_back(entry.first);
  EnvLookup lookup = [&env](const std::string& name, std::string* value) {
    auto it = env.find(name);
    if (it == env.end()) return false;
    *value = it->second;
    return true;
  };
  return Load(argc, argv, lookup, &names);
}

StatusOr<Config> LoadConfigFromString(const std::string& toml,
                                      const std::vector<std::string>& sets, const EnvMap& env) {
  std::vector<std::string> names;
  for (const auto& entry : env) names.push_back(entry.first);
  EnvLookup lookup = [&env](const std::string& name, std::string* value) {
    auto it = env.find(name);
    if (it == env.end()) return false;
    *value = it->second;
    return true;
  };
  Loader loader(lookup);
  Status s = loader.ApplyToml(toml, "<config>");
  if (s.ok()) s = loader.ApplyEnv(&names);
  for (size_t i = 0; s.ok() && i < sets.size(); ++i) s = loader.ApplySet(sets[i]);
  if (s.ok()) s = loader.CheckCrossKey();
  if (!s.ok()) return s;
  return loader.Take();
}

StatusOr<std::string> ExpandFileRefs(const std::string& value) {
  const std::string kOpen = "${file:";
  std::string out;
  size_t i = 0;
  for (size_t p; (p = value.find(kOpen, i)) != std::string::npos;) {
    out.append(value, i, p - i);
    size_t end = value.find('}', p);
    if (end == std::string::npos) return Status::InvalidArgument("unterminated \"${file:\"");
    std::string path = value.substr(p + kOpen.size(), end - p - kOpen.size());
    std::string content, error;
    int err_no;
    if (!ReadFile(path, &content, &error, &err_no)) {
      std::string msg = "${file:" + path + "}: cannot read " + path + ": " + error;
      return err_no == ENOENT ? Status::NotFound(msg) : Status::IOError(msg);
    }
    size_t strip = content.size() >= 2 && content.compare(content.size() - 2, 2, "\r\n") == 0 ? 2
                   : !content.empty() && content.back() == '\n'                               ? 1
                                                                                              : 0;
    content.resize(content.size() - strip);
    out += content;
    i = end + 1;
  }
  out.append(value, i);
  return out;
}

std::string ToToml(const Config& config) {
  std::string out, section;
  for (const Key& key : Keys()) {
    size_t dot = key.name.rfind('.');
    if (key.name.substr(0, dot) != section) {
      section = key.name.substr(0, dot);
      out += (out.empty() ? "[" : "\n[") + section + "]\n";
    }
    auto src = config.sources.find(key.name);
    out += key.name.substr(dot + 1) + " = " + FormatValue(key, config) + "  # " +
           (src == config.sources.end() ? "default" : src->second) + "\n";
  }
  return out;
}

}  // namespace wsbridge
