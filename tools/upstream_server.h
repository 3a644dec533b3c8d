// wsbridge-upstream: the reference upstream WebSocket server (SPEC §6).
//
// It produces a numbered feed `{"seq":N,"topic":"T","data":{...}}`, keeps the most recent
// messages for resume, replays them after `{"type":"resume","after":L}`, acks outbound
// messages that carry an "id", answers `{"type":"ping"}`, and has switches that make it
// misbehave on purpose (refused handshakes, forced closes) for the bridge's tests, or speak
// like real feeds do (SPEC §9): application pings the client must echo (--server-ping), every
// frame gzip/zlib/deflate-compressed in a binary frame (--compress), permessage-deflate
// (--permessage-deflate).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace wsbridge::upstream {

// Everything the command line decides. A plain value; the server copies it.
struct Options {
  std::string bind = "127.0.0.1";
  uint16_t port = 8765;  // 0: chosen by the OS, printed as "listening on <port>"

  // Feed.
  double rate = 10;  // messages per second; 0: as fast as clients drain
  std::vector<std::string> topics = {"ticks"};
  uint64_t history = 100000;  // messages kept for resume (>= 1)
  uint64_t count = 0;         // stop producing after this many; 0: never
  uint64_t first_seq = 1;     // seq of the first message produced
  size_t payload_bytes = 0;   // pad "data" to about this many bytes; 0: no pad

  // Inbound.
  std::string log_received;  // file: every outbound message got, one per line
  bool no_ack = false;

  // Test switches.
  uint64_t close_after = 0;                  // close each connection (1001) after N messages
  int reject_status = 0;                     // refuse every handshake with this HTTP status
  std::string retry_after;                   // Retry-After header value on refusals
  std::vector<std::string> require_headers;  // "Name: value"; missing -> 401
  std::string log_headers;                   // file: one JSON object of request headers per line
  uint32_t max_connections = 0;              // 0: unlimited; beyond: 503

  // Real feeds' protocols (SPEC §9).
  // Every server_ping_ms, each open connection gets {"ping":<unix ms>} (strictly increasing);
  // one not answered with exactly {"pong":<that number>} within ping_deadline_ms is closed with
  // kPingCloseCode "ping not answered". Pongs are consumed, never logged as received.
  uint32_t server_ping_ms = 0;      // 0: no server pings
  uint32_t ping_deadline_ms = 700;  // 0: pings are never required to be answered
  // "gzip", "zlib" or "deflate" (raw): every frame the server sends is a binary frame holding
  // the compressed text, and binary frames from clients are inflated when they carry a gzip or
  // zlib header (or, with "deflate", when they inflate as raw deflate). "": plain text frames.
  std::string compress;
  // Accept permessage-deflate (RFC 7692) offers: frames go out compressed (RSV1) per connection.
  bool permessage_deflate = false;

  // TLS (wss://). Both cert and key, or neither. client_ca turns on mutual TLS.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;

  bool quiet = false;  // no per-connection lines on stderr
};

// The close code (and reason "ping not answered") of a connection that missed a server ping.
inline constexpr uint16_t kPingCloseCode = 4000;

// The server. Create() validates the options and opens files and TLS material; Run() binds,
// prints "listening on <port>" to stdout, and serves until SIGINT or SIGTERM.
// Single-threaded: everything runs on the io_context inside Run(), on the calling thread.
// The Server owns its io_context, listening socket, connections, history and log files.
class Server {
 public:
  virtual ~Server() = default;

  static StatusOr<std::unique_ptr<Server>> Create(const Options& options);

  // Blocks until a signal stops the server (OK) or the listen fails (error).
  virtual Status Run() = 0;
};

}  // namespace wsbridge::upstream
