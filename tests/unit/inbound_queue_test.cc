// InboundQueue: the byte bound the reader pauses at, and the pause it reports to the writer
// exactly once (the writer's resume of the reader hangs on it: reported twice, harmless;
// never reported, the reader would stay paused for good).
#include "bridge/pipeline/inbound_queue.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <string>
#include <vector>

#include "bridge/link/payload_pool.h"

namespace wsbridge {
namespace {

std::vector<InboundFrame> Frames(int n, size_t payload_bytes) {
  std::vector<InboundFrame> v(n);
  for (InboundFrame& f : v) f.payload.assign(payload_bytes, 'x');
  return v;
}

bool Woken(const InboundQueue& q) {
  pollfd p{q.wake_fd(), POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

TEST(InboundQueue, HighWaterCountsQueuedFramesAndTheReadsOwn) {
  const size_t cost = InboundQueue::Cost(Frames(1, 1000)[0]);
  InboundQueue q(10 * cost);
  EXPECT_FALSE(q.WouldReachHighWater(9 * cost));
  EXPECT_TRUE(q.WouldReachHighWater(10 * cost));
  std::vector<InboundFrame> frames = Frames(6, 1000);
  q.PushAll(&frames, /*reader_paused=*/false);
  EXPECT_TRUE(frames.empty());
  EXPECT_FALSE(q.WouldReachHighWater(3 * cost));
  EXPECT_TRUE(q.WouldReachHighWater(4 * cost));
  std::vector<InboundFrame> out;
  EXPECT_FALSE(q.PopAll(&out)) << "no pause to report";
  EXPECT_EQ(out.size(), 6u);
  EXPECT_FALSE(q.WouldReachHighWater(9 * cost)) << "taking the frames frees their bytes";
}

TEST(InboundQueue, APauseIsReportedByTheNextPopAllOnly) {
  InboundQueue q(1 << 20);
  std::vector<InboundFrame> frames = Frames(3, 10);
  q.PushAll(&frames, /*reader_paused=*/true);
  EXPECT_TRUE(Woken(q));
  std::vector<InboundFrame> out;
  EXPECT_TRUE(q.PopAll(&out));
  EXPECT_EQ(out.size(), 3u);
  EXPECT_FALSE(Woken(q)) << "PopAll consumes the wake-up";
  EXPECT_FALSE(q.PopAll(&out));
  EXPECT_TRUE(out.empty());
}

TEST(InboundQueue, WakesOnlyWhenItGoesFromEmptyToNot) {
  InboundQueue q(1 << 20);
  std::vector<InboundFrame> frames = Frames(1, 10);
  q.PushAll(&frames, /*reader_paused=*/false);
  std::vector<InboundFrame> out;
  ASSERT_FALSE(q.PopAll(&out));
  frames = Frames(1, 10);
  q.PushAll(&frames, /*reader_paused=*/false);
  EXPECT_TRUE(Woken(q));
  uint64_t n = 0;
  ASSERT_EQ(read(q.wake_fd(), &n, sizeof n), static_cast<ssize_t>(sizeof n));
  frames = Frames(1, 10);
  q.PushAll(&frames, /*reader_paused=*/false);
  EXPECT_FALSE(Woken(q)) << "not empty before: the consumer was woken already";
  EXPECT_FALSE(q.empty());
}

std::vector<std::string> Payloads(int n, size_t bytes) {
  std::vector<std::string> v(n);
  for (std::string& s : v) s.assign(bytes, 'x');
  return v;
}

TEST(InboundQueue, GivenBackPayloadsGoToThePushingThreadsPool) {
  InboundQueue q(1 << 20);
  std::vector<std::string> spent = Payloads(3, 1000);
  size_t bytes = 0;
  for (const std::string& s : spent) bytes += s.capacity();
  q.GiveBack(&spent);
  EXPECT_TRUE(spent.empty());
  EXPECT_EQ(q.given_back_bytes(), bytes);
  spent = Payloads(2, 1000);
  q.GiveBack(&spent);
  EXPECT_EQ(q.given_back_bytes(), bytes * 5 / 3) << "a second pile joins the first";
  const size_t spare_before = PayloadPool::ThisThread()->spare();
  std::vector<InboundFrame> frames = Frames(1, 10);
  q.PushAll(&frames, /*reader_paused=*/false);
  EXPECT_EQ(q.given_back_bytes(), 0u) << "the I/O thread's push takes them";
  EXPECT_EQ(PayloadPool::ThisThread()->spare(), spare_before + 5) << "into its pool";
}

TEST(InboundQueue, PastHighWaterTheWriterFreesWhatWaited) {
  std::vector<std::string> spent = Payloads(4, 1000);
  const size_t each = spent[0].capacity();
  InboundQueue q(6 * each);
  q.GiveBack(&spent);
  spent = Payloads(2, 1000);
  q.GiveBack(&spent);
  EXPECT_EQ(q.given_back_bytes(), 6 * each) << "up to the high-water mark, it all waits";
  spent = Payloads(1, 1000);
  q.GiveBack(&spent);
  EXPECT_EQ(q.given_back_bytes(), each) << "past it, only the newest pile waits";
}

}  // namespace
}  // namespace wsbridge
