// ZapHandler: the daemon's ZeroMQ authentication handler (ZAP, RFC 27) for its CURVE endpoints
// (SPEC §10), and the counting of clients refused during the handshake.
//
// ZAP domains: each endpoint's socket sets ZMQ_ZAP_DOMAIN to its name, "pub", "send" or "replay"
// (EndpointRole::zap_domain in endpoint_security.h). The handler maps "pub" and "replay" to the
// role `subscribe` and "send" to `send` (curve_keys.h RoleForDomain); a key listed with `all`
// passes both. Anything else is refused: a mechanism other than CURVE, an unknown domain, a key
// not listed for the domain's role, a malformed request. Refusals are counted in
// Stats::auth_failures by endpoint (wsbridge_auth_failures_total{endpoint}) and logged at most
// once a minute per endpoint and key (the Z85 public key, never a secret).
//
// Never fails open. libzmq lets a CURVE handshake through unauthenticated when nothing is bound
// to inproc://zeromq.zap.01, so:
//   - Start() binds it; the daemon calls Start() before any endpoint binds;
//   - the REP socket stays bound until the handler is destroyed, even after its thread ended:
//     requests then get no answer and every new handshake stalls (refused), never accepted;
//   - if the thread ends for any reason other than Stop() (a socket error, the context
//     terminated, StopForTest()), on_stopped(reason) is called once, from that thread; the
//     daemon then exits non-zero, saying why.
//
// Clients without CURVE (plain clients) or with a wrong server key never reach ZAP: libzmq
// refuses them in the handshake. WatchHandshakes() puts a socket monitor on an endpoint so that
// these refusals (ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) are counted and logged too, on this
// handler's thread. A client that merely connects and hangs up (a TCP probe) is not counted.
//
// Threading: one thread of its own serves the REP socket and the monitors. Reload(), Stop(),
// StopForTest(), running() and key_count() may be called from any thread; WatchHandshakes() from
// the thread that owns the endpoint socket (at start-up, before that socket's thread starts). The
// context must outlive the handler (destroy the handler before terminating the context).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "bridge/endpoints/curve_keys.h"
#include "bridge/stats.h"
#include "common/status.h"

namespace wsbridge {

class ZapHandler {
 public:
  // Called once, from the handler's thread, when it stops for any reason other than Stop().
  // Must be quick and thread-safe (e.g. record the reason and wake the daemon's main thread).
  using OnStopped = std::function<void(const std::string& reason)>;

  // The address libzmq sends ZAP requests to (RFC 27).
  static constexpr const char* kEndpoint = "inproc://zeromq.zap.01";

  // Binds kEndpoint on `context` and starts the thread. Fails (one line) if the address is
  // already bound in this context. `stats` and `context` must outlive the handler.
  static StatusOr<std::unique_ptr<ZapHandler>> Start(zmq::context_t* context, AuthorizedKeys keys,
                                                     Stats* stats, OnStopped on_stopped);

  ~ZapHandler();  // Stop(), then closes the sockets
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Replaces the authorized keys (SIGHUP); the next handshake uses them. Connected clients stay
  // connected: ZAP is asked once per connection.
  void Reload(AuthorizedKeys keys);

  // Counts and logs the CURVE handshakes `endpoint_socket` refuses before ZAP (a plain client, a
  // wrong server key), as refusals on `zap_domain` ("pub", "send", "replay"). Call once per
  // endpoint, after setting its security options, from the thread that owns the socket; the
  // monitor ends when that socket is closed.
  Status WatchHandshakes(zmq::socket_t& endpoint_socket, const std::string& zap_domain);

  // Ends the thread and waits for it (unless called from on_stopped, on the thread itself);
  // on_stopped is not called. Idempotent.
  void Stop();

  // The debug hook behind "the authentication handler stopped" (SIGUSR2 in the daemon): ends
  // the thread as a failure would, on_stopped("stopped by its test hook (SIGUSR2)") included,
  // and returns at once. Unlike Stop(), the daemon then exits non-zero.
  void StopForTest();

  // False once the thread has ended.
  bool running() const { return running_.load(); }

  // How many keys the current list has (for log lines).
  size_t key_count();

 private:
  enum Command : int { kRun = 0, kStop, kStopForTest };
  struct Monitor;
  class RefusalLog;

  ZapHandler(zmq::context_t* context, AuthorizedKeys keys, Stats* stats, OnStopped on_stopped);
  void Wake();
  void Run();           // the thread
  std::string Serve();  // the loop; returns why it ended ("" for Stop())
  void Answer(const std::vector<zmq::message_t>& frames);  // one ZAP request
  void OnMonitorEvent(Monitor& monitor);
  void Refuse(int endpoint, const std::string& log_key, const std::string& line);

  zmq::context_t* context_;
  Stats* stats_;
  OnStopped on_stopped_;
  zmq::socket_t socket_;  // REP on kEndpoint; closed only by the destructor
  int wake_fd_ = -1;      // eventfd: Stop(), StopForTest(), a new monitor
  std::atomic<int> command_{kRun};
  std::atomic<bool> running_{false};

  std::mutex mu_;  // guards keys_, pending_monitors_
  std::shared_ptr<const AuthorizedKeys> keys_;
  std::vector<std::unique_ptr<Monitor>> pending_monitors_;  // handed to the thread on wake

  // The handler thread's own.
  std::vector<std::unique_ptr<Monitor>> monitors_;
  std::unique_ptr<RefusalLog> refusal_log_;

  std::thread thread_;
};

}  // namespace wsbridge
