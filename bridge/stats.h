// Stats: the daemon's counters and gauges, written by the thread that owns each fact and read
// by anyone (logs, /metrics). Plain relaxed atomics: a reader sees each value, not a snapshot.
//
// Owned by Daemon; every other part gets a pointer that stays valid for the daemon's lifetime.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace wsbridge {

enum class RejectReason { kFull = 0, kInvalid, kStorage, kDuplicate, kCount };

// The endpoints whose clients are authenticated (SPEC §10), in the order of the `endpoint` label
// of wsbridge_auth_failures_total: "pub", "send", "replay" (the ZAP domains, zap_handler.h).
enum class AuthEndpoint { kPub = 0, kSend, kReplay, kCount };

// Why the JetStream sink failed, the `reason` label of wsbridge_sink_errors_total: "connect"
// (no server answered), "auth", "stream" (its lookup or creation failed), "stream_mismatch" (it
// exists without our subjects), "rejected" (the server refused a publish, e.g. the stream is
// full), "conflict" (the stream was not where the sink expected it: resynchronized),
// "timeout" (acks stopped coming), "disconnected".
enum class SinkError {
  kConnect = 0, kAuth, kStream, kStreamMismatch, kRejected, kConflict, kTimeout, kDisconnected,
  kCount
};

// A lock-free histogram of durations with fixed bucket bounds (seconds), for /metrics.
// Observe() from the owning thread; any thread may read.
class DurationHistogram {
 public:
  static constexpr std::array<double, 14> kBounds = {
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
      0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1.0};
  void Observe(int64_t ns) {
    double s = static_cast<double>(ns) / 1e9;
    size_t i = 0;
    while (i < kBounds.size() && s > kBounds[i]) ++i;
    buckets_[i].fetch_add(1, std::memory_order_relaxed);  // non-cumulative; last is +Inf
    sum_ns_.fetch_add(static_cast<uint64_t>(ns), std::memory_order_relaxed);
  }
  uint64_t bucket(size_t i) const { return buckets_[i].load(std::memory_order_relaxed); }
  double sum_seconds() const { return static_cast<double>(sum_ns_.load()) / 1e9; }

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};
  std::atomic<uint64_t> sum_ns_{0};
};

struct Stats {
  using Counter = std::atomic<uint64_t>;
  using Gauge = std::atomic<int64_t>;

  // Upstream connection (I/O thread).
  Gauge connected{0};           // 1 while the WebSocket is open
  Counter connects{0};          // successful opens
  Counter connect_failures{0};  // failed attempts (any reason)
  Counter frames_in{0};         // data frames received (before dedup)
  Counter bytes_in{0};          // payload bytes after inflation (permessage-deflate, decompress)
  Counter wire_bytes_in{0};     // payload bytes as they came off the wire
  Counter replies_sent{0};      // answers to the upstream's pings (protocol.replies, Engine.IO)
  Counter reply_failures{0};    // matched reply rules not answered: a {{path}} was missing
  Counter inflate_failures{0};  // protocol.decompress frames that did not inflate (kept as is)
  Counter malformed_packets{0};  // Engine.IO / socket.io packets that could not be read (kept)
  Counter frames_no_seq{0};     // data frames without a usable upstream seq (not JSON / no field)
  Counter oversized_closes{0};  // connections closed with 1009
  Counter app_pongs{0};
  Counter reads_paused{0};      // times the reader paused for backpressure
  Gauge last_rtt_ns{0};         // heartbeat ping -> pong, latest

  // Writer thread.
  Counter journaled{0};         // messages committed to the journal
  Counter published{0};         // envelopes handed to the PUB socket
  Counter duplicates_dropped{0};
  Counter seq_gaps{0};          // forward jumps in upstream seq
  Counter seq_gap_messages{0};  // how many upstream seqs the jumps skipped
  Counter commits{0};
  Counter commit_failures{0};
  Gauge last_seq{0};
  Gauge last_upstream_seq{0};
  Gauge storage_ok{1};          // 0 while commits fail
  // The background whole-file check (bridge/store_check.h): its thread.
  Gauge storage_damaged{0};     // 1 once a pass found damage (stays until a restart)
  Counter storage_checks{0};    // passes completed
  Gauge storage_check_ns{0};    // how long the latest pass took
  Gauge subscriptions{0};       // live topic subscriptions on the PUB socket
  DurationHistogram commit_seconds;  // storage commit time per batch
  DurationHistogram rtt_seconds;     // heartbeat ping -> pong (I/O thread)

  // Outbound (writer thread and I/O thread).
  Counter send_requests{0};     // SendRequests received on zmq.send
  Counter send_accepted{0};
  Counter send_replies_lost{0};  // replies ZeroMQ could not hand to a producer
  Counter messages_out{0};      // outbox messages written to the upstream socket
  Counter acks{0};              // upstream acks matched
  Gauge outbox_depth{0};
  Gauge outbox_oldest_unix_ns{0};  // 0 when empty
  Gauge journal_rows{0};
  Gauge journal_bytes{0};

  std::array<Counter, static_cast<size_t>(RejectReason::kCount)> rejections{};

  // Clients refused during the handshake, by endpoint (ZAP handler thread: a key not authorized;
  // a failed CURVE handshake, e.g. a plain client, seen by its handshake monitor).
  std::array<Counter, static_cast<size_t>(AuthEndpoint::kCount)> auth_failures{};

  // The JetStream sink (its thread; the ack counters also from nats.c's callback thread).
  struct Sink {
    Gauge enabled{0};          // 1 when sink.jetstream.servers is set
    Gauge required{0};         // sink.jetstream.required: /readyz waits for it
    Gauge connected{0};        // 1 while connected and in step with the stream
    Counter published{0};      // rows handed to nats.c (a row published again counts again)
    Gauge acked_seq{0};        // highest journal seq the stream acknowledged, this epoch
    Gauge lag_messages{0};     // journal last seq - acked seq
    Gauge lag_ns{0};           // age of the oldest row not yet acknowledged (0: none)
    Counter skipped{0};        // rows trimmed by retention before the sink delivered them
    std::array<Counter, static_cast<size_t>(SinkError::kCount)> errors{};
  } sink;

  // A short human-readable reason for not being ready; guarded by reason_mu.
  void SetUpstreamReason(std::string r) {
    std::lock_guard<std::mutex> lock(reason_mu);
    upstream_reason = std::move(r);
  }
  void SetStorageReason(std::string r) {
    std::lock_guard<std::mutex> lock(reason_mu);
    storage_reason = std::move(r);
  }
  // The connection policy's state ("open", "backing_off", ...) and why it is not open.
  void SetUpstreamState(std::string state, std::string reason) {
    std::lock_guard<std::mutex> lock(reason_mu);
    upstream_state = std::move(state);
    upstream_reason = std::move(reason);
  }
  std::string UpstreamState() const {
    std::lock_guard<std::mutex> lock(reason_mu);
    return upstream_state;
  }
  void CountReconnectReason(const std::string& reason) {
    std::lock_guard<std::mutex> lock(reason_mu);
    ++reconnect_reasons[reason];
  }
  std::map<std::string, uint64_t> ReconnectReasons() const {
    std::lock_guard<std::mutex> lock(reason_mu);
    return reconnect_reasons;
  }
  std::string UpstreamReason() const {
    std::lock_guard<std::mutex> lock(reason_mu);
    return upstream_reason;
  }
  std::string StorageReason() const {
    std::lock_guard<std::mutex> lock(reason_mu);
    return storage_reason;
  }
  // What the background check found: its first problem ("" while none).
  void SetDamage(std::string r) {
    std::lock_guard<std::mutex> lock(reason_mu);
    damage = std::move(r);
  }
  std::string Damage() const {
    std::lock_guard<std::mutex> lock(reason_mu);
    return damage;
  }
  // Why the sink is not delivering ("" while it is).
  void SetSinkReason(std::string r) {
    std::lock_guard<std::mutex> lock(reason_mu);
    sink_reason = std::move(r);
  }
  std::string SinkReason() const {
    std::lock_guard<std::mutex> lock(reason_mu);
    return sink_reason;
  }

 private:
  mutable std::mutex reason_mu;
  std::string upstream_state = "idle";
  std::string upstream_reason = "not connected yet";
  // Every reason the upstream link counts, from 0: each series exists before its first event
  // (a rate() over a series that appears only at its first increment misses that increment).
  std::map<std::string, uint64_t> reconnect_reasons = {
      {"auth_command", 0}, {"closed", 0},           {"connect_timeout", 0},
      {"dns", 0},          {"handshake_status", 0}, {"heartbeat_timeout", 0},
      {"message_too_big", 0}, {"other", 0},         {"proxy", 0},
      {"tcp", 0},          {"timeout", 0},          {"tls", 0}};
  std::string storage_reason;
  std::string damage;
  std::string sink_reason = "not connected yet";
};

}  // namespace wsbridge
