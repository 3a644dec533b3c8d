// PayloadPool: spare payload strings, so that a received frame is read into the buffer of one
// published before it instead of a new malloc (and a free of the old one).
//
// The payloads the writer has published come back to the upstream I/O thread
// (InboundQueue::GiveBack, then PushAll); they land in that thread's pool instead of being
// freed, and websocketpp's message manager (RecyclingMessages, ws_recycling.h) takes the next
// frames' buffers from it. Until then every payload was one malloc on the I/O thread and one
// free there after it came back (see ws_recycling.h for what the two saved).
//
// One pool per thread (ThisThread()), no locks; bounded in bytes and in the largest buffer it
// keeps.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "bridge/link/per_thread.h"

namespace wsbridge {

class PayloadPool {
 public:
  // Bounds: the capacity kept in all (a socket read's worth of frames needs far less), and the
  // largest capacity kept (a bigger one is freed: one large message must not pin its buffer
  // for the small ones that follow).
  static constexpr size_t kMaxBytes = 2 << 20;
  static constexpr size_t kMaxCapacity = 16384;

  // The calling thread's pool; nullptr once the thread's pools are being destroyed.
  static PayloadPool* ThisThread();

  // Takes the strings of *spent (leaving it empty): kept while within bounds, else freed.
  void PutAll(std::vector<std::string>* spent) {
    for (std::string& s : *spent) {
      const size_t capacity = s.capacity();
      if (capacity <= kMaxCapacity && bytes_ + capacity <= kMaxBytes) {
        bytes_ += capacity;
        spare_.push_back(std::move(s));
      }
    }
    spent->clear();
  }

  // An empty string with capacity for `size` bytes: a spare one when the last one given back
  // fits without wasting more than about its size (a queue bounded in bytes counts capacity),
  // else a new one.
  std::string Take(size_t size) {
    std::string s;
    if (!spare_.empty()) {
      const size_t capacity = spare_.back().capacity();
      if (capacity >= size && capacity <= 2 * size + 64) {
        s.swap(spare_.back());
        s.clear();
      }
      spare_.pop_back();  // a misfit is freed: the next one is tried next time
      bytes_ -= capacity;
    }
    s.reserve(size);
    return s;
  }

  size_t spare() const { return spare_.size(); }
  size_t spare_bytes() const { return bytes_; }

 private:
  std::vector<std::string> spare_;
  size_t bytes_ = 0;  // the capacity of spare_'s strings
};

inline PayloadPool* PayloadPool::ThisThread() { return PerThread<PayloadPool>::Get(); }

}  // namespace wsbridge
