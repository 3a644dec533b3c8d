// Operations with real processes (SPEC §7, G8): /healthz, /readyz following the upstream,
// /metrics checked with a real Prometheus parser against what was sent, graceful and forced
// shutdown, secrets kept out of logs and --print-config, JSON log lines, rate-limited repeats.
#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <set>
#include <vector>

#include "integration/harness.h"
#include "storage/store.h"

namespace wsbridge::testing {
namespace {

using namespace std::chrono_literals;

std::string Url(int port) { return "ws://127.0.0.1:" + std::to_string(port) + "/feed"; }

// Debian's interpreter (python3-prometheus-client is installed for it), else whatever is on PATH.
std::string Python() {
  return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

// The value of an unlabelled sample in Prometheus text, by plain text search.
std::optional<double> Sample(const std::string& text, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex("(^|\n)" + name + " ([^\n]+)\n"))) return std::nullopt;
  return std::stod(m[2]);
}

// Parses the exposition text with prometheus_client's parser (the one Prometheus' own Python
// tooling uses). Returns "name{k=v,...}" -> value for every sample, and "TYPE <family>" -> type;
// nullopt when the parser rejects the text.
std::optional<std::map<std::string, std::string>> PromParse(const TempDir& dir,
                                                            const std::string& text) {
  static int n = 0;
  std::string in = dir.File("metrics-" + std::to_string(++n) + ".txt");
  std::string out = in + ".parsed";
  std::string script = dir.File("promparse.py");
  WriteFileBytes(script,
                 "import sys\n"
                 "from prometheus_client.parser import text_string_to_metric_families\n"
                 "with open(sys.argv[1]) as f: text = f.read()\n"
                 "with open(sys.argv[2], 'w') as out:\n"
                 "  for fam in text_string_to_metric_families(text):\n"
                 "    out.write('TYPE %s\\t%s\\n' % (fam.name, fam.type))\n"
                 "    for s in fam.samples:\n"
                 "      labels = ','.join('%s=%s' % kv for kv in sorted(s.labels.items()))\n"
                 "      out.write('%s{%s}\\t%r\\n' % (s.name, labels, s.value))\n");
  WriteFileBytes(in, text);
  std::string cmd = Python() + " '" + script + "' '" + in + "' '" + out + "' 2>'" + out + ".err'";
  if (std::system(cmd.c_str()) != 0) {
    ADD_FAILURE() << "prometheus_client rejected the text: " << ReadFileOrEmpty(out + ".err");
    return std::nullopt;
  }
  std::map<std::string, std::string> result;
  std::istringstream lines(ReadFileOrEmpty(out));
  for (std::string line; std::getline(lines, line);) {
    size_t tab = line.find('\t');
    if (tab != std::string::npos) result[line.substr(0, tab)] = line.substr(tab + 1);
  }
  return result;
}

double Num(const std::map<std::string, std::string>& m, const std::string& key) {
  auto it = m.find(key);
  EXPECT_NE(it, m.end()) << "no sample " << key;
  return it == m.end() ? -1 : std::stod(it->second);
}

// A bridge with every endpoint OS-chosen (StartOsPortBridge), reconnecting fast.
OsPortBridge StartOpsBridge(const std::string& dir, const std::string& url, const std::string& db,
                            std::vector<std::string> flags, const std::string& tag,
                            const std::vector<std::string>& env = {}) {
  flags.insert(flags.begin(), {"--set=reconnect.base_delay_ms=20", "--set=reconnect.max_delay_ms=200"});
  return StartOsPortBridge(dir, url, db, flags, tag, env);
}


// ---- /healthz, /readyz ---------------------------------------------------------------------

TEST(Ops, ReadyzFollowsTheUpstream) {
  TempDir dir;
  int port = 0;
  Child upstream = StartUpstream(dir.path(), {"--rate=200"}, &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  OsPortBridge b = StartOpsBridge(dir.path(), Url(port), dir.File("r.db"), {}, "bridge");
  ASSERT_NE(b.http_port, 0) << b.child.Stderr();

  HttpResult h = HttpRequest(b.http_port, "/healthz");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.body, "ok\n");
  ASSERT_TRUE(WaitFor([&] { return HttpRequest(b.http_port, "/readyz").status == 200; }))
      << HttpRequest(b.http_port, "/readyz").body << b.child.Stderr();

  // The upstream goes away: not ready, and the body says why.
  upstream.Kill(SIGKILL);
  HttpResult r;
  ASSERT_TRUE(WaitFor([&] {
    r = HttpRequest(b.http_port, "/readyz");
    return r.status == 503;
  })) << b.child.Stderr();
  EXPECT_EQ(r.body.rfind("upstream ", 0), 0u) << r.body;
  EXPECT_NE(r.body.find(": "), std::string::npos) << "no reason given: " << r.body;
  EXPECT_EQ(HttpRequest(b.http_port, "/healthz").status, 200);  // alive all the same
  std::string metrics = HttpRequest(b.http_port, "/metrics").body;
  EXPECT_EQ(Sample(metrics, "wsbridge_upstream_connected"), 0.0) << metrics;

  // Back on the same port: ready again after the reconnect.
  Child again = StartUpstream(dir.path(), {"--rate=200"}, &port, "upstream-again");
  ASSERT_NE(port, 0) << again.Stderr();
  ASSERT_TRUE(WaitFor([&] { return HttpRequest(b.http_port, "/readyz").status == 200; }))
      << HttpRequest(b.http_port, "/readyz").body << b.child.Stderr();
  metrics = HttpRequest(b.http_port, "/metrics").body;
  EXPECT_GE(Sample(metrics, "wsbridge_upstream_connects_total").value_or(0), 2.0) << metrics;

  // Anything else: 4xx, and the server goes on.
  EXPECT_EQ(HttpRequest(b.http_port, "/nope").status, 404);
  EXPECT_EQ(HttpRequest(b.http_port, "/metrics", "POST").status, 405);
  EXPECT_EQ(HttpRaw(b.http_port, "not http at all\r\n\r\n").status / 100, 4);
  EXPECT_EQ(HttpRequest(b.http_port, "/healthz").status, 200);
  EXPECT_TRUE(ExitedZero(b.child.Kill(SIGTERM))) << b.child.Stderr();
}

// ---- /metrics ------------------------------------------------------------------------------

TEST(Ops, MetricsParseAndCountWhatTheUpstreamSent) {
  TempDir dir;
  int port = 0;
  const int kCount = 500;
  Child upstream = StartUpstream(dir.path(), {"--count=500", "--rate=0", "--topics=a,b"}, &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  OsPortBridge b = StartOpsBridge(dir.path(), Url(port), dir.File("m.db"), {}, "bridge");
  ASSERT_NE(b.http_port, 0) << b.child.Stderr();
  std::string text;
  ASSERT_TRUE(WaitFor([&] {
    text = HttpRequest(b.http_port, "/metrics").body;
    return Sample(text, "wsbridge_messages_published_total") == kCount;
  })) << text
      << b.child.Stderr();

  auto parsed = PromParse(dir, text);
  ASSERT_TRUE(parsed) << text;
  const auto& m = *parsed;
  EXPECT_EQ(Num(m, "wsbridge_messages_in_total{}"), kCount);
  EXPECT_EQ(Num(m, "wsbridge_messages_journaled_total{}"), kCount);
  EXPECT_EQ(Num(m, "wsbridge_messages_published_total{}"), kCount);
  EXPECT_EQ(Num(m, "wsbridge_last_seq{}"), kCount);
  EXPECT_EQ(Num(m, "wsbridge_last_upstream_seq{}"), kCount);
  EXPECT_EQ(Num(m, "wsbridge_duplicates_dropped_total{}"), 0);
  EXPECT_EQ(Num(m, "wsbridge_upstream_seq_gaps_total{}"), 0);
  EXPECT_EQ(Num(m, "wsbridge_frames_without_seq_total{}"), 0);
  EXPECT_EQ(Num(m, "wsbridge_upstream_connected{}"), 1);
  EXPECT_EQ(Num(m, "wsbridge_connection_state{state=open}"), 1);
  EXPECT_EQ(Num(m, "wsbridge_connection_state{state=backing_off}"), 0);
  EXPECT_EQ(Num(m, "wsbridge_storage_ok{}"), 1);
  EXPECT_EQ(Num(m, "wsbridge_commit_failures_total{}"), 0);
  EXPECT_GE(Num(m, "wsbridge_storage_commit_seconds_count{}"), 1);
  EXPECT_EQ(Num(m, "wsbridge_storage_commit_seconds_bucket{le=+Inf}"),
            Num(m, "wsbridge_storage_commit_seconds_count{}"));
  EXPECT_EQ(Num(m, "wsbridge_send_requests_total{}"), 0);
  for (const char* reason : {"full", "invalid", "storage", "duplicate"}) {
    EXPECT_EQ(Num(m, std::string("wsbridge_send_rejections_total{reason=") + reason + "}"), 0);
  }
  EXPECT_EQ(Num(m, "wsbridge_outbox_depth{}"), 0);
  EXPECT_GT(Num(m, "process_resident_memory_bytes{}"), 0);

  // Types as declared, and every family the dashboard uses is there.
  EXPECT_EQ(m.at("TYPE wsbridge_messages_in"), "counter");
  EXPECT_EQ(m.at("TYPE wsbridge_heartbeat_rtt_seconds"), "histogram");
  EXPECT_EQ(m.at("TYPE wsbridge_storage_commit_seconds"), "histogram");
  EXPECT_EQ(m.at("TYPE wsbridge_outbox_depth"), "gauge");
  EXPECT_EQ(m.at("TYPE wsbridge_connection_state"), "gauge");
  for (const char* family : {"wsbridge_connection_state",
                             "wsbridge_upstream_connected",
                             "wsbridge_reconnects",
                             "wsbridge_messages_in",
                             "wsbridge_messages_published",
                             "wsbridge_messages_journaled",
                             "wsbridge_messages_out",
                             "wsbridge_acks",
                             "wsbridge_duplicates_dropped",
                             "wsbridge_upstream_seq_gaps",
                             "wsbridge_upstream_seq_gap_messages",
                             "wsbridge_frames_without_seq",
                             "wsbridge_send_requests",
                             "wsbridge_send_rejections",
                             "wsbridge_outbox_depth",
                             "wsbridge_outbox_oldest_age_seconds",
                             "wsbridge_journal_rows",
                             "wsbridge_journal_bytes",
                             "wsbridge_last_seq",
                             "wsbridge_last_upstream_seq",
                             "wsbridge_subscriptions",
                             "wsbridge_heartbeat_rtt_seconds",
                             "wsbridge_storage_commit_seconds",
                             "wsbridge_storage_ok",
                             "wsbridge_commit_failures",
                             "wsbridge_reads_paused",
                             "wsbridge_oversized_frames"}) {
    EXPECT_EQ(m.count(std::string("TYPE ") + family), 1u) << family;
  }
  EXPECT_NE(
      HttpRequest(b.http_port, "/metrics").head.find("Content-Type: text/plain; version=0.0.4"),
      std::string::npos);
  EXPECT_TRUE(ExitedZero(b.child.Kill(SIGTERM))) << b.child.Stderr();
}

// top -H and perf show which of the bridge's threads uses the CPU: each has a name.
// (And the one ZeroMQ starts has the scheduling policy the bridge gives it.)
TEST(Ops, ThreadsAreNamed) {
  TempDir dir;
  int port = 0;
  Child upstream = StartUpstream(dir.path(), {"--count=10", "--rate=0"}, &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  OsPortBridge b = StartOpsBridge(dir.path(), Url(port), dir.File("t.db"), {}, "bridge");
  ASSERT_NE(b.http_port, 0) << b.child.Stderr();
  const std::set<std::string> expected = {"wsb-upstream", "wsb-writer", "wsb-replay", "wsb-http",
                                          "wsb-checkpoint", "wsb-check"};
  std::set<std::string> names;
  std::vector<int> zmq_io_tids;  // ZeroMQ's I/O threads ("ZMQbg/IO/0")
  int check_tid = 0;
  ASSERT_TRUE(WaitFor([&] {
    names.clear();
    zmq_io_tids.clear();
    for (const ThreadInfo& t : ThreadsOf(b.child.pid())) {
      names.insert(t.name);
      if (t.name.rfind("ZMQbg/IO/", 0) == 0) zmq_io_tids.push_back(t.tid);
      if (t.name == "wsb-check") check_tid = t.tid;
    }
    return std::includes(names.begin(), names.end(), expected.begin(), expected.end());
  })) << "threads: " << ::testing::PrintToString(names);
  // ZeroMQ's I/O thread runs SCHED_BATCH: woken per published batch, it must not preempt the
  // thread that woke it (docs/performance.md).
  ASSERT_EQ(zmq_io_tids.size(), 1u);
  EXPECT_EQ(sched_getscheduler(zmq_io_tids[0]), SCHED_BATCH);
  // The background whole-file check runs only on an otherwise idle CPU.
  EXPECT_EQ(sched_getscheduler(check_tid), SCHED_IDLE);
  EXPECT_TRUE(ExitedZero(b.child.Kill(SIGTERM))) << b.child.Stderr();
}

// ---- Shutdown ------------------------------------------------------------------------------

// Inbound at full speed and producers sending: SIGTERM ends the process with 0 well within the
// 10 s bound; the upstream saw a 1000 close; every ACCEPTED message reached the upstream or is
// still in the outbox; everything journaled is what the log's last line says.
TEST(Ops, SigtermUnderLoadExitsZeroWithinTheBound) {
  TempDir dir;
  int port = 0;
  std::string received = dir.File("received.txt");
  Child upstream = StartUpstream(dir.path(), {"--rate=0", "--log-received=" + received}, &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  std::string db = dir.File("s.db");
  OsPortBridge b =
      StartOpsBridge(dir.path(), Url(port), db, {"--set=protocol.ack_match=type=ack"}, "bridge");
  ASSERT_NE(b.http_port, 0) << b.child.Stderr();
  ASSERT_FALSE(b.send.empty()) << b.child.Stderr();

  // A producer on its own thread: one request at a time, until told to stop or unanswered.
  std::atomic<bool> stop{false};
  std::atomic<int> accepted_count{0};
  std::vector<std::string> accepted;
  std::thread producer([&] {
    zmq::context_t ctx;
    zmq::socket_t sock(ctx, zmq::socket_type::dealer);
    sock.set(zmq::sockopt::rcvtimeo, 3000);
    sock.set(zmq::sockopt::linger, 0);
    sock.connect(b.send);
    for (int i = 0; !stop; ++i) {
      v1::SendRequest req;
      req.set_id("m-" + std::to_string(i));
      req.set_payload("{\"id\":\"m-" + std::to_string(i) + "\",\"n\":" + std::to_string(i) + "}");
      std::string bytes = req.SerializeAsString();
      if (!sock.send(zmq::buffer(bytes), zmq::send_flags::dontwait)) break;
      zmq::message_t reply;
      if (!sock.recv(reply)) break;  // the bridge stopped answering
      v1::SendReply rep;
      if (rep.ParseFromArray(reply.data(), static_cast<int>(reply.size())) &&
          rep.status() == v1::ACCEPTED) {
        accepted.push_back(rep.id());
        ++accepted_count;
      }
    }
  });

  ASSERT_TRUE(WaitFor(
      [&] {
        std::string m = HttpRequest(b.http_port, "/metrics").body;
        return Sample(m, "wsbridge_messages_journaled_total").value_or(0) >= 3000 &&
               accepted_count >= 200;
      },
      60s))
      << accepted_count << " accepted\n"
      << b.child.Stderr();

  auto t0 = std::chrono::steady_clock::now();
  int status = b.child.Kill(SIGTERM, 30s);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stop = true;
  producer.join();
  const std::string log = b.child.Stderr();
  ASSERT_TRUE(ExitedZero(status)) << "status " << status << "\n" << log;
  EXPECT_LT(seconds, 10.0) << log;
  std::printf("[   FIGURE ] SIGTERM under load: exited 0 after %.3f s (%d accepted sends)\n",
              seconds, accepted_count.load());
  EXPECT_NE(log.find("received signal 15, stopping"), std::string::npos) << log;
  EXPECT_TRUE(
      WaitFor([&] { return upstream.Stderr().find("remote code 1000") != std::string::npos; }, 10s))
      << upstream.Stderr();

  // Every ACCEPTED message: delivered, or still in the outbox for the next start.
  std::set<std::string> there;
  std::string got = ReadFileOrEmpty(received);
  std::regex id_rx("\"id\":\"(m-\\d+)\"");
  for (std::sregex_iterator it(got.begin(), got.end(), id_rx), end; it != end; ++it) {
    there.insert((*it)[1]);
  }
  StoreOptions so;
  so.path = db;
  so.read_only = true;
  auto store = Store::Open(so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::vector<OutboxRow> outbox;
  ASSERT_TRUE((*store)->ReadOutbox(0, 10000000, &outbox).ok());
  for (const auto& row : outbox) there.insert(row.id);
  size_t missing = 0;
  for (const auto& id : accepted) missing += there.count(id) == 0;
  EXPECT_EQ(missing, 0u) << "of " << accepted.size() << " accepted";

  // What the log's last words say was committed is what the journal holds.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m, std::regex(R"(stopped: last seq (\d+))"))) << log;
  auto bounds = (*store)->Bounds();
  ASSERT_TRUE(bounds.ok());
  EXPECT_EQ(bounds->last_seq, std::stoull(m[1]));
}

// A second signal while the first stop is still in progress ends the process at once.
// The stop is held up on purpose: the upstream is frozen (SIGSTOP), so the 1000 close waits
// for an answer that cannot come (up to its 2 s timeout).
TEST(Ops, SecondSignalExitsAtOnce) {
  TempDir dir;
  int port = 0;
  Child upstream = StartUpstream(dir.path(), {"--rate=100"}, &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  OsPortBridge b = StartOpsBridge(dir.path(), Url(port), dir.File("t.db"), {}, "bridge");
  ASSERT_TRUE(WaitFor([&] { return HttpRequest(b.http_port, "/readyz").status == 200; }))
      << b.child.Stderr();
  kill(upstream.pid(), SIGSTOP);
  kill(b.child.pid(), SIGTERM);
  ASSERT_TRUE(b.child.WaitForOutput("received signal 15, stopping", "err", 10s));
  int status = b.child.Kill(SIGINT, 10s);
  kill(upstream.pid(), SIGCONT);
  ASSERT_TRUE(WIFEXITED(status)) << b.child.Stderr();
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGINT) << b.child.Stderr();
  EXPECT_NE(b.child.Stderr().find("received signal 2 again: exiting now"), std::string::npos)
      << b.child.Stderr();
}

// ---- Logging -------------------------------------------------------------------------------

// G8: a token given through the environment into a header, and a key read from a file, reach
// the upstream but never the bridge's log (debug level), /metrics or --print-config; nor do
// URL credentials.
TEST(Ops, SecretsStayOutOfLogsAndPrintConfig) {
  TempDir dir;
  const std::string token = "tkn-Zq8sR2vX9pL4mN7w";
  const std::string file_secret = "key-Hq3Vt8Kd5Jw2Xy6u";
  WriteFileBytes(dir.File("key.txt"), file_secret + "\n");
  const std::vector<std::string> env = {"TOKEN=" + token};
  const std::vector<std::string> header_flags = {
      "--set=upstream.headers.Authorization=Bearer ${TOKEN}",
      "--set=upstream.headers.X-Api-Key=${file:" + dir.File("key.txt") + "}"};

  int port = 0;
  std::string headers_seen = dir.File("headers.jsonl");
  Child upstream = StartUpstream(dir.path(),
                                 {"--rate=100", "--require-header=Authorization: Bearer " + token,
                                  "--log-headers=" + headers_seen},
                                 &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  OsPortBridge b =
      StartOpsBridge(dir.path(), Url(port), dir.File("a.db"), header_flags, "bridge", env);
  ASSERT_NE(b.http_port, 0) << b.child.Stderr();
  // Ready means the upstream accepted the Authorization header: the token was sent.
  ASSERT_TRUE(WaitFor([&] { return HttpRequest(b.http_port, "/readyz").status == 200; }))
      << b.child.Stderr();
  EXPECT_NE(ReadFileOrEmpty(headers_seen).find(file_secret), std::string::npos);

  // A second upstream that refuses the token: the 401 is logged, the token is not.
  int port2 = 0;
  Child refusing = StartUpstream(dir.path(), {"--require-header=Authorization: Bearer other"},
                                 &port2, "upstream-refusing");
  OsPortBridge b2 =
      StartOpsBridge(dir.path(), Url(port2), dir.File("b.db"), header_flags, "bridge-refused", env);
  ASSERT_TRUE(b2.child.WaitForOutput("401", "err")) << b2.child.Stderr();

  // URL credentials (whether or not the URL is usable).
  Child b3 = Child::Start(
      {Bin("wsbridge"), "--upstream=ws://user:Pw-Secret-9917@127.0.0.1:1/feed",
       "--db=" + dir.File("c.db"), "--pub=tcp://127.0.0.1:*", "--send=tcp://127.0.0.1:*",
       "--replay=tcp://127.0.0.1:*", "--set=http.listen=", "--log-level=debug"},
      dir.path(), "bridge-url");
  WaitFor([&] { return b3.Exited(); }, 3s);
  b3.Kill(SIGTERM);

  std::string metrics = HttpRequest(b.http_port, "/metrics").body;
  EXPECT_TRUE(ExitedZero(b.child.Kill(SIGTERM)));
  b2.child.Kill(SIGTERM);
  for (const std::string& log : {b.child.Stderr(), b2.child.Stderr(), metrics}) {
    EXPECT_EQ(log.find(token), std::string::npos) << log;
    EXPECT_EQ(log.find(file_secret), std::string::npos) << log;
  }
  EXPECT_NE(b.child.Stderr().find("debug"), std::string::npos);  // it did log at debug level
  EXPECT_EQ(b3.Stderr().find("Pw-Secret-9917"), std::string::npos) << b3.Stderr();

  std::vector<std::string> argv = {Bin("wsbridge"), "--print-config",
                                   "--upstream=ws://user:Pw-Secret-9917@127.0.0.1:1/feed"};
  argv.insert(argv.end(), header_flags.begin(), header_flags.end());
  Child print = Child::Start(argv, dir.path(), "print-config", env);
  EXPECT_TRUE(ExitedZero(print.Wait()));
  std::string toml = print.Stdout();
  EXPECT_NE(toml.find("Authorization"), std::string::npos) << toml;
  EXPECT_NE(toml.find("<redacted>"), std::string::npos) << toml;
  for (const std::string& secret : {token, file_secret, std::string("Pw-Secret-9917")}) {
    EXPECT_EQ(toml.find(secret), std::string::npos) << toml;
  }
}

// log.format=json: every line of a run (start, traffic, upstream loss, stop) is one JSON object
// with ts, level and msg, even when a message holds quotes and backslashes (the database path).
TEST(Ops, JsonLogLinesEachParse) {
  TempDir dir;
  int port = 0;
  Child upstream = StartUpstream(dir.path(), {"--rate=100", "--count=50"}, &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  const std::string db = dir.File("we\"ird\\name.db");
  OsPortBridge b = StartOpsBridge(dir.path(), Url(port), db, {"--set=log.format=json"}, "bridge");
  ASSERT_NE(b.http_port, 0) << b.child.Stderr();
  ASSERT_TRUE(WaitFor([&] { return HttpRequest(b.http_port, "/readyz").status == 200; }));
  upstream.Kill(SIGKILL);
  ASSERT_TRUE(b.child.WaitForOutput("retrying in", "err")) << b.child.Stderr();
  ASSERT_TRUE(ExitedZero(b.child.Kill(SIGTERM))) << b.child.Stderr();

  WriteFileBytes(dir.File("checkjson.py"),
                 "import json, sys\n"
                 "n = 0\n"
                 "want = open(sys.argv[2], encoding='utf-8').read()\n"
                 "found = False\n"
                 "for line in open(sys.argv[1], encoding='utf-8'):\n"
                 "  o = json.loads(line)\n"
                 "  assert set(o) >= {'ts', 'level', 'msg'}, line\n"
                 "  found = found or want in o['msg']\n"
                 "  n += 1\n"
                 "assert n >= 5, n\n"
                 "assert found, 'no line names ' + want\n"
                 "print(n)\n");
  WriteFileBytes(dir.File("want.txt"), db);
  std::string cmd = Python() + " '" + dir.File("checkjson.py") + "' '" + dir.File("bridge.err") +
                    "' '" + dir.File("want.txt") + "' >'" + dir.File("check.out") + "' 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << ReadFileOrEmpty(dir.File("check.out")) << "\n"
                                         << b.child.Stderr();
}

// The same warning in a loop (a dead upstream, retried every <= 200 ms) is shown a few times,
// then counted: fewer lines than failures, and a "(repeated N times ...)" line accounts for them.
TEST(Ops, RepeatedWarningsAreRateLimitedWithACount) {
  TempDir dir;
  const int port = FreePort();  // nothing listens there
  OsPortBridge b = StartOpsBridge(dir.path(), Url(port), dir.File("l.db"), {}, "bridge");
  ASSERT_NE(b.http_port, 0) << b.child.Stderr();
  ASSERT_TRUE(b.child.WaitForOutput(R"(\(repeated (\d+) times)", "err", 40s)) << b.child.Stderr();
  const double failures =
      Sample(HttpRequest(b.http_port, "/metrics").body, "wsbridge_upstream_connect_failures_total")
          .value_or(0);
  ASSERT_TRUE(ExitedZero(b.child.Kill(SIGTERM)));
  // The failures after the scrape are not in it; the log stops with the process.
  const std::string log = b.child.Stderr();
  size_t shown = 0;
  uint64_t counted = 0;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find("retrying in") == std::string::npos) continue;
    std::smatch m;
    if (std::regex_search(line, m, std::regex(R"(\(repeated (\d+) times)"))) {
      counted += std::stoull(m[1]);
    } else {
      ++shown;
    }
  }
  EXPECT_GE(counted, 1u) << log;
  EXPECT_LT(static_cast<double>(shown), failures) << log;
}

}  // namespace
}  // namespace wsbridge::testing
