// NameThisThread: names the calling thread, as top -H, ps -L, perf and gdb show it
// ("wsb-writer"), so that an operator can tell which of the bridge's threads uses the CPU.
// Linux keeps at most 15 characters. Call it first in a thread's body; any thread.
#pragma once

#include <pthread.h>

namespace wsbridge {

inline void NameThisThread(const char* name) { pthread_setname_np(pthread_self(), name); }

}  // namespace wsbridge
