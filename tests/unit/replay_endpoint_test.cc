// Replay on real SQLite files and real ZeroMQ sockets in one process:
//   ReplayPager     pages, topic prefix, byte budget, trimmed ranges, nonsense ranges
//   ReplayEndpoint  DEALER streaming, REQ one page per request, garbage and multi-frame garbage
//                   answered with an error while the endpoint keeps serving, a replaced request
// No sleeps: every receive has a timeout, and a test fails rather than hangs.
#include "bridge/endpoints/replay_endpoint.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "storage/store.h"
#include "testutil.h"

namespace wsbridge {
namespace {

using testing::TempDir;

// A database with `n` rows; topics alternate "a.x", "b.y"; payload "p<seq>" padded to `bytes`.
std::unique_ptr<Store> Fill(const std::string& path, uint64_t n, size_t bytes = 0,
                            uint64_t max_rows = 0) {
  StoreOptions o;
  o.path = path;
  o.journal_max_rows = max_rows;
  o.journal_max_bytes = 0;
  o.journal_max_age_s = 0;
  auto store = Store::Open(o);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  uint64_t seq = 0;
  while (seq < n) {
    Batch b;
    for (int i = 0; i < 4096 && seq < n; ++i) {
      ++seq;
      InboundMessage m;
      m.upstream_seq = seq;
      m.topic = seq % 2 ? "a.x" : "b.y";
      m.payload = "p" + std::to_string(seq);
      if (m.payload.size() < bytes) m.payload.resize(bytes, '.');
      m.received_at_unix_ns = static_cast<int64_t>(seq);
      b.inbound.push_back(std::move(m));
    }
    b.last_upstream_seq = seq;
    EXPECT_TRUE((*store)->Commit(b, nullptr).ok());
  }
  return std::move(store).value();
}

std::unique_ptr<Store> Reader(const std::string& path) {
  StoreOptions o;
  o.path = path;
  o.read_only = true;
  auto s = Store::Open(o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

v1::ReplayRequest Req(uint64_t from, uint64_t to, std::string prefix = "", uint32_t max = 0) {
  v1::ReplayRequest r;
  r.set_from_seq(from);
  r.set_to_seq(to);
  r.set_topic_prefix(std::move(prefix));
  r.set_max_messages(max);
  return r;
}

// Every page of a request, in order (at most 10 000 pages).
std::vector<v1::ReplayReply> AllPages(Store* store, const v1::ReplayRequest& req,
                                      const ReplayLimits& limits = ReplayLimits()) {
  std::vector<v1::ReplayReply> pages;
  auto pager = ReplayPager::Start(store, req, limits);
  EXPECT_TRUE(pager.ok()) << pager.status().ToString();
  if (!pager.ok()) return pages;
  for (int i = 0; i < 10000; ++i) {
    pages.emplace_back();
    EXPECT_TRUE(pager->NextPage(&pages.back()).ok());
    if (pages.back().done()) break;
  }
  return pages;
}

TEST(ReplayPager, PagesCoverTheRangeInOrder) {
  TempDir dir;
  auto writer = Fill(dir.File("r.db"), 2500);
  auto reader = Reader(dir.File("r.db"));
  auto pages = AllPages(reader.get(), Req(1, 0, "", 1000));
  ASSERT_EQ(pages.size(), 3u);
  uint64_t want = 1;
  for (size_t i = 0; i < pages.size(); ++i) {
    EXPECT_EQ(pages[i].done(), i == 2);
    EXPECT_EQ(pages[i].last_seq(), 2500u);
    EXPECT_EQ(pages[i].first_available_seq(), 0u);
    EXPECT_TRUE(pages[i].error().empty());
    for (const auto& e : pages[i].envelopes()) {
      ASSERT_EQ(e.seq(), want++);
      EXPECT_EQ(e.epoch(), writer->cursor().epoch);
      EXPECT_EQ(e.upstream_seq(), e.seq());
      EXPECT_EQ(e.payload(), "p" + std::to_string(e.seq()));
    }
  }
  EXPECT_EQ(want, 2501u);
}

TEST(ReplayPager, ToZeroIsFixedWhenTheRequestStarts) {
  TempDir dir;
  auto writer = Fill(dir.File("r.db"), 100);
  auto reader = Reader(dir.File("r.db"));
  auto pager = ReplayPager::Start(reader.get(), Req(1, 0, "", 60));
  ASSERT_OK(pager);
  // Rows committed after the request was accepted are not part of it.
  Batch more;
  more.inbound.resize(50);
  ASSERT_OK(writer->Commit(more, nullptr));
  v1::ReplayReply page;
  uint64_t n = 0;
  do {
    ASSERT_OK(pager->NextPage(&page));
    EXPECT_EQ(page.last_seq(), 100u);
    n += static_cast<uint64_t>(page.envelopes_size());
  } while (!page.done());
  EXPECT_EQ(n, 100u);
}

TEST(ReplayPager, TopicPrefixAndSubRange) {
  TempDir dir;
  auto writer = Fill(dir.File("r.db"), 1000);
  auto reader = Reader(dir.File("r.db"));
  auto pages = AllPages(reader.get(), Req(10, 30, "a.", 4));
  std::vector<uint64_t> seqs;
  for (const auto& p : pages) {
    for (const auto& e : p.envelopes()) {
      EXPECT_EQ(e.topic(), "a.x");
      seqs.push_back(e.seq());
    }
  }
  std::vector<uint64_t> want = {11, 13, 15, 17, 19, 21, 23, 25, 27, 29};
  EXPECT_EQ(seqs, want);
  EXPECT_TRUE(pages.back().done());
  // A prefix nothing matches: one empty page that covers the range.
  pages = AllPages(reader.get(), Req(1, 0, "zzz"));
  ASSERT_EQ(pages.size(), 1u);
  EXPECT_EQ(pages[0].envelopes_size(), 0);
  EXPECT_TRUE(pages[0].done());
  EXPECT_EQ(pages[0].last_seq(), 1000u);
}

TEST(ReplayPager, NonsenseAndEmptyRanges) {
  TempDir dir;
  auto writer = Fill(dir.File("r.db"), 10);
  auto reader = Reader(dir.File("r.db"));
  auto bad = ReplayPager::Start(reader.get(), Req(5, 2));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("from_seq 5 is above to_seq 2"), std::string::npos);
  // Beyond the newest: empty and done; from 0 means 1; to beyond the newest is clamped.
  auto pages = AllPages(reader.get(), Req(50, 0));
  ASSERT_EQ(pages.size(), 1u);
  EXPECT_EQ(pages[0].envelopes_size(), 0);
  EXPECT_TRUE(pages[0].done());
  pages = AllPages(reader.get(), Req(0, 1000));
  ASSERT_EQ(pages.size(), 1u);
  EXPECT_EQ(pages[0].envelopes_size(), 10);
  EXPECT_EQ(pages[0].envelopes(0).seq(), 1u);
  // max_messages above the hard cap is capped.
  ReplayLimits limits;
  limits.max_page_messages = 3;
  pages = AllPages(reader.get(), Req(1, 0, "", 1000000), limits);
  EXPECT_EQ(pages.size(), 4u);
  EXPECT_EQ(pages[0].envelopes_size(), 3);
}

TEST(ReplayPager, ByteBudgetClosesPages) {
  TempDir dir;
  auto writer = Fill(dir.File("r.db"), 60, 100 * 1024);
  auto reader = Reader(dir.File("r.db"));
  ReplayLimits limits;
  limits.max_page_bytes = 1 << 20;
  auto pages = AllPages(reader.get(), Req(1, 0, "", 1000), limits);
  uint64_t want = 1;
  for (const auto& p : pages) {
    size_t bytes = 0;
    for (const auto& e : p.envelopes()) {
      ASSERT_EQ(e.seq(), want++);
      bytes += e.payload().size();
    }
    // Closed by the first row that reaches the budget.
    EXPECT_LT(bytes, limits.max_page_bytes + 100 * 1024);
  }
  EXPECT_EQ(want, 61u);
  EXPECT_GE(pages.size(), 6u);
}

TEST(ReplayPager, TrimmedRangeAnswersFirstAvailable) {
  TempDir dir;
  auto writer = Fill(dir.File("r.db"), 3000, 0, /*max_rows=*/1000);
  while (writer->TrimJournal(0, 500).value() > 0) {
  }
  auto reader = Reader(dir.File("r.db"));
  auto pages = AllPages(reader.get(), Req(1, 0));
  ASSERT_FALSE(pages.empty());
  EXPECT_EQ(pages[0].first_available_seq(), 2001u);
  EXPECT_EQ(pages[0].envelopes(0).seq(), 2001u);
  uint64_t n = 0;
  for (const auto& p : pages) n += static_cast<uint64_t>(p.envelopes_size());
  EXPECT_EQ(n, 1000u);
  // Entirely trimmed: nothing, done, and where the journal begins.
  pages = AllPages(reader.get(), Req(1, 100));
  ASSERT_EQ(pages.size(), 1u);
  EXPECT_EQ(pages[0].envelopes_size(), 0);
  EXPECT_TRUE(pages[0].done());
  EXPECT_EQ(pages[0].first_available_seq(), 2001u);
  // Within what is kept: no first_available_seq.
  pages = AllPages(reader.get(), Req(2500, 2600));
  EXPECT_EQ(pages[0].first_available_seq(), 0u);
}

TEST(ReplayPager, TrimDuringPagingIsReported) {
  TempDir dir;
  auto writer = Fill(dir.File("r.db"), 3000, 0, /*max_rows=*/1000);
  auto reader = Reader(dir.File("r.db"));
  auto pager = ReplayPager::Start(reader.get(), Req(1, 0, "", 500));
  ASSERT_OK(pager);
  v1::ReplayReply page;
  ASSERT_OK(pager->NextPage(&page));  // 1..500
  EXPECT_EQ(page.first_available_seq(), 0u);
  EXPECT_EQ(page.envelopes(499).seq(), 500u);
  while (writer->TrimJournal(0, 500).value() > 0) {
  }
  ASSERT_OK(pager->NextPage(&page));
  EXPECT_EQ(page.first_available_seq(), 2001u);
  EXPECT_EQ(page.envelopes(0).seq(), 2001u);
}

// ---- The endpoint, with real sockets

class EndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    writer_ = Fill(dir_.File("e.db"), 5000);
    ReplayEndpointOptions o;
    o.endpoint = "tcp://127.0.0.1:*";
    o.db_path = dir_.File("e.db");
    endpoint_ = std::make_unique<ReplayEndpoint>(o, &ctx_);
    ASSERT_OK(endpoint_->Bind());
    thread_ = std::thread([this] { endpoint_->Run(); });
  }
  void TearDown() override {
    endpoint_->Stop();
    thread_.join();
  }

  zmq::socket_t Dealer() {
    zmq::socket_t s(ctx_, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvtimeo, 10000);
    s.connect(endpoint_->endpoint());
    return s;
  }
  static void Send(zmq::socket_t& s, const v1::ReplayRequest& r) {
    std::string body;
    r.SerializeToString(&body);
    ASSERT_TRUE(s.send(zmq::buffer(body)));
  }
  static std::optional<v1::ReplayReply> Recv(zmq::socket_t& s) {
    zmq::message_t m;
    if (!s.recv(m)) return std::nullopt;
    v1::ReplayReply r;
    if (m.more() || !r.ParseFromArray(m.data(), static_cast<int>(m.size()))) return std::nullopt;
    return r;
  }

  TempDir dir_;
  std::unique_ptr<Store> writer_;
  zmq::context_t ctx_;
  std::unique_ptr<ReplayEndpoint> endpoint_;
  std::thread thread_;
};

TEST_F(EndpointTest, DealerGetsEveryPage) {
  auto s = Dealer();
  Send(s, Req(1, 0, "", 1000));
  uint64_t want = 1;
  for (;;) {
    auto r = Recv(s);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->last_seq(), 5000u);
    for (const auto& e : r->envelopes()) ASSERT_EQ(e.seq(), want++);
    if (r->done()) break;
  }
  EXPECT_EQ(want, 5001u);
}

TEST_F(EndpointTest, ReqGetsOnePagePerRequest) {
  zmq::socket_t s(ctx_, zmq::socket_type::req);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, 10000);
  s.connect(endpoint_->endpoint());
  uint64_t from = 1, want = 1;
  int requests = 0;
  for (; requests < 100; ++requests) {
    Send(s, Req(from, 0, "", 2000));
    auto r = Recv(s);
    ASSERT_TRUE(r);
    for (const auto& e : r->envelopes()) ASSERT_EQ(e.seq(), want++);
    if (r->done()) break;
    from = r->envelopes(r->envelopes_size() - 1).seq() + 1;
  }
  EXPECT_EQ(want, 5001u);
  EXPECT_EQ(requests, 2);  // pages of 2000: 1..2000, 2001..4000, 4001..5000 (done)
}

TEST_F(EndpointTest, GarbageGetsAnErrorAndServingGoesOn) {
  auto s = Dealer();
  // Bytes that do not parse as a ReplayRequest.
  ASSERT_TRUE(s.send(zmq::str_buffer("\xff\xff\xff\xff\xff")));
  auto r = Recv(s);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->done());
  EXPECT_NE(r->error().find("not a ReplayRequest"), std::string::npos) << r->error();
  // Several frames.
  ASSERT_TRUE(s.send(zmq::str_buffer("x"), zmq::send_flags::sndmore));
  ASSERT_TRUE(s.send(zmq::str_buffer("y"), zmq::send_flags::sndmore));
  ASSERT_TRUE(s.send(zmq::str_buffer("z"), zmq::send_flags::sndmore));
  ASSERT_TRUE(s.send(zmq::str_buffer("w")));
  r = Recv(s);
  ASSERT_TRUE(r);
  EXPECT_NE(r->error().find("expected one frame"), std::string::npos) << r->error();
  // A nonsense range.
  Send(s, Req(9, 3));
  r = Recv(s);
  ASSERT_TRUE(r);
  EXPECT_NE(r->error().find("above to_seq"), std::string::npos) << r->error();
  // And a good request is still served.
  Send(s, Req(4990, 0));
  r = Recv(s);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->error().empty());
  ASSERT_EQ(r->envelopes_size(), 11);
  EXPECT_TRUE(r->done());
}

TEST_F(EndpointTest, SlowClientIsPacedNotDropped) {
  // 20 MB of pages, far more than the socket buffers hold, to a client with a one-page queue
  // that does not read at first: the endpoint waits for room (ROUTER_MANDATORY) instead of
  // dropping pages, and every page arrives, in order.
  Batch big;
  for (int i = 0; i < 2000; ++i) {
    InboundMessage m;
    m.topic = "big";
    m.payload.assign(10000, 'x');
    big.inbound.push_back(std::move(m));
  }
  ASSERT_OK(writer_->Commit(big, nullptr));
  auto s = Dealer();
  s.set(zmq::sockopt::rcvhwm, 1);
  Send(s, Req(5001, 0, "", 50));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // a stalled reader, not a sync
  uint64_t want = 5001;
  for (;;) {
    auto r = Recv(s);
    ASSERT_TRUE(r);
    for (const auto& e : r->envelopes()) ASSERT_EQ(e.seq(), want++);
    if (r->done()) break;
  }
  EXPECT_EQ(want, 7001u);
}

TEST_F(EndpointTest, ManyClientsAtOnce) {
  std::vector<zmq::socket_t> clients;
  for (int i = 0; i < 8; ++i) {
    clients.push_back(Dealer());
    Send(clients.back(),
         Req(static_cast<uint64_t>(i) * 100 + 1, static_cast<uint64_t>(i) * 100 + 100, "", 7));
  }
  for (int i = 0; i < 8; ++i) {
    uint64_t want = static_cast<uint64_t>(i) * 100 + 1;
    for (;;) {
      auto r = Recv(clients[static_cast<size_t>(i)]);
      ASSERT_TRUE(r);
      for (const auto& e : r->envelopes()) ASSERT_EQ(e.seq(), want++);
      if (r->done()) break;
    }
    EXPECT_EQ(want, static_cast<uint64_t>(i) * 100 + 101);
  }
}

}  // namespace
}  // namespace wsbridge
