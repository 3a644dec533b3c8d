// HttpServer: the operations endpoints on http.listen (SPEC §7).
//
//   GET /healthz  200 "ok" while the process runs
//   GET /readyz   200 "ready" while the upstream is open and storage is writable (and the
//                 daemon is not stopping), else 503 with the reasons, one per line
//   GET /metrics  Prometheus text format (bridge/metrics.h), read from Stats per request
//   anything else 404; methods other than GET/HEAD 405; malformed requests 4xx
//
// It is websocketpp's HTTP server (plain HTTP, no TLS) on its own Asio io_context and its own
// thread, apart from the upstream's: a slow or stuck scraper never delays the upstream link.
// Every request is answered and the connection closed (no keep-alive); a client that sends
// nothing is dropped after 5 s.
//
// Threading: Create() binds (on the main thread, so that a bad address fails start-up);
// Start(), BeginShutdown() and Stop() from the owner's thread; Stats is read from the server's
// thread and must outlive it.
#pragma once

#include <memory>
#include <string>

#include "bridge/stats.h"
#include "common/status.h"

namespace wsbridge {

class HttpServer {
 public:
  // Listens on `listen` ("host:port", "[v6]:port"; port 0: one chosen by the OS) and logs
  // "http: listening on <address>:<port>". An error names http.listen.
  static StatusOr<std::unique_ptr<HttpServer>> Create(const std::string& listen,
                                                      const Stats* stats);
  virtual ~HttpServer() = default;

  // The address actually bound, e.g. "127.0.0.1:9108" or "[::1]:9108".
  virtual std::string address() const = 0;
  // Starts serving on the server's own thread.
  virtual void Start() = 0;
  // The daemon is stopping: /readyz answers 503 "shutting down" from now on. Any thread.
  virtual void BeginShutdown() = 0;
  // Stops accepting, drops open connections and joins the thread. Idempotent.
  virtual void Stop() = 0;
};

}  // namespace wsbridge
