// The client side of the bridge's endpoint security (SPEC §10): CURVE keys on a client socket,
// and a refused handshake turned into an error instead of silence.
//
//   CurveClientKeys::Load()  the two client settings, --server-key KEY (Z85, or @FILE) and
//                            --client-key-file FILE (a secret key file; its public key derived),
//                            as the three keys a CURVE client socket needs; both or neither
//   ConnectToBridge()        sets the keys on a socket, watches its handshakes, connects it
//   HandshakeWatch           a socket monitor that says when the bridge refused a handshake
//
// Why the watch: libzmq tells a refused handshake (a key the bridge does not authorize for that
// endpoint, a plain client on a CURVE endpoint, a CURVE client on a plain one) only to a socket
// monitor, and never retries that connection. Without one a client waits forever for messages
// or replies that never come. A handshake the bridge cuts short without an answer (what a wrong
// server key looks like, and at times a plain client on a CURVE endpoint) is retried by libzmq;
// the watch gives up after kMaxClosedHandshakes of them in a row.
//
// Used by wsbridge-tail, wsbridge-send, wsbridge-replay --endpoint and the gap-filling
// subscriber (client/gap_filling_subscriber.h). CurveClientKeys is a value (any thread). A
// HandshakeWatch belongs to the thread that owns the socket it watches (ZeroMQ sockets are not
// thread-safe); the zmq::context_t must outlive it.
#pragma once

#include <chrono>
#include <string>
#include <zmq.hpp>

#include "common/status.h"

namespace wsbridge::client {

struct CurveClientKeys {
  // Binary, 32 bytes each; all empty: no CURVE (a plain client).
  std::string server_public;
  std::string client_public;
  std::string client_secret;

  bool enabled() const { return !server_public.empty(); }

  // `server_key`: the bridge's public key, 40 Z85 characters or "@FILE" (a file holding them,
  // e.g. the PREFIX.pub of `wsbridge keygen --out PREFIX`; a `public: <Z85>` line or a ZeroMQ
  // certificate's `public-key = "<Z85>"` also do). `client_key_file`: this client's secret key
  // file, read with ReadSecretKeyFile (refused when group or others may read it). Both empty:
  // no CURVE. One without the other, or anything unreadable: a one-line error naming the flag
  // (--server-key, --client-key-file).
  static StatusOr<CurveClientKeys> Load(const std::string& server_key,
                                        const std::string& client_key_file);
};

// A monitor on one client socket for its handshakes. Move-only.
class HandshakeWatch {
 public:
  // Handshakes the bridge closed without an answer, in a row, before Check() fails.
  static constexpr int kMaxClosedHandshakes = 3;

  // Starts watching `socket` (before it connects: events before that would be missed). `curve`:
  // whether the socket is a CURVE client (it words the errors).
  static StatusOr<HandshakeWatch> Start(zmq::context_t& ctx, zmq::socket_t& socket, bool curve);

  HandshakeWatch(HandshakeWatch&&) = default;
  HandshakeWatch& operator=(HandshakeWatch&&) = default;

  // Reads the events that arrived, without blocking. OK until a handshake was refused; from
  // then on, every call returns the same one-line error, e.g. "the bridge refused this client's
  // key (CURVE handshake failed on tcp://127.0.0.1:5557: status 400, ...)".
  Status Check();

  // Waits up to `timeout` until `socket` has a message to read (true) or not (false: the time
  // passed, or a signal interrupted the wait), watching the handshakes meanwhile: the error of
  // Check() as soon as one is refused.
  StatusOr<bool> WaitReadable(zmq::socket_t& socket, std::chrono::milliseconds timeout);

  // The monitor's socket, to poll beside the watched one (readable: call Check()).
  zmq::socket_t& events() { return reader_; }

 private:
  HandshakeWatch(zmq::socket_t reader, bool curve) : reader_(std::move(reader)), curve_(curve) {}
  void OnEvent(uint16_t event, uint32_t value, const std::string& endpoint);

  zmq::socket_t reader_;  // PAIR connected to the watched socket's monitor
  bool curve_ = false;
  int closed_in_a_row_ = 0;
  Status refused_;  // sticky once set
};

// Sets `keys` on `socket` (when enabled), starts a HandshakeWatch on it and connects it to
// `endpoint`. Errors are one line: "cannot connect to <endpoint>: ...".
StatusOr<HandshakeWatch> ConnectToBridge(zmq::context_t& ctx, zmq::socket_t& socket,
                                         const std::string& endpoint, const CurveClientKeys& keys);

}  // namespace wsbridge::client
