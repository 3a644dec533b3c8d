// Backpressure on the real upstream connection (SPEC G7, G2): the bridge's Upstream over real
// TCP to wsbridge-upstream, with an InboundQueue small enough that reading pauses and resumes
// thousands of times. Every frame must arrive exactly once, in order, on the one connection.
//
// The writer is played by this test's consumer thread: it drains the queue as soon as it is
// woken and resumes the reader, as fast as it can, which is when a resume overtakes the socket
// read that was already in flight when reading paused.
#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <thread>

#include "bridge/link/upstream.h"
#include "integration/harness.h"
#include "testutil.h"

namespace wsbridge {
namespace {

using namespace wsbridge::testing;

TEST(Backpressure, PausedReadingResumesWithoutLosingOrRepeatingAFrame) {
  constexpr int kCount = 200000;
  TempDir dir;
  int port = 0;
  Child upstream = StartUpstream(dir.path(), {"--count=" + std::to_string(kCount), "--rate=0"},
                                 &port);
  ASSERT_NE(port, 0) << upstream.Stderr();

  auto config = LoadConfigFromString(
      "", {"upstream.url=ws://127.0.0.1:" + std::to_string(port) + "/feed"}, {});
  ASSERT_OK(config);
  // A few dozen 100-byte frames fill it: every few socket reads pause the reader.
  InboundQueue queue(/*high_water_bytes=*/16 << 10);
  LinkEvents events([&queue] { queue.Wake(); });
  Stats stats;
  UpstreamHooks hooks;
  hooks.queue = &queue;
  hooks.stats = &stats;
  hooks.resume_seq = [] { return uint64_t{0}; };  // a reconnect would replay from the start
  hooks.events = &events;
  auto up = Upstream::Create(*config, std::move(hooks));
  ASSERT_OK(up);
  Upstream* u = up->get();
  std::atomic<bool> io_done{false};
  std::thread io([u, &io_done] {
    u->Run();
    io_done = true;
  });

  // The consumer: drains the queue the moment it is woken and resumes the reader at once,
  // except that every 16th batch takes it 2 ms (a slow commit), so that the socket fills up
  // and the next reads take whole buffers.
  std::vector<uint64_t> seqs;
  seqs.reserve(kCount);
  std::vector<InboundFrame> frames;
  int batches = 0;
  auto consume = [&] {
    pollfd p{queue.wake_fd(), POLLIN, 0};
    (void)poll(&p, 1, 100);
    if (queue.PopAll(&frames)) u->ResumeReading();
    for (const InboundFrame& f : frames) seqs.push_back(f.upstream_seq.value_or(0));
    if (!frames.empty() && ++batches % 16 == 0) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
      while (std::chrono::steady_clock::now() < until) {
      }
    }
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (seqs.size() < static_cast<size_t>(kCount) &&
         std::chrono::steady_clock::now() < deadline) {
    consume();
  }
  std::fprintf(stderr, "got %zu frames, last %llu; %llu pauses, %llu connects\n", seqs.size(),
               static_cast<unsigned long long>(seqs.empty() ? 0 : seqs.back()),
               static_cast<unsigned long long>(stats.reads_paused.load()),
               static_cast<unsigned long long>(stats.connects.load()));
  u->Stop();  // the close handshake needs reading: keep consuming until Run() returns
  while (!io_done.load()) consume();
  io.join();

  ASSERT_EQ(seqs.size(), static_cast<size_t>(kCount)) << upstream.Stderr();
  for (size_t i = 0; i < seqs.size(); ++i) {
    ASSERT_EQ(seqs[i], i + 1) << "frame " << i << " of the stream";
  }
  EXPECT_EQ(stats.connects.load(), 1u) << "the connection broke:\n" << upstream.Stderr();
  EXPECT_GE(stats.reads_paused.load(), 50u) << "too few pauses to test them";
}

}  // namespace
}  // namespace wsbridge
