// Config: the daemon's whole configuration as one immutable value (SPEC §4).
//
// Built once at start-up by LoadConfig() from, in increasing precedence: defaults, the TOML file
// (--config), environment variables WSBRIDGE_<SECTION>_<KEY>, and the command line (short flags
// and --set section.key=value). `${NAME}` in strings expands from the environment at load time;
// `${file:/path}` is kept as written and expanded by ExpandFileRefs() on every connection
// attempt, so that rotated credentials are picked up without a restart.
//
// Thread-safety: a Config is a plain value; share it by const reference after start-up.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace wsbridge {

struct TlsConfig {
  bool verify = true;
  std::string ca_file;    // "": system store
  std::string cert_file;  // client certificate (PEM) for mutual TLS
  std::string key_file;
};

struct UpstreamConfig {
  std::string url = "ws://127.0.0.1:8765/feed";
  std::map<std::string, std::string> headers;  // values may still hold ${file:/path}
  std::vector<std::string> subprotocols;
  int64_t connect_timeout_ms = 10000;
  uint64_t max_message_bytes = 1048576;
  TlsConfig tls;
  std::string proxy;         // "": from HTTPS_PROXY / HTTP_PROXY / NO_PROXY
  std::string auth_command;  // run before every connection attempt
  bool permessage_deflate = true;  // offer RFC 7692 compression in the handshake
};

struct HeartbeatConfig {
  int64_t interval_ms = 15000;  // 0: off
  int64_t timeout_ms = 10000;
  std::string app_ping;
  std::string app_pong;  // "field=value" on a JSON object, or an exact text
};

struct ReconnectConfig {
  int64_t base_delay_ms = 500;
  int64_t max_delay_ms = 30000;
  std::string jitter = "full";  // full | equal | decorrelated | none
  int64_t min_uptime_ms = 5000;
  int64_t max_attempts = 0;  // 0: forever
  std::vector<int> fatal_close_codes = {1008, 4001, 4003};
};

// One protocol.replies rule (SPEC §9): a frame the upstream sends that needs an answer.
// Exactly one of `text` and `field` is set (the loader checks it).
struct ReplyRule {
  std::string text;                   // the whole frame equals it
  std::string field;                  // a dotted JSON path that exists in the frame
  std::optional<std::string> equals;  // with `field`: its value (as text) must equal this
  std::string reply;                  // sent back at once; {{path}} -> raw JSON of that value
  bool consume = true;                // a matched frame is not journaled

  bool operator==(const ReplyRule& o) const {
    return text == o.text && field == o.field && equals == o.equals && reply == o.reply &&
           consume == o.consume;
  }
};

// What a rule must be, whoever builds it (the loader, FrameProtocol::Create): exactly one of text
// and field, field a dotted path, equals only with field, a reply. Errors name `at`.fieldname,
// `at` being e.g. "protocol.replies[2]".
Status CheckReplyRule(const ReplyRule& rule, const std::string& at);

// "/" or "/chat": no ',' (it ends the namespace in a packet), '?', '#' or blanks.
bool IsSocketIoNamespace(const std::string& ns);

struct ProtocolConfig {
  std::string seq_field = "seq";      // dotted path; "": none
  std::string topic_field = "topic";  // dotted path; "": all on topic ""
  std::string resume = R"({"type":"resume","after":{last_seq}})";
  std::vector<std::string> on_open;
  std::string ack_match;  // "field=value"; "": no acks
  std::string ack_id_field = "id";
  std::vector<ReplyRule> replies;
  std::string decompress = "none";  // none | auto | gzip | zlib | deflate (binary frames)
  std::string framing = "json";     // json | engineio
  std::string socketio_namespace = "/";
  std::string socketio_auth;  // "" or a JSON object text (a secret: redacted when shown)
};

struct StorageConfig {
  std::string path = "./wsbridge.db";
  std::string durability = "process";  // process | power
  uint64_t outbox_max_messages = 100000;
  // The background whole-file check (Store::Verify): shortly after start, then this often.
  // 0: never (`wsbridge check --db FILE` still runs it on demand).
  int64_t check_interval_s = 86400;
  // SQLite page size of a database this creates (an existing file keeps its own): each commit
  // writes whole pages, so 1024 writes about a third per message at low rates, and costs ~20 % of
  // the peak inbound rate (docs/performance.md, "The journal").
  int64_t page_size = 4096;
};

struct JournalConfig {
  uint64_t max_rows = 1000000;
  uint64_t max_bytes = 1ull << 30;  // accepts "1GiB", "512MiB", "10MB", or a plain integer
  int64_t max_age_s = 604800;
};

// CURVE on the tcp endpoints (SPEC §10).
struct CurveConfig {
  std::string secret_key_file;       // Z85 secret key, 0600; "": no CURVE
  std::string authorized_keys_file;  // "<role> <Z85 public key> [comment]" lines
};

struct ZmqConfig {
  std::string pub = "tcp://127.0.0.1:5556";
  std::string send = "tcp://127.0.0.1:5557";
  std::string replay = "tcp://127.0.0.1:5558";
  int pub_hwm = 100000;
  std::string ipc_mode = "0660";  // octal mode of ipc socket files
  std::string ipc_group;          // group of ipc socket files; "": the process's group
  bool allow_insecure = false;    // a non-loopback tcp endpoint without CURVE may start
  CurveConfig curve;
};

// The JetStream sink (SPEC §11): the journal copied into a NATS JetStream stream, exactly once.
// Off while `servers` is empty.
struct JetStreamTlsConfig {
  std::string ca_file;  // CA bundle (PEM) for tls:// servers; "": the system store
};

struct JetStreamConfig {
  std::vector<std::string> servers;  // nats://host:port or tls://host:port
  std::string stream = "WSBRIDGE";
  std::string subject_prefix = "wsbridge";  // rows go to <prefix>.<topic>
  bool create_stream = true;                // with subjects <prefix>.> and `replicas`
  int64_t replicas = 1;
  std::string user;
  std::string password;  // secrets: ${ENV} at load, ${file:} at every connection attempt
  std::string token;
  std::string credentials_file;  // a NATS .creds file (JWT + nkey seed)
  JetStreamTlsConfig tls;
  int64_t max_pending = 4096;  // publishes in flight without an ack
  bool required = false;       // /readyz is 503 while the sink is down
};

struct SinkConfig {
  JetStreamConfig jetstream;
};

struct HttpConfig {
  std::string listen = "127.0.0.1:9108";  // "": off
};

struct LogConfig {
  std::string level = "info";   // trace | debug | info | warn | error | off
  std::string format = "text";  // text | json
};

struct Config {
  UpstreamConfig upstream;
  HeartbeatConfig heartbeat;
  ReconnectConfig reconnect;
  ProtocolConfig protocol;
  StorageConfig storage;
  JournalConfig journal;
  ZmqConfig zmq;
  SinkConfig sink;
  HttpConfig http;
  LogConfig log;

  // "section.key" -> where its value came from: "default", "file", "env" or "flag".
  std::map<std::string, std::string> sources;
};

// What the command line asked for besides the configuration itself.
struct CommandLine {
  Config config;
  bool print_config = false;  // --print-config
  bool exit_now = false;      // --help or --version was printed; exit with exit_code
  int exit_code = 0;
};

// Looks up an environment variable; returns false when unset. Injected for tests.
using EnvLookup = std::function<bool(const std::string& name, std::string* value)>;
EnvLookup ProcessEnv();

// Parses argv (wsbridge's flags: --config, --set, short flags, --help, --version,
// --print-config) plus env and file. Errors are one line and name the key, e.g.
// "reconnect.jitter: must be one of full, equal, decorrelated, none (got \"fast\")".
// With ProcessEnv() it also walks `environ`, so that a WSBRIDGE_* variable naming no key is an
// error; with any other lookup such variables cannot be seen and are not reported.
StatusOr<CommandLine> LoadConfig(int argc, const char* const* argv, const EnvLookup& env);

// The same with the environment given as name -> value pairs (tests inject a fake one); every
// WSBRIDGE_* name in it must name a key.
using EnvMap = std::map<std::string, std::string>;
StatusOr<CommandLine> LoadConfig(int argc, const char* const* argv, const EnvMap& env);

// The same without a command line or a file: `toml` is the content a --config file would have
// (messages name it "<config>"), then the environment, then each of `sets` as a --set value
// ("section.key=value"). For tests and fuzzing (fuzz/fuzz_config.cc).
StatusOr<Config> LoadConfigFromString(const std::string& toml,
                                      const std::vector<std::string>& sets, const EnvMap& env);

// Expands every ${file:/path} in `value` to the file's content without its trailing newline.
StatusOr<std::string> ExpandFileRefs(const std::string& value);

// The effective configuration as TOML, with header values and URL credentials redacted, each
// key followed by a comment naming its source.
std::string ToToml(const Config& config);

}  // namespace wsbridge
