// JetStreamSink: copies the journal into a NATS JetStream stream, every row exactly once, in seq
// order (G9, SPEC §11), for consumers on many hosts.
//
// It reads the journal through its own read-only Store (WAL: as the replay endpoint, it never
// blocks the writer) and publishes each row to <subject_prefix>.<topic> with nats.c's
// asynchronous JetStream publish, in batches of at most max_pending rows, each awaited whole
// (js_PublishAsyncComplete) before the next: an ack per message through a callback cost as much
// as the publish itself, and a batch is as many rows as came in meanwhile. Nothing on the inbound
// path waits for it: the writer only tells it the newest seq (NotifyJournaled: a mutex held for
// an assignment), so a slow, absent or failing cluster only grows the lag.
//
// Exactly once, and what makes it so:
//   - Where to continue. At every (re)connection the sink reads where the stream stands: the
//     Wsbridge-Epoch and Wsbridge-Seq headers of the last message a bridge wrote (stepping back
//     over up to 64 that others published after it). The same epoch: continue after that seq.
//     Another epoch (the database was replaced), none found, or an empty stream: a new history,
//     from the oldest row in the journal. There is no local cursor that could be ahead of or
//     behind the stream: the stream is the truth.
//   - Expected last sequence and message id. Every publish carries Nats-Expected-Last-Sequence:
//     the stream sequence of the row before it (read at the sync, then one more per row), and
//     after a session's first row Nats-Expected-Last-Msg-Id: that row's id. The stream stores a
//     row only right after its predecessor, so it cannot take a row twice, out of order, or after
//     a stranger took its predecessor's place, whatever the timing: a publish from before a crash
//     that lands late makes the next one fail ("conflict"), and the sink reads the stream again.
//     This holds outside the duplicate window. (Not the id on a session's first row: a restarted
//     server may not know its last id until a row is stored.)
//   - Nats-Msg-Id = <epoch as 16 hex digits>-<seq>: within the stream's duplicate window the
//     server also drops a repeat of a row it stored (and consumers may key on it).
//   On any failure (a refused publish, a lost connection, acks that stop coming) the sink drops
//   the connection and everything in flight, waits (the project's backoff, with jitter),
//   connects again and reads the stream again. What breaks it: purging the stream (or deleting
//   its last messages) loses the position, so the sink starts the history again from the oldest
//   row; more than 64 messages published by others after the bridge's last one do too. A
//   message someone else publishes into the subjects costs a conflict and a resync, nothing more.
//
// Retention (SPEC §11): age_hold() is the first seq the stream has not acknowledged; the writer
// keeps rows from it on against journal.max_age_s. Rows the row/byte bounds trim before the sink
// read them are counted (wsbridge_sink_skipped_total) and logged with their range.
//
// Threading: construct and Start() on the main thread; the sink's thread ("wsb-sink") does the
// work; nats.c's threads only report refused publishes and lost connections (to the current
// session, under session_mu_, and a wake-up). Stop(), NotifyJournaled() and age_hold() may be
// called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "bridge/config.h"
#include "bridge/sink/nats_types.h"
#include "bridge/stats.h"
#include "common/status.h"

namespace wsbridge {

// <prefix>.<topic>: the topic's bytes outside [A-Za-z0-9_-] become '_', an empty topic is "_".
std::string SinkSubject(const std::string& prefix, const std::string& topic);
// Nats-Msg-Id: the epoch as 16 lowercase hex digits, '-', the seq in decimal.
std::string SinkMsgId(uint64_t epoch, uint64_t seq);

struct JetStreamSinkOptions {
  JetStreamConfig config;
  std::string db_path;          // the daemon's database, opened read-only
  int64_t base_delay_ms = 500;  // reconnect backoff (reconnect.*)
  int64_t max_delay_ms = 30000;
  std::string jitter = "full";
  int64_t ack_timeout_ms = 10000;  // no ack for this long with publishes in flight: reconnect
  // Niceness of the sink's thread and of the threads nats.c starts from it (0: as the daemon):
  // the sink is background work, the inbound path keeps the CPU (as the replay endpoint).
  int nice = 10;
};

class JetStreamSink {
 public:
  JetStreamSink(JetStreamSinkOptions options, Stats* stats);
  ~JetStreamSink();
  JetStreamSink(const JetStreamSink&) = delete;
  JetStreamSink& operator=(const JetStreamSink&) = delete;

  // Opens the journal read-only and starts the sink's thread. An error names what failed.
  Status Start();
  // Stops the thread and closes the connection (what is in flight may or may not be stored:
  // the next start reads the stream). Idempotent.
  void Stop();

  // The writer committed rows up to last_seq.
  void NotifyJournaled(uint64_t last_seq);
  // The first seq JetStream has not acknowledged (for retention by age).
  const std::atomic<uint64_t>* age_hold() const { return &hold_; }

 private:
  class Session;  // one connection to the cluster, in step with the stream
  void Run();
  // nats.c's callbacks (closure: the sink, which outlives them): handed to the current session
  // when it is the one they report on.
  static void OnRefused(jsCtx* js, jsPubAckErr* pae, void* closure);
  static void OnConnectionLost(natsConnection* nc, void* closure);
  // Waits up to `ms` or until Stop() (true: stopping), keeping the gauges current.
  bool WaitStopping(int64_t ms);
  // The lag gauges and the retention hold, at most every 100 ms unless forced (sink thread).
  void UpdateGauges(bool force);

  const JetStreamSinkOptions options_;
  Stats* const stats_;
  std::unique_ptr<class Store> store_;
  uint64_t epoch_ = 0;
  // The highest journal seq the stream holds, as last known: set at each sync, raised by acks.
  std::atomic<uint64_t> acked_{0};
  std::atomic<uint64_t> hold_{0};
  int64_t last_gauges_ms_ = 0;  // sink thread

  std::mutex session_mu_;  // guards session_ (the callbacks' way to the current session)
  Session* session_ = nullptr;

  std::mutex mu_;  // guards journal_last_ and stop_ for the waits below
  std::condition_variable cv_;
  uint64_t journal_last_ = 0;
  bool stop_ = false;
  std::thread thread_;

  friend class Session;
};

}  // namespace wsbridge
