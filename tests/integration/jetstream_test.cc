// The JetStream sink against real nats-server processes (SPEC §11, G9, issue 19): the reference
// upstream, the bridge, one server or a three-server cluster (nats_harness.h), and the stream
// read back with nats.c and compared with the journal.
//
//   EveryRowOnceAcrossBridgeAndServerKills   single server: three SIGKILLs of the bridge and
//                                            one of the server under inbound load
//   ClusterReplicas3SurvivesAServerKill      replicas 3, under load: three SIGKILLs of the
//                                            bridge, and of the stream's leader and its restart
//   AbsentAtStartThenCatchesUp               inbound unaffected, /readyz 200 (not required) or
//                                            503 naming the sink (required), then exactly once
//   WrongCredentialsRetriedUntilRotated      "authentication refused", counted, retried; a
//                                            password file fixed later is used without restart
//   TokenAuthentication                      sink.jetstream.token, never in the log
//   ForeignMessageCostsAConflictNotADuplicate  someone else publishes into the subjects
//   TlsWithItsCaFile                         tls:// trusted through tls.ca_file; without it
//                                            refused with the reason
//   StreamWithOtherSubjectsIsLeftAlone       a clear error, nothing published
//   RejectedPublishesRetriedNeverSkipped     a full stream (discard new): counted, retried, the
//                                            rows go in once there is room
//   BlackholeGrowsTheLagNotInbound           the fault proxy between the bridge and the server
//   NewEpochStartsANewHistory                a replaced database: its rows follow, new epoch
//   RetentionWaitsForTheSinkButNotTheRowBound  max_age_s keeps undelivered rows; max_rows trims
//                                            them and the sink counts and logs the range
//
// "Exactly once" is checked the same way everywhere (ExpectExactlyOnce): the stream's messages of
// the database's epoch are the journal's rows, each once, in seq order, payloads byte-equal,
// headers as SPEC §11, and no Nats-Msg-Id appears twice in the stream.
//
// The test's main thread only.
#include <gtest/gtest.h>

#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "integration/harness.h"
#include "integration/nats_harness.h"

namespace wsbridge::testing {
namespace {

using namespace std::chrono_literals;

std::string Hex16(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

// A sample of the daemon's /metrics (harness).
double Metric(int http_port, const std::string& sample) { return MetricAt(http_port, sample); }

// The stream the sink would create (WSBRIDGE, wsbridge.>), for a test to make it first.
StreamSpec OurStream() {
  StreamSpec spec;
  spec.name = "WSBRIDGE";
  spec.subjects = {"wsbridge.>"};
  return spec;
}

class JetStreamTest : public ::testing::Test {
 protected:
  // The reference upstream, producing `count` messages at `rate` per second, on upstream_port_
  // when a test chose it already (to start the bridges first), else on one the OS picks.
  void StartFeed(int count, int rate) {
    upstream_ = StartUpstream(dir_.path(),
                              {"--rate=" + std::to_string(rate), "--count=" + std::to_string(count),
                               "--history=" + std::to_string(count), "--topics=ticks,trades"},
                              &upstream_port_);
    ASSERT_NE(upstream_port_, 0) << upstream_.Stderr();
  }

  // The bridge on `db` with the sink pointed at `servers` (TOML array text), flags appended.
  OsPortBridge StartSinkBridge(const std::string& servers, std::vector<std::string> flags = {},
                               const std::string& db = "journal.db",
                               const std::string& tag = "bridge") {
    std::vector<std::string> all = {"--set=sink.jetstream.servers=" + servers,
                                    "--set=reconnect.base_delay_ms=50",
                                    "--set=reconnect.max_delay_ms=500"};
    all.insert(all.end(), flags.begin(), flags.end());
    OsPortBridge b =
        StartOsPortBridge(dir_.path(), "ws://127.0.0.1:" + std::to_string(upstream_port_) + "/feed",
                          dir_.File(db), all, tag);
    EXPECT_NE(b.http_port, 0) << b.child.Stderr();
    return b;
  }

  static std::string Servers(const std::string& url) { return "[\"" + url + "\"]"; }

  // Until the journal holds seq `last` and the stream acknowledged it.
  static bool WaitCaughtUp(const OsPortBridge& b, uint64_t last,
                           std::chrono::milliseconds timeout = 60s) {
    return WaitFor(
        [&] {
          return Metric(b.http_port, "wsbridge_last_seq") == static_cast<double>(last) &&
                 Metric(b.http_port, "wsbridge_sink_acked_seq") == static_cast<double>(last);
        },
        timeout);
  }

  // The stream's messages of the database's epoch are exactly its journal rows (see the top).
  void ExpectExactlyOnce(const std::string& urls, const std::string& db,
                         const std::string& stream = "WSBRIDGE",
                         const std::string& prefix = "wsbridge", const NatsAuth& auth = {}) {
    auto cursor = ReadCursor(dir_.File(db));
    ASSERT_TRUE(cursor.has_value());
    const std::vector<JournalRow> rows = ReadJournalRows(dir_.File(db));
    ASSERT_FALSE(rows.empty());
    ASSERT_OK_AND_ASSIGN(std::vector<StreamMessage> msgs, ReadStream(urls, stream, auth));
    std::set<std::string> ids;
    std::vector<const StreamMessage*> ours;
    for (const StreamMessage& m : msgs) {
      EXPECT_TRUE(
          ids.insert(m.headers.count("Nats-Msg-Id") ? m.headers.at("Nats-Msg-Id") : "").second)
          << "Nats-Msg-Id twice: " << m.headers.at("Nats-Msg-Id");
      auto e = m.headers.find("Wsbridge-Epoch");
      if (e != m.headers.end() && e->second == Hex16(cursor->epoch)) ours.push_back(&m);
    }
    ASSERT_EQ(ours.size(), rows.size()) << "stream messages of this epoch vs journal rows";
    for (size_t i = 0; i < rows.size(); ++i) {
      const JournalRow& r = rows[i];
      const StreamMessage& m = *ours[i];
      SCOPED_TRACE("journal seq " + std::to_string(r.seq));
      ASSERT_EQ(m.headers.at("Wsbridge-Seq"), std::to_string(r.seq));
      ASSERT_EQ(m.data, r.msg.payload);
      EXPECT_EQ(m.subject, prefix + "." + r.msg.topic);
      EXPECT_EQ(m.headers.at("Nats-Msg-Id"), Hex16(cursor->epoch) + "-" + std::to_string(r.seq));
      EXPECT_EQ(m.headers.at("Wsbridge-Topic"), r.msg.topic);
      EXPECT_EQ(m.headers.at("Wsbridge-Upstream-Seq"), std::to_string(r.msg.upstream_seq));
      EXPECT_EQ(m.headers.at("Wsbridge-Received-At"), std::to_string(r.msg.received_at_unix_ns));
    }
  }

  TempDir dir_;
  int upstream_port_ = 0;
  Child upstream_;
};

TEST_F(JetStreamTest, EveryRowOnceAcrossBridgeAndServerKills) {
  NatsServer nats(dir_.path());
  ASSERT_OK(nats.Start());
  // A duplicate window of 100 ms: Nats-Msg-Id cannot hide a row published twice, so what is
  // tested is where the sink resumes and the expected last sequence (outside the window).
  StreamSpec spec = OurStream();
  spec.duplicate_window_ns = 100000000;
  ASSERT_OK(CreateStream(nats.url(), spec));
  constexpr int kRows = 12000;
  StartFeed(kRows, 2000);
  OsPortBridge bridge = StartSinkBridge(Servers(nats.url()));
  // Three SIGKILLs of the bridge while it publishes, each restarted on the same database.
  for (int kill = 1; kill <= 3; ++kill) {
    const double at = kRows * kill / 5.0;
    ASSERT_TRUE(WaitFor([&] { return Metric(bridge.http_port, "wsbridge_sink_acked_seq") >= at; }))
        << bridge.child.Stderr();
    bridge.child.Kill(SIGKILL);
    bridge = StartSinkBridge(Servers(nats.url()));
  }
  // And the server, killed and restarted mid-stream.
  const double at = kRows * 4 / 5.0;
  ASSERT_TRUE(WaitFor([&] { return Metric(bridge.http_port, "wsbridge_sink_acked_seq") >= at; }));
  nats.Kill(SIGKILL);
  ASSERT_OK(nats.Restart());
  ASSERT_TRUE(WaitCaughtUp(bridge, kRows)) << bridge.child.Stderr();
  EXPECT_GE(Metric(bridge.http_port, "wsbridge_sink_errors_total{reason=\"disconnected\"}") +
                Metric(bridge.http_port, "wsbridge_sink_errors_total{reason=\"connect\"}"),
            1);
  ExpectExactlyOnce(nats.url(), "journal.db");
  const std::string log = bridge.child.Stderr();
  EXPECT_GE(LinesWith(log, "holds this journal up to seq").size(), 3u) << log;
}

TEST_F(JetStreamTest, ClusterReplicas3SurvivesAServerKill) {
  NatsCluster cluster(dir_.path());
  ASSERT_OK(cluster.Start());
  std::string servers = "[";
  for (const std::string& url : cluster.url_list()) servers += "\"" + url + "\",";
  servers.back() = ']';
  constexpr int kRows = 8000;
  StartFeed(kRows, 1000);
  OsPortBridge bridge = StartSinkBridge(servers, {"--set=sink.jetstream.replicas=3"});
  auto acked_at_least = [&](double n) {
    return WaitFor([&] { return Metric(bridge.http_port, "wsbridge_sink_acked_seq") >= n; }, 90s);
  };
  // Under load: the bridge killed three times, and the stream's leader killed and restarted
  // between them; the other two servers elect another leader and go on.
  ASSERT_TRUE(acked_at_least(1000)) << bridge.child.Stderr();
  bridge.child.Kill(SIGKILL);
  bridge = StartSinkBridge(servers, {"--set=sink.jetstream.replicas=3"});
  ASSERT_TRUE(acked_at_least(2000)) << bridge.child.Stderr();
  ASSERT_OK_AND_ASSIGN(StreamState state, GetStreamState(cluster.urls(), "WSBRIDGE"));
  EXPECT_EQ(state.replicas, 3);
  const int leader = cluster.IndexOf(state.leader);
  ASSERT_GE(leader, 0) << state.leader;
  cluster.Kill(leader, SIGKILL);
  ASSERT_TRUE(acked_at_least(3500)) << bridge.child.Stderr();
  bridge.child.Kill(SIGKILL);
  bridge = StartSinkBridge(servers, {"--set=sink.jetstream.replicas=3"});
  ASSERT_OK(cluster.Restart(leader));
  ASSERT_TRUE(acked_at_least(5000)) << bridge.child.Stderr();
  bridge.child.Kill(SIGKILL);
  bridge = StartSinkBridge(servers, {"--set=sink.jetstream.replicas=3"});
  ASSERT_TRUE(WaitCaughtUp(bridge, kRows, 90s)) << bridge.child.Stderr();
  ExpectExactlyOnce(cluster.urls(), "journal.db");
  // Every server holds the same stream, the restarted one included.
  for (const std::string& url : cluster.url_list()) {
    SCOPED_TRACE(url);
    ASSERT_TRUE(WaitFor([&] {
      auto st = GetStreamState(url, "WSBRIDGE");
      return st.ok() && st->messages == static_cast<uint64_t>(kRows);
    }));
  }
}

TEST_F(JetStreamTest, AbsentAtStartThenCatchesUp) {
  NatsServer nats(dir_.path());  // ports chosen, not started yet
  constexpr int kRows = 600;
  upstream_port_ = FreePort();  // the feed starts once a subscriber listens (below)
  // Two bridges on the same absent server: one needs the sink to be ready, one does not.
  OsPortBridge optional = StartSinkBridge(
      Servers(nats.url()),
      {"--set=sink.jetstream.stream=OPTIONAL", "--set=sink.jetstream.subject_prefix=optional"},
      "optional.db", "optional");
  OsPortBridge required = StartSinkBridge(
      Servers(nats.url()),
      {"--set=sink.jetstream.stream=REQUIRED", "--set=sink.jetstream.subject_prefix=required",
       "--set=sink.jetstream.required=true"},
      "required.db", "required");
  // Inbound is unaffected: a subscriber gets everything.
  zmq::context_t ctx;
  Subscriber sub(ctx, optional.pub);
  ASSERT_TRUE(optional.child.WaitForOutput("subscription to topic prefix", "err"));
  StartFeed(kRows, 1000);
  const ReceivedSpan got = ReceiveUntilSeq(sub, kRows, 30s);
  EXPECT_EQ(got.last_seq, static_cast<uint64_t>(kRows));
  ASSERT_TRUE(WaitFor([&] {
    return Metric(required.http_port, "wsbridge_last_seq") == kRows &&
           Metric(required.http_port, "wsbridge_sink_errors_total{reason=\"connect\"}") >= 2;
  })) << required.child.Stderr();
  EXPECT_EQ(Metric(optional.http_port, "wsbridge_sink_connected"), 0);
  // The gauges follow within 100 ms.
  EXPECT_TRUE(
      WaitFor([&] { return Metric(optional.http_port, "wsbridge_sink_lag_messages") == kRows; }));
  EXPECT_EQ(HttpGet(optional.http_port, "/readyz").substr(0, 3), "200");
  const std::string readyz = HttpGet(required.http_port, "/readyz");
  EXPECT_EQ(readyz.substr(0, 3), "503") << readyz;
  EXPECT_NE(readyz.find("sink: cannot connect to " + nats.url()), std::string::npos) << readyz;
  EXPECT_EQ(LinesWith(required.child.Stderr(), "warning sink: cannot connect").size(), 1u)
      << "a failure that repeats itself is said once";

  ASSERT_OK(nats.Start());
  ASSERT_TRUE(WaitCaughtUp(optional, kRows)) << optional.child.Stderr();
  ASSERT_TRUE(WaitCaughtUp(required, kRows)) << required.child.Stderr();
  EXPECT_TRUE(
      WaitFor([&] { return HttpGet(required.http_port, "/readyz").substr(0, 3) == "200"; }));
  ExpectExactlyOnce(nats.url(), "optional.db", "OPTIONAL", "optional");
  ExpectExactlyOnce(nats.url(), "required.db", "REQUIRED", "required");
}

TEST_F(JetStreamTest, WrongCredentialsRetriedUntilRotated) {
  NatsServerOptions options;
  options.auth.user = "bridge";
  options.auth.password = "s3cret";
  NatsServer nats(dir_.path(), options);
  ASSERT_OK(nats.Start());
  const std::string password_file = dir_.File("password");
  std::ofstream(password_file) << "wrong\n";
  constexpr int kRows = 300;
  StartFeed(kRows, 1000);
  OsPortBridge bridge = StartSinkBridge(
      Servers(nats.url()), {"--set=sink.jetstream.user=bridge",
                            "--set=sink.jetstream.password=${file:" + password_file + "}"});
  ASSERT_TRUE(WaitFor([&] {
    return Metric(bridge.http_port, "wsbridge_sink_errors_total{reason=\"auth\"}") >= 3;
  })) << bridge.child.Stderr();
  EXPECT_TRUE(WaitFor([&] { return Metric(bridge.http_port, "wsbridge_last_seq") == kRows; }));
  const auto lines = LinesWith(bridge.child.Stderr(), "warning sink: authentication refused by");
  ASSERT_EQ(lines.size(), 1u) << bridge.child.Stderr();
  EXPECT_NE(lines[0].find(nats.url()), std::string::npos) << lines[0];
  EXPECT_EQ(lines[0].find("s3cret"), std::string::npos);
  EXPECT_EQ(lines[0].find("wrong"), std::string::npos);
  // The credential is read again on every attempt: fixed, it is used without a restart.
  std::ofstream(password_file) << "s3cret\n";
  ASSERT_TRUE(WaitCaughtUp(bridge, kRows)) << bridge.child.Stderr();
  ExpectExactlyOnce(nats.url(), "journal.db", "WSBRIDGE", "wsbridge", options.auth);
}

// Someone else publishes into the stream's subjects: the bridge's next publish no longer
// follows its last row (a conflict), it reads the stream again, steps over the stranger and goes
// on: no row twice, none lost.
TEST_F(JetStreamTest, ForeignMessageCostsAConflictNotADuplicate) {
  NatsServer nats(dir_.path());
  ASSERT_OK(nats.Start());
  constexpr int kRows = 2000;
  StartFeed(kRows, 1000);
  OsPortBridge bridge = StartSinkBridge(Servers(nats.url()));
  ASSERT_TRUE(WaitFor([&] { return Metric(bridge.http_port, "wsbridge_sink_acked_seq") >= 200; }))
      << bridge.child.Stderr();
  ASSERT_OK_AND_ASSIGN(NatsClient client, NatsClient::Connect(nats.url()));
  ASSERT_OK(client.Publish("wsbridge.intruder", "not from the bridge").status());
  ASSERT_TRUE(WaitCaughtUp(bridge, kRows)) << bridge.child.Stderr();
  EXPECT_GE(Metric(bridge.http_port, "wsbridge_sink_errors_total{reason=\"conflict\"}"), 1);
  EXPECT_EQ(LinesWith(bridge.child.Stderr(), "published by someone else into wsbridge.>").size(),
            1u)
      << bridge.child.Stderr();
  ExpectExactlyOnce(nats.url(), "journal.db");
  ASSERT_OK_AND_ASSIGN(StreamState state, GetStreamState(nats.url(), "WSBRIDGE"));
  EXPECT_EQ(state.messages, kRows + 1u);
}

// tls:// with sink.jetstream.tls.ca_file: delivered; without it the server's certificate is not
// trusted: a clear reason, counted, retried.
TEST_F(JetStreamTest, TlsWithItsCaFile) {
  const std::string cert = dir_.File("nats-cert.pem"), key = dir_.File("nats-key.pem");
  const std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
      "-days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 "
      "-keyout '" +
      key + "' -out '" + cert + "' >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  NatsServerOptions options;
  options.tls_cert_file = cert;
  options.tls_key_file = key;
  options.auth.ca_file = cert;  // self-signed: its own CA
  NatsServer nats(dir_.path(), options);
  ASSERT_OK(nats.Start());
  ASSERT_EQ(nats.url().rfind("tls://", 0), 0u);
  constexpr int kRows = 300;
  StartFeed(kRows, 1000);
  OsPortBridge untrusted = StartSinkBridge(Servers(nats.url()), {}, "untrusted.db", "untrusted");
  OsPortBridge trusted = StartSinkBridge(
      Servers(nats.url()),
      {"--set=sink.jetstream.tls.ca_file=" + cert, "--set=sink.jetstream.stream=TRUSTED",
       "--set=sink.jetstream.subject_prefix=trusted"},
      "trusted.db", "trusted");
  ASSERT_TRUE(WaitCaughtUp(trusted, kRows)) << trusted.child.Stderr();
  ExpectExactlyOnce(nats.url(), "trusted.db", "TRUSTED", "trusted", options.auth);
  ASSERT_TRUE(WaitFor([&] {
    return Metric(untrusted.http_port, "wsbridge_sink_errors_total{reason=\"connect\"}") >= 2 &&
           Metric(untrusted.http_port, "wsbridge_last_seq") == kRows;
  })) << untrusted.child.Stderr();
  const auto lines = LinesWith(untrusted.child.Stderr(), "warning sink: cannot connect to");
  ASSERT_EQ(lines.size(), 1u) << untrusted.child.Stderr();
  EXPECT_NE(lines[0].find("certificate"), std::string::npos) << lines[0];
  EXPECT_EQ(Metric(untrusted.http_port, "wsbridge_sink_published_total"), 0);
}

TEST_F(JetStreamTest, TokenAuthentication) {
  NatsServerOptions options;
  options.auth.token = "t0ken";
  NatsServer nats(dir_.path(), options);
  ASSERT_OK(nats.Start());
  constexpr int kRows = 200;
  StartFeed(kRows, 1000);
  OsPortBridge bridge = StartSinkBridge(Servers(nats.url()), {"--set=sink.jetstream.token=t0ken"});
  ASSERT_TRUE(WaitCaughtUp(bridge, kRows)) << bridge.child.Stderr();
  ExpectExactlyOnce(nats.url(), "journal.db", "WSBRIDGE", "wsbridge", options.auth);
  EXPECT_EQ(bridge.child.Stderr().find("t0ken"), std::string::npos);
}

TEST_F(JetStreamTest, StreamWithOtherSubjectsIsLeftAlone) {
  NatsServer nats(dir_.path());
  ASSERT_OK(nats.Start());
  ASSERT_OK(CreateStream(nats.url(), "WSBRIDGE", {"other.>"}));
  constexpr int kRows = 200;
  StartFeed(kRows, 1000);
  OsPortBridge bridge = StartSinkBridge(Servers(nats.url()));
  ASSERT_TRUE(WaitFor([&] {
    return Metric(bridge.http_port, "wsbridge_sink_errors_total{reason=\"stream_mismatch\"}") >=
               2 &&
           Metric(bridge.http_port, "wsbridge_last_seq") == kRows;
  })) << bridge.child.Stderr();
  const auto lines = LinesWith(bridge.child.Stderr(), "warning sink: stream WSBRIDGE exists");
  ASSERT_EQ(lines.size(), 1u) << bridge.child.Stderr();
  EXPECT_NE(lines[0].find("stream WSBRIDGE exists with subjects [other.>], not wsbridge.>: not "
                          "publishing"),
            std::string::npos)
      << lines[0];
  ASSERT_OK_AND_ASSIGN(StreamState state, GetStreamState(nats.url(), "WSBRIDGE"));
  EXPECT_EQ(state.messages, 0u);
  EXPECT_EQ(state.subjects, std::vector<std::string>{"other.>"});
  EXPECT_EQ(Metric(bridge.http_port, "wsbridge_sink_published_total"), 0);
}

TEST_F(JetStreamTest, RejectedPublishesRetriedNeverSkipped) {
  NatsServer nats(dir_.path());
  ASSERT_OK(nats.Start());
  StreamSpec full = OurStream();
  full.max_msgs = 50;
  full.discard_new = true;
  ASSERT_OK(CreateStream(nats.url(), full));
  constexpr int kRows = 200;
  StartFeed(kRows, 1000);
  OsPortBridge bridge = StartSinkBridge(Servers(nats.url()));
  ASSERT_TRUE(WaitFor([&] {
    return Metric(bridge.http_port, "wsbridge_sink_errors_total{reason=\"rejected\"}") >= 3 &&
           Metric(bridge.http_port, "wsbridge_last_seq") == kRows;
  })) << bridge.child.Stderr();
  EXPECT_EQ(Metric(bridge.http_port, "wsbridge_sink_acked_seq"), 50);
  EXPECT_TRUE(WaitFor(
      [&] { return Metric(bridge.http_port, "wsbridge_sink_lag_messages") == kRows - 50; }));
  EXPECT_EQ(Metric(bridge.http_port, "wsbridge_sink_skipped_total"), 0);
  const auto lines = LinesWith(bridge.child.Stderr(), "seq 51: ");
  ASSERT_GE(lines.size(), 1u) << bridge.child.Stderr();
  EXPECT_NE(lines[0].find("maximum messages"), std::string::npos) << lines[0];
  // Room again: the rows go in, once each, where they belong.
  ASSERT_OK_AND_ASSIGN(NatsClient client, NatsClient::Connect(nats.url()));
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = "WSBRIDGE";
  const char* subject = "wsbridge.>";
  cfg.Subjects = &subject;
  cfg.SubjectsLen = 1;
  cfg.Discard = js_DiscardNew;
  cfg.MaxMsgs = -1;
  jsStreamInfo* info = nullptr;
  ASSERT_EQ(js_UpdateStream(&info, client.js(), &cfg, nullptr, nullptr), NATS_OK);
  jsStreamInfo_Destroy(info);
  ASSERT_TRUE(WaitCaughtUp(bridge, kRows)) << bridge.child.Stderr();
  ExpectExactlyOnce(nats.url(), "journal.db");
}

TEST_F(JetStreamTest, BlackholeGrowsTheLagNotInbound) {
  NatsServerOptions options;
  options.no_advertise = true;  // the bridge reaches the server through the proxy only
  NatsServer nats(dir_.path(), options);
  ASSERT_OK(nats.Start());
  FaultProxy proxy = StartFaultProxy(dir_.path(), nats.port());
  ASSERT_NE(proxy.port, 0);
  constexpr int kRows = 4000;
  StartFeed(kRows, 1000);
  OsPortBridge bridge = StartSinkBridge(Servers("nats://127.0.0.1:" + std::to_string(proxy.port)));
  zmq::context_t ctx;
  Subscriber sub(ctx, bridge.pub);
  ASSERT_TRUE(WaitFor([&] { return Metric(bridge.http_port, "wsbridge_sink_acked_seq") >= 300; }))
      << bridge.child.Stderr();
  ASSERT_EQ(FaultProxyCommand(proxy.control_port, "blackhole"), "ok");
  // Inbound goes on to its end while the sink is cut off.
  const ReceivedSpan got = ReceiveUntilSeq(sub, kRows, 30s);
  EXPECT_EQ(got.last_seq, static_cast<uint64_t>(kRows));
  EXPECT_EQ(got.received, got.last_seq - got.first_seq + 1) << "the subscriber missed messages";
  const double stuck = Metric(bridge.http_port, "wsbridge_sink_acked_seq");
  EXPECT_LT(stuck, kRows);
  EXPECT_GT(Metric(bridge.http_port, "wsbridge_sink_lag_messages"), 1000);
  ASSERT_TRUE(WaitFor([&] {
    return Metric(bridge.http_port, "wsbridge_sink_errors_total{reason=\"disconnected\"}") +
               Metric(bridge.http_port, "wsbridge_sink_errors_total{reason=\"timeout\"}") >=
           1;
  })) << bridge.child.Stderr();
  EXPECT_GT(Metric(bridge.http_port, "wsbridge_sink_lag_seconds"), 0.5);
  ASSERT_EQ(FaultProxyCommand(proxy.control_port, "pass"), "ok");
  ASSERT_TRUE(WaitCaughtUp(bridge, kRows)) << bridge.child.Stderr();
  EXPECT_EQ(Metric(bridge.http_port, "wsbridge_sink_lag_seconds"), 0);
  ExpectExactlyOnce(nats.url(), "journal.db");
}

TEST_F(JetStreamTest, NewEpochStartsANewHistory) {
  NatsServer nats(dir_.path());
  ASSERT_OK(nats.Start());
  constexpr int kRows = 100;
  StartFeed(kRows, 1000);
  OsPortBridge first = StartSinkBridge(Servers(nats.url()), {}, "first.db", "first");
  ASSERT_TRUE(WaitCaughtUp(first, kRows)) << first.child.Stderr();
  ASSERT_TRUE(ExitedZero(first.child.Kill(SIGTERM)));
  // A new database (a new epoch): the upstream sends its history again, from seq 1.
  OsPortBridge second = StartSinkBridge(Servers(nats.url()), {}, "second.db", "second");
  ASSERT_TRUE(WaitCaughtUp(second, kRows)) << second.child.Stderr();
  auto e1 = ReadCursor(dir_.File("first.db")), e2 = ReadCursor(dir_.File("second.db"));
  ASSERT_TRUE(e1 && e2);
  ASSERT_NE(e1->epoch, e2->epoch);
  const auto lines = LinesWith(second.child.Stderr(), "a new history from seq 1");
  ASSERT_EQ(lines.size(), 1u) << second.child.Stderr();
  EXPECT_NE(lines[0].find("ends with epoch " + Hex16(e1->epoch) + ", this database is epoch " +
                          Hex16(e2->epoch)),
            std::string::npos)
      << lines[0];
  ExpectExactlyOnce(nats.url(), "first.db");
  ExpectExactlyOnce(nats.url(), "second.db");
  ASSERT_OK_AND_ASSIGN(StreamState state, GetStreamState(nats.url(), "WSBRIDGE"));
  EXPECT_EQ(state.messages, 2u * kRows);
}

TEST_F(JetStreamTest, RetentionWaitsForTheSinkButNotTheRowBound) {
  NatsServer nats(dir_.path());  // absent at first
  constexpr int kRows = 50;
  StartFeed(kRows, 1000);
  // max_age_s = 1: without the sink, the rows would be gone a second after they came.
  OsPortBridge aged =
      StartSinkBridge(Servers(nats.url()), {"--set=journal.max_age_s=1"}, "aged.db", "aged");
  ASSERT_TRUE(WaitFor(
      [&] {
        auto rows = ReadJournalRows(dir_.File("aged.db"));
        return rows.size() == kRows &&
               rows.front().msg.received_at_unix_ns < (WallNowUs() - 2500000) * 1000;
      },
      20s))
      << "rows older than max_age_s were trimmed before the sink delivered them";
  EXPECT_EQ(ReadBounds(dir_.File("aged.db"))->first_seq, 1u);
  ASSERT_OK(nats.Start());
  ASSERT_TRUE(WaitCaughtUp(aged, kRows)) << aged.child.Stderr();
  ExpectExactlyOnce(nats.url(), "aged.db");
  // Delivered, they age out as usual.
  EXPECT_TRUE(WaitFor([&] { return ReadBounds(dir_.File("aged.db"))->rows == 0; }, 20s));
  aged.child.Kill(SIGTERM);

  // journal.max_rows trims undelivered rows all the same (the disk stays bounded): counted and
  // logged by range, and the stream goes on after the gap.
  // The feed does not end by itself: the server goes down after the sink's first deliveries,
  // and the feed stops only once the bound has trimmed rows the sink never sent, however slow
  // the start (a sanitizer).
  constexpr int kMaxPending = 64;
  upstream_port_ = 0;
  Child feed =
      StartUpstream(dir_.path(), {"--rate=1000", "--history=5000"}, &upstream_port_, "upstream2");
  OsPortBridge bounded =
      StartSinkBridge(Servers(nats.url()),
                      {"--set=journal.max_rows=100", "--set=sink.jetstream.stream=BOUNDED",
                       "--set=sink.jetstream.subject_prefix=bounded",
                       "--set=sink.jetstream.max_pending=" + std::to_string(kMaxPending)},
                      "bounded.db", "bounded");
  ASSERT_TRUE(WaitFor([&] { return Metric(bounded.http_port, "wsbridge_sink_acked_seq") >= 50; }))
      << bounded.child.Stderr();
  nats.Kill(SIGKILL);
  // The server may have stored up to max_pending rows past the last ack; past those, the rows
  // the bound trims are undelivered.
  const auto acked = static_cast<uint64_t>(Metric(bounded.http_port, "wsbridge_sink_acked_seq"));
  ASSERT_TRUE(WaitFor([&] {
    auto b = ReadBounds(dir_.File("bounded.db"));
    return b && b->first_seq > acked + kMaxPending + 200;
  })) << bounded.child.Stderr();
  feed.Kill(SIGTERM);
  // Gone, and every message it sent journaled: the journal's last row is final.
  ASSERT_TRUE(WaitFor([&] {
    const int p = bounded.http_port;
    return Metric(p, "wsbridge_upstream_connected") == 0 &&
           Metric(p, "wsbridge_messages_in_total") ==
               Metric(p, "wsbridge_messages_journaled_total") +
                   Metric(p, "wsbridge_duplicates_dropped_total");
  })) << bounded.child.Stderr();
  const auto last = static_cast<uint64_t>(Metric(bounded.http_port, "wsbridge_last_seq"));
  ASSERT_OK(nats.Restart());
  ASSERT_TRUE(WaitCaughtUp(bounded, last)) << bounded.child.Stderr();
  // The stream: runs of rows, in order, each once; between them the rows the bound trimmed
  // before the sink could deliver them (while the server was down, and, with a bound of 100
  // rows, whenever the sink fell 100 ms behind), each gap counted and logged by its range.
  ASSERT_OK_AND_ASSIGN(std::vector<StreamMessage> msgs, ReadStream(nats.url(), "BOUNDED"));
  std::vector<uint64_t> seqs;
  for (const StreamMessage& m : msgs) seqs.push_back(std::stoull(m.headers.at("Wsbridge-Seq")));
  ASSERT_FALSE(seqs.empty());
  EXPECT_EQ(seqs.back(), last);
  // Rows trimmed before the sink's first delivery are not in this history at all (it begins at
  // the journal's oldest row: a slow start under a sanitizer), and are not counted.
  uint64_t skipped = 0;
  const std::string log = bounded.child.Stderr();
  size_t gaps = 0;
  for (size_t i = 1; i < seqs.size(); ++i) {
    ASSERT_GT(seqs[i], seqs[i - 1]) << "out of order or twice at " << i;
    if (seqs[i] == seqs[i - 1] + 1) continue;
    ++gaps;
    const uint64_t n = seqs[i] - seqs[i - 1] - 1;
    skipped += n;
    const std::string range = "seq " + std::to_string(seqs[i - 1] + 1) + ".." +
                              std::to_string(seqs[i] - 1) + " (" + std::to_string(n) +
                              " rows) were trimmed";
    EXPECT_EQ(LinesWith(log, range).size(), 1u) << range << "\n" << log;
  }
  EXPECT_GE(gaps, 1u) << "the server was down while the bound trimmed";
  EXPECT_EQ(Metric(bounded.http_port, "wsbridge_sink_skipped_total"), skipped);
  EXPECT_EQ(LinesWith(log, "were trimmed by journal.max_rows").size(), gaps);
}

}  // namespace
}  // namespace wsbridge::testing
