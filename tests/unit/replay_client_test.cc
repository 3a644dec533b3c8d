// GapFillingSubscriber against an in-process bridge stand-in: a real Store, the real
// ReplayEndpoint on its own thread, and an XPUB socket the test publishes on by hand, so that
// each test decides exactly which messages the PUB "drops". No sleeps: the subscriber is polled
// until a condition holds or a deadline passes.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "bridge/endpoints/replay_endpoint.h"
#include "client/gap_filling_subscriber.h"
#include "storage/store.h"
#include "testutil.h"

namespace wsbridge {
namespace {

using namespace std::chrono_literals;
using client::GapFillingHandlers;
using client::GapFillingOptions;
using client::GapFillingSubscriber;
using testing::TempDir;

// The bridge's outside, without the WebSocket: Commit() journals, Publish() sends what the test
// lets through.
class FakeBridge {
 public:
  explicit FakeBridge(const std::string& path) : pub_(ctx_, zmq::socket_type::xpub) {
    StoreOptions o;
    o.path = path;
    auto s = Store::Open(o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
    pub_.set(zmq::sockopt::linger, 0);
    pub_.set(zmq::sockopt::sndhwm, 0);
    pub_.bind("tcp://127.0.0.1:*");
    pub_endpoint_ = pub_.get(zmq::sockopt::last_endpoint);
    ReplayEndpointOptions ro;
    ro.endpoint = "tcp://127.0.0.1:*";
    ro.db_path = path;
    replay_ = std::make_unique<ReplayEndpoint>(ro, &ctx_);
    EXPECT_OK(replay_->Bind());
    thread_ = std::thread([this] { replay_->Run(); });
  }
  ~FakeBridge() {
    replay_->Stop();
    thread_.join();
  }

  // Journals seqs last+1 .. last+n; topics alternate "a.1", "b.2".
  void Commit(uint64_t n) {
    Batch b;
    for (uint64_t i = 0; i < n; ++i) {
      uint64_t seq = store_->cursor().last_seq + i + 1;
      InboundMessage m;
      m.upstream_seq = seq;
      m.topic = seq % 2 ? "a.1" : "b.2";
      m.payload = "m" + std::to_string(seq);
      b.inbound.push_back(std::move(m));
    }
    b.last_upstream_seq = store_->cursor().last_seq + n;
    ASSERT_OK(store_->Commit(b, nullptr));
  }

  // Publishes journaled seqs [from, to] as the writer would, with `epoch` (0: the store's).
  void Publish(uint64_t from, uint64_t to, uint64_t epoch = 0) {
    std::vector<JournalRow> rows;
    ASSERT_OK(store_->ReadJournal(from, to, "", 1000000, &rows));
    for (const JournalRow& r : rows) {
      v1::Envelope e;
      e.set_seq(r.seq);
      e.set_upstream_seq(r.msg.upstream_seq);
      e.set_topic(r.msg.topic);
      e.set_payload(r.msg.payload);
      e.set_epoch(epoch ? epoch : store_->cursor().epoch);
      std::string body;
      e.SerializeToString(&body);
      ASSERT_TRUE(pub_.send(zmq::buffer(r.msg.topic), zmq::send_flags::sndmore));
      ASSERT_TRUE(pub_.send(zmq::buffer(body)));
    }
  }

  // Waits until a subscriber's subscription has reached the XPUB (nothing sent before is seen).
  bool WaitForSubscriber() {
    pub_.set(zmq::sockopt::rcvtimeo, 10000);
    zmq::message_t m;
    return pub_.recv(m).has_value() && m.size() >= 1 && static_cast<const char*>(m.data())[0] == 1;
  }

  zmq::context_t ctx_;
  std::unique_ptr<Store> store_;
  zmq::socket_t pub_;
  std::string pub_endpoint_;
  std::unique_ptr<ReplayEndpoint> replay_;
  std::thread thread_;
};

struct Received {
  std::vector<uint64_t> seqs;
  std::vector<std::pair<uint64_t, uint64_t>> epoch_changes;
  std::vector<std::pair<uint64_t, uint64_t>> lost;
};

std::unique_ptr<GapFillingSubscriber> Subscribe(FakeBridge& b, Received* got,
                                                GapFillingOptions o = GapFillingOptions()) {
  o.pub_endpoint = b.pub_endpoint_;
  o.replay_endpoint = b.replay_->endpoint();
  GapFillingHandlers h;
  h.on_message = [got](const v1::Envelope& e) { got->seqs.push_back(e.seq()); };
  h.on_epoch_change = [got](uint64_t a, uint64_t c) { got->epoch_changes.emplace_back(a, c); };
  h.on_lost = [got](uint64_t a, uint64_t c) { got->lost.emplace_back(a, c); };
  auto s = GapFillingSubscriber::Create(&b.ctx_, o, h);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

bool PollUntil(GapFillingSubscriber& s, const std::function<bool()>& cond,
               std::chrono::milliseconds timeout = 20s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    EXPECT_OK(s.Poll(10ms));
  }
  return true;
}

std::vector<uint64_t> Range(uint64_t from, uint64_t to, uint64_t step = 1) {
  std::vector<uint64_t> v;
  for (uint64_t i = from; i <= to; i += step) v.push_back(i);
  return v;
}

TEST(GapFilling, DroppedMessagesAreReplayedInOrder) {
  TempDir dir;
  FakeBridge b(dir.File("g.db"));
  Received got;
  auto sub = Subscribe(b, &got);
  ASSERT_TRUE(b.WaitForSubscriber());
  b.Commit(100);
  b.Publish(1, 10);
  b.Publish(20, 55);   // 11..19 dropped
  b.Publish(70, 100);  // 56..69 dropped
  ASSERT_TRUE(PollUntil(*sub, [&] { return got.seqs.size() >= 100; }));
  EXPECT_EQ(got.seqs, Range(1, 100));
  EXPECT_GE(sub->stats().gaps, 2u);
  EXPECT_TRUE(got.lost.empty());
  EXPECT_EQ(sub->next_seq(), 101u);
}

TEST(GapFilling, LateJoinerGetsTheHistoryThenLive) {
  TempDir dir;
  FakeBridge b(dir.File("g.db"));
  b.Commit(500);
  Received got;
  GapFillingOptions o;
  o.start_seq = 1;
  o.page_messages = 64;
  auto sub = Subscribe(b, &got, o);
  ASSERT_TRUE(b.WaitForSubscriber());
  b.Commit(500);
  b.Publish(501, 1000);
  ASSERT_TRUE(PollUntil(*sub, [&] { return got.seqs.size() >= 1000; }));
  EXPECT_EQ(got.seqs, Range(1, 1000));
}

TEST(GapFilling, DroppedTailIsFoundWhenQuiet) {
  TempDir dir;
  FakeBridge b(dir.File("g.db"));
  Received got;
  GapFillingOptions o;
  o.idle_check = 50ms;
  auto sub = Subscribe(b, &got, o);
  ASSERT_TRUE(b.WaitForSubscriber());
  b.Commit(30);
  b.Publish(1, 10);  // 11..30: dropped, and nothing follows them
  ASSERT_TRUE(PollUntil(*sub, [&] { return got.seqs.size() >= 30; }));
  EXPECT_EQ(got.seqs, Range(1, 30));
}

TEST(GapFilling, TopicPrefixDeliversEveryMatchOnce) {
  TempDir dir;
  FakeBridge b(dir.File("g.db"));
  Received got;
  GapFillingOptions o;
  o.topic_prefix = "a.";
  o.idle_check = 50ms;
  auto sub = Subscribe(b, &got, o);
  ASSERT_TRUE(b.WaitForSubscriber());
  b.Commit(200);
  b.Publish(1, 33);
  b.Publish(61, 150);
  ASSERT_TRUE(PollUntil(*sub, [&] { return got.seqs.size() >= 100; }));
  EXPECT_EQ(got.seqs, Range(1, 199, 2));  // odd seqs carry topic "a.1"
}

TEST(GapFilling, SmallHoldBufferStillDeliversEverything) {
  TempDir dir;
  FakeBridge b(dir.File("g.db"));
  Received got;
  GapFillingOptions o;
  o.max_buffered = 5;
  o.page_messages = 10;
  o.idle_check = 50ms;
  auto sub = Subscribe(b, &got, o);
  ASSERT_TRUE(b.WaitForSubscriber());
  b.Commit(2000);
  // Twenty gaps (2, 102, ..., 1902), each followed by far more than the subscriber may hold.
  // One gap alone was a race: now and then its fill came back before 5 more live messages had
  // reached the subscriber, and nothing overflowed (about 1 run in 30).
  for (uint64_t from = 1; from < 2000; from += 100) {
    b.Publish(from, from);
    b.Publish(from + 2, std::min<uint64_t>(from + 99, 2000));
  }
  ASSERT_TRUE(PollUntil(*sub, [&] { return got.seqs.size() >= 2000; }));
  EXPECT_EQ(got.seqs, Range(1, 2000));
  EXPECT_GT(sub->stats().buffer_overflows, 0u);
}

TEST(GapFilling, NewEpochIsReportedAndTrackingRestarts) {
  TempDir dir;
  FakeBridge b(dir.File("g.db"));
  Received got;
  auto sub = Subscribe(b, &got);
  ASSERT_TRUE(b.WaitForSubscriber());
  b.Commit(20);
  const uint64_t old_epoch = b.store_->cursor().epoch ^ 0x5555;
  // Seqs 1..20 as if from an older database, then the current one's 1..20 again.
  b.Publish(1, 20, old_epoch);
  ASSERT_TRUE(PollUntil(*sub, [&] { return got.seqs.size() >= 20; }));
  b.Commit(5);
  b.Publish(25, 25);  // new epoch, seq 25: tracking restarts at 1 of the new history
  ASSERT_TRUE(PollUntil(*sub, [&] { return got.seqs.size() >= 45; }));
  ASSERT_EQ(got.epoch_changes.size(), 1u);
  EXPECT_EQ(got.epoch_changes[0].first, old_epoch);
  EXPECT_EQ(got.epoch_changes[0].second, b.store_->cursor().epoch);
  std::vector<uint64_t> want = Range(1, 20);
  for (uint64_t s : Range(1, 25)) want.push_back(s);
  EXPECT_EQ(got.seqs, want);
  EXPECT_EQ(sub->epoch(), b.store_->cursor().epoch);
}

TEST(GapFilling, TrimmedGapIsReportedAsLost) {
  TempDir dir;
  FakeBridge b(dir.File("g.db"));
  Received got;
  auto sub = Subscribe(b, &got);
  ASSERT_TRUE(b.WaitForSubscriber());
  b.Commit(10);
  b.Publish(1, 10);
  ASSERT_TRUE(PollUntil(*sub, [&] { return got.seqs.size() >= 10; }));
  // 11..40 committed and trimmed before the subscriber hears of them; 41 arrives live.
  b.Commit(31);
  {
    StoreOptions o;
    o.path = dir.File("g.db");
    o.journal_max_rows = 1;
    o.journal_max_bytes = 0;
    o.journal_max_age_s = 0;
    b.store_.reset();  // one writer at a time
    auto trimmer = Store::Open(o);
    ASSERT_OK(trimmer);
    ASSERT_EQ((*trimmer)->TrimJournal(0, 1000).value(), 40u);
    o.journal_max_rows = 0;
    auto s = Store::Open(o);
    ASSERT_OK(s);
    b.store_ = std::move(s).value();
  }
  b.Publish(41, 41);
  ASSERT_TRUE(PollUntil(*sub, [&] { return got.seqs.size() >= 11; }));
  ASSERT_EQ(got.lost.size(), 1u);
  EXPECT_EQ(got.lost[0], std::make_pair(uint64_t{11}, uint64_t{40}));
  EXPECT_EQ(got.seqs.back(), 41u);
}

// The replay endpoint swallows the first request (as a restarting bridge would): the subscriber
// asks again on a fresh socket after replay_timeout.
TEST(GapFilling, UnansweredRequestIsAskedAgain) {
  TempDir dir;
  FakeBridge b(dir.File("g.db"));
  zmq::socket_t router(b.ctx_, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind("tcp://127.0.0.1:*");
  Received got;
  GapFillingOptions o;
  o.pub_endpoint = b.pub_endpoint_;
  o.replay_endpoint = router.get(zmq::sockopt::last_endpoint);
  o.replay_timeout = 100ms;
  GapFillingHandlers h;
  h.on_message = [&](const v1::Envelope& e) { got.seqs.push_back(e.seq()); };
  auto sub = GapFillingSubscriber::Create(&b.ctx_, o, h);
  ASSERT_OK(sub);
  ASSERT_TRUE(b.WaitForSubscriber());
  b.Commit(10);
  b.Publish(1, 1);
  b.Publish(10, 10);
  // Serve by hand: ignore the first request, answer the second from the store.
  int requests = 0;
  ASSERT_TRUE(PollUntil(**sub, [&] {
    std::vector<zmq::message_t> frames;
    zmq::message_t f;
    while (router.recv(f, zmq::recv_flags::dontwait)) {
      bool more = f.more();
      frames.push_back(std::move(f));
      if (!more) break;
    }
    if (frames.size() == 2 && ++requests == 2) {
      v1::ReplayRequest req;
      EXPECT_TRUE(req.ParseFromArray(frames[1].data(), static_cast<int>(frames[1].size())));
      auto pager = ReplayPager::Start(b.store_.get(), req);
      EXPECT_OK(pager);
      v1::ReplayReply page;
      EXPECT_OK(pager->NextPage(&page));
      std::string body;
      page.SerializeToString(&body);
      router.send(frames[0], zmq::send_flags::sndmore);
      router.send(zmq::buffer(body));
    }
    return got.seqs.size() >= 10;
  }));
  EXPECT_EQ(got.seqs, Range(1, 10));
  EXPECT_EQ((*sub)->stats().replay_timeouts, 1u);
}

}  // namespace
}  // namespace wsbridge
