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

struct Stats {
  using Counter = std::atomic<uint64_t>;
  using Gauge = std::atomic<int64_t>;

  // Upstream connection (I/O thread).
  Gauge connected{0};           // 1 while the WebSocket is open
  Counter connects{0};          // successful opens
  Counter connect_failures{0};  // failed attempts (any reason)
  Counter frames_in{0};         // data frames received (before dedup)
  Counter bytes_in{0};
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
  Gauge subscriptions{0};       // live topic subscriptions on the PUB socket
  Counter commit_ns_total{0};   // sum of commit durations

  std::array<Counter, static_cast<size_t>(RejectReason::kCount)> rejections{};

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

 private:
  mutable std::mutex reason_mu;
  std::string upstream_state = "idle";
  std::string upstream_reason = "not connected yet";
  std::map<std::string, uint64_t> reconnect_reasons;
  std::string storage_reason;
};

}  // namespace wsbridge
