// Daemon: wires the parts together and owns them (main.cc only parses flags and calls it).
//
//   I/O thread     Upstream (websocketpp + Asio): connection, heartbeat, reconnect
//   writer thread  Writer: SQLite read-write connection, PUB socket
//   main thread    signals: SIGTERM/SIGINT -> orderly stop
//
// Stop order: the upstream closes with 1000 (no more intake), then the writer commits and
// publishes whatever was queued, then the process exits 0.
#pragma once

#include <memory>

#include "bridge/config.h"
#include "common/status.h"

namespace wsbridge {

class Daemon {
 public:
  // Opens storage, binds the endpoints. Any error is one line naming what is wrong.
  static StatusOr<std::unique_ptr<Daemon>> Create(const Config& config);
  virtual ~Daemon() = default;

  // Runs until SIGTERM/SIGINT (blocked in the calling thread and waited for with sigwait) or a
  // fatal upstream condition. Returns the process exit code.
  virtual int Run() = 0;
};

}  // namespace wsbridge
