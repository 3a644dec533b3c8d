// ConnectionPolicy: when to connect, ping, give up on and reconnect the upstream (SPEC G5, G6).
//
// A state machine with no I/O, no threads and no clock of its own. The I/O layer (the thread
// that runs websocketpp's Asio loop) reports what happened, with the current time, and the
// policy answers with what to do (Actions); between events, the I/O layer keeps one timer armed
// at NextDeadline() and calls OnTimer() when it fires. A test drives the same object with a
// SimulatedClock: advance to NextDeadline(), OnTimer(), check the Actions.
//
//   Start ---> kConnecting --OnOpen--> kOpen --OnClosed / heartbeat timeout--+
//                 |  ^                                                       |
//   OnConnectFailed  |  OnTimer (retry_at)                                   |
//   / connect timeout|                                                       v
//                 +--+--------------------- kBackingOff <--------------------+
//                 (max_attempts failures in a row: kFailed + kExit)   Stop: kStopped, at once
//
// Rules:
//  - Delays follow NextDelay(reconnect.jitter) and never exceed reconnect.max_delay_ms.
//  - The failure counter (`attempt`) and the backoff exponent reset only once a connection has
//    been proven alive for reconnect.min_uptime_ms after its open: some activity (frame, pong,
//    close frame from the peer) at or after open + min_uptime (with the heartbeat off, just the
//    passing of min_uptime). An upstream that accepts and drops at once, or a link that is dead
//    from the start, keeps growing the delay: no reconnect storm.
//  - A refused handshake with Retry-After (Failure::retry_after) waits at least that long.
//  - HTTP 401/403, proxy 407 and remote close codes in reconnect.fatal_close_codes are fatal:
//    retries continue at the cap delay and status() reports fatal with the reason, until a
//    connection opens again.
//  - reconnect.max_attempts > 0: that many failed connection attempts in a row (a connection
//    that opens but is not proven alive for min_uptime counts as failed) -> kFailed + kExit.
//  - Heartbeat (heartbeat.interval_ms > 0): a kSendPing every interval while open; when nothing
//    at all arrives for heartbeat.timeout_ms after the first unanswered ping, kCloseDead
//    ("heartbeat timeout") and backoff. A dead link is therefore found at most
//    interval + timeout after its last sign of life.
//  - A silence bound set for the open connection (SetSilenceBound: an Engine.IO server's
//    pingInterval + pingTimeout): nothing at all received for that long -> kCloseDead
//    ("heartbeat timeout: ..."), whether or not the WebSocket heartbeat is on.
//  - upstream.connect_timeout_ms: the policy arms it itself on kConnect; if OnOpen does not come
//    in time, kCloseDead and backoff.
//
// Connections are named by ConnId, handed out in each kConnect action; events carry it back, and
// events about any other connection (one the policy already gave up on) are ignored, so late
// callbacks of an aborted connection can never be mistaken for the current one.
//
// Threading: not thread-safe. One thread (the I/O thread) owns the policy and makes every call.
// Other threads (HTTP /readyz, /metrics) must read a copy of status() that the I/O thread
// publishes. The RandomSource passed in is used only from that thread and must outlive the
// policy.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bridge/clock.h"
#include "bridge/config.h"
#include "bridge/link/backoff.h"
#include "common/status.h"

namespace wsbridge {

// Names one connection attempt. 0 is never used (means "none").
using ConnId = uint64_t;

enum class PolicyState {
  kIdle,        // constructed, Start() not called yet
  kConnecting,  // a kConnect is in flight (DNS, TCP, proxy, TLS, WebSocket handshake)
  kOpen,        // handshake done; heartbeat running
  kBackingOff,  // waiting for the next attempt (status().next_attempt_at)
  kStopped,     // Stop() was called; terminal, no more actions
  kFailed,      // max_attempts exhausted; terminal, a kExit was returned
};

// "idle", "connecting", "open", "backing_off", "stopped", "failed" (also the metric label).
const char* ToString(PolicyState state);

// Why a connection attempt failed before OnOpen, as the I/O layer knows it.
struct Failure {
  enum class Kind {
    kDns,              // name resolution
    kTcp,              // TCP connect refused / unreachable / reset
    kTls,              // TLS handshake or certificate verification
    kTimeout,          // a timeout inside the I/O layer (the policy's own connect timeout
                       // does not come back through here)
    kHandshakeStatus,  // the server answered the upgrade with a non-101 HTTP status
    kAuthCommand,      // upstream.auth_command failed
    kProxy,            // HTTP CONNECT proxy failed or refused (http_status, e.g. 407)
    kExtension,        // the server's extension response cannot be honoured (permessage-deflate)
    kOther,
  };
  Kind kind = Kind::kOther;
  int http_status = 0;                  // kHandshakeStatus, kProxy; 0: none
  std::optional<Duration> retry_after;  // parsed Retry-After (ParseRetryAfter), 429/503
  std::string message;  // error text; for kHandshakeStatus the HTTP reason phrase (may be "")

  // One line, e.g. "handshake refused: HTTP 401 Unauthorized", "TCP connect failed: refused".
  std::string ToString() const;
  // HTTP 401/403 on the handshake, or 407 from the proxy.
  bool IsFatal() const;
};

const char* ToString(Failure::Kind kind);

// How an open connection ended.
struct CloseInfo {
  int code = 1006;     // WebSocket close code; 1006: no close frame (connection lost)
  std::string reason;  // close reason text from the frame (untrusted; shortened in reasons)
  bool local = false;  // the bridge closed it (e.g. 1009 on an oversized frame), not the peer
  // The bridge closed it for a reason that retrying cannot cure (a socket.io connect error):
  // treated like a fatal close code, `reason` being the message.
  bool fatal = false;
};

// What the policy asks the I/O layer to do, in order.
struct Action {
  enum class Kind {
    kConnect,    // open a new connection named `conn` (run auth_command, expand ${file:})
    kSendPing,   // on `conn`: send a WebSocket ping frame, and heartbeat.app_ping if set
    kCloseDead,  // abort `conn` at once, no close handshake (it is dead or timed out);
                 // the policy has already moved on: later events about it are ignored
    kExit,       // give up: exit non-zero, logging `reason`
  };
  Kind kind = Kind::kConnect;
  ConnId conn = 0;
  std::string reason;  // kCloseDead, kExit: one human-readable line

  bool operator==(const Action& o) const {
    return kind == o.kind && conn == o.conn && reason == o.reason;
  }
};
using Actions = std::vector<Action>;

// "connect #3", "ping #3", "close-dead #3 (heartbeat timeout ...)", "exit (...)".
std::string ToString(const Action& action);

// The policy's knobs, in policy units. FromConfig() is the normal way to get one.
struct PolicyOptions {
  Jitter jitter = Jitter::kFull;
  BackoffParams backoff;  // base_delay_ms, max_delay_ms
  Duration min_uptime = std::chrono::milliseconds(5000);
  uint32_t max_attempts = 0;  // 0: forever
  std::vector<int> fatal_close_codes = {1008, 4001, 4003};
  Duration connect_timeout = std::chrono::milliseconds(10000);     // 0: none
  Duration heartbeat_interval = std::chrono::milliseconds(15000);  // 0: no heartbeat
  Duration heartbeat_timeout = std::chrono::milliseconds(10000);

  // From upstream.connect_timeout_ms, heartbeat.* and reconnect.*; errors name the key.
  static StatusOr<PolicyOptions> FromConfig(const Config& config);
};

// A snapshot for logs, /readyz and /metrics.
struct PolicyStatus {
  PolicyState state = PolicyState::kIdle;
  TimePoint state_since{};  // when `state` was entered
  // Why the upstream is not open, one line: the fatal reason while fatal (kept across retries),
  // else the last failure; the exit reason in kFailed; "" while open.
  std::string reason;
  bool fatal = false;                  // a fatal refusal/close since the last open
  std::string last_failure;            // the most recent failure or close, even while open again
  uint32_t attempt = 0;                // failed connection attempts in a row
  uint64_t connects = 0;               // kConnect actions so far
  uint64_t reconnects = 0;             // kConnect actions after the first
  ConnId conn = 0;                     // current connection (kConnecting, kOpen), else 0
  std::optional<Duration> last_rtt;    // ping -> pong, latest
  std::optional<Duration> last_delay;  // the latest backoff delay chosen
  std::optional<TimePoint> next_attempt_at;  // kBackingOff only

  bool ready() const { return state == PolicyState::kOpen; }
};

class ConnectionPolicy {
 public:
  // `rng` must outlive the policy; it is only used from the calling thread.
  ConnectionPolicy(PolicyOptions options, RandomSource* rng);

  ConnectionPolicy(const ConnectionPolicy&) = delete;
  ConnectionPolicy& operator=(const ConnectionPolicy&) = delete;

  // kIdle -> kConnecting: returns the first kConnect. A no-op in any other state (single use).
  [[nodiscard]] Actions Start(TimePoint now);

  // Connection `conn` failed before it opened -> kBackingOff (or kFailed + kExit).
  [[nodiscard]] Actions OnConnectFailed(TimePoint now, ConnId conn, const Failure& failure);

  // The WebSocket handshake of `conn` completed -> kOpen; starts the heartbeat, clears `fatal`.
  // An open of a connection the policy has given up on returns kCloseDead for it.
  [[nodiscard]] Actions OnOpen(TimePoint now, ConnId conn);

  // `conn` closed (either side, or the TCP connection was lost) -> kBackingOff (or kFailed).
  [[nodiscard]] Actions OnClosed(TimePoint now, ConnId conn, const CloseInfo& close);

  // Any inbound frame on `conn` (data, ping, pong, app pong): the link is alive. Resets the
  // silence timer. Never brings NextDeadline() earlier, so the caller need not re-arm its timer.
  void OnActivity(TimePoint now, ConnId conn);

  // A pong frame (or a matched heartbeat.app_pong) on `conn`: measures the round-trip time from
  // the latest ping, and counts as activity. Never brings NextDeadline() earlier.
  void OnPong(TimePoint now, ConnId conn);

  // The open connection `conn` is dead after `bound` without any inbound activity (the
  // protocol learnt it from the server, e.g. Engine.IO's pingInterval + pingTimeout). Counted
  // from the latest activity; may bring NextDeadline() earlier: re-arm after it. Cleared when
  // the connection ends.
  void SetSilenceBound(TimePoint now, ConnId conn, Duration bound);

  // The timer armed at NextDeadline() fired (calling it early or twice is harmless: nothing due,
  // no actions). May return kConnect, kSendPing, kCloseDead(+kExit).
  [[nodiscard]] Actions OnTimer(TimePoint now);

  // -> kStopped, at once, from any state except kFailed: cancels the backoff wait and every
  // deadline; afterwards every event is ignored and returns no actions. The I/O layer closes any
  // connection itself (1000 on shutdown).
  void Stop(TimePoint now);

  // When the I/O layer must call OnTimer() next; nullopt: no timer (kIdle, kStopped, kFailed, or
  // kOpen/kConnecting with nothing armed). Re-read it after every event.
  std::optional<TimePoint> NextDeadline() const;

  PolicyState state() const { return state_; }
  ConnId conn() const { return conn_; }
  PolicyStatus status() const;
  const PolicyOptions& options() const { return options_; }

 private:
  Actions BeginConnect(TimePoint now);
  // The current attempt/connection ended: count it, pick the delay, go to kBackingOff or
  // kFailed. Appends kExit to *out when giving up.
  void EndConnection(TimePoint now, const std::string& reason, bool fatal,
                     std::optional<Duration> retry_after, Actions* out);
  // Evidence that the open connection is alive at `now`; resets the counters once it has been
  // alive for min_uptime.
  void ProveAlive(TimePoint now);
  bool IsFatalClose(int code) const;
  void SetState(PolicyState s, TimePoint now);
  bool HeartbeatOn() const { return options_.heartbeat_interval > Duration::zero(); }

  const PolicyOptions options_;
  RandomSource* const rng_;

  PolicyState state_ = PolicyState::kIdle;
  TimePoint state_since_{};
  ConnId conn_ = 0;
  ConnId next_conn_ = 1;

  // kConnecting
  std::optional<TimePoint> connect_deadline_;
  // kBackingOff
  TimePoint retry_at_{};
  // kOpen
  TimePoint opened_at_{};
  bool uptime_proven_ = false;
  std::optional<TimePoint> next_ping_at_;
  std::optional<TimePoint> silent_since_;  // first ping sent since the last activity
  std::optional<TimePoint> ping_sent_at_;  // latest ping not yet answered by a pong
  TimePoint last_activity_{};              // latest inbound activity (or the open)
  std::optional<Duration> silence_bound_;  // SetSilenceBound

  // Across connections.
  uint32_t failures_ = 0;       // failed attempts in a row (status().attempt)
  uint32_t backoff_index_ = 0;  // exponent of the next delay
  Duration prev_delay_{};       // for decorrelated jitter
  bool fatal_ = false;
  std::string fatal_reason_;
  std::string last_failure_;
  std::string exit_reason_;
  uint64_t connects_ = 0;
  std::optional<Duration> last_rtt_;
  std::optional<Duration> last_delay_;
};

}  // namespace wsbridge
