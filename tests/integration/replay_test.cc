// Replay with real processes: wsbridge-upstream -> wsbridge -> the replay endpoint,
// wsbridge-replay, wsbridge-tail --fill-gaps and the gap-filling client library. (SPEC G1, G7, §3,
// §5)
//
//   late joiner        wsbridge-tail --fill-gaps --from-seq 1 started mid-stream: every seq once
//   stalled subscriber a subscriber that stops reading past the PUB high-water mark recovers all
//   trimmed range      first_available_seq from the endpoint; wsbridge-replay says what is left
//   replay under load  wsbridge-replay --db while the daemon writes at full rate: contiguous
//   replaced database  delete the file, restart the bridge: the subscriber is told (new epoch)
//   garbage            error replies, and the endpoint keeps serving
//   republish          wsbridge-replay --republish re-emits a range on its own PUB socket
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <regex>

#include "client/gap_filling_subscriber.h"
#include "integration/harness.h"
#include "storage/store.h"

namespace wsbridge::testing {
namespace {

using namespace std::chrono_literals;

std::string Url(int port) { return "ws://127.0.0.1:" + std::to_string(port) + "/feed"; }

bool WaitForLastSeq(const std::string& db, uint64_t n, std::chrono::milliseconds t = 60s) {
  return WaitFor(
      [&] {
        auto b = ReadBounds(db);
        return b && b->last_seq >= n;
      },
      t);
}

// The seqs of wsbridge-tail / wsbridge-replay JSON lines, in order; -1 for a line that is not one.
std::vector<int64_t> SeqsOfJsonLines(const std::string& text) {
  static const std::regex rx(R"(^\{"seq":(\d+),"upstream_seq":(\d+),"topic":")");
  std::vector<int64_t> seqs;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    seqs.push_back(std::regex_search(line, m, rx) ? std::stoll(m[1]) : -1);
  }
  return seqs;
}

// Runs a tool to completion; returns its exit status (as from waitpid).
int RunTool(const std::string& dir, const std::vector<std::string>& argv, const std::string& tag,
            Child* out = nullptr) {
  Child c = Child::Start(argv, dir, tag);
  int st = c.Wait(60s);
  if (out) *out = std::move(c);
  return st;
}

// A gap-filling subscriber run in the test's thread, recording what it is handed.
struct Recorder {
  std::vector<uint64_t> seqs;
  std::vector<std::pair<uint64_t, uint64_t>> epoch_changes;
  std::unique_ptr<client::GapFillingSubscriber> sub;

  Recorder(zmq::context_t& ctx, client::GapFillingOptions o) {
    client::GapFillingHandlers h;
    h.on_message = [this](const v1::Envelope& e) { seqs.push_back(e.seq()); };
    h.on_epoch_change = [this](uint64_t a, uint64_t b) { epoch_changes.emplace_back(a, b); };
    auto s = client::GapFillingSubscriber::Create(&ctx, std::move(o), std::move(h));
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    if (s.ok()) sub = std::move(s).value();
  }
  bool PollUntil(const std::function<bool()>& cond, std::chrono::milliseconds timeout = 60s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!cond()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      if (!sub->Poll(20ms).ok()) return false;
    }
    return true;
  }
};

// Every seq in [from, to] exactly once, in order.
::testing::AssertionResult ExactlyInOrder(const std::vector<uint64_t>& seqs, uint64_t from,
                                          uint64_t to) {
  if (seqs.size() != to - from + 1) {
    return ::testing::AssertionFailure()
           << "got " << seqs.size() << " messages, want " << (to - from + 1);
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (seqs[i] != from + i) {
      return ::testing::AssertionFailure()
             << "position " << i << " has seq " << seqs[i] << ", want " << (from + i);
    }
  }
  return ::testing::AssertionSuccess();
}

// A subscriber that joins while the feed runs gets the earlier messages by replay and the rest
// live, each once, in order: wsbridge-tail --fill-gaps --from-seq 1, a real process.
TEST(Replay, LateJoinerGetsHistoryThenLiveEachOnce) {
  TempDir dir;
  int port = 0;
  const int kCount = 6000;
  Child upstream = StartUpstream(dir.path(), {"--count=6000", "--rate=3000"}, &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  ReplayBridgeEndpoints ep;
  std::string db = dir.File("late.db");
  Child bridge = StartReplayBridge(dir.path(), Url(port), db, {}, &ep);
  ASSERT_FALSE(ep.replay.empty()) << bridge.Stderr();
  ASSERT_TRUE(WaitForLastSeq(db, 1500)) << bridge.Stderr();

  Child tail = Child::Start({Bin("wsbridge-tail"), "--pub=" + ep.pub, "--fill-gaps",
                             "--replay=" + ep.replay, "--from-seq=1", "--count=6000"},
                            dir.path(), "tail");
  int st = tail.Wait(60s);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << tail.Stderr();
  auto seqs = SeqsOfJsonLines(tail.Stdout());
  ASSERT_EQ(seqs.size(), static_cast<size_t>(kCount)) << tail.Stderr();
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(seqs[static_cast<size_t>(i)], i + 1);
  // It joined late: the journal had at least 1500 messages before it started, and the feed
  // went on for a while after (3000 msg/s, 6000 in all).
  auto b = ReadBounds(db);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->last_seq, static_cast<uint64_t>(kCount));
}

// A subscriber stops reading long enough for the PUB high-water mark (100) to overflow: the
// bridge drops messages for it. Once it reads again, gap filling recovers every message.
TEST(Replay, StalledSubscriberRecoversEverythingByGapFilling) {
  TempDir dir;
  int port = FreePort();
  ReplayBridgeEndpoints ep;
  std::string db = dir.File("stall.db");
  Child bridge = StartReplayBridge(dir.path(), Url(port), db, {"--set=zmq.pub_hwm=100"}, &ep);
  ASSERT_FALSE(ep.replay.empty()) << bridge.Stderr();

  zmq::context_t ctx;
  client::GapFillingOptions o;
  o.pub_endpoint = ep.pub;
  o.replay_endpoint = ep.replay;
  o.start_seq = 1;
  o.sub_rcvhwm = 10;          // a small queue ...
  o.sub_rcvbuf_bytes = 4096;  // ... and a small socket buffer: the PUB side fills up quickly
  o.max_buffered = 1000;
  Recorder r(ctx, o);
  ASSERT_TRUE(r.sub);
  ASSERT_TRUE(bridge.WaitForOutput("subscription to topic prefix", "err")) << bridge.Stderr();

  // 20 000 messages of 2 KB: far beyond what the HWM and the socket buffers hold.
  const uint64_t kCount = 20000;
  Child upstream = StartUpstream(
      dir.path(), {"--count=20000", "--rate=0", "--history=20000", "--payload-bytes=2000"}, &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  // Stalled: not a single Poll() until everything is journaled (and published, or dropped).
  ASSERT_TRUE(WaitForLastSeq(db, kCount)) << bridge.Stderr();
  ASSERT_TRUE(r.PollUntil([&] { return r.seqs.size() >= kCount; })) << r.seqs.size();
  EXPECT_TRUE(ExactlyInOrder(r.seqs, 1, kCount));
  // Proof that the PUB dropped some: gaps were seen and filled from the journal.
  EXPECT_GT(r.sub->stats().gaps, 0u);
  EXPECT_GT(r.sub->stats().replayed, 0u);
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// journal.max_rows=1000: once the writer has trimmed, a range from 1 answers first_available_seq
// and the tool says what is still there.
TEST(Replay, TrimmedRangeAnswersFirstAvailable) {
  TempDir dir;
  int port = 0;
  Child upstream = StartUpstream(dir.path(), {"--count=5000", "--rate=0", "--history=5000"}, &port);
  ASSERT_NE(port, 0);
  ReplayBridgeEndpoints ep;
  std::string db = dir.File("trim.db");
  Child bridge = StartReplayBridge(dir.path(), Url(port), db, {"--set=journal.max_rows=1000"}, &ep);
  ASSERT_FALSE(ep.replay.empty()) << bridge.Stderr();
  ASSERT_TRUE(WaitFor([&] {
    auto b = ReadBounds(db);
    return b && b->last_seq == 5000 && b->first_seq == 4001;
  })) << bridge.Stderr();

  zmq::context_t ctx;
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, 20000);
  s.connect(ep.replay);
  v1::ReplayRequest req;
  req.set_from_seq(1);
  std::string body;
  req.SerializeToString(&body);
  ASSERT_TRUE(s.send(zmq::buffer(body)));
  uint64_t want = 4001;
  bool first = true;
  for (;;) {
    zmq::message_t m;
    ASSERT_TRUE(s.recv(m)) << "no reply";
    v1::ReplayReply reply;
    ASSERT_TRUE(reply.ParseFromArray(m.data(), static_cast<int>(m.size())));
    ASSERT_TRUE(reply.error().empty()) << reply.error();
    if (first) EXPECT_EQ(reply.first_available_seq(), 4001u);
    first = false;
    EXPECT_EQ(reply.last_seq(), 5000u);
    for (const auto& e : reply.envelopes()) ASSERT_EQ(e.seq(), want++);
    if (reply.done()) break;
  }
  EXPECT_EQ(want, 5001u);

  // The tool, both ways: a one-line error that says what is available, and nothing printed.
  for (const std::string& source : {"--db=" + db, "--endpoint=" + ep.replay}) {
    Child tool;
    int st = RunTool(dir.path(), {Bin("wsbridge-replay"), source, "--from=1", "--to=2000"},
                     "replay-trimmed", &tool);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1) << st;
    EXPECT_NE(tool.Stderr().find("seq 1..4000 were trimmed by retention; the journal holds "
                                 "4001..5000"),
              std::string::npos)
        << tool.Stderr();
    EXPECT_EQ(tool.Stdout(), "");
  }
}

// wsbridge-replay --db on a database that the daemon is writing at full rate returns the range
// as it was when the replay started: contiguous, every row once, payloads intact.
TEST(Replay, ReplayDbWhileTheDaemonWritesAtFullRate) {
  TempDir dir;
  int port = 0;
  // An endless feed at full rate: the writer is busy for as long as the test runs. No retention
  // here: this test is about concurrent reading, not trimming.
  Child upstream = StartUpstream(dir.path(), {"--rate=0", "--quiet"}, &port);
  ASSERT_NE(port, 0);
  std::string db = dir.File("busy.db");
  Child bridge = StartBridge(dir.path(), Url(port), db, {"--set=journal.max_rows=0"}, nullptr);
  ASSERT_TRUE(WaitForLastSeq(db, 20000)) << bridge.Stderr();

  Child tool;
  int st = RunTool(dir.path(), {Bin("wsbridge-replay"), "--db=" + db, "--format=json"},
                   "replay-busy", &tool);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << tool.Stderr();
  std::string out = tool.Stdout();
  auto seqs = SeqsOfJsonLines(out);
  ASSERT_GE(seqs.size(), 20000u);
  for (size_t i = 0; i < seqs.size(); ++i) ASSERT_EQ(seqs[i], static_cast<int64_t>(i + 1));
  // The upstream's own numbering is inside each payload: row N carries {"seq":N,...}.
  std::istringstream in(out);
  std::string line;
  for (uint64_t n = 1; std::getline(in, line); ++n) {
    std::string inner = "\"payload\":\"{\\\"seq\\\":" + std::to_string(n) + ",";
    ASSERT_NE(line.find(inner), std::string::npos) << line;
  }
  // The daemon goes on writing past what the replay read (on a loaded machine the writer may
  // not have committed during the replay itself; it must not have stopped).
  EXPECT_TRUE(WaitFor([&] {
    auto now = ReadBounds(db);
    return now && now->last_seq > seqs.size();
  })) << "the writer stopped at the replay's end";
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// Delete the database and restart the bridge on the same endpoints: the new database has a new
// epoch; the subscriber is told and starts over in the new history.
TEST(Replay, ReplacedDatabaseIsReportedAsNewEpoch) {
  TempDir dir;
  int port = 0;
  Child upstream = StartUpstream(dir.path(), {"--count=100", "--rate=0", "--history=1000"}, &port);
  ASSERT_NE(port, 0);
  const std::string pub = "tcp://127.0.0.1:" + std::to_string(FreePort());
  const std::string replay = "tcp://127.0.0.1:" + std::to_string(FreePort());
  const std::vector<std::string> fixed = {"--set=zmq.pub=" + pub, "--set=zmq.replay=" + replay};
  std::string db = dir.File("epoch.db");
  ReplayBridgeEndpoints ep;
  Child bridge = StartReplayBridge(dir.path(), Url(port), db, fixed, &ep);
  ASSERT_EQ(ep.replay, replay) << bridge.Stderr();

  zmq::context_t ctx;
  client::GapFillingOptions o;
  o.pub_endpoint = pub;
  o.replay_endpoint = replay;
  o.start_seq = 1;
  o.idle_check = 200ms;
  o.replay_timeout = 1000ms;
  Recorder r(ctx, o);
  ASSERT_TRUE(r.sub);
  ASSERT_TRUE(r.PollUntil([&] { return r.seqs.size() >= 100; })) << r.seqs.size();
  const uint64_t first_epoch = r.sub->epoch();
  ASSERT_NE(first_epoch, 0u);

  ASSERT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((db + suffix).c_str());
  // The upstream still has its history: the new database journals 1..100 again.
  bridge = StartReplayBridge(dir.path(), Url(port), db, fixed, &ep);
  ASSERT_EQ(ep.replay, replay) << bridge.Stderr();
  ASSERT_TRUE(r.PollUntil([&] { return r.seqs.size() >= 200; })) << r.seqs.size();

  ASSERT_EQ(r.epoch_changes.size(), 1u);
  EXPECT_EQ(r.epoch_changes[0].first, first_epoch);
  EXPECT_NE(r.epoch_changes[0].second, first_epoch);
  EXPECT_EQ(r.sub->epoch(), r.epoch_changes[0].second);
  std::vector<uint64_t> second(r.seqs.begin() + 100, r.seqs.end());
  EXPECT_TRUE(ExactlyInOrder(std::vector<uint64_t>(r.seqs.begin(), r.seqs.begin() + 100), 1, 100));
  EXPECT_TRUE(ExactlyInOrder(second, 1, 100));
}

// Garbage on the replay socket gets an error reply, never a crash; the endpoint keeps serving.
TEST(Replay, GarbageGetsAnErrorReplyAndServingGoesOn) {
  TempDir dir;
  int port = 0;
  Child upstream = StartUpstream(dir.path(), {"--count=50", "--rate=0"}, &port);
  ASSERT_NE(port, 0);
  std::string db = dir.File("garbage.db");
  ReplayBridgeEndpoints ep;
  Child bridge = StartReplayBridge(dir.path(), Url(port), db, {}, &ep);
  ASSERT_FALSE(ep.replay.empty()) << bridge.Stderr();
  ASSERT_TRUE(WaitForLastSeq(db, 50));

  zmq::context_t ctx;
  auto recv_reply = [](zmq::socket_t& s) -> std::optional<v1::ReplayReply> {
    zmq::message_t m;
    if (!s.recv(m)) return std::nullopt;
    v1::ReplayReply r;
    if (!r.ParseFromArray(m.data(), static_cast<int>(m.size()))) return std::nullopt;
    return r;
  };
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.set(zmq::sockopt::rcvtimeo, 20000);
  dealer.connect(ep.replay);
  ASSERT_TRUE(dealer.send(zmq::str_buffer("\xff\xfe garbage \x00\x01"), zmq::send_flags::none));
  auto r = recv_reply(dealer);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->done());
  EXPECT_FALSE(r->error().empty());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(dealer.send(zmq::str_buffer("junk"),
                            i < 4 ? zmq::send_flags::sndmore : zmq::send_flags::none));
  }
  r = recv_reply(dealer);
  ASSERT_TRUE(r);
  EXPECT_NE(r->error().find("expected one frame"), std::string::npos) << r->error();
  v1::ReplayRequest bad;
  bad.set_from_seq(10);
  bad.set_to_seq(5);
  std::string body;
  bad.SerializeToString(&body);
  ASSERT_TRUE(dealer.send(zmq::buffer(body)));
  r = recv_reply(dealer);
  ASSERT_TRUE(r);
  EXPECT_NE(r->error().find("above to_seq"), std::string::npos) << r->error();

  // A REQ client with garbage, then a good request on the same socket.
  zmq::socket_t req(ctx, zmq::socket_type::req);
  req.set(zmq::sockopt::linger, 0);
  req.set(zmq::sockopt::rcvtimeo, 20000);
  req.connect(ep.replay);
  ASSERT_TRUE(req.send(zmq::str_buffer("\x0a\x0a\x0a")));
  r = recv_reply(req);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->error().empty());
  v1::ReplayRequest good;
  good.set_from_seq(41);
  good.SerializeToString(&body);
  ASSERT_TRUE(req.send(zmq::buffer(body)));
  r = recv_reply(req);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->error().empty()) << r->error();
  EXPECT_TRUE(r->done());
  ASSERT_EQ(r->envelopes_size(), 10);
  EXPECT_EQ(r->envelopes(0).seq(), 41u);
  EXPECT_TRUE(bridge.running() && !bridge.Exited()) << bridge.Stderr();
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// wsbridge-replay --republish: the range, unchanged, on a PUB socket of its own; and the tool's
// one-line errors for a missing file, an unreachable endpoint and bad flags.
TEST(Replay, ToolRepublishesAndExplainsErrors) {
  TempDir dir;
  int port = 0;
  Child upstream = StartUpstream(dir.path(), {"--count=300", "--rate=0"}, &port);
  ASSERT_NE(port, 0);
  std::string db = dir.File("tool.db");
  Child bridge = StartBridge(dir.path(), Url(port), db, {}, nullptr);
  ASSERT_TRUE(WaitForLastSeq(db, 300));

  Child tool = Child::Start({Bin("wsbridge-replay"), "--db=" + db, "--from=101", "--to=200",
                             "--republish=tcp://127.0.0.1:*"},
                            dir.path(), "republish");
  auto endpoint = tool.WaitForOutput(R"(republishing on (tcp://[0-9.]+:\d+))", "err");
  ASSERT_TRUE(endpoint) << tool.Stderr();
  zmq::context_t ctx;
  Subscriber sub(ctx, *endpoint);
  for (uint64_t seq = 101; seq <= 200; ++seq) {
    auto m = sub.Next(20s);
    ASSERT_TRUE(m) << "seq " << seq << "\n" << tool.Stderr();
    ASSERT_EQ(m->second.seq(), seq);
    ASSERT_EQ(m->first, m->second.topic());
    ASSERT_NE(m->second.epoch(), 0u);
  }
  int st = tool.Wait(20s);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << tool.Stderr();

  // Raw format: the payloads, one per line.
  Child raw;
  st = RunTool(dir.path(),
               {Bin("wsbridge-replay"), "--db=" + db, "--from=7", "--to=8", "--format=raw"}, "raw",
               &raw);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  const std::string raw_out = raw.Stdout();
  EXPECT_EQ(raw_out.rfind("{\"seq\":7,", 0), 0u) << raw_out;
  EXPECT_EQ(std::count(raw_out.begin(), raw_out.end(), '\n'), 2);

  struct Case {
    std::vector<std::string> args;
    int code;
    std::string message;
  };
  std::vector<Case> cases = {
      {{"--db=" + dir.File("missing.db")}, 1, "missing.db: no such file"},
      {{"--endpoint=tcp://127.0.0.1:" + std::to_string(FreePort()), "--timeout-ms=300"},
       1,
       "no answer from tcp://127.0.0.1:"},
      {{"--db=" + db, "--from=9", "--to=3"}, 2, "--from 9 is above --to 3"},
      {{"--db=" + db, "--format=xml"}, 2, "--format"},
      {{}, 2, "one of --db FILE or --endpoint ENDPOINT is required"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {Bin("wsbridge-replay")};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    Child t;
    st = RunTool(dir.path(), argv, "errors", &t);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == c.code) << c.message << ": " << st;
  }
  std::string err = ReadFileOrEmpty(dir.File("errors.err"));
  for (const Case& c : cases) EXPECT_NE(err.find(c.message), std::string::npos) << err;
  // One line per error.
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), static_cast<long>(cases.size())) << err;
}

}  // namespace
}  // namespace wsbridge::testing
