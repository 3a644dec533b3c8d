// InboundQueue: the bounded hand-off of received frames from the I/O thread to the writer.
//
// One producer (the upstream I/O thread) and one consumer (the writer thread). The bound is in
// bytes: while it collects a socket read's frames, the I/O thread asks WouldReachHighWater() and
// pauses reading from the socket when it says so, so the backlog stays in the upstream's TCP
// buffers, not in our memory (G7). It tells PushAll() it paused; the writer's next PopAll()
// reports that, and the writer then calls the resume callback.
//
// The consumer sleeps in poll() on wake_fd(), an eventfd written only when the queue goes from
// empty to non-empty: one syscall per batch, not per frame.
//
// Payloads also travel back. A free() on another thread than the one that malloc'ed takes the
// allocating thread's arena lock, and the I/O thread, busy allocating every frame, holds it
// often: under load the writer slept on that lock 53-144 times per 200 000 frames, 33-50 ms in
// all, up to 6 ms at a time when the holder had been preempted. So the writer gives the
// payloads it has published back (GiveBack), and at its next PushAll() the I/O thread puts
// them in its PayloadPool, where the next frames it receives take their buffers from.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bridge/link/payload_pool.h"

namespace wsbridge {

struct InboundFrame {
  std::string payload;
  bool binary = false;
  std::optional<uint64_t> upstream_seq;
  std::string topic;
  int64_t received_at_unix_ns = 0;
};

class InboundQueue {
 public:
  explicit InboundQueue(size_t high_water_bytes)
      : high_(high_water_bytes), fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~InboundQueue() { if (fd_ >= 0) close(fd_); }
  InboundQueue(const InboundQueue&) = delete;
  InboundQueue& operator=(const InboundQueue&) = delete;

  // What a frame counts for against the bounds.
  static size_t Cost(const InboundFrame& f) {
    return f.payload.capacity() + f.topic.size() + kOverhead;
  }

  // I/O thread: would the queue reach its high-water mark with frames costing `more` added?
  // (The writer may have emptied it meanwhile: then the reader pauses once more than needed,
  // and is resumed as soon as the writer takes what it pushes.)
  bool WouldReachHighWater(size_t more) const {
    return bytes_.load(std::memory_order_relaxed) + more >= high_;
  }

  // I/O thread. Moves every frame of *frames (which it leaves empty) to the back of the queue.
  // `reader_paused`: the reader paused itself before this push (it pushes at least one frame
  // then); the writer's next PopAll() says so, and only then.
  // It also takes the payloads given back since its last push into the calling thread's
  // PayloadPool (or frees them), outside the lock.
  void PushAll(std::vector<InboundFrame>* frames, bool reader_paused) {
    if (frames->empty()) return;
    // As little as possible under the lock: the writer waits for it, and on a busy machine the
    // holder may be preempted inside (the writer then slept 3-10 ms at a time).
    size_t cost = 0;
    for (const InboundFrame& f : *frames) cost += Cost(f);
    bool wake;
    {
      std::lock_guard<std::mutex> lock(mu_);
      wake = items_.empty();
      const size_t bytes = bytes_.load(std::memory_order_relaxed) + cost;
      if (items_.empty()) {
        items_.swap(*frames);  // the usual case: the writer took the last push already
      } else {
        for (InboundFrame& f : *frames) items_.push_back(std::move(f));
      }
      bytes_.store(bytes, std::memory_order_relaxed);
      if (reader_paused) paused_ = true;
      freeing_.swap(given_back_);  // given_back_ keeps the capacity freeing_ had
      given_back_bytes_ = 0;
    }
    frames->clear();
    if (PayloadPool* pool = PayloadPool::ThisThread()) pool->PutAll(&freeing_);
    freeing_.clear();
    if (wake) Wake();
  }

  // Any thread: nothing queued. (Only the producer adds, so for it the answer stays true.)
  bool empty() {
    std::lock_guard<std::mutex> lock(mu_);
    return items_.empty();
  }

  // Writer thread. Moves every queued frame into *out (which it clears first). Returns true when
  // the reader paused for what it took: call the resume hook.
  bool PopAll(std::vector<InboundFrame>* out) {
    out->clear();
    uint64_t drained;
    (void)!read(fd_, &drained, sizeof drained);
    std::lock_guard<std::mutex> lock(mu_);
    out->swap(items_);
    bytes_.store(0, std::memory_order_relaxed);
    return std::exchange(paused_, false);
  }

  // Writer thread. Takes the strings of *spent (published payloads, which the I/O thread
  // allocated), leaving it empty, for the I/O thread's next PushAll() to pool or free. Past
  // high-water bytes waiting (the reader is idle or paused, so nobody contends), the writer
  // frees what waited itself.
  void GiveBack(std::vector<std::string>* spent) {
    size_t bytes = 0;
    for (const std::string& s : *spent) bytes += s.capacity();
    std::vector<std::string> excess;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (given_back_bytes_ + bytes > high_) {
        excess.swap(given_back_);
        given_back_bytes_ = 0;
      }
      given_back_bytes_ += bytes;
      if (given_back_.empty()) {
        given_back_.swap(*spent);
      } else {
        for (std::string& s : *spent) given_back_.push_back(std::move(s));
      }
    }
    spent->clear();
  }

  // Any thread: bytes given back and not yet taken by a PushAll().
  size_t given_back_bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return given_back_bytes_;
  }

  // Wakes the consumer (also used to deliver "stop").
  void Wake() {
    uint64_t one = 1;
    (void)!write(fd_, &one, sizeof one);
  }
  int wake_fd() const { return fd_; }

 private:
  // Per-frame cost beyond the payload: the frame itself and its topic's allocation.
  static constexpr size_t kOverhead = sizeof(InboundFrame) + 32;
  const size_t high_;
  const int fd_;
  std::mutex mu_;
  std::vector<InboundFrame> items_;
  std::atomic<size_t> bytes_{0};  // written under mu_; read without it by WouldReachHighWater()
  bool paused_ = false;
  std::vector<std::string> given_back_;  // under mu_
  size_t given_back_bytes_ = 0;          // under mu_: their capacities
  std::vector<std::string> freeing_;     // I/O thread only (PushAll): on their way to the pool
};

}  // namespace wsbridge
