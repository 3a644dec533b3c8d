// Real feeds' protocols (SPEC §9) with real processes, against upstreams this project did not
// write (tests/feeds): socket.io v4 (npm socket.io), Node ws with permessage-deflate, Python
// websockets, hostile servers (gzip bomb, truncated gzip, an extension the bridge cannot honour,
// malformed Engine.IO packets, a reply rule whose path is missing), and wsbridge-upstream's
// --server-ping / --compress / --permessage-deflate.
//
// Needs the ctest fixture "feeds" (tests/feeds/setup.sh puts the npm packages in the build
// folder): `ctest -R feeds` runs feeds_setup first. By hand, after it ran once:
//   build/tests/feeds_test [--gtest_output=xml:feeds.xml]   (the XML has the measured wire/inflated
//                                                          bytes and peak RSS as properties)
// WSB_FEEDS_NODE_MODULES in the environment overrides where the npm packages are.
//
// Each kind of feed runs with its commented example config, examples/feeds/*.toml, loaded as an
// operator would (--config), with only the URL, the database and the endpoints overridden on the
// command line (plus --log-level=debug, for the subscription line). The real servers' runs
// check what a ZeroMQ subscriber gets, byte for byte, on one connection through many of the
// server's ping intervals, and what /metrics says about the compression. FeedsStart.* only check
// the feeds and these helpers.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "integration/harness.h"

namespace wsbridge::testing {
namespace {

using namespace std::chrono_literals;

// ---- The feeds as child processes ------------------------------------------------------------

std::string FeedsDir() { return WSB_FEEDS_DIR; }

std::string NodeModules() {
  const char* env = std::getenv("WSB_FEEDS_NODE_MODULES");
  return env != nullptr && *env != '\0' ? env : WSB_FEEDS_NODE_MODULES;
}

// The first executable `name` on $PATH ("" when there is none): Child::Start does not search.
std::string Which(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// A feed server and the port it printed ("listening <port>"); port 0 when it did not come up
// (its stderr says why).
struct Feed {
  Child child;
  int port = 0;

  std::string Url(const std::string& path = "/") const {
    return "ws://127.0.0.1:" + std::to_string(port) + path;
  }
  // Lines of its stdout matching `re` (e.g. R"(^connected \d+)").
  size_t CountLines(const std::string& re) const {
    std::regex rx(re);
    std::istringstream in(child.Stdout());
    size_t n = 0;
    for (std::string line; std::getline(in, line);) n += std::regex_search(line, rx) ? 1 : 0;
    return n;
  }
};

// Starts argv with NODE_PATH set; output in <dir>/<tag>.out/.err (appended across restarts of a
// tag: only this run's "listening" line counts).
Feed StartFeed(const std::string& dir, std::vector<std::string> argv, const std::string& tag) {
  const size_t before = ReadFileOrEmpty(dir + "/" + tag + ".out").size();
  Feed f;
  f.child = Child::Start(argv, dir, tag, {"NODE_PATH=" + NodeModules()});
  auto port = f.child.WaitForOutputAfter(before, R"((?:^|\n)listening (\d+)\n)", "out");
  f.port = port ? std::stoi(*port) : 0;
  return f;
}

Feed StartNodeFeed(const std::string& dir, const std::string& script,
                   const std::vector<std::string>& flags, const std::string& tag) {
  std::vector<std::string> argv = {Which("node"), FeedsDir() + "/" + script};
  argv.insert(argv.end(), flags.begin(), flags.end());
  return StartFeed(dir, argv, tag);
}

Feed StartPythonFeed(const std::string& dir, const std::string& script,
                     const std::vector<std::string>& flags, const std::string& tag) {
  std::vector<std::string> argv = {"/usr/bin/python3", FeedsDir() + "/" + script};
  argv.insert(argv.end(), flags.begin(), flags.end());
  return StartFeed(dir, argv, tag);
}

// socketio_server.js: --port 0 and `flags`; connect the bridge to SocketIoUrl(feed).
Feed StartSocketIo(const std::string& dir, const std::vector<std::string>& flags,
                   const std::string& tag = "socketio") {
  return StartNodeFeed(dir, "socketio_server.js", flags, tag);
}
std::string SocketIoUrl(const Feed& f) { return f.Url("/socket.io/?EIO=4&transport=websocket"); }

// ws_deflate_server.js (Node ws with permessage-deflate).
Feed StartWsDeflate(const std::string& dir, const std::vector<std::string>& flags,
                    const std::string& tag = "wsdeflate") {
  return StartNodeFeed(dir, "ws_deflate_server.js", flags, tag);
}

// py_websockets_server.py (Python websockets 10.4, its default compression and pings).
Feed StartPyWebsockets(const std::string& dir, const std::vector<std::string>& flags,
                       const std::string& tag = "pyws") {
  return StartPythonFeed(dir, "py_websockets_server.py", flags, tag);
}

// hostile_server.py MODE: gzip-bomb, truncated-gzip, bad-extension, engineio-malformed,
// ping-missing-path.
Feed StartHostile(const std::string& dir, const std::string& mode, std::vector<std::string> flags,
                  const std::string& tag = "hostile") {
  flags.insert(flags.begin(), mode);
  return StartPythonFeed(dir, "hostile_server.py", flags, tag);
}

// ---- What the feeds send, byte for byte (tests/feeds/feedlib.py, feed_common.js) -------------

// "data" of message seq: "d<seq>-" then "0123456789" repeated, `pad` characters in all.
std::string FeedData(uint64_t seq, size_t pad) {
  std::string s = "d" + std::to_string(seq) + "-";
  for (size_t i = 0; s.size() < pad; ++i) s += static_cast<char>('0' + i % 10);
  return s;
}

// Message seq of the numbered stream: {"seq":N,"topic":T,"data":"..."}.
std::string FeedFrame(uint64_t seq, const std::vector<std::string>& topics, size_t pad) {
  return "{\"seq\":" + std::to_string(seq) + ",\"topic\":\"" + topics[(seq - 1) % topics.size()] +
         "\",\"data\":\"" + FeedData(seq, pad) + "\"}";
}

// socketio_server.js's event seq as the bridge journals it: the JSON array ["name",{...}].
std::string SocketIoEvent(uint64_t seq, const std::vector<std::string>& events, size_t pad) {
  return "[\"" + events[(seq - 1) % events.size()] + "\",{\"seq\":" + std::to_string(seq) +
         ",\"data\":\"" + FeedData(seq, pad) + "\"}]";
}

// ---- The bridge's side -------------------------------------------------------------------------

// Waits until the journal's cursor has reached upstream seq `n`.
bool WaitForUpstreamSeq(const std::string& db, uint64_t n,
                        std::chrono::milliseconds timeout = 30s) {
  return WaitFor(
      [&] {
        auto c = ReadCursor(db);
        return c && c->last_upstream_seq >= n;
      },
      timeout);
}

// Writes `toml` to <dir>/<name> and returns the flag that loads it.
std::string ConfigFlag(const TempDir& dir, const std::string& name, const std::string& toml) {
  const std::string path = dir.File(name);
  std::ofstream(path) << toml;
  return "--config=" + path;
}

// The flag that loads examples/feeds/<name> from the source tree, as an operator would.
std::string ExampleConfig(const std::string& name) {
  return "--config=" + std::string(WSB_SOURCE_DIR) + "/examples/feeds/" + name;
}

// The tests that load no example reconnect at once (an example keeps its own schedule).
const std::vector<std::string> kFastReconnect = {"--set=reconnect.base_delay_ms=20",
                                                 "--set=reconnect.max_delay_ms=200"};

// A running bridge (StartOsPortBridge), with what the tests read from it.
struct Bridge : OsPortBridge {

  // /metrics, or "" when it does not answer 200.
  std::string Metrics() const {
    HttpResult r = HttpRequest(http_port, "/metrics");
    return r.status == 200 ? r.body : "";
  }
  // The value of one sample, named with its labels as /metrics prints it
  // (wsbridge_reconnects_total{reason="extension"}); -1 when there is no such sample.
  double Metric(const std::string& sample) const { return MetricIn(Metrics(), sample); }
  static double MetricIn(const std::string& metrics, const std::string& sample) {
    return MetricSample(metrics, sample);
  }
  // Lines of its log matching `re`.
  size_t CountLogLines(const std::string& re) const {
    std::regex rx(re);
    std::istringstream in(child.Stderr());
    size_t n = 0;
    for (std::string line; std::getline(in, line);) n += std::regex_search(line, rx) ? 1 : 0;
    return n;
  }
};

Bridge StartFeedBridge(const std::string& dir, const std::string& url, const std::string& db,
                       const std::vector<std::string>& flags, const std::string& tag = "bridge") {
  return Bridge{StartOsPortBridge(dir, url, db, flags, tag)};
}

// Subscribing before the feed sends anything: the feed is started, then stopped (SIGSTOP: its
// port accepts connections, which wait in the backlog), the bridge is started on it, a
// subscriber connects and the bridge logs its subscription, and only then does the feed go on
// (SIGCONT) and answer the bridge's handshake. No port is guessed and no message can be
// published before the subscriber is there.
void Pause(pid_t pid) { ::kill(pid, SIGSTOP); }
void Go(pid_t pid) { ::kill(pid, SIGCONT); }
bool WaitSubscribed(Bridge& bridge) {
  return bridge.child.WaitForOutput("zmq: subscription to topic prefix", "err", 10s).has_value();
}

// What a subscriber received: every envelope, in arrival order, and when.
struct Received {
  std::vector<v1::Envelope> envelopes;
  ReceivedSpan span;
};

// Receives at `sub` until bridge seq `n` arrives (or nothing comes for `gap`).
Received ReceiveAll(Subscriber& sub, uint64_t n, std::chrono::milliseconds gap = 15s) {
  Received r;
  r.envelopes.reserve(n);
  r.span = ReceiveUntilSeq(sub, n, gap, [&](const v1::Envelope& e) { r.envelopes.push_back(e); });
  return r;
}

// Bridge seqs 1..n, each once and in order, each with upstream seq i, topic topic(i) and a text
// payload equal to payload(i), byte for byte.
template <typename Topic, typename Payload>
::testing::AssertionResult ExactlyInOrder(const Received& r, uint64_t n, Topic topic,
                                          Payload payload) {
  if (r.envelopes.size() != n) {
    return ::testing::AssertionFailure()
           << r.envelopes.size() << " envelopes, want " << n << " (last seq "
           << (r.envelopes.empty() ? 0 : r.envelopes.back().seq()) << ")";
  }
  for (uint64_t i = 1; i <= n; ++i) {
    const v1::Envelope& e = r.envelopes[i - 1];
    if (e.seq() != i || e.upstream_seq() != i || e.topic() != topic(i) ||
        e.payload() != payload(i) || e.binary()) {
      return ::testing::AssertionFailure()
             << "envelope " << i << ": seq " << e.seq() << ", upstream_seq " << e.upstream_seq()
             << ", topic \"" << e.topic() << "\" (want \"" << topic(i) << "\"), binary "
             << e.binary() << ", payload\n  " << e.payload() << "\nwant\n  " << payload(i);
    }
  }
  return ::testing::AssertionSuccess();
}

// wsbridge_wire_bytes_in_total clearly below wsbridge_bytes_in_total: under half.
::testing::AssertionResult WireShowsCompression(const std::string& metrics) {
  const double wire = Bridge::MetricIn(metrics, "wsbridge_wire_bytes_in_total");
  const double in = Bridge::MetricIn(metrics, "wsbridge_bytes_in_total");
  ::testing::Test::RecordProperty("wire_bytes_in", std::to_string(static_cast<uint64_t>(wire)));
  ::testing::Test::RecordProperty("bytes_in", std::to_string(static_cast<uint64_t>(in)));
  if (wire > 0 && in > 0 && wire * 2 < in) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "wire bytes " << wire << ", bytes after inflation " << in << "\n"
         << metrics;
}

// The peak resident set of a running process (VmHWM), in bytes; 0 when unreadable.
uint64_t PeakRssBytes(pid_t pid) {
  std::istringstream in(ReadFileOrEmpty("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(in, line);) {
    unsigned long long kb = 0;
    if (std::sscanf(line.c_str(), "VmHWM: %llu kB", &kb) == 1) return kb * 1024;
  }
  return 0;
}

// Sanitizers map shadow memory and keep freed blocks in quarantine: a bridge built with them has
// a larger RSS for the same work. The bound below is for the plain build; with a sanitizer it is
// scaled, still far below the gigabyte a bomb would cost if inflated whole.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr uint64_t kRssScale = 4;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr uint64_t kRssScale = 4;
#else
constexpr uint64_t kRssScale = 1;
#endif
#else
constexpr uint64_t kRssScale = 1;
#endif
constexpr uint64_t kMiB = 1 << 20;

// ---- The feeds themselves (no bridge) ----------------------------------------------------------

TEST(FeedsStart, EachFeedListensOnAnOsPortAndExitsZeroOnSigterm) {
  ASSERT_FALSE(Which("node").empty()) << "node is not on PATH";
  TempDir dir;
  std::vector<Feed> feeds;
  feeds.push_back(StartSocketIo(dir.path(), {}));
  feeds.push_back(StartWsDeflate(dir.path(), {}));
  feeds.push_back(StartPyWebsockets(dir.path(), {}));
  for (const char* mode : {"gzip-bomb", "truncated-gzip", "bad-extension", "engineio-malformed",
                           "ping-missing-path"}) {
    feeds.push_back(
        StartHostile(dir.path(), mode, {"--bomb-bytes=16777216"}, std::string("hostile-") + mode));
  }
  for (auto& f : feeds) {
    EXPECT_NE(f.port, 0) << f.child.Stderr();
    EXPECT_EQ(f.child.Kill(SIGTERM), 0) << f.child.Stderr();
  }
}

TEST(FeedsStart, ExpectedFramesMatchTheFeedsDefinition) {
  EXPECT_EQ(FeedData(7, 20), "d7-01234567890123456");
  EXPECT_EQ(FeedData(12345, 3), "d12345-");
  EXPECT_EQ(FeedFrame(3, {"a", "b"}, 8), R"({"seq":3,"topic":"a","data":"d3-01234"})");
  EXPECT_EQ(SocketIoEvent(2, {"trade", "quote"}, 6), R"(["quote",{"seq":2,"data":"d2-012"}])");
}

// ---- The bridge against the feeds (SPEC §9) ---------------------------------------------------

const std::vector<std::string> kSocketIoEvents = {"trade", "quote"};

// socket.io with examples/feeds/socketio.toml: auth, events journaled as ["name",{...}] with
// topic = name and seq from 1.seq, the server's pings answered for the whole run, a namespace
// disconnect (41) resumed without a gap or a duplicate, exactly one connection before and one
// after it.
TEST(FeedsSocketIo, EventsExactlyOnceAcrossANamespaceDisconnect) {
  TempDir dir;
  Feed feed = StartSocketIo(dir.path(), {"--token=s3cret", "--rate=300", "--count=600",
                                         "--disconnect-after=200", "--pad=16"});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  const std::string db = dir.File("sio.db");
  Bridge bridge =
      StartFeedBridge(dir.path(), SocketIoUrl(feed), db, {ExampleConfig("socketio.toml")});
  ASSERT_TRUE(WaitForUpstreamSeq(db, 600)) << bridge.child.Stderr() << feed.child.Stdout();
  auto rows = ReadJournalRows(db);
  ASSERT_EQ(rows.size(), 600u);
  for (uint64_t i = 1; i <= 600; ++i) {
    const auto& m = rows[i - 1].msg;
    ASSERT_EQ(m.upstream_seq, i);
    ASSERT_EQ(m.topic, i % 2 ? "trade" : "quote");
    ASSERT_EQ(m.payload, SocketIoEvent(i, kSocketIoEvents, 16));
    ASSERT_FALSE(m.binary);
  }
  EXPECT_EQ(feed.CountLines(R"(^disconnecting 1 namespace after 200$)"), 1u) << feed.child.Stdout();
  EXPECT_EQ(feed.CountLines(R"(^connected \d+ )"), 2u) << feed.child.Stdout();
  EXPECT_EQ(feed.CountLines(R"(^resume 1 after 0$)"), 1u) << feed.child.Stdout();
  EXPECT_EQ(feed.CountLines(R"(^resume 2 after 200$)"), 1u) << feed.child.Stdout();
  EXPECT_EQ(feed.CountLines(R"(ping timeout)"), 0u) << feed.child.Stdout();
  EXPECT_EQ(bridge.Metric("wsbridge_upstream_connects_total"), 2) << bridge.Metrics();
  EXPECT_EQ(bridge.child.Kill(SIGTERM), 0) << bridge.child.Stderr();
}

// socket.io outbound, through wsbridge-send: a JSON array ["event", ...] is accepted and reaches
// the server as that event; anything else is refused REJECTED_INVALID with the reason, before it
// is queued.
TEST(FeedsSocketIo, ProducersSendEventsAndOnlyEvents) {
  TempDir dir;
  const std::string received = dir.File("sio-received.log");
  Feed feed = StartSocketIo(dir.path(), {"--token=s3cret", "--count=1", "--log-received=" + received});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  Bridge bridge = StartFeedBridge(dir.path(), SocketIoUrl(feed), dir.File("sio.db"),
                                  {ExampleConfig("socketio.toml")});
  ASSERT_FALSE(bridge.send.empty()) << bridge.child.Stderr();
  auto send = [&](const std::string& payload, const std::string& tag) {
    Child c = Child::Start({Bin("wsbridge-send"), "--send=" + bridge.send, payload}, dir.path(), tag);
    const int rc = c.Wait();
    return std::make_pair(rc, c.Stdout());
  };
  const auto [ok_rc, ok_out] = send(R"(["order",{"id":"o-1","qty":2}])", "send-ok");
  EXPECT_EQ(ok_rc, 0) << ok_out;
  EXPECT_NE(ok_out.find("ACCEPTED"), std::string::npos) << ok_out;
  const auto [bad_rc, bad_out] = send(R"({"op":"order"})", "send-bad");
  EXPECT_NE(bad_rc, 0) << bad_out;
  EXPECT_NE(bad_out.find("REJECTED_INVALID"), std::string::npos) << bad_out;
  EXPECT_NE(bad_out.find("must be a JSON array"), std::string::npos) << bad_out;
  ASSERT_TRUE(WaitFor([&] { return !ReadFileOrEmpty(received).empty(); }, 20s))
      << bridge.child.Stderr() << feed.child.Stdout();
  EXPECT_EQ(ReadFileOrEmpty(received), "[\"order\",{\"id\":\"o-1\",\"qty\":2}]\n");
  EXPECT_EQ(bridge.child.Kill(SIGTERM), 0) << bridge.child.Stderr();
}

// socket.io with examples/feeds/socketio.toml and the server's permessage-deflate (threshold 0):
// one Engine.IO connection and one namespace connection for a 5 s run, through more than ten of
// the server's 300 ms ping intervals (each answered: replies_sent_total), every event at a
// ZeroMQ subscriber byte for byte and in order, and the wire bytes well below the inflated ones.
TEST(FeedsSocketIo, OneConnectionThroughManyPingIntervalsCompressed) {
  TempDir dir;
  constexpr uint64_t kCount = 1500;  // 5 s at 300/s
  Feed feed = StartSocketIo(dir.path(),
                            {"--token=s3cret", "--rate=300", "--count=1500", "--pad=200",
                             "--ping-interval=300", "--ping-timeout=200", "--per-message-deflate"});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  Pause(feed.child.pid());
  Bridge bridge = StartFeedBridge(dir.path(), SocketIoUrl(feed), dir.File("sio.db"),
                                  {ExampleConfig("socketio.toml")});
  ASSERT_FALSE(bridge.pub.empty()) << bridge.child.Stderr();
  ASSERT_NE(bridge.http_port, 0) << bridge.child.Stderr();
  zmq::context_t ctx;
  Subscriber sub(ctx, bridge.pub);
  ASSERT_TRUE(WaitSubscribed(bridge)) << bridge.child.Stderr();
  Go(feed.child.pid());

  Received got = ReceiveAll(sub, kCount);
  EXPECT_TRUE(ExactlyInOrder(
      got, kCount, [](uint64_t i) { return kSocketIoEvents[(i - 1) % 2]; },
      [](uint64_t i) { return SocketIoEvent(i, kSocketIoEvents, 200); }))
      << bridge.child.Stderr() << feed.child.Stdout();
  // Ten pings answered with 3 (counted as replies): the connection has lasted ten intervals.
  ASSERT_TRUE(WaitFor([&] { return bridge.Metric("wsbridge_replies_sent_total") >= 10; }, 10s))
      << bridge.Metrics() << feed.child.Stdout();
  const std::string metrics = bridge.Metrics();
  EXPECT_EQ(Bridge::MetricIn(metrics, "wsbridge_upstream_connects_total"), 1) << metrics;
  EXPECT_TRUE(WireShowsCompression(metrics));
  EXPECT_EQ(feed.CountLines(R"(^engine \d+$)"), 1u) << feed.child.Stdout();
  EXPECT_EQ(feed.CountLines(R"(^connected \d+ )"), 1u) << feed.child.Stdout();
  EXPECT_EQ(feed.CountLines(R"(^disconnected )"), 0u) << feed.child.Stdout();
  EXPECT_EQ(bridge.CountLogLines(R"(upstream: connected to .*, permessage-deflate \()"), 1u)
      << bridge.child.Stderr();
  EXPECT_EQ(bridge.child.Kill(SIGTERM), 0) << bridge.child.Stderr();
}

// socket.io: a refused auth (44{"message":"unauthorized"}) is fatal, with the message logged and
// on /readyz (503). socketio.toml sends the token "s3cret"; this server wants another.
TEST(FeedsSocketIo, ConnectErrorIsFatalWithItsMessage) {
  TempDir dir;
  Feed feed = StartSocketIo(dir.path(), {"--token=not-the-one-in-the-file"});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  Bridge bridge = StartFeedBridge(dir.path(), SocketIoUrl(feed), dir.File("sio.db"),
                                  {ExampleConfig("socketio.toml")});
  ASSERT_NE(bridge.http_port, 0) << bridge.child.Stderr();
  HttpResult ready;
  EXPECT_TRUE(WaitFor(
      [&] {
        ready = HttpRequest(bridge.http_port, "/readyz");
        return ready.status == 503 && ready.body.find("unauthorized") != std::string::npos;
      },
      10s))
      << ready.status << " " << ready.body << "\n"
      << bridge.child.Stderr();
  EXPECT_TRUE(bridge.child.WaitForOutput("socket.io connect error: unauthorized", "err", 1s))
      << bridge.child.Stderr();
  EXPECT_GE(feed.CountLines(R"(^connect_error \d+ unauthorized$)"), 1u) << feed.child.Stdout();
  EXPECT_EQ(feed.CountLines(R"(^connected \d+ )"), 0u);
  EXPECT_EQ(bridge.child.Kill(SIGTERM), 0) << bridge.child.Stderr();
}

// Node ws with permessage-deflate and examples/feeds/permessage_deflate.toml, tuned (10-bit
// window, no context takeover) and library defaults (15 bits, context takeover), with a
// reconnect every 700 messages (a fresh context): every frame journaled as sent, byte for byte.
TEST(FeedsWsDeflate, ByteExactTunedAndDefaults) {
  for (const char* mode : {"tuned", "defaults"}) {
    SCOPED_TRACE(mode);
    TempDir dir;
    Feed feed =
        StartWsDeflate(dir.path(), {std::string("--deflate=") + mode, "--rate=0", "--count=2000",
                                    "--pad=200", "--close-after=700", "--topics=a,b"});
    ASSERT_NE(feed.port, 0) << feed.child.Stderr();
    const std::string db = dir.File("ws.db");
    Bridge bridge =
        StartFeedBridge(dir.path(), feed.Url(), db, {ExampleConfig("permessage_deflate.toml")});
    ASSERT_TRUE(WaitForUpstreamSeq(db, 2000)) << bridge.child.Stderr() << feed.child.Stdout();
    auto rows = ReadJournalRows(db);
    ASSERT_EQ(rows.size(), 2000u);
    for (uint64_t i = 1; i <= 2000; ++i) {
      ASSERT_EQ(rows[i - 1].msg.upstream_seq, i);
      ASSERT_EQ(rows[i - 1].msg.payload, FeedFrame(i, {"a", "b"}, 200));
    }
    // Three connections (--close-after 700), each with the extension (the bridge offers it).
    EXPECT_EQ(feed.CountLines(R"(^connected \d+ extensions=permessage-deflate)"), 3u)
        << feed.child.Stdout();
    EXPECT_EQ(feed.CountLines(R"(^connected \d+ )"), 3u) << feed.child.Stdout();
    EXPECT_TRUE(WireShowsCompression(bridge.Metrics()));
    EXPECT_EQ(bridge.child.Kill(SIGTERM), 0) << bridge.child.Stderr();
  }
}

// Node ws, tuned (threshold 0, serverMaxWindowBits 10, serverNoContextTakeover), with
// examples/feeds/permessage_deflate.toml: one connection for a 4 s run through the server's
// ws.ping() every 100 ms (a client that misses one is terminated), every frame at a ZeroMQ
// subscriber byte for byte and in order, the negotiated parameters logged, the wire bytes well
// below the inflated ones.
TEST(FeedsWsDeflate, TunedOneConnectionThroughManyPings) {
  TempDir dir;
  constexpr uint64_t kCount = 2000;  // 4 s at 500/s: 40 ping intervals
  Feed feed = StartWsDeflate(dir.path(), {"--deflate=tuned", "--rate=500", "--count=2000",
                                          "--pad=200", "--ping-interval=100", "--topics=a,b"});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  Pause(feed.child.pid());
  Bridge bridge = StartFeedBridge(dir.path(), feed.Url(), dir.File("ws.db"),
                                  {ExampleConfig("permessage_deflate.toml")});
  ASSERT_FALSE(bridge.pub.empty()) << bridge.child.Stderr();
  ASSERT_NE(bridge.http_port, 0) << bridge.child.Stderr();
  zmq::context_t ctx;
  Subscriber sub(ctx, bridge.pub);
  ASSERT_TRUE(WaitSubscribed(bridge)) << bridge.child.Stderr();
  Go(feed.child.pid());

  Received got = ReceiveAll(sub, kCount);
  EXPECT_TRUE(ExactlyInOrder(
      got, kCount, [](uint64_t i) { return i % 2 ? "a" : "b"; },
      [](uint64_t i) { return FeedFrame(i, {"a", "b"}, 200); }))
      << bridge.child.Stderr() << feed.child.Stdout();
  const std::string metrics = bridge.Metrics();
  EXPECT_EQ(Bridge::MetricIn(metrics, "wsbridge_upstream_connects_total"), 1) << metrics;
  EXPECT_TRUE(WireShowsCompression(metrics));
  EXPECT_EQ(bridge.CountLogLines("upstream: connected to .*, permessage-deflate "
                                 R"(\(server_max_window_bits=10, server_no_context_takeover\))"),
            1u)
      << bridge.child.Stderr();
  EXPECT_EQ(feed.CountLines(R"(^connected \d+ extensions=permessage-deflate)"), 1u)
      << feed.child.Stdout();
  EXPECT_EQ(feed.CountLines(R"(^connected \d+ )"), 1u) << feed.child.Stdout();

  // The server's account of its pings, from its close line once the bridge has gone.
  EXPECT_EQ(bridge.child.Kill(SIGTERM), 0) << bridge.child.Stderr();
  ASSERT_TRUE(feed.child.WaitForOutput(R"((?:^|\n)closed 1 code=)", "out", 10s))
      << feed.child.Stdout();
  std::smatch m;
  const std::string out = feed.child.Stdout();
  ASSERT_TRUE(std::regex_search(
      out, m, std::regex(R"(closed 1 code=\d+ sent=\d+ pings=(\d+) pongs=(\d+))")))
      << out;
  const int pings = std::stoi(m[1]), pongs = std::stoi(m[2]);
  EXPECT_GE(pings, 20) << out;
  EXPECT_GE(pongs, pings - 1) << out;
  EXPECT_EQ(feed.CountLines(R"(^terminated )"), 0u) << out;
}

// Python websockets, its default compression, its keepalive pings every 100 ms (a pong later
// than 300 ms closes the connection with 1011), with examples/feeds/permessage_deflate.toml: one
// connection for a 4 s run, every frame at a ZeroMQ subscriber byte for byte and in order, the
// wire bytes well below the inflated ones.
TEST(FeedsPyWebsockets, ByteExactOnOneConnectionWithLibraryPings) {
  TempDir dir;
  constexpr uint64_t kCount = 2000;  // 4 s at 500/s
  Feed feed = StartPyWebsockets(
      dir.path(), {"--rate=500", "--count=2000", "--ping-interval=0.1", "--ping-timeout=0.3"});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  Pause(feed.child.pid());
  Bridge bridge = StartFeedBridge(dir.path(), feed.Url(), dir.File("py.db"),
                                  {ExampleConfig("permessage_deflate.toml")});
  ASSERT_FALSE(bridge.pub.empty()) << bridge.child.Stderr();
  ASSERT_NE(bridge.http_port, 0) << bridge.child.Stderr();
  zmq::context_t ctx;
  Subscriber sub(ctx, bridge.pub);
  ASSERT_TRUE(WaitSubscribed(bridge)) << bridge.child.Stderr();
  Go(feed.child.pid());

  Received got = ReceiveAll(sub, kCount);
  EXPECT_TRUE(ExactlyInOrder(
      got, kCount, [](uint64_t) { return "t"; },
      [](uint64_t i) { return FeedFrame(i, {"t"}, 200); }))
      << bridge.child.Stderr() << feed.child.Stdout();
  // The stream is paced by the feed's clock: its last message came at least 2 s (20 ping
  // intervals) after the first, all on the one connection.
  EXPECT_GE(got.span.last - got.span.first, 2s);
  const std::string metrics = bridge.Metrics();
  EXPECT_EQ(Bridge::MetricIn(metrics, "wsbridge_upstream_connects_total"), 1) << metrics;
  EXPECT_TRUE(WireShowsCompression(metrics));
  EXPECT_EQ(bridge.CountLogLines(R"(upstream: connected to .*, permessage-deflate \()"), 1u)
      << bridge.child.Stderr();
  EXPECT_EQ(feed.CountLines(R"(^connected \d+ extensions=permessage-deflate)"), 1u)
      << feed.child.Stdout();
  EXPECT_EQ(feed.CountLines(R"(^connected \d+ )"), 1u) << feed.child.Stdout();
  EXPECT_EQ(feed.CountLines(R"(^closed )"), 0u) << feed.child.Stdout();
  EXPECT_EQ(bridge.child.Kill(SIGTERM), 0) << bridge.child.Stderr();
}

// wsbridge-upstream --server-ping 250 --ping-deadline 700 --compress gzip with
// examples/feeds/htx_gzip_ping.toml: every frame gzipped, {"ping":N} echoed {"pong":N} within the
// 700 ms deadline for a 10 s run on one connection (41 pings, 250 ms apart); pings consumed; seq
// and topic read from the inflated frames, which reach a ZeroMQ subscriber as text.
TEST(FeedsUpstream, GzippedServerPingsAnsweredInTime) {
  TempDir dir;
  constexpr uint64_t kCount = 1000;  // 10 s at 100/s
  constexpr int kPings = 41;         // 250 ms apart: the 41st comes 10 s after the first
  int port = 0;
  Child upstream =
      StartUpstream(dir.path(),
                    {"--rate=100", "--count=1000", "--topics=a,b", "--payload-bytes=300",
                     "--compress=gzip", "--server-ping=250", "--ping-deadline=700"},
                    &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  Pause(upstream.pid());
  const std::string db = dir.File("up.db");
  Bridge bridge = StartFeedBridge(dir.path(), "ws://127.0.0.1:" + std::to_string(port) + "/feed",
                                  db, {ExampleConfig("htx_gzip_ping.toml")});
  ASSERT_FALSE(bridge.pub.empty()) << bridge.child.Stderr();
  ASSERT_NE(bridge.http_port, 0) << bridge.child.Stderr();
  zmq::context_t ctx;
  Subscriber sub(ctx, bridge.pub);
  ASSERT_TRUE(WaitSubscribed(bridge)) << bridge.child.Stderr();
  Go(upstream.pid());

  Received got = ReceiveAll(sub, kCount);
  ASSERT_EQ(got.envelopes.size(), kCount) << bridge.child.Stderr() << upstream.Stderr();
  for (uint64_t i = 1; i <= kCount; ++i) {
    const v1::Envelope& e = got.envelopes[i - 1];
    const std::string topic = i % 2 ? "a" : "b";
    ASSERT_EQ(e.seq(), i);
    ASSERT_EQ(e.upstream_seq(), i);
    ASSERT_EQ(e.topic(), topic);
    ASSERT_EQ(e.payload().rfind(
                  "{\"seq\":" + std::to_string(i) + ",\"topic\":\"" + topic + "\",\"data\":{", 0),
              0u)
        << e.payload();
    ASSERT_FALSE(e.binary());
  }
  ASSERT_TRUE(WaitFor([&] { return bridge.Metric("wsbridge_replies_sent_total") >= kPings; }, 20s))
      << bridge.Metrics() << upstream.Stderr();
  const std::string metrics = bridge.Metrics();
  EXPECT_EQ(Bridge::MetricIn(metrics, "wsbridge_upstream_connects_total"), 1) << metrics;
  EXPECT_EQ(Bridge::MetricIn(metrics, "wsbridge_reply_failures_total"), 0) << metrics;
  EXPECT_EQ(Bridge::MetricIn(metrics, "wsbridge_inflate_failures_total"), 0) << metrics;
  EXPECT_TRUE(WireShowsCompression(metrics));
  EXPECT_EQ(ReadJournalRows(db).size(), kCount);  // no ping journaled

  // The upstream's account, from its close line once the bridge has gone: every ping but
  // perhaps the last (in flight at the close) answered with exactly {"pong":<its number>}.
  EXPECT_EQ(bridge.child.Kill(SIGTERM), 0) << bridge.child.Stderr();
  ASSERT_TRUE(upstream.WaitForOutput(R"(connection 1 closed .* pings answered)", "err", 10s))
      << upstream.Stderr();
  const std::string log = upstream.Stderr();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      log, m, std::regex(R"(connection 1 closed .*, (\d+) of (\d+) pings answered)")))
      << log;
  const int answered = std::stoi(m[1]), sent = std::stoi(m[2]);
  EXPECT_GE(answered, kPings) << log;
  EXPECT_GE(answered + 1, sent) << log;
  EXPECT_EQ(log.find("not answered within"), std::string::npos) << log;
  EXPECT_EQ(log.find("answers no unanswered ping"), std::string::npos) << log;
  EXPECT_EQ(log.find("connection 2 open"), std::string::npos) << log;
}

// wsbridge-upstream --permessage-deflate with examples/feeds/reference.toml: the bridge's offer is
// accepted (the upstream logs the negotiated extension), the feed arrives in order, the wire
// bytes well below the inflated ones.
TEST(FeedsUpstream, PermessageDeflateNegotiated) {
  TempDir dir;
  int port = 0;
  Child upstream = StartUpstream(
      dir.path(), {"--rate=0", "--count=5000", "--payload-bytes=300", "--permessage-deflate"},
      &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  const std::string db = dir.File("up.db");
  Bridge bridge = StartFeedBridge(dir.path(), "ws://127.0.0.1:" + std::to_string(port) + "/feed",
                                  db, {ExampleConfig("reference.toml")});
  ASSERT_TRUE(WaitForUpstreamSeq(db, 5000)) << bridge.child.Stderr() << upstream.Stderr();
  EXPECT_NE(upstream.Stderr().find("extensions: permessage-deflate"), std::string::npos)
      << upstream.Stderr();
  auto rows = ReadJournalRows(db);
  ASSERT_EQ(rows.size(), 5000u);
  for (uint64_t i = 1; i <= 5000; ++i) ASSERT_EQ(rows[i - 1].msg.upstream_seq, i);
  const std::string metrics = bridge.Metrics();
  EXPECT_EQ(Bridge::MetricIn(metrics, "wsbridge_upstream_connects_total"), 1) << metrics;
  EXPECT_TRUE(WireShowsCompression(metrics));
  EXPECT_EQ(bridge.child.Kill(SIGTERM), 0) << bridge.child.Stderr();
}

// A gzip bomb (1 MiB inflating to 1 GiB) closes the connection with 1009 and is counted; the
// bridge resumes after seq 3 and gets the rest; its memory stays bounded (peak RSS).
TEST(FeedsHostile, GzipBombClosesWith1009AndTheStreamResumes) {
  TempDir dir;
  Feed feed = StartHostile(dir.path(), "gzip-bomb", {"--good=3", "--count=10"});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  const std::string db = dir.File("bomb.db");
  std::vector<std::string> flags = kFastReconnect;
  flags.push_back("--set=protocol.decompress=gzip");
  Bridge bridge = StartFeedBridge(dir.path(), feed.Url(), db, flags);
  ASSERT_NE(bridge.http_port, 0) << bridge.child.Stderr();
  ASSERT_TRUE(WaitForUpstreamSeq(db, 10)) << bridge.child.Stderr() << feed.child.Stdout();
  auto rows = ReadJournalRows(db);
  ASSERT_EQ(rows.size(), 10u);
  for (uint64_t i = 1; i <= 10; ++i) ASSERT_EQ(rows[i - 1].msg.payload, FeedFrame(i, {"t"}, 40));
  EXPECT_EQ(feed.CountLines(R"(^sent-bad 1 bomb gzip inflating to 1073741824 \d+$)"), 1u)
      << feed.child.Stdout();
  EXPECT_TRUE(bridge.child.WaitForOutput("closed with 1009", "err", 1s)) << bridge.child.Stderr();
  EXPECT_EQ(feed.CountLines(R"(^resume 2 after 3$)"), 1u) << feed.child.Stdout();
  const std::string metrics = bridge.Metrics();
  EXPECT_EQ(Bridge::MetricIn(metrics, "wsbridge_oversized_frames_total"), 1) << metrics;
  EXPECT_EQ(Bridge::MetricIn(metrics, "wsbridge_reconnects_total{reason=\"message_too_big\"}"), 1)
      << metrics;
  EXPECT_EQ(Bridge::MetricIn(metrics, "wsbridge_upstream_connects_total"), 2) << metrics;
  const uint64_t peak = PeakRssBytes(bridge.child.pid());
  ::testing::Test::RecordProperty("bridge_vmhwm_bytes", std::to_string(peak));
  EXPECT_GT(peak, 0u);
  EXPECT_LT(peak, 64 * kMiB * kRssScale) << "VmHWM " << peak / kMiB << " MiB";
  EXPECT_EQ(bridge.child.Kill(SIGTERM), 0) << bridge.child.Stderr();
}

// A gzip frame cut short is journaled as received (binary, no seq) and counted; the stream goes
// on around it.
TEST(FeedsHostile, TruncatedGzipJournaledAsReceived) {
  TempDir dir;
  Feed feed = StartHostile(dir.path(), "truncated-gzip", {"--good=2", "--count=5"});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  const std::string db = dir.File("trunc.db");
  std::vector<std::string> flags = kFastReconnect;
  flags.push_back("--set=protocol.decompress=auto");
  Bridge bridge = StartFeedBridge(dir.path(), feed.Url(), db, flags);
  ASSERT_TRUE(WaitForUpstreamSeq(db, 5)) << bridge.child.Stderr();
  auto rows = ReadJournalRows(db);
  ASSERT_EQ(rows.size(), 6u);
  const uint64_t want_seq[] = {1, 2, 0, 3, 4, 5};
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(rows[i].msg.upstream_seq, want_seq[i]) << i;
    EXPECT_EQ(rows[i].msg.binary, want_seq[i] == 0) << i;
    if (want_seq[i] != 0) EXPECT_EQ(rows[i].msg.payload, FeedFrame(want_seq[i], {"t"}, 40));
  }
  EXPECT_EQ(bridge.Metric("wsbridge_inflate_failures_total"), 1) << bridge.Metrics();
  EXPECT_EQ(bridge.Metric("wsbridge_upstream_connects_total"), 1) << bridge.Metrics();
  EXPECT_EQ(bridge.child.Kill(SIGTERM), 0) << bridge.child.Stderr();
}

// A 101 whose Sec-WebSocket-Extensions the bridge cannot honour fails the handshake with that
// reason (logged, on /readyz, counted as reason="extension"); the connection never opens with
// compression silently off.
TEST(FeedsHostile, UnacceptableExtensionFailsTheHandshake) {
  const std::pair<const char*, const char*> cases[] = {
      {"permessage-deflate; server_max_window_bits=7",
       "permessage-deflate: server_max_window_bits=7 is outside 8..15"},
      {"permessage-deflate; foo=1",
       "permessage-deflate: unknown parameter \"foo\" in the server's response"}};
  for (const auto& [ext, reason] : cases) {
    SCOPED_TRACE(ext);
    TempDir dir;
    Feed feed = StartHostile(dir.path(), "bad-extension", {std::string("--extension=") + ext});
    ASSERT_NE(feed.port, 0) << feed.child.Stderr();
    Bridge bridge = StartFeedBridge(dir.path(), feed.Url(), dir.File("ext.db"), kFastReconnect);
    ASSERT_NE(bridge.http_port, 0) << bridge.child.Stderr();
    EXPECT_TRUE(WaitFor([&] { return bridge.child.Stderr().find(reason) != std::string::npos; }))
        << bridge.child.Stderr();
    EXPECT_TRUE(feed.child.WaitForOutput(R"((?:^|\n)closed 1 received=0\n)", "out"))
        << feed.child.Stdout();  // the bridge closed the socket without sending a frame
    HttpResult ready;
    EXPECT_TRUE(WaitFor(
        [&] {
          ready = HttpRequest(bridge.http_port, "/readyz");
          return ready.status == 503 && ready.body.find(reason) != std::string::npos;
        },
        10s))
        << ready.status << " " << ready.body;
    const std::string metrics = bridge.Metrics();
    EXPECT_GE(Bridge::MetricIn(metrics, "wsbridge_reconnects_total{reason=\"extension\"}"), 1)
        << metrics;
    EXPECT_EQ(Bridge::MetricIn(metrics, "wsbridge_upstream_connects_total"), 0) << metrics;
    auto cursor = ReadCursor(dir.File("ext.db"));
    EXPECT_TRUE(!cursor || cursor->last_seq == 0);
    EXPECT_EQ(bridge.child.Kill(SIGTERM), 0) << bridge.child.Stderr();
  }
}

// Malformed Engine.IO packets between good events: counted, the bridge keeps running, and the
// good events, also those after the bad packets, are journaled in order.
TEST(FeedsHostile, MalformedEngineIoPacketsDoNotBreakTheStream) {
  TempDir dir;
  Feed feed = StartHostile(dir.path(), "engineio-malformed", {"--count=8"});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  const std::string db = dir.File("eio.db");
  std::vector<std::string> flags = kFastReconnect;
  flags.insert(flags.end(), {"--set=protocol.framing=engineio", "--set=protocol.seq_field=1.seq",
                             "--set=protocol.resume="});
  Bridge bridge = StartFeedBridge(dir.path(), SocketIoUrl(feed), db, flags);
  ASSERT_TRUE(WaitForUpstreamSeq(db, 8)) << bridge.child.Stderr();
  std::vector<uint64_t> seqs;
  for (const auto& r : ReadJournalRows(db)) {
    if (r.msg.upstream_seq != 0) seqs.push_back(r.msg.upstream_seq);
  }
  EXPECT_EQ(seqs, (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_GE(bridge.Metric("wsbridge_malformed_packets_total"), 1) << bridge.Metrics();
  EXPECT_FALSE(bridge.child.Exited()) << bridge.child.Stderr();
  EXPECT_EQ(bridge.child.Kill(SIGTERM), 0) << bridge.child.Stderr();
}

// A reply rule whose {{ts}} is missing from a matched frame sends nothing; the control frame
// that has it is answered {"pong":5}, which arrives after anything wrongly sent before it. A
// second rule, matching every data frame (consume = false) with a path none has, fails on each
// of them: counted every time, logged once.
TEST(FeedsHostile, ReplyRuleWithoutItsPathIsNotAnswered) {
  TempDir dir;
  constexpr uint64_t kCount = 20;
  const std::string log = dir.File("received.log");
  Feed feed = StartHostile(dir.path(), "ping-missing-path",
                           {"--count=" + std::to_string(kCount), "--log-received=" + log});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  const std::string db = dir.File("rules.db");
  std::vector<std::string> flags = kFastReconnect;
  flags.push_back(ConfigFlag(dir, "replies.toml",
                             "[[protocol.replies]]\nfield = \"op\"\nequals = \"ping\"\n"
                             "reply = '{\"pong\":{{ts}}}'\n"
                             "[[protocol.replies]]\nfield = \"seq\"\n"
                             "reply = '{\"seen\":{{no.such.path}}}'\nconsume = false\n"));
  Bridge bridge = StartFeedBridge(dir.path(), feed.Url(), db, flags);
  ASSERT_TRUE(WaitFor([&] {
    return ReadFileOrEmpty(log).find("{\"pong\":5}") != std::string::npos;
  })) << bridge.child.Stderr()
      << ReadFileOrEmpty(log);
  ASSERT_TRUE(WaitForUpstreamSeq(db, kCount)) << bridge.child.Stderr();
  // The data frames and {"ping":123}, which no rule matches; not the consumed {"op":"ping"}s.
  auto rows = ReadJournalRows(db);
  ASSERT_EQ(rows.size(), kCount + 1);
  EXPECT_EQ(rows[1].msg.payload, "{\"ping\":123}");
  EXPECT_EQ(rows[1].msg.upstream_seq, 0u);
  // {"op":"ping"} once, and each of the kCount data frames.
  EXPECT_EQ(bridge.Metric("wsbridge_reply_failures_total"), kCount + 1) << bridge.Metrics();
  EXPECT_EQ(bridge.Metric("wsbridge_replies_sent_total"), 1) << bridge.Metrics();
  EXPECT_EQ(bridge.CountLogLines(R"(protocol\.replies\[0\])"), 1u) << bridge.child.Stderr();
  EXPECT_EQ(bridge.CountLogLines(R"(protocol\.replies\[1\])"), 1u) << bridge.child.Stderr();
  EXPECT_EQ(ReadFileOrEmpty(log), "{\"pong\":5}\n");
  EXPECT_EQ(bridge.child.Kill(SIGTERM), 0) << bridge.child.Stderr();
}

}  // namespace
}  // namespace wsbridge::testing
