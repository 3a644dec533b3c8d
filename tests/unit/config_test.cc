// Tests for LoadConfig(), ExpandFileRefs() and ToToml() (SPEC §4): defaults, precedence,
// expansion, every error class, sources and the round trip through ToToml(). The environment
// is a fake EnvMap; files live in a per-test temp directory.
#include "bridge/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

#ifndef WSBRIDGE_VERSION  // normally from CMake, as for config.cc
#define WSBRIDGE_VERSION "0.0.0-unknown"
#endif

namespace wsbridge {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "config_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const auto& f : files_) std::remove(f.c_str());
    rmdir(dir_.c_str());
  }

  std::string Write(const std::string& name, const std::string& content) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
    files_.push_back(path);
    return path;
  }

  // Runs LoadConfig with "wsbridge" as argv[0].
  static StatusOr<CommandLine> Load(std::vector<std::string> args, const EnvMap& env = {}) {
    args.insert(args.begin(), "wsbridge");
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    return LoadConfig(static_cast<int>(argv.size()), argv.data(), env);
  }

  Config LoadOk(const std::vector<std::string>& args, const EnvMap& env = {}) {
    auto r = Load(args, env);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->config : Config();
  }

  // The error message of a load that must fail.
  static std::string LoadError(const std::vector<std::string>& args, const EnvMap& env = {}) {
    auto r = Load(args, env);
    if (r.ok()) return "<loaded OK>";
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos) << "not one line";
    return r.status().message();
  }

  std::string dir_;
  std::vector<std::string> files_;
};

#define EXPECT_STARTS_WITH(str, prefix) EXPECT_EQ((str).rfind(prefix, 0), 0u) << (str)
#define EXPECT_CONTAINS(str, part) EXPECT_NE((str).find(part), std::string::npos) << (str)

// Every field, for whole-config comparisons.
auto Fields(const Config& c) {
  const auto& u = c.upstream;
  return std::make_tuple(
      u.url, u.headers, u.subprotocols, u.connect_timeout_ms, u.max_message_bytes, u.tls.verify,
      u.tls.ca_file, u.tls.cert_file, u.tls.key_file, u.proxy, u.auth_command,
      u.permessage_deflate, c.protocol.replies, c.protocol.decompress, c.protocol.framing,
      c.protocol.socketio_namespace, c.protocol.socketio_auth,
      c.heartbeat.interval_ms, c.heartbeat.timeout_ms, c.heartbeat.app_ping, c.heartbeat.app_pong,
      c.reconnect.base_delay_ms, c.reconnect.max_delay_ms, c.reconnect.jitter,
      c.reconnect.min_uptime_ms, c.reconnect.max_attempts, c.reconnect.fatal_close_codes,
      c.protocol.seq_field, c.protocol.topic_field, c.protocol.resume, c.protocol.on_open,
      c.protocol.ack_match, c.protocol.ack_id_field, c.storage.path, c.storage.durability,
      c.storage.outbox_max_messages, c.storage.check_interval_s, c.storage.page_size,
      c.journal.max_rows, c.journal.max_bytes, c.journal.max_age_s,
      c.zmq.pub, c.zmq.send, c.zmq.replay, c.zmq.pub_hwm, c.zmq.ipc_mode, c.zmq.ipc_group,
      c.zmq.allow_insecure, c.zmq.curve.secret_key_file, c.zmq.curve.authorized_keys_file,
      c.http.listen, c.log.level, c.log.format);
}

TEST_F(ConfigTest, DefaultsMatchSpec) {
  Config c = LoadOk({});
  EXPECT_EQ(c.upstream.url, "ws://127.0.0.1:8765/feed");
  EXPECT_TRUE(c.upstream.headers.empty());
  EXPECT_TRUE(c.upstream.subprotocols.empty());
  EXPECT_EQ(c.upstream.connect_timeout_ms, 10000);
  EXPECT_EQ(c.upstream.max_message_bytes, 1048576u);
  EXPECT_TRUE(c.upstream.tls.verify);
  EXPECT_EQ(c.upstream.tls.ca_file, "");
  EXPECT_EQ(c.upstream.tls.cert_file, "");
  EXPECT_EQ(c.upstream.tls.key_file, "");
  EXPECT_EQ(c.upstream.proxy, "");
  EXPECT_EQ(c.upstream.auth_command, "");
  EXPECT_TRUE(c.upstream.permessage_deflate);
  EXPECT_EQ(c.heartbeat.interval_ms, 15000);
  EXPECT_EQ(c.heartbeat.timeout_ms, 10000);
  EXPECT_EQ(c.heartbeat.app_ping, "");
  EXPECT_EQ(c.heartbeat.app_pong, "");
  EXPECT_EQ(c.reconnect.base_delay_ms, 500);
  EXPECT_EQ(c.reconnect.max_delay_ms, 30000);
  EXPECT_EQ(c.reconnect.jitter, "full");
  EXPECT_EQ(c.reconnect.min_uptime_ms, 5000);
  EXPECT_EQ(c.reconnect.max_attempts, 0);
  EXPECT_EQ(c.reconnect.fatal_close_codes, (std::vector<int>{1008, 4001, 4003}));
  EXPECT_EQ(c.protocol.seq_field, "seq");
  EXPECT_EQ(c.protocol.topic_field, "topic");
  EXPECT_EQ(c.protocol.resume, R"({"type":"resume","after":{last_seq}})");
  EXPECT_TRUE(c.protocol.on_open.empty());
  EXPECT_EQ(c.protocol.ack_match, "");
  EXPECT_EQ(c.protocol.ack_id_field, "id");
  EXPECT_TRUE(c.protocol.replies.empty());
  EXPECT_EQ(c.protocol.decompress, "none");
  EXPECT_EQ(c.protocol.framing, "json");
  EXPECT_EQ(c.protocol.socketio_namespace, "/");
  EXPECT_EQ(c.protocol.socketio_auth, "");
  EXPECT_EQ(c.storage.path, "./wsbridge.db");
  EXPECT_EQ(c.storage.durability, "process");
  EXPECT_EQ(c.storage.outbox_max_messages, 100000u);
  EXPECT_EQ(c.storage.check_interval_s, 86400);
  EXPECT_EQ(c.storage.page_size, 4096);
  EXPECT_EQ(c.journal.max_rows, 1000000u);
  EXPECT_EQ(c.journal.max_bytes, 1ull << 30);
  EXPECT_EQ(c.journal.max_age_s, 604800);
  EXPECT_EQ(c.zmq.pub, "tcp://127.0.0.1:5556");
  EXPECT_EQ(c.zmq.send, "tcp://127.0.0.1:5557");
  EXPECT_EQ(c.zmq.replay, "tcp://127.0.0.1:5558");
  EXPECT_EQ(c.zmq.pub_hwm, 100000);
  EXPECT_EQ(c.zmq.ipc_mode, "0660");
  EXPECT_EQ(c.zmq.ipc_group, "");
  EXPECT_FALSE(c.zmq.allow_insecure);
  EXPECT_EQ(c.zmq.curve.secret_key_file, "");
  EXPECT_EQ(c.zmq.curve.authorized_keys_file, "");
  EXPECT_TRUE(c.sink.jetstream.servers.empty());  // no sink
  EXPECT_EQ(c.sink.jetstream.stream, "WSBRIDGE");
  EXPECT_EQ(c.sink.jetstream.subject_prefix, "wsbridge");
  EXPECT_TRUE(c.sink.jetstream.create_stream);
  EXPECT_EQ(c.sink.jetstream.replicas, 1);
  EXPECT_EQ(c.sink.jetstream.user, "");
  EXPECT_EQ(c.sink.jetstream.password, "");
  EXPECT_EQ(c.sink.jetstream.token, "");
  EXPECT_EQ(c.sink.jetstream.credentials_file, "");
  EXPECT_EQ(c.sink.jetstream.tls.ca_file, "");
  EXPECT_EQ(c.sink.jetstream.max_pending, 4096);
  EXPECT_FALSE(c.sink.jetstream.required);
  EXPECT_EQ(c.http.listen, "127.0.0.1:9108");
  EXPECT_EQ(c.log.level, "info");
  EXPECT_EQ(c.log.format, "text");

  EXPECT_EQ(c.sources.size(), 65u);  // one per key
  for (const auto& [key, source] : c.sources) EXPECT_EQ(source, "default") << key;
}

TEST_F(ConfigTest, FileValues) {
  std::string path = Write("c.toml", R"(
[upstream]
url = "wss://feed.example.com/v1"
subprotocols = ["v1.feed", "v2.feed"]
connect_timeout_ms = 2500
max_message_bytes = 65536
proxy = "http://proxy:3128"
auth_command = "/usr/bin/token"
permessage_deflate = false
[upstream.headers]
X-Api-Key = "k"
[upstream.tls]
verify = false
ca_file = "/etc/ca.pem"
cert_file = "/etc/c.pem"
key_file = "/etc/k.pem"

[heartbeat]
interval_ms = 0
timeout_ms = 3000
app_ping = '{"type":"ping"}'
app_pong = "type=pong"

[reconnect]
base_delay_ms = 100
max_delay_ms = 1000
jitter = "decorrelated"
min_uptime_ms = 0
max_attempts = 7
fatal_close_codes = [4001]

[protocol]
seq_field = "data.seq"
topic_field = ""
resume = ""
on_open = ['{"op":"sub","ch":"a"}', '{"op":"sub","ch":"b"}']
ack_match = "type=ack"
ack_id_field = "ref"
replies = [{ field = "ping", reply = '{"pong":{{ping}}}' }]
decompress = "gzip"
framing = "json"
socketio_namespace = "/feed"
socketio_auth = '{"token":"t"}'

[storage]
path = "/var/lib/wsbridge/db"
durability = "power"
outbox_max_messages = 10
check_interval_s = 3600
page_size = 1024

[journal]
max_rows = 5
max_bytes = "512MiB"
max_age_s = 60

[zmq]
pub = "ipc:///tmp/pub"
send = "tcp://0.0.0.0:7001"
replay = "tcp://0.0.0.0:7002"
pub_hwm = 0
ipc_mode = "0600"
ipc_group = "wsbridge-readers"
allow_insecure = true

[zmq.curve]
secret_key_file = "/etc/wsbridge/server.key"
authorized_keys_file = "/etc/wsbridge/authorized_keys"

[sink.jetstream]
servers = ["nats://n1:4222", "tls://n2:4222"]
stream = "FEED"
subject_prefix = "feeds.eu"
create_stream = false
replicas = 3
user = "bridge"
password = "pw"
token = "tk"
credentials_file = "/etc/wsbridge/nats.creds"
max_pending = 100
required = true

[sink.jetstream.tls]
ca_file = "/etc/wsbridge/nats-ca.pem"

[http]
listen = ""

[log]
level = "debug"
format = "json"
)");
  Config c = LoadOk({"--config", path});
  EXPECT_EQ(c.upstream.url, "wss://feed.example.com/v1");
  EXPECT_EQ(c.upstream.headers, (std::map<std::string, std::string>{{"X-Api-Key", "k"}}));
  EXPECT_EQ(c.upstream.subprotocols, (std::vector<std::string>{"v1.feed", "v2.feed"}));
  EXPECT_EQ(c.upstream.connect_timeout_ms, 2500);
  EXPECT_EQ(c.upstream.max_message_bytes, 65536u);
  EXPECT_FALSE(c.upstream.tls.verify);
  EXPECT_EQ(c.upstream.tls.ca_file, "/etc/ca.pem");
  EXPECT_EQ(c.upstream.tls.cert_file, "/etc/c.pem");
  EXPECT_EQ(c.upstream.tls.key_file, "/etc/k.pem");
  EXPECT_EQ(c.upstream.proxy, "http://proxy:3128");
  EXPECT_EQ(c.upstream.auth_command, "/usr/bin/token");
  EXPECT_EQ(c.heartbeat.interval_ms, 0);
  EXPECT_EQ(c.heartbeat.timeout_ms, 3000);
  EXPECT_EQ(c.heartbeat.app_ping, R"({"type":"ping"})");
  EXPECT_EQ(c.heartbeat.app_pong, "type=pong");
  EXPECT_EQ(c.reconnect.base_delay_ms, 100);
  EXPECT_EQ(c.reconnect.max_delay_ms, 1000);
  EXPECT_EQ(c.reconnect.jitter, "decorrelated");
  EXPECT_EQ(c.reconnect.min_uptime_ms, 0);
  EXPECT_EQ(c.reconnect.max_attempts, 7);
  EXPECT_EQ(c.reconnect.fatal_close_codes, (std::vector<int>{4001}));
  EXPECT_EQ(c.protocol.seq_field, "data.seq");
  EXPECT_EQ(c.protocol.topic_field, "");
  EXPECT_EQ(c.protocol.resume, "");
  EXPECT_EQ(c.protocol.on_open.size(), 2u);
  EXPECT_EQ(c.protocol.on_open[1], R"({"op":"sub","ch":"b"})");
  EXPECT_EQ(c.protocol.ack_match, "type=ack");
  EXPECT_EQ(c.protocol.ack_id_field, "ref");
  ASSERT_EQ(c.protocol.replies.size(), 1u);
  EXPECT_EQ(c.protocol.replies[0].reply, R"({"pong":{{ping}}})");
  EXPECT_EQ(c.protocol.decompress, "gzip");
  EXPECT_EQ(c.protocol.framing, "json");
  EXPECT_EQ(c.protocol.socketio_namespace, "/feed");
  EXPECT_EQ(c.protocol.socketio_auth, R"({"token":"t"})");
  EXPECT_FALSE(c.upstream.permessage_deflate);
  EXPECT_EQ(c.storage.path, "/var/lib/wsbridge/db");
  EXPECT_EQ(c.storage.durability, "power");
  EXPECT_EQ(c.storage.outbox_max_messages, 10u);
  EXPECT_EQ(c.storage.check_interval_s, 3600);
  EXPECT_EQ(c.storage.page_size, 1024);
  EXPECT_EQ(c.journal.max_rows, 5u);
  EXPECT_EQ(c.journal.max_bytes, 512ull << 20);
  EXPECT_EQ(c.journal.max_age_s, 60);
  EXPECT_EQ(c.zmq.pub, "ipc:///tmp/pub");
  EXPECT_EQ(c.zmq.send, "tcp://0.0.0.0:7001");
  EXPECT_EQ(c.zmq.replay, "tcp://0.0.0.0:7002");
  EXPECT_EQ(c.zmq.pub_hwm, 0);
  EXPECT_EQ(c.zmq.ipc_mode, "0600");
  EXPECT_EQ(c.zmq.ipc_group, "wsbridge-readers");
  EXPECT_TRUE(c.zmq.allow_insecure);
  EXPECT_EQ(c.zmq.curve.secret_key_file, "/etc/wsbridge/server.key");
  EXPECT_EQ(c.zmq.curve.authorized_keys_file, "/etc/wsbridge/authorized_keys");
  EXPECT_EQ(c.sink.jetstream.servers,
            (std::vector<std::string>{"nats://n1:4222", "tls://n2:4222"}));
  EXPECT_EQ(c.sink.jetstream.stream, "FEED");
  EXPECT_EQ(c.sink.jetstream.subject_prefix, "feeds.eu");
  EXPECT_FALSE(c.sink.jetstream.create_stream);
  EXPECT_EQ(c.sink.jetstream.replicas, 3);
  EXPECT_EQ(c.sink.jetstream.user, "bridge");
  EXPECT_EQ(c.sink.jetstream.password, "pw");
  EXPECT_EQ(c.sink.jetstream.token, "tk");
  EXPECT_EQ(c.sink.jetstream.credentials_file, "/etc/wsbridge/nats.creds");
  EXPECT_EQ(c.sink.jetstream.tls.ca_file, "/etc/wsbridge/nats-ca.pem");
  EXPECT_EQ(c.sink.jetstream.max_pending, 100);
  EXPECT_TRUE(c.sink.jetstream.required);
  EXPECT_EQ(c.http.listen, "");
  EXPECT_EQ(c.log.level, "debug");
  EXPECT_EQ(c.log.format, "json");
  for (const auto& [key, source] : c.sources) EXPECT_EQ(source, "file") << key;
}

TEST_F(ConfigTest, DottedKeysAndInlineTablesInFile) {
  std::string path = Write("c.toml",
                           "upstream.url = \"ws://a/\"\n"
                           "upstream.headers = { \"X-A\" = \"1\", X-B = \"2\" }\n"
                           "log = { level = \"warn\" }\n");
  Config c = LoadOk({"--config", path});
  EXPECT_EQ(c.upstream.url, "ws://a/");
  EXPECT_EQ(c.upstream.headers.size(), 2u);
  EXPECT_EQ(c.log.level, "warn");
}

TEST_F(ConfigTest, EnvBeatsFile) {
  std::string path = Write("c.toml",
                           "[upstream]\nurl = \"ws://file/\"\nconnect_timeout_ms = 1\n"
                           "[upstream.tls]\nverify = true\n[log]\nlevel = \"warn\"\n");
  Config c = LoadOk({"--config", path}, {{"WSBRIDGE_UPSTREAM_URL", "wss://env/"},
                                         {"WSBRIDGE_UPSTREAM_TLS_VERIFY", "no"},
                                         {"WSBRIDGE_RECONNECT_FATAL_CLOSE_CODES", "[1008, 4009]"},
                                         {"WSBRIDGE_UPSTREAM_SUBPROTOCOLS", R"(["x"])"},
                                         {"WSBRIDGE_JOURNAL_MAX_BYTES", "10MB"},
                                         {"WSBRIDGE_ZMQ_PUB_HWM", "7"},
                                         {"HOME", "/root"}});
  EXPECT_EQ(c.upstream.url, "wss://env/");
  EXPECT_FALSE(c.upstream.tls.verify);
  EXPECT_EQ(c.reconnect.fatal_close_codes, (std::vector<int>{1008, 4009}));
  EXPECT_EQ(c.upstream.subprotocols, (std::vector<std::string>{"x"}));
  EXPECT_EQ(c.journal.max_bytes, 10000000u);
  EXPECT_EQ(c.zmq.pub_hwm, 7);
  EXPECT_EQ(c.upstream.connect_timeout_ms, 1);  // file, not overridden
  EXPECT_EQ(c.log.level, "warn");
  EXPECT_EQ(c.sources["upstream.url"], "env");
  EXPECT_EQ(c.sources["upstream.tls.verify"], "env");
  EXPECT_EQ(c.sources["upstream.connect_timeout_ms"], "file");
  EXPECT_EQ(c.sources["log.level"], "file");
  EXPECT_EQ(c.sources["log.format"], "default");
}

TEST_F(ConfigTest, EnvBooleans) {
  for (const auto& [text, want] : std::vector<std::pair<std::string, bool>>{{"true", true},
                                                                            {"yes", true},
                                                                            {"1", true},
                                                                            {"false", false},
                                                                            {"no", false},
                                                                            {"0", false}}) {
    Config c = LoadOk({}, {{"WSBRIDGE_UPSTREAM_TLS_VERIFY", text}});
    EXPECT_EQ(c.upstream.tls.verify, want) << text;
  }
}

TEST_F(ConfigTest, CommandLineBeatsEnv) {
  std::string path = Write("c.toml", "[log]\nlevel = \"error\"\n");
  EnvMap env = {{"WSBRIDGE_UPSTREAM_URL", "ws://env/"},
                {"WSBRIDGE_STORAGE_PATH", "/env.db"},
                {"WSBRIDGE_ZMQ_PUB", "tcp://env:1"},
                {"WSBRIDGE_ZMQ_SEND", "tcp://env:2"},
                {"WSBRIDGE_ZMQ_REPLAY", "tcp://env:3"},
                {"WSBRIDGE_HTTP_LISTEN", "env:1"},
                {"WSBRIDGE_LOG_LEVEL", "warn"},
                {"WSBRIDGE_RECONNECT_JITTER", "equal"},
                {"WSBRIDGE_UPSTREAM_CONNECT_TIMEOUT_MS", "5"}};
  Config c = LoadOk({"--config",    path,
                     "--upstream",  "wss://flag/",
                     "--db",        "/flag.db",
                     "--pub",       "tcp://flag:1",
                     "--send",      "tcp://flag:2",
                     "--replay",    "tcp://flag:3",
                     "--http",      "flag:9",
                     "--log-level", "debug",
                     "--set",       "reconnect.jitter=none",
                     "--set",       "upstream.connect_timeout_ms=6"},
                    env);
  EXPECT_EQ(c.upstream.url, "wss://flag/");
  EXPECT_EQ(c.storage.path, "/flag.db");
  EXPECT_EQ(c.zmq.pub, "tcp://flag:1");
  EXPECT_EQ(c.zmq.send, "tcp://flag:2");
  EXPECT_EQ(c.zmq.replay, "tcp://flag:3");
  EXPECT_EQ(c.http.listen, "flag:9");
  EXPECT_EQ(c.log.level, "debug");
  EXPECT_EQ(c.reconnect.jitter, "none");
  EXPECT_EQ(c.upstream.connect_timeout_ms, 6);
  for (const char* key :
       {"upstream.url", "storage.path", "zmq.pub", "zmq.send", "zmq.replay", "http.listen",
        "log.level", "reconnect.jitter", "upstream.connect_timeout_ms"}) {
    EXPECT_EQ(c.sources[key], "flag") << key;
  }
  EXPECT_EQ(c.sources["log.format"], "default");
}

TEST_F(ConfigTest, SetComesAfterShortFlagsAndLastSetWins) {
  Config c = LoadOk({"--set", "upstream.url=ws://set/", "--upstream", "ws://short/", "--set",
                     "log.level=trace", "--set", "log.level=off"});
  EXPECT_EQ(c.upstream.url, "ws://set/");
  EXPECT_EQ(c.log.level, "off");
}

TEST_F(ConfigTest, SetAcceptsEveryType) {
  Config c = LoadOk({"--set", "upstream.tls.verify=false", "--set", "zmq.pub_hwm=12", "--set",
                     R"(protocol.on_open=["a", "b"])", "--set", "reconnect.fatal_close_codes=[]",
                     "--set", "journal.max_bytes=2GiB", "--set", "journal.max_rows=3", "--set",
                     "http.listen=", "--set", "protocol.resume={\"after\":{last_seq}}"});
  EXPECT_FALSE(c.upstream.tls.verify);
  EXPECT_EQ(c.zmq.pub_hwm, 12);
  EXPECT_EQ(c.protocol.on_open, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(c.reconnect.fatal_close_codes.empty());
  EXPECT_EQ(c.journal.max_bytes, 2ull << 30);
  EXPECT_EQ(c.journal.max_rows, 3u);
  EXPECT_EQ(c.http.listen, "");
  EXPECT_EQ(c.protocol.resume, "{\"after\":{last_seq}}");
}

TEST_F(ConfigTest, Headers) {
  std::string path = Write("c.toml", "[upstream.headers]\nX-A = \"file\"\nX-B = \"file\"\n");
  // --set of one header adds to / overrides the table from the file.
  Config c = LoadOk({"--config", path, "--set", "upstream.headers.X-B=flag", "--set",
                     "upstream.headers.Authorization=Bearer t=1"});
  EXPECT_EQ(c.upstream.headers,
            (std::map<std::string, std::string>{
                {"X-A", "file"}, {"X-B", "flag"}, {"Authorization", "Bearer t=1"}}));
  EXPECT_EQ(c.sources["upstream.headers"], "flag");

  // The environment replaces the whole table.
  c = LoadOk({"--config", path}, {{"WSBRIDGE_UPSTREAM_HEADERS", R"({ "X-C" = "env" })"}});
  EXPECT_EQ(c.upstream.headers, (std::map<std::string, std::string>{{"X-C", "env"}}));
  EXPECT_EQ(c.sources["upstream.headers"], "env");

  EXPECT_STARTS_WITH(LoadError({"--set", "upstream.headers.Bad Name=x"}),
                     "upstream.headers.Bad Name: not a valid header name");
  std::string bad_value = Write("bad.toml", "[upstream.headers]\nX-A = \"a\\r\\nX-Evil: 1\"\n");
  EXPECT_STARTS_WITH(LoadError({"--config", bad_value}), "upstream.headers.X-A: must not contain");
  std::string not_string = Write("ns.toml", "[upstream.headers]\nX-A = 5\n");
  EXPECT_STARTS_WITH(LoadError({"--config", not_string}), "upstream.headers.X-A: must be a string");
  EXPECT_STARTS_WITH(LoadError({}, {{"WSBRIDGE_UPSTREAM_HEADERS_X_TOKEN", "t"}}),
                     "WSBRIDGE_UPSTREAM_HEADERS_X_TOKEN: unknown");
}

TEST_F(ConfigTest, EnvReferencesExpandAtLoad) {
  std::string path = Write("c.toml",
                           "[upstream]\nurl = \"wss://${HOST}/feed\"\n"
                           "subprotocols = [\"${PROTO}\"]\n"
                           "[upstream.headers]\nAuthorization = \"Bearer ${TOKEN}\"\n");
  EnvMap env = {{"HOST", "h.example"},
                {"PROTO", "p1"},
                {"TOKEN", "s3cr3t"},
                {"DIR", "/data"},
                {"WSBRIDGE_STORAGE_PATH", "${DIR}/env.db"}};
  Config c = LoadOk({"--config", path, "--set", "log.format=${FMT}"}, [&] {
    auto e = env;
    e["FMT"] = "json";
    return e;
  }());
  EXPECT_EQ(c.upstream.url, "wss://h.example/feed");
  EXPECT_EQ(c.upstream.subprotocols, (std::vector<std::string>{"p1"}));
  EXPECT_EQ(c.upstream.headers.at("Authorization"), "Bearer s3cr3t");
  EXPECT_EQ(c.storage.path, "/data/env.db");
  EXPECT_EQ(c.log.format, "json");

  // Expansion happens before validation.
  EXPECT_STARTS_WITH(LoadError({"--set", "log.format=${FMT}"}, {{"FMT", "xml"}}),
                     "log.format: must be one of");
}

TEST_F(ConfigTest, UnsetVariableIsAnError) {
  std::string path = Write("c.toml", "[upstream.headers]\nAuthorization = \"Bearer ${TOKEN}\"\n");
  std::string e = LoadError({"--config", path});
  EXPECT_STARTS_WITH(e, "upstream.headers.Authorization: ");
  EXPECT_CONTAINS(e, "TOKEN is not set");
  e = LoadError({"--set", "upstream.auth_command=${NOPE}"});
  EXPECT_STARTS_WITH(e, "upstream.auth_command: ");
  EXPECT_CONTAINS(e, "NOPE");
  EXPECT_STARTS_WITH(LoadError({"--set", "protocol.resume=${oops"}),
                     "protocol.resume: unterminated");
  EXPECT_STARTS_WITH(LoadError({"--set", "protocol.resume=${a b}"}),
                     "protocol.resume: bad variable");
}

TEST_F(ConfigTest, FileReferencesAreKeptAndReadOnEveryExpansion) {
  std::string secret = Write("token", "first\n");
  Config c = LoadOk({"--set", "upstream.headers.Authorization=Bearer ${file:" + secret + "}"});
  const std::string& raw = c.upstream.headers.at("Authorization");
  EXPECT_EQ(raw, "Bearer ${file:" + secret + "}");

  auto v = ExpandFileRefs(raw);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "Bearer first");

  Write("token", "second\r\n");  // rotated
  v = ExpandFileRefs(raw);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "Bearer second");

  Write("token", "third\n\n");  // only one newline is stripped
  EXPECT_EQ(ExpandFileRefs(raw).value(), "Bearer third\n");
  Write("token", "x");
  EXPECT_EQ(ExpandFileRefs("${file:" + secret + "}-${file:" + secret + "}").value(), "x-x");
  EXPECT_EQ(ExpandFileRefs("no refs, ${HOME} left alone").value(), "no refs, ${HOME} left alone");

  auto missing = ExpandFileRefs("${file:" + dir_ + "/missing}");
  ASSERT_FALSE(missing.ok());
  EXPECT_CONTAINS(missing.status().message(), dir_ + "/missing");
  EXPECT_FALSE(ExpandFileRefs("${file:/x").ok());
}

// Every error class names its key first and is one line (LoadError checks that).
TEST_F(ConfigTest, BadValuesNameTheKey) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"reconnect.jitter=fast",
       R"(reconnect.jitter: must be one of full, equal, decorrelated, none (got "fast"))"},
      {"storage.durability=disk", "storage.durability: must be one of process, power"},
      {"log.level=verbose", "log.level: must be one of trace, debug, info, warn, error, off"},
      {"log.format=xml", "log.format: must be one of text, json"},
      {"upstream.url=http://x/",
       R"(upstream.url: must be a ws:// or wss:// URL (got "http://x/"))"},
      {"upstream.url=ws://", "upstream.url: must be a ws:// or wss:// URL"},
      {"upstream.proxy=socks5://p:1", "upstream.proxy: must be http://"},
      {"upstream.connect_timeout_ms=0", "upstream.connect_timeout_ms: must be > 0 (got 0)"},
      {"upstream.connect_timeout_ms=-5", "upstream.connect_timeout_ms: must be > 0 (got -5)"},
      {"upstream.connect_timeout_ms=ten",
       R"(upstream.connect_timeout_ms: must be an integer (got "ten"))"},
      {"upstream.connect_timeout_ms=99999999999999999999",
       "upstream.connect_timeout_ms: is out of range"},
      {"upstream.max_message_bytes=0", "upstream.max_message_bytes: must be > 0"},
      {"reconnect.base_delay_ms=0", "reconnect.base_delay_ms: must be > 0"},
      {"reconnect.max_delay_ms=100",
       "reconnect.max_delay_ms: must be >= reconnect.base_delay_ms (500) (got 100)"},
      {"reconnect.max_attempts=-1", "reconnect.max_attempts: must be >= 0"},
      {"reconnect.fatal_close_codes=[1008, 99]",
       "reconnect.fatal_close_codes[1]: must be between 1000 and 4999 (got 99)"},
      {R"(reconnect.fatal_close_codes=["x"])",
       "reconnect.fatal_close_codes[0]: must be an integer"},
      {"reconnect.fatal_close_codes=1008", "reconnect.fatal_close_codes: must be an array"},
      {"protocol.decompress=lz4",
       "protocol.decompress: must be one of none, auto, gzip, zlib, deflate (got \"lz4\")"},
      {"protocol.framing=socketio", "protocol.framing: must be one of json, engineio"},
      {"protocol.socketio_namespace=chat",
       "protocol.socketio_namespace: must be a socket.io namespace such as / or /chat"},
      {"protocol.socketio_auth=token=abc",
       "protocol.socketio_auth: must be a JSON object such as {\"token\":\"...\"} or \"\" "
       "(got a value not shown)"},
      {"upstream.permessage_deflate=maybe", "upstream.permessage_deflate: must be one of true"},
      {"protocol.replies=ping", "protocol.replies: must be a TOML array of tables"},
      {"zmq.ipc_mode=rw", "zmq.ipc_mode: must be an octal file mode such as \"0660\" (got \"rw\")"},
      {"zmq.ipc_mode=1777", "zmq.ipc_mode: must be an octal file mode"},
      {"zmq.curve.secret_key_file=/k",
       "zmq.curve.authorized_keys_file: must be set with zmq.curve.secret_key_file"},
      {"reconnect.fatal_close_codes=[1008", "reconnect.fatal_close_codes: must be a TOML array"},
      {"protocol.on_open=[1]", "protocol.on_open[0]: must be a string (got 1)"},
      {"heartbeat.timeout_ms=0", "heartbeat.timeout_ms: must be > 0"},
      {"heartbeat.interval_ms=-1", "heartbeat.interval_ms: must be >= 0"},
      {"heartbeat.app_pong=type=", "heartbeat.app_pong: must be field=value"},
      {"heartbeat.app_pong=a b=c", "heartbeat.app_pong: must be field=value"},
      {"protocol.ack_match=ack", R"(protocol.ack_match: must be field=value (e.g. type=ack))"},
      {"protocol.ack_match==ack", "protocol.ack_match: must be field=value"},
      {"protocol.seq_field=a..b", "protocol.seq_field: must be a dotted field path"},
      {"protocol.ack_id_field=", "protocol.ack_id_field: must be a dotted field path"},
      {"zmq.pub_hwm=-1", "zmq.pub_hwm: must be between 0 and 2147483647 (got -1)"},
      {"zmq.pub_hwm=3000000000", "zmq.pub_hwm: must be between 0 and 2147483647"},
      {"zmq.pub=localhost", "zmq.pub: must be a ZeroMQ endpoint"},
      {"http.listen=localhost", "http.listen: must be host:port"},
      {"http.listen=h:70000", "http.listen: must be host:port"},
      {"storage.path=", "storage.path: must not be empty"},
      {"storage.outbox_max_messages=0", "storage.outbox_max_messages: must be > 0"},
      {"storage.check_interval_s=-1", "storage.check_interval_s: must be >= 0"},
      {"storage.page_size=256", "storage.page_size: must be between 512 and 65536"},
      {"storage.page_size=3000", "storage.page_size: must be a power of two from 512 to 65536"},
      {"upstream.tls.verify=maybe",
       R"(upstream.tls.verify: must be one of true, false, yes, no, 1, 0 (got "maybe"))"},
      {"journal.max_bytes=1TB", R"(journal.max_bytes: must be a byte count)"},
      {"journal.max_bytes=-1", "journal.max_bytes: must be >= 0"},
      {"upstream.tls.cert_file=/c.pem", "upstream.tls.key_file: "},
      {"upstream.headers=[1]", "upstream.headers: must be a table"},
  };
  for (const auto& [set, want] : cases) {
    EXPECT_STARTS_WITH(LoadError({"--set", set}), want) << "--set " << set;
  }
  // The same checks apply to the environment.
  EXPECT_STARTS_WITH(
      LoadError({}, {{"WSBRIDGE_RECONNECT_JITTER", "fast"}}),
      R"(reconnect.jitter: must be one of full, equal, decorrelated, none (got "fast"))");
  EXPECT_STARTS_WITH(LoadError({}, {{"WSBRIDGE_ZMQ_PUB_HWM", ""}}),
                     "zmq.pub_hwm: must be an integer");
  EXPECT_STARTS_WITH(LoadError({"--log-level", "loud"}), "log.level: must be one of");
}

TEST_F(ConfigTest, ReplyRulesFromFileAndCommandLine) {
  Config c = LoadOk({"--config", Write("r.toml", R"(
[[protocol.replies]]
field = "ping"
reply = "{\"pong\":{{ping}}}"

[[protocol.replies]]
field = "method"
equals = "heartbeat"
reply = "${REPLY}"
consume = false

[[protocol.replies]]
text = "2"
reply = "3"
)")},
                    {{"REPLY", R"({"method":"public/test"})"}});
  ASSERT_EQ(c.protocol.replies.size(), 3u);
  EXPECT_EQ(c.protocol.replies[0].field, "ping");
  EXPECT_FALSE(c.protocol.replies[0].equals.has_value());
  EXPECT_EQ(c.protocol.replies[0].reply, R"({"pong":{{ping}}})");
  EXPECT_TRUE(c.protocol.replies[0].consume);
  EXPECT_EQ(c.protocol.replies[1].equals, std::optional<std::string>("heartbeat"));
  EXPECT_EQ(c.protocol.replies[1].reply, R"({"method":"public/test"})");  // ${ENV} expanded
  EXPECT_FALSE(c.protocol.replies[1].consume);
  EXPECT_EQ(c.protocol.replies[2].text, "2");

  Config f = LoadOk({"--set", R"(protocol.replies=[{ text = "ping", reply = "pong" }])"});
  ASSERT_EQ(f.protocol.replies.size(), 1u);
  EXPECT_EQ(f.protocol.replies[0].reply, "pong");
  Config e = LoadOk({}, {{"WSBRIDGE_PROTOCOL_REPLIES", R"([{ field = "a.b", reply = "x" }])"}});
  ASSERT_EQ(e.protocol.replies.size(), 1u);
  EXPECT_EQ(e.protocol.replies[0].field, "a.b");
}

TEST_F(ConfigTest, ReplyRuleErrorsNameTheRuleAndKey) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"([{ reply = "x" }])", "protocol.replies[0]: needs exactly one of text or field"},
      {R"([{ text = "a", reply = "b" }, { text = "a", field = "b", reply = "c" }])",
       "protocol.replies[1]: needs exactly one of text or field"},
      {R"([{ text = "ping" }])", "protocol.replies[0].reply: must be set"},
      {R"([{ text = "ping", reply = 3 }])", "protocol.replies[0].reply: must be a string (got 3)"},
      {R"([{ text = "ping", reply = "p", consume = "no" }])",
       "protocol.replies[0].consume: must be true or false"},
      {R"([{ text = "ping", reply = "p", then = "x" }])",
       "protocol.replies[0].then: unknown key"},
      {R"([{ text = "ping", equals = "x", reply = "p" }])",
       "protocol.replies[0].equals: only with field, not with text"},
      {R"([{ field = "a..b", reply = "p" }])", "protocol.replies[0].field: must be a dotted"},
      {R"(["ping"])", "protocol.replies[0]: must be a table"},
  };
  for (const auto& [value, want] : cases) {
    EXPECT_STARTS_WITH(LoadError({"--set", "protocol.replies=" + value}), want) << value;
  }
}

TEST_F(ConfigTest, EngineIoFramingRefusesAckMatch) {
  EXPECT_STARTS_WITH(LoadError({"--set", "protocol.framing=engineio", "--set",
                                "protocol.ack_match=type=ack"}),
                     "protocol.ack_match: not supported with protocol.framing = \"engineio\"");
  Config c = LoadOk({"--set", "protocol.framing=engineio", "--set",
                     R"(protocol.socketio_auth={"token":"abc"})", "--set",
                     "protocol.socketio_namespace=/chat"});
  EXPECT_EQ(c.protocol.socketio_namespace, "/chat");
  EXPECT_CONTAINS(ToToml(c), "socketio_auth = \"<redacted>\"");
}

TEST_F(ConfigTest, UrlCredentialsAreNotEchoedInErrors) {
  std::string e = LoadError({"--set", "upstream.proxy=https://user:pw@proxy:1"});
  EXPECT_EQ(e.find("pw"), std::string::npos) << e;
  EXPECT_CONTAINS(e, "<redacted>@proxy:1");
}

// SPEC §11: the sink's servers are checked one by one (the error names the element), the
// stream name and subject prefix by JetStream's rules, and its secrets never shown.
TEST_F(ConfigTest, SinkKeysCheckedAndSecretsRedacted) {
  EXPECT_EQ(LoadError({"--set", R"(sink.jetstream.servers=["nats://a:4222", "http://b"])"}),
            "sink.jetstream.servers[1]: must be a NATS server URL such as nats://127.0.0.1:4222 "
            "or tls://host:4222 (got \"http://b\")");
  EXPECT_STARTS_WITH(LoadError({"--set", "sink.jetstream.stream=A.B"}),
                     "sink.jetstream.stream: must be a JetStream stream name");
  EXPECT_STARTS_WITH(LoadError({"--set", "sink.jetstream.subject_prefix=feeds.>"}),
                     "sink.jetstream.subject_prefix: must be a NATS subject of literal tokens");
  EXPECT_STARTS_WITH(LoadError({"--set", "sink.jetstream.subject_prefix=a..b"}),
                     "sink.jetstream.subject_prefix: must be a NATS subject");
  EXPECT_STARTS_WITH(LoadError({"--set", "sink.jetstream.replicas=7"}), "sink.jetstream.replicas:");
  Config c = LoadOk({"--set", R"(sink.jetstream.servers=["nats://u:secretpw@n1:4222"])", "--set",
                     "sink.jetstream.password=pw1", "--set", "sink.jetstream.token=tk1"});
  const std::string toml = ToToml(c);
  EXPECT_CONTAINS(toml, R"(servers = ["nats://<redacted>@n1:4222"])");
  EXPECT_CONTAINS(toml, "password = \"<redacted>\"");
  EXPECT_CONTAINS(toml, "token = \"<redacted>\"");
  EXPECT_EQ(toml.find("secretpw"), std::string::npos);
  EXPECT_EQ(toml.find("pw1"), std::string::npos);
  EXPECT_EQ(toml.find("tk1"), std::string::npos);
}

TEST_F(ConfigTest, WrongTypesInFile) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[upstream]\nconnect_timeout_ms = \"10\"\n",
       R"(upstream.connect_timeout_ms: must be an integer (got "10"))"},
      {"[upstream]\nconnect_timeout_ms = 1.5\n",
       "upstream.connect_timeout_ms: must be an integer (got 1.5)"},
      {"[upstream.tls]\nverify = \"yes\"\n",
       R"(upstream.tls.verify: must be true or false (got "yes"))"},
      {"[upstream]\nurl = 5\n", "upstream.url: must be a string (got 5)"},
      {"[upstream]\nsubprotocols = \"a\"\n", "upstream.subprotocols: must be an array"},
      {"[log]\nlevel = [\"info\"]\n", "log.level: must be a string (got an array)"},
      {"upstream = 5\n", "upstream: must be a table (got 5)"},
      {"[upstream.tls]\nverify = { x = 1 }\n",
       "upstream.tls.verify: must be true or false (got a table)"},
      {"[journal]\nmax_bytes = \"12 parsecs\"\n", "journal.max_bytes: must be a byte count"},
      {"[reconnect]\njitter = \"fast\"\n", "reconnect.jitter: must be one of"},
  };
  for (const auto& [toml, want] : cases) {
    EXPECT_STARTS_WITH(LoadError({"--config", Write("t.toml", toml)}), want) << toml;
  }
}

TEST_F(ConfigTest, MaxBytesUnits) {
  const std::vector<std::pair<std::string, uint64_t>> cases = {{"0", 0},
                                                               {"4096", 4096},
                                                               {"10B", 10},
                                                               {"2KB", 2000},
                                                               {"3MB", 3000000},
                                                               {"1GB", 1000000000},
                                                               {"2KiB", 2048},
                                                               {"512MiB", 512ull << 20},
                                                               {"1GiB", 1ull << 30},
                                                               {"4 GiB", 4ull << 30}};
  for (const auto& [text, want] : cases) {
    EXPECT_EQ(LoadOk({"--set", "journal.max_bytes=" + text}).journal.max_bytes, want) << text;
    std::string path = Write("b.toml", "[journal]\nmax_bytes = \"" + text + "\"\n");
    EXPECT_EQ(LoadOk({"--config", path}).journal.max_bytes, want) << text;
  }
  std::string path = Write("b.toml", "[journal]\nmax_bytes = 12345\n");
  EXPECT_EQ(LoadOk({"--config", path}).journal.max_bytes, 12345u);
  for (const char* bad : {"1.5GiB", "GiB", "1gib", "1 TiB", "99999999999GiB", ""}) {
    EXPECT_STARTS_WITH(LoadError({"--set", std::string("journal.max_bytes=") + bad}),
                       "journal.max_bytes: must be")
        << bad;
  }
}

TEST_F(ConfigTest, TomlSyntaxErrorGivesTheLine) {
  std::string path = Write("bad.toml", "[upstream]\nurl = \"ws://x/\"\nconnect_timeout_ms = \n");
  std::string e = LoadError({"--config", path});
  EXPECT_STARTS_WITH(e, path + " line 3: TOML syntax error");
}

TEST_F(ConfigTest, MissingConfigFileNamesThePath) {
  std::string e = LoadError({"--config", dir_ + "/nope.toml"});
  EXPECT_STARTS_WITH(e, "--config: cannot read " + dir_ + "/nope.toml");
  EXPECT_CONTAINS(e, "No such file");
}

TEST_F(ConfigTest, UnknownKeys) {
  EXPECT_EQ(LoadError({"--config", Write("u.toml", "[upstream]\nurl = \"ws://x/\"\nurll = 1\n")}),
            "upstream.urll: unknown key (" + dir_ + "/u.toml line 3)");
  EXPECT_STARTS_WITH(LoadError({"--config", Write("u.toml", "[bogus]\nx = 1\n")}),
                     "bogus: unknown key");
  EXPECT_STARTS_WITH(LoadError({"--config", Write("u.toml", "[upstream.tls.x]\n")}),
                     "upstream.tls.x: unknown key");
  EXPECT_STARTS_WITH(LoadError({"--config", Write("u.toml", "top = 1\n")}), "top: unknown key");
  EXPECT_STARTS_WITH(LoadError({}, {{"WSBRIDGE_UPSTREAM_URLL", "ws://x/"}}),
                     "WSBRIDGE_UPSTREAM_URLL: unknown configuration variable");
  EXPECT_STARTS_WITH(LoadError({"--set", "upstream.urll=1"}), "upstream.urll: unknown key");
  EXPECT_STARTS_WITH(LoadError({"--set", "upstream=1"}), "upstream: unknown key");
  EXPECT_STARTS_WITH(LoadError({"--set", "novalue"}), "--set: expected section.key=value");
  // Variables outside the WSBRIDGE_ prefix are not ours.
  LoadOk({}, {{"WSBRIDGEX", "1"}, {"PATH", "/bin"}});
}

TEST_F(ConfigTest, HelpAndVersion) {
  ::testing::internal::CaptureStdout();
  auto r = Load({"--help"});
  std::string out = ::testing::internal::GetCapturedStdout();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->exit_now);
  EXPECT_EQ(r->exit_code, 0);
  for (const char* flag : {"--config", "--set", "--upstream", "--db", "--pub", "--send", "--replay",
                           "--http", "--log-level", "--print-config", "--version"}) {
    EXPECT_CONTAINS(out, flag);
  }

  ::testing::internal::CaptureStdout();
  r = Load({"--version"});
  out = ::testing::internal::GetCapturedStdout();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->exit_now);
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(out, std::string("wsbridge ") + WSBRIDGE_VERSION + "\n");

  r = Load({"--print-config"});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->print_config);
  EXPECT_FALSE(r->exit_now);
  EXPECT_FALSE(Load({})->print_config);
}

TEST_F(ConfigTest, BadFlags) {
  EXPECT_CONTAINS(LoadError({"--bogus"}), "--bogus");
  EXPECT_CONTAINS(LoadError({"stray"}), "stray");
  EXPECT_CONTAINS(LoadError({"--upstream"}), "--upstream");
}

TEST_F(ConfigTest, ProcessEnvReadsTheEnvironment) {
  EnvLookup env = ProcessEnv();
  std::string v;
  ASSERT_EQ(setenv("WSBRIDGE_CONFIG_TEST_PROBE", "x1", 1), 0);
  EXPECT_TRUE(env("WSBRIDGE_CONFIG_TEST_PROBE", &v));
  EXPECT_EQ(v, "x1");
  // ... and LoadConfig(ProcessEnv()) walks environ, so it sees this unknown variable.
  const char* argv[] = {"wsbridge"};
  auto r = LoadConfig(1, argv, env);
  ASSERT_FALSE(r.ok());
  EXPECT_STARTS_WITH(r.status().message(), "WSBRIDGE_CONFIG_TEST_PROBE: unknown");
  unsetenv("WSBRIDGE_CONFIG_TEST_PROBE");
  EXPECT_FALSE(env("WSBRIDGE_CONFIG_TEST_PROBE", &v));
  // Any other lookup cannot enumerate: only known names are consulted.
  EnvLookup fake = [](const std::string& name, std::string* value) {
    if (name != "WSBRIDGE_LOG_LEVEL") return false;
    *value = "warn";
    return true;
  };
  auto f = LoadConfig(1, argv, fake);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->config.log.level, "warn");
}

TEST_F(ConfigTest, ToTomlRedactsSecrets) {
  std::string path = Write("c.toml",
                           "[upstream]\nurl = \"wss://alice:hunter2@feed.example.com/x?a=b@c\"\n"
                           "proxy = \"http://bob:pw@proxy:3128\"\n"
                           "[upstream.headers]\nAuthorization = \"Bearer s3cr3t\"\n"
                           "X-Key = \"${file:/run/secret}\"\n");
  Config c = LoadOk({"--config", path});
  std::string toml = ToToml(c);
  for (const char* secret : {"alice", "hunter2", "bob", ":pw", "s3cr3t", "/run/secret"}) {
    EXPECT_EQ(toml.find(secret), std::string::npos) << secret << " in\n" << toml;
  }
  EXPECT_CONTAINS(toml, "url = \"wss://<redacted>@feed.example.com/x?a=b@c\"  # file\n");
  EXPECT_CONTAINS(toml, "proxy = \"http://<redacted>@proxy:3128\"  # file\n");
  EXPECT_CONTAINS(
      toml,
      "headers = { \"Authorization\" = \"<redacted>\", \"X-Key\" = \"<redacted>\" }  # file\n");
  EXPECT_CONTAINS(toml, "\n[upstream.tls]\nverify = true  # default\n");
}

TEST_F(ConfigTest, ToTomlEveryLineHasItsSource) {
  Config c = LoadOk({"--set", "log.level=warn"}, {{"WSBRIDGE_LOG_FORMAT", "json"}});
  std::string toml = ToToml(c);
  EXPECT_CONTAINS(toml, "level = \"warn\"  # flag\n");
  EXPECT_CONTAINS(toml, "format = \"json\"  # env\n");
  EXPECT_CONTAINS(toml, "fatal_close_codes = [1008, 4001, 4003]  # default\n");
  EXPECT_CONTAINS(toml, "max_bytes = 1073741824  # default\n");
  size_t keys = 0, start = 0;
  for (size_t end; (end = toml.find('\n', start)) != std::string::npos; start = end + 1) {
    std::string line = toml.substr(start, end - start);
    if (line.empty() || line[0] == '[') continue;
    ++keys;
    EXPECT_NE(line.find(" = "), std::string::npos) << line;
    EXPECT_NE(line.find("  # "), std::string::npos) << line;
  }
  EXPECT_EQ(keys, 65u);
}

TEST_F(ConfigTest, ToTomlRoundTrips) {
  // Everything but secrets (which ToToml redacts), with characters that need escaping.
  Config c = LoadOk({"--set", "upstream.url=wss://h.example:8443/a b?c=\"d\"",
                     "--set", R"(upstream.subprotocols=["v1", "v\\2"])",
                     "--set", "upstream.connect_timeout_ms=1234",
                     "--set", "upstream.max_message_bytes=77",
                     "--set", "upstream.tls.verify=0",
                     "--set", "upstream.tls.ca_file=/ca dir/ca.pem",
                     "--set", "upstream.auth_command=printf 'X-T: %s\\n' \"$(cat /t)\"",
                     "--set", "heartbeat.interval_ms=0",
                     "--set", "heartbeat.app_ping={\"type\":\"ping\"}",
                     "--set", "heartbeat.app_pong=pong",
                     "--set", "reconnect.base_delay_ms=10",
                     "--set", "reconnect.max_delay_ms=20",
                     "--set", "reconnect.jitter=equal",
                     "--set", "reconnect.max_attempts=3",
                     "--set", "reconnect.fatal_close_codes=[4000]",
                     "--set", "protocol.seq_field=",
                     "--set", R"(protocol.on_open=["{\"op\":\"sub\"}\t", "ü"])",
                     "--set", "protocol.ack_match=kind=ack",
                     "--set", R"(protocol.replies=[{ field = "p.q", equals = "a\"b", reply = "{{p}}\n", consume = false }, { text = "2", reply = "3" }])",
                     "--set", "protocol.decompress=auto",
                     "--set", "protocol.socketio_namespace=/x",
                     "--set", "upstream.permessage_deflate=false",
                     "--set", "storage.durability=power",
                     "--set", "journal.max_bytes=3MiB",
                     "--set", "journal.max_age_s=0",
                     "--set", "zmq.pub_hwm=0",
                     "--set", "http.listen=",
                     "--set", "log.format=json"});
  std::string toml = ToToml(c);
  auto again = Load({"--config", Write("round.toml", toml)});
  ASSERT_TRUE(again.ok()) << again.status().ToString() << "\n" << toml;
  EXPECT_EQ(Fields(again->config), Fields(c)) << toml;
  EXPECT_EQ(ToToml(again->config).find("# flag"), std::string::npos);

  // Defaults round-trip too.
  Config d = LoadOk({});
  auto d2 = Load({"--config", Write("d.toml", ToToml(d))});
  ASSERT_TRUE(d2.ok()) << d2.status().ToString();
  EXPECT_EQ(Fields(d2->config), Fields(d));
}

TEST_F(ConfigTest, ToTomlOfAHandMadeConfig) {
  Config c;  // no sources recorded: reported as defaults
  c.upstream.headers["X-Token"] = "t";
  std::string toml = ToToml(c);
  EXPECT_CONTAINS(toml, "[upstream]\nurl = \"ws://127.0.0.1:8765/feed\"  # default\n");
  EXPECT_CONTAINS(toml, "headers = { \"X-Token\" = \"<redacted>\" }  # default\n");
}

}  // namespace
}  // namespace wsbridge
