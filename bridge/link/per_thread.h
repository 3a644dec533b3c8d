// PerThread<T>::Get(): the calling thread's own T, created on its first use and destroyed when
// the thread exits; nullptr once destroyed (other thread_local destructors may still run and
// call Get() during the thread's exit). Any thread may call it; each gets its own T.
#pragma once

namespace wsbridge {

template <typename T>
class PerThread {
 public:
  static T* Get() {
    thread_local Holder holder;
    return Holder::alive ? &holder.value : nullptr;
  }

 private:
  struct Holder {
    static inline thread_local bool alive = false;  // trivially destructible: readable to the end
    T value;
    Holder() { alive = true; }
    ~Holder() { alive = false; }
  };
};

}  // namespace wsbridge
