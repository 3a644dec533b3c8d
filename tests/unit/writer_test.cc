// The writer's two ways in, on a real SQLite file and real ZeroMQ sockets in one process:
//   the queue (the writer thread commits) and TryCommitInline (the I/O thread commits itself
//   when the writer is idle). Whichever way a frame takes, it is committed and published in
//   the order received, with contiguous seqs, exactly once; inline never overtakes the queue.
// No sleeps: waits poll a condition with a deadline.
#include "bridge/pipeline/writer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "testutil.h"
#include "wsbridge.pb.h"

namespace wsbridge {
namespace {

using testing::TempDir;

// Every wait of these tests gives up after this.
constexpr std::chrono::milliseconds kWait{20000};

bool WaitFor(const std::function<bool()>& cond) { return testing::WaitFor(cond, kWait); }

InboundFrame Frame(uint64_t upstream_seq) {
  InboundFrame f;
  f.upstream_seq = upstream_seq;
  f.topic = "t";
  f.payload = "p" + std::to_string(upstream_seq);
  return f;
}

std::vector<InboundFrame> Frames(uint64_t first, uint64_t last) {
  std::vector<InboundFrame> v;
  for (uint64_t s = first; s <= last; ++s) v.push_back(Frame(s));
  return v;
}

// A writer on a fresh database, its thread not started, and a subscriber that the writer has
// seen subscribe.
class WriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions so;
    so.path = dir_.File("bridge.db");
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Store> store, Store::Open(so));
    WriterOptions wo;
    wo.pub_endpoint = "tcp://127.0.0.1:*";
    wo.outbound.endpoint = "tcp://127.0.0.1:*";
    writer_ = std::make_unique<Writer>(wo, std::move(store), &ctx_, &queue_, &events_, &stats_);
    ASSERT_OK(writer_->Bind());
    sub_.set(zmq::sockopt::subscribe, "");
    sub_.set(zmq::sockopt::rcvtimeo, 20000);
    sub_.connect(writer_->pub_endpoint());
    // Until the writer has seen the subscription, what it publishes is not received. An
    // inline offer of nothing makes it look, with no writer thread running yet.
    ASSERT_TRUE(WaitFor([this] {
      std::vector<InboundFrame> none;
      return writer_->TryCommitInline(&none) && stats_.subscriptions.load() == 1;
    }));
  }

  void TearDown() override {
    writer_->Stop();
    if (thread_.joinable()) thread_.join();
  }

  void StartWriter() {
    thread_ = std::thread([this] { writer_->Run(); });
  }

  // Receives `n` envelopes; fails the test on a timeout.
  std::vector<v1::Envelope> Receive(size_t n) {
    std::vector<v1::Envelope> out;
    while (out.size() < n) {
      zmq::message_t topic, body;
      if (!sub_.recv(topic) || !sub_.recv(body)) {
        ADD_FAILURE() << "timed out after " << out.size() << " of " << n << " messages";
        break;
      }
      v1::Envelope env;
      EXPECT_TRUE(env.ParseFromArray(body.data(), static_cast<int>(body.size())));
      out.push_back(std::move(env));
    }
    return out;
  }

  // Offers `frames` inline until the writer is idle enough to take them.
  void CommitInline(std::vector<InboundFrame> frames) {
    ASSERT_TRUE(WaitFor([&] { return writer_->TryCommitInline(&frames); }));
    EXPECT_TRUE(frames.empty());
  }

  TempDir dir_;
  zmq::context_t ctx_;
  InboundQueue queue_{8u << 20};
  LinkEvents events_{[this] { queue_.Wake(); }};
  Stats stats_;
  std::unique_ptr<Writer> writer_;
  std::thread thread_;
  zmq::socket_t sub_{ctx_, zmq::socket_type::sub};
};

TEST_F(WriterTest, InlineWaitsForWhatIsQueuedAndThenFollowsIt) {
  std::vector<InboundFrame> queued = Frames(1, 3);
  queue_.PushAll(&queued, /*reader_paused=*/false);
  std::vector<InboundFrame> later = Frames(4, 5);
  // Frames are queued: committing these first would put them before 1..3.
  EXPECT_FALSE(writer_->TryCommitInline(&later));
  EXPECT_EQ(later.size(), 2u) << "refused frames must be left to the caller";

  StartWriter();
  ASSERT_TRUE(WaitFor([this] { return writer_->committed_upstream_seq() == 3; }));
  CommitInline(std::move(later));
  EXPECT_EQ(writer_->committed_upstream_seq(), 5u) << "committed before it returned";

  const std::vector<v1::Envelope> got = Receive(5);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].seq(), i + 1);
    EXPECT_EQ(got[i].upstream_seq(), i + 1);
    EXPECT_EQ(got[i].payload(), "p" + std::to_string(i + 1));
  }
}

TEST_F(WriterTest, InlineDropsDuplicatesLikeTheWriter) {
  StartWriter();
  CommitInline(Frames(1, 3));
  CommitInline(Frames(2, 4));  // 2 and 3 again, as after a reconnect
  const std::vector<v1::Envelope> got = Receive(4);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[3].seq(), 4u);
  EXPECT_EQ(got[3].upstream_seq(), 4u);
  EXPECT_EQ(stats_.duplicates_dropped.load(), 2u);
}

TEST_F(WriterTest, InlineIsRefusedOnceStopping) {
  StartWriter();
  writer_->Stop();
  std::vector<InboundFrame> frames = Frames(1, 1);
  EXPECT_FALSE(writer_->TryCommitInline(&frames));
  EXPECT_EQ(frames.size(), 1u);
}

TEST_F(WriterTest, BothWaysMixedUnderLoadKeepOrderAndLoseNothing) {
  // The I/O thread's pattern at a rate between "a few per read" and "full reads": a read is
  // offered inline and queued when the writer is busy. (Under ThreadSanitizer this is the
  // test that shows the writer's state is only ever touched under its lock.)
  StartWriter();
  constexpr uint64_t kFrames = 20000;
  size_t inline_reads = 0, queued_reads = 0;
  std::thread io([&] {
    std::mt19937 rng(20261123);
    uint64_t next = 1;
    while (next <= kFrames) {
      const uint64_t n = std::min<uint64_t>(1 + rng() % 40, kFrames - next + 1);
      std::vector<InboundFrame> read = Frames(next, next + n - 1);
      next += n;
      // One read in eight is "large" and queued outright, as HandOff() does: the writer
      // thread then has turns of its own, and inline offers meet a busy writer.
      if (rng() % 8 != 0 && writer_->TryCommitInline(&read)) {
        ++inline_reads;
      } else {
        ++queued_reads;
        queue_.PushAll(&read, /*reader_paused=*/false);
        // Sometimes the next read comes only once the writer has taken this one (a pause in
        // the feed), so that inline offers also follow queued frames.
        if (rng() % 2 == 0) ASSERT_TRUE(WaitFor([this] { return queue_.empty(); }));
      }
    }
  });
  const std::vector<v1::Envelope> got = Receive(kFrames);
  io.join();
  ASSERT_EQ(got.size(), kFrames);
  for (uint64_t i = 0; i < kFrames; ++i) {
    ASSERT_EQ(got[i].seq(), i + 1) << "at " << i;
    ASSERT_EQ(got[i].upstream_seq(), i + 1) << "at " << i;
  }
  EXPECT_TRUE(WaitFor([this] { return writer_->committed_upstream_seq() == kFrames; }));
  EXPECT_GT(inline_reads, 0u);
  EXPECT_GT(queued_reads, 0u);
  std::printf("reads committed inline: %zu, queued: %zu\n", inline_reads, queued_reads);
}

}  // namespace
}  // namespace wsbridge
