// Real feeds' protocols (SPEC §9) with real processes, against upstreams this project did not
// write (tests/feeds): socket.io v4 (npm socket.io), Node ws with permessage-deflate, Python
// websockets, hostile servers (gzip bomb, truncated gzip, an extension the bridge cannot honour,
// malformed Engine.IO packets, a reply rule whose path is missing), and wsbridge-upstream's
// --server-ping / --compress / --permessage-deflate.
//
// Needs the ctest fixture "feeds" (tests/feeds/setup.sh puts the npm packages in the build
// folder): `ctest -R feeds` runs feeds_setup first. By hand, after it ran once:
//   build/tests/feeds_test [--gtest_also_run_disabled_tests]
// WSB_FEEDS_NODE_MODULES in the environment overrides where the npm packages are.
//
// The  tests are the bridge-side tests, written against SPEC §9 ahead of the daemon;
// enable each when its side lands. FeedsStart.* only check the feeds and these helpers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
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

// socket.io: auth, events journaled as ["name",{...}] with topic = name and seq from 1.seq, the
// server's pings answered for the whole run, a namespace disconnect (41) resumed without a gap
// or a duplicate, exactly one connection before and one after it.
TEST(FeedsSocketIo, EventsExactlyOnceAcrossANamespaceDisconnect) {
  TempDir dir;
  Feed feed = StartSocketIo(dir.path(), {"--token=s3cret", "--rate=300", "--count=600",
                                         "--disconnect-after=200", "--pad=16"});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  const std::string db = dir.File("sio.db");
  Child bridge = StartBridge(dir.path(), SocketIoUrl(feed), db,
                             {"--set=protocol.framing=engineio", "--set=protocol.seq_field=1.seq",
                              R"(--set=protocol.resume=["resume",{"after":{last_seq}}])",
                              R"(--set=protocol.socketio_auth={"token":"s3cret"})"},
                             nullptr);
  ASSERT_TRUE(WaitForUpstreamSeq(db, 600)) << bridge.Stderr() << feed.child.Stdout();
  auto rows = ReadJournalRows(db);
  ASSERT_EQ(rows.size(), 600u);
  for (uint64_t i = 1; i <= 600; ++i) {
    const auto& m = rows[i - 1].msg;
    ASSERT_EQ(m.upstream_seq, i);
    ASSERT_EQ(m.topic, i % 2 ? "trade" : "quote");
    ASSERT_EQ(m.payload, SocketIoEvent(i, {"trade", "quote"}, 16));
    ASSERT_FALSE(m.binary);
  }
  EXPECT_EQ(feed.CountLines(R"(^disconnecting 1 namespace after 200$)"), 1u) << feed.child.Stdout();
  EXPECT_EQ(feed.CountLines(R"(^connected \d+ )"), 2u) << feed.child.Stdout();
  EXPECT_EQ(feed.CountLines(R"(^resume 2 after 200$)"), 1u) << feed.child.Stdout();
  EXPECT_EQ(feed.CountLines(R"(ping timeout)"), 0u) << feed.child.Stdout();
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// socket.io: a refused auth (44{"message":"unauthorized"}) is fatal, with the message logged.
TEST(FeedsSocketIo, ConnectErrorIsFatalWithItsMessage) {
  TempDir dir;
  Feed feed = StartSocketIo(dir.path(), {"--token=s3cret"});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  Child bridge = StartBridge(
      dir.path(), SocketIoUrl(feed), dir.File("sio.db"),
      {"--set=protocol.framing=engineio", R"(--set=protocol.socketio_auth={"token":"wrong"})"},
      nullptr);
  EXPECT_TRUE(bridge.WaitForOutput("unauthorized", "err")) << bridge.Stderr();
  EXPECT_EQ(feed.CountLines(R"(^connected \d+ )"), 0u);
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// Node ws with permessage-deflate, tuned (10-bit window, no context takeover) and library
// defaults (15 bits, context takeover), with a reconnect every 700 messages (a fresh context):
// every frame journaled as sent, byte for byte.
TEST(FeedsWsDeflate, ByteExactTunedAndDefaults) {
  for (const char* mode : {"tuned", "defaults"}) {
    SCOPED_TRACE(mode);
    TempDir dir;
    Feed feed =
        StartWsDeflate(dir.path(), {std::string("--deflate=") + mode, "--rate=0", "--count=2000",
                                    "--pad=200", "--close-after=700", "--topics=a,b"});
    ASSERT_NE(feed.port, 0) << feed.child.Stderr();
    const std::string db = dir.File("ws.db");
    Child bridge = StartBridge(dir.path(), feed.Url(), db, {}, nullptr);
    ASSERT_TRUE(WaitForUpstreamSeq(db, 2000)) << bridge.Stderr() << feed.child.Stdout();
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
    EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
  }
}

// Python websockets: its default compression, its keepalive pings every 100 ms answered for a
// 2 s run on one connection.
TEST(FeedsPyWebsockets, ByteExactOnOneConnectionWithLibraryPings) {
  TempDir dir;
  Feed feed = StartPyWebsockets(
      dir.path(), {"--rate=500", "--count=1000", "--ping-interval=0.1", "--ping-timeout=0.3"});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  const std::string db = dir.File("py.db");
  Child bridge = StartBridge(dir.path(), feed.Url(), db, {}, nullptr);
  ASSERT_TRUE(WaitForUpstreamSeq(db, 1000)) << bridge.Stderr() << feed.child.Stdout();
  auto rows = ReadJournalRows(db);
  ASSERT_EQ(rows.size(), 1000u);
  for (uint64_t i = 1; i <= 1000; ++i) ASSERT_EQ(rows[i - 1].msg.payload, FeedFrame(i, {"t"}, 200));
  EXPECT_EQ(feed.CountLines(R"(^connected \d+ extensions=permessage-deflate)"), 1u)
      << feed.child.Stdout();
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// wsbridge-upstream --server-ping 100 --compress gzip: a reply rule echoes every ping inflated
// from gzip within the 700 ms deadline; pings are consumed, data journaled inflated, one
// connection for the whole run.
TEST(FeedsUpstream, GzippedServerPingsAnsweredInTime) {
  TempDir dir;
  int port = 0;
  Child upstream = StartUpstream(
      dir.path(),
      {"--rate=200", "--count=600", "--compress=gzip", "--server-ping=100", "--ping-deadline=700"},
      &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  const std::string db = dir.File("up.db");
  Child bridge = StartBridge(
      dir.path(), "ws://127.0.0.1:" + std::to_string(port) + "/feed", db,
      {"--set=protocol.decompress=gzip",
       ConfigFlag(dir, "replies.toml",
                  "[[protocol.replies]]\nfield = \"ping\"\nreply = '{\"pong\":{{ping}}}'\n")},
      nullptr);
  ASSERT_TRUE(WaitForUpstreamSeq(db, 600)) << bridge.Stderr() << upstream.Stderr();
  auto rows = ReadJournalRows(db);
  ASSERT_EQ(rows.size(), 600u);  // no ping journaled
  for (uint64_t i = 1; i <= 600; ++i) {
    ASSERT_EQ(rows[i - 1].msg.upstream_seq, i);
    ASSERT_EQ(rows[i - 1].msg.payload.rfind("{\"seq\":" + std::to_string(i) + ",", 0), 0u);
    ASSERT_FALSE(rows[i - 1].msg.binary);
  }
  const std::string log = upstream.Stderr();
  EXPECT_EQ(log.find("not answered"), std::string::npos) << log;
  EXPECT_EQ(log.find("connection 2 open"), std::string::npos) << log;
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// wsbridge-upstream --permessage-deflate: the bridge's default offer is accepted (the upstream
// logs the negotiated extension) and the feed arrives in order.
TEST(FeedsUpstream, PermessageDeflateNegotiated) {
  TempDir dir;
  int port = 0;
  Child upstream = StartUpstream(
      dir.path(), {"--rate=0", "--count=5000", "--payload-bytes=300", "--permessage-deflate"},
      &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  const std::string db = dir.File("up.db");
  Child bridge =
      StartBridge(dir.path(), "ws://127.0.0.1:" + std::to_string(port) + "/feed", db, {}, nullptr);
  ASSERT_TRUE(WaitForUpstreamSeq(db, 5000)) << bridge.Stderr() << upstream.Stderr();
  EXPECT_NE(upstream.Stderr().find("extensions: permessage-deflate"), std::string::npos)
      << upstream.Stderr();
  EXPECT_EQ(ReadJournalRows(db).size(), 5000u);
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// A gzip bomb (1 MiB inflating to 1 GiB) closes the connection with 1009 and is counted; the
// bridge resumes after seq 3 and gets the rest; its memory stays bounded.
TEST(FeedsHostile, GzipBombClosesWith1009AndTheStreamResumes) {
  TempDir dir;
  Feed feed = StartHostile(dir.path(), "gzip-bomb", {"--good=3", "--count=10"});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  const std::string db = dir.File("bomb.db");
  Child bridge =
      StartBridge(dir.path(), feed.Url(), db, {"--set=protocol.decompress=gzip"}, nullptr);
  ASSERT_TRUE(WaitForUpstreamSeq(db, 10)) << bridge.Stderr() << feed.child.Stdout();
  auto rows = ReadJournalRows(db);
  ASSERT_EQ(rows.size(), 10u);
  for (uint64_t i = 1; i <= 10; ++i) ASSERT_EQ(rows[i - 1].msg.payload, FeedFrame(i, {"t"}, 40));
  EXPECT_TRUE(bridge.WaitForOutput("1009", "err", 1s)) << bridge.Stderr();
  EXPECT_EQ(feed.CountLines(R"(^resume 2 after 3$)"), 1u) << feed.child.Stdout();
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// A gzip frame cut short is journaled as received (binary, no seq) and counted; the stream goes
// on around it.
TEST(FeedsHostile, TruncatedGzipJournaledAsReceived) {
  TempDir dir;
  Feed feed = StartHostile(dir.path(), "truncated-gzip", {"--good=2", "--count=5"});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  const std::string db = dir.File("trunc.db");
  Child bridge =
      StartBridge(dir.path(), feed.Url(), db, {"--set=protocol.decompress=auto"}, nullptr);
  ASSERT_TRUE(WaitForUpstreamSeq(db, 5)) << bridge.Stderr();
  auto rows = ReadJournalRows(db);
  ASSERT_EQ(rows.size(), 6u);
  const uint64_t want_seq[] = {1, 2, 0, 3, 4, 5};
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(rows[i].msg.upstream_seq, want_seq[i]) << i;
    EXPECT_EQ(rows[i].msg.binary, want_seq[i] == 0) << i;
    if (want_seq[i] != 0) EXPECT_EQ(rows[i].msg.payload, FeedFrame(want_seq[i], {"t"}, 40));
  }
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// A 101 whose Sec-WebSocket-Extensions the bridge cannot honour fails the handshake with that
// reason; the connection never opens with compression silently off.
TEST(FeedsHostile, UnacceptableExtensionFailsTheHandshake) {
  for (const char* ext :
       {"permessage-deflate; server_max_window_bits=7", "permessage-deflate; foo=1"}) {
    SCOPED_TRACE(ext);
    TempDir dir;
    Feed feed = StartHostile(dir.path(), "bad-extension", {std::string("--extension=") + ext});
    ASSERT_NE(feed.port, 0) << feed.child.Stderr();
    Child bridge = StartBridge(dir.path(), feed.Url(), dir.File("ext.db"), {}, nullptr);
    EXPECT_TRUE(bridge.WaitForOutput("permessage-deflate", "err")) << bridge.Stderr();
    EXPECT_TRUE(feed.child.WaitForOutput(R"((?:^|\n)closed 1 received=0\n)", "out"))
        << feed.child.Stdout();  // the bridge closed the socket without sending a frame
    auto cursor = ReadCursor(dir.File("ext.db"));
    EXPECT_TRUE(!cursor || cursor->last_seq == 0);
    EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
  }
}

// Malformed Engine.IO packets between good events: the good ones are journaled, in order.
TEST(FeedsHostile, MalformedEngineIoPacketsDoNotBreakTheStream) {
  TempDir dir;
  Feed feed = StartHostile(dir.path(), "engineio-malformed", {"--count=8"});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  const std::string db = dir.File("eio.db");
  Child bridge = StartBridge(dir.path(), SocketIoUrl(feed), db,
                             {"--set=protocol.framing=engineio", "--set=protocol.seq_field=1.seq",
                              "--set=protocol.resume="},
                             nullptr);
  ASSERT_TRUE(WaitForUpstreamSeq(db, 8)) << bridge.Stderr();
  std::vector<uint64_t> seqs;
  for (const auto& r : ReadJournalRows(db)) {
    if (r.msg.upstream_seq != 0) seqs.push_back(r.msg.upstream_seq);
  }
  EXPECT_EQ(seqs, (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// A reply rule whose {{ts}} is missing from a matched frame sends nothing; the control frame
// that has it is answered {"pong":5}, which arrives after anything wrongly sent before it.
TEST(FeedsHostile, ReplyRuleWithoutItsPathIsNotAnswered) {
  TempDir dir;
  const std::string log = dir.File("received.log");
  Feed feed = StartHostile(dir.path(), "ping-missing-path", {"--count=4", "--log-received=" + log});
  ASSERT_NE(feed.port, 0) << feed.child.Stderr();
  const std::string db = dir.File("rules.db");
  Child bridge = StartBridge(dir.path(), feed.Url(), db,
                             {ConfigFlag(dir, "replies.toml",
                                         "[[protocol.replies]]\nfield = \"op\"\nequals = \"ping\"\n"
                                         "reply = '{\"pong\":{{ts}}}'\n")},
                             nullptr);
  ASSERT_TRUE(WaitFor([&] {
    return ReadFileOrEmpty(log).find("{\"pong\":5}") != std::string::npos;
  })) << bridge.Stderr()
      << ReadFileOrEmpty(log);
  EXPECT_EQ(ReadFileOrEmpty(log), "{\"pong\":5}\n");
  ASSERT_TRUE(WaitForUpstreamSeq(db, 4)) << bridge.Stderr();
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

}  // namespace
}  // namespace wsbridge::testing
