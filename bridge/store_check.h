// Whole-file checks of the database (Store::Verify), kept off the start path so that start-up
// costs the same whatever the journal's size.
//
//   StoreCheck  the daemon's background pass: a thread of its own at the lowest CPU and I/O
//               priority, right after start and then every storage.check_interval_s, each pass
//               on a read-only Store of its own (the writer goes on meanwhile). Damage found
//               sets wsbridge_storage_damaged, holds /readyz with its first problem, and is
//               logged, one line per problem; it stays until the process restarts.
//   CheckMain   `wsbridge check --db FILE`: the same check on demand, for an operator or a
//               start-up hook (exit 0 sound, 1 damaged, 2 when it could not run).
//
// Threading: construct, Start() and Stop() StoreCheck on one thread (the daemon's main thread);
// its pass runs on its own thread. CheckMain: main thread only (it writes to stdout/stderr).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "bridge/stats.h"

namespace wsbridge {

class StoreCheck {
 public:
  // `stats` must outlive this object. interval_s 0: no pass at all.
  StoreCheck(std::string db_path, int64_t interval_s, Stats* stats);
  ~StoreCheck();  // Stop()s
  StoreCheck(const StoreCheck&) = delete;
  StoreCheck& operator=(const StoreCheck&) = delete;

  void Start();
  // Interrupts a pass under way (within a few milliseconds) and joins the thread.
  void Stop();

 private:
  void Loop();
  void Pass();

  const std::string db_path_;
  const int64_t interval_s_;
  Stats* const stats_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// argv[0] is the program, argv[1] "check". Returns the exit code.
int CheckMain(int argc, char** argv);

}  // namespace wsbridge
