// How the daemon's three ZeroMQ endpoints are bound safely (SPEC §10): ipc endpoints with a
// mode and group applied before any peer can connect, guarded by a lock beside the socket file;
// tcp endpoints as CURVE servers (with a ZAP domain naming their role), refused on a
// non-loopback address without CURVE unless zmq.allow_insecure; a bound on request size
// (ZMQ_MAXMSGSIZE) where the endpoint reads requests.
//
// BindEndpoint() is called by each endpoint's Bind(), on the thread that owns that socket,
// during the daemon's start-up, before the daemon's other threads start: an ipc bind briefly
// narrows the process umask (process-wide state). The returned EndpointGuard (the ipc lock)
// must live as long as the socket is bound; it removes nothing on destruction (a later daemon
// replaces a stale socket file itself, under the lock).
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>

#include <zmq.hpp>

#include "common/status.h"

namespace wsbridge {

// Settings shared by the three endpoints, from zmq.* (EndpointSecurity::FromConfig in the daemon).
struct EndpointSecurity {
  mode_t ipc_mode = 0660;       // zmq.ipc_mode
  gid_t ipc_gid = static_cast<gid_t>(-1);  // zmq.ipc_group resolved; -1: the process's group
  bool allow_insecure = false;  // zmq.allow_insecure
  // CURVE server secret key (32 bytes, binary), from zmq.curve.secret_key_file; empty: no CURVE.
  std::string curve_secret_key;
  // With CURVE: called for each CURVE socket before it binds, so that handshakes failing before
  // they reach the authentication handler (plain clients, a wrong server key) are counted too
  // (ZapHandler::WatchHandshakes). Optional.
  std::function<Status(zmq::socket_t& socket, const std::string& zap_domain)> watch_handshakes;
};

// What one endpoint is: its configuration key (for messages: "zmq.pub"), its ZAP domain (the
// endpoint's name, "pub", "send" or "replay": the ZAP handler maps pub and replay to the role
// `subscribe`, send to `send`, and labels its failure counts by it), and the largest request it
// accepts (0: no limit, for the PUB socket, which reads only subscriptions).
struct EndpointRole {
  std::string key;
  std::string zap_domain;
  int64_t max_message_bytes = 0;
};

// The daemon's three endpoints. A SendRequest is bounded at 16 MiB (a bigger one is dropped by
// ZeroMQ with the producer's connection); a valid ReplayRequest is a few dozen bytes.
inline const EndpointRole kPubEndpoint{"zmq.pub", "pub", 0};
inline const EndpointRole kSendEndpoint{"zmq.send", "send", 16 << 20};
inline const EndpointRole kReplayEndpoint{"zmq.replay", "replay", 64 << 10};

// Held while an ipc endpoint is bound (its lock file's descriptor); BindEndpoint returns none
// (nullptr) for the other transports.
class EndpointGuard {
 public:
  virtual ~EndpointGuard() = default;
};

// Checks what can be checked without binding (a non-loopback tcp address without CURVE, an
// ipc directory that is world-writable or missing, an ipc path that is not absolute, whose
// lock a live daemon holds (taken and released at once), or where something other than a
// socket is; a transport other than tcp, ipc or inproc without zmq.allow_insecure); errors
// name role.key.
Status CheckEndpoint(const std::string& endpoint, const EndpointRole& role,
                     const EndpointSecurity& security);

// Sets the socket's security options (CURVE server + ZAP domain on tcp when a key is set;
// ZMQ_MAXMSGSIZE), then binds it. ipc: refuses a world-writable directory; takes the lock
// "<path>.lock" (flock, non-blocking) and refuses to start when a live daemon holds it; removes
// a stale socket file left by a crashed daemon; binds with umask 0177 (the file is created
// 0600), then sets its group and mode: at no moment is it wider than asked. Errors are one line
// naming role.key.
StatusOr<std::unique_ptr<EndpointGuard>> BindEndpoint(zmq::socket_t& socket,
                                                      const std::string& endpoint,
                                                      const EndpointRole& role,
                                                      const EndpointSecurity& security);

}  // namespace wsbridge
