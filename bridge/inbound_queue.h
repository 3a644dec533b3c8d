// InboundQueue: the bounded hand-off of received frames from the I/O thread to the writer.
//
// One producer (the upstream I/O thread) and one consumer (the writer thread). The bound is in
// bytes: when PushAll() reports the high-water mark, the I/O thread pauses reading from the
// socket, so the backlog stays in the upstream's TCP buffers, not in our memory (G7). The writer
// calls the resume callback once the queue has drained below the low-water mark.
//
// The consumer sleeps in poll() on wake_fd(), an eventfd written only when the queue goes from
// empty to non-empty: one syscall per batch, not per frame.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

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
  InboundQueue(size_t high_water_bytes, size_t low_water_bytes)
      : high_(high_water_bytes), low_(low_water_bytes), fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~InboundQueue() { if (fd_ >= 0) close(fd_); }
  InboundQueue(const InboundQueue&) = delete;
  InboundQueue& operator=(const InboundQueue&) = delete;

  // I/O thread. Moves every frame of *frames (which it leaves empty) to the back of the queue.
  // Returns true when the queue is now above its high-water mark: pause reading.
  bool PushAll(std::vector<InboundFrame>* frames) {
    if (frames->empty()) return false;
    bool wake;
    bool over;
    {
      std::lock_guard<std::mutex> lock(mu_);
      wake = items_.empty();
      for (InboundFrame& f : *frames) {
        bytes_ += f.payload.capacity() + f.topic.size() + kOverhead;
        items_.push_back(std::move(f));
      }
      over = bytes_ >= high_;
      if (over) paused_ = true;
    }
    frames->clear();
    if (wake) Wake();
    return over;
  }

  // Any thread: nothing queued. (Only the producer adds, so for it the answer stays true.)
  bool empty() {
    std::lock_guard<std::mutex> lock(mu_);
    return items_.empty();
  }

  // Writer thread. Moves every queued frame into *out (which it clears first). Returns true when
  // the reader was paused and the queue is now below the low-water mark: call the resume hook.
  bool PopAll(std::vector<InboundFrame>* out) {
    out->clear();
    uint64_t drained;
    (void)!read(fd_, &drained, sizeof drained);
    std::lock_guard<std::mutex> lock(mu_);
    out->swap(items_);
    bytes_ = 0;
    if (paused_ && bytes_ <= low_) {
      paused_ = false;
      return true;
    }
    return false;
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
  const size_t low_;
  const int fd_;
  std::mutex mu_;
  std::vector<InboundFrame> items_;
  size_t bytes_ = 0;
  bool paused_ = false;
};

}  // namespace wsbridge
