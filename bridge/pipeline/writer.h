// Writer: the thread that makes inbound messages durable and then publishes them (G1, G2, G4).
//
// It owns the read-write Store and the ZeroMQ PUB socket (an XPUB, so that it can count
// subscriptions); only TryCommitInline() (below) uses them from another thread, under mu_.
// Its loop:
// take every frame the I/O thread queued, drop duplicates (upstream seq not above the last one
// accepted), commit them as ONE transaction (journal rows + cursor), and only then publish
// [topic][Envelope] for each. Batches form by themselves: while one commit runs, the next
// batch gathers in the queue, so a batch is one message at low rates and up to
// max_batch_messages at high rates; latency is bounded by one commit.
//
// It also owns the send endpoint (Outbound): SendRequests join the same batches, and their
// replies go out after the commit. The I/O thread's link events (opens, closes, written rows,
// acks) arrive through a LinkEvents its owner passes in, whose wake-up is the queue's.
//
// When a commit fails (disk full, I/O error) nothing is published; the batch is kept and
// retried, the queue stops being drained, and the I/O thread stops reading from the upstream
// (backpressure) until storage works again.
//
// At low rates a hand-off to this thread costs more than the commit (a thread wake-up on
// another CPU: 30-50 us on a small VM, in every message's latency). So the I/O thread may
// commit one socket read's frames itself, through TryCommitInline(), when the writer is idle.
// mu_ makes that safe: it guards every member below it; the writer thread holds it for each
// turn of its loop and lets go only while it waits, and TryCommitInline() only try-locks it.
// The send endpoint is never touched inline, and neither thread polls the PUB socket as a
// ZeroMQ socket (only its notification fd), so each ZeroMQ socket is used by one thread at a
// time, with the mutex as the memory barrier that ZeroMQ asks for.
//
// Threading: construct and Bind() on the main thread, then Run() on the writer thread.
// TryCommitInline() on the I/O thread. Stop() and the accessors may be called from any thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "bridge/clock.h"  // WallNowNs, for the writer's callers
#include "bridge/endpoints/outbound.h"
#include "bridge/pipeline/inbound_queue.h"
#include "bridge/stats.h"
#include "storage/store.h"

namespace wsbridge {

struct WriterOptions {
  std::string pub_endpoint = "tcp://127.0.0.1:5556";
  int pub_hwm = 100000;
  size_t max_batch_messages = 4096;
  size_t max_batch_bytes = 8u << 20;
  int retry_ms = 200;  // pause between attempts while storage fails
  int64_t trim_interval_ms = 1000;  // how often retention runs
  uint64_t trim_step_rows = 5000;   // rows deleted per step at most
  OutboundOptions outbound;         // the send endpoint and outbox delivery
  EndpointSecurity security;        // the PUB endpoint's ipc mode and group, CURVE (SPEC §10)
};

class Writer {
 public:
  // `events` must outlive the writer and wake `queue` when an event arrives.
  Writer(WriterOptions options, std::unique_ptr<Store> store, zmq::context_t* ctx,
         InboundQueue* queue, LinkEvents* events, Stats* stats);
  ~Writer();

  // Binds the PUB socket. Returns the error naming the endpoint when it cannot.
  Status Bind();
  // The endpoint actually bound (with the OS-chosen port for tcp://...:*).
  std::string pub_endpoint() const { return bound_endpoint_; }

  std::string send_endpoint() const { return outbound_.endpoint(); }

  // Called by the writer thread when it took frames the reader paused after: resume reading.
  void set_resume_reader(std::function<void()> fn) { resume_reader_ = std::move(fn); }
  // Called by the writer thread to hand outbox rows to the upstream (it must not block).
  void set_deliver(Outbound::DeliverFn fn) { deliver_ = std::move(fn); }
  // Called by the committing thread after each commit that journaled rows, with the newest
  // seq, once they are published: the JetStream sink's wake-up. It must not block.
  void set_on_journaled(std::function<void(uint64_t last_seq)> fn) {
    on_journaled_ = std::move(fn);
  }
  // Rows with seq >= *hold are kept against journal.max_age_s (the sink's first undelivered
  // seq; 0 holds nothing), not against the row and byte bounds. Read by the writer thread.
  void set_age_hold(const std::atomic<uint64_t>* hold) { age_hold_ = hold; }

  // Thread body. Returns after Stop(), once everything queued before it is committed and
  // published (or storage has failed for good).
  void Run();
  void Stop();

  // I/O thread. Commits and publishes *frames (received in this order, after everything queued
  // before) on the calling thread and returns true, leaving *frames empty; or, when the writer
  // is busy, has frames queued, retries a failed commit or is stopping, returns false and leaves
  // *frames alone: queue them. Never blocks on the writer.
  bool TryCommitInline(std::vector<InboundFrame>* frames);

  // Highest upstream seq committed: what the resume text tells the upstream. Any thread.
  uint64_t committed_upstream_seq() const { return committed_upstream_seq_.load(); }
  uint64_t epoch() const { return epoch_; }

 private:
  // Builds the batch from pending_ (dedup, gap detection). Returns how many frames it consumed.
  size_t FillBatch();
  // False: the commit failed, the batch is kept for the retry. `give_back_payloads`: on the
  // writer thread, the published payloads go back to the I/O thread, to be reused or freed
  // there (InboundQueue::GiveBack says why).
  bool CommitAndPublish(bool give_back_payloads);
  void Publish(uint64_t first_seq);
  // Journal retention in small steps, keeping pace with the inserts; `after_commit`: called
  // right after this thread committed rows.
  void MaybeTrim(bool after_commit);
  // Rows committed that make a retention step due.
  uint64_t TrimPace() const { return std::max<uint64_t>(1, options_.trim_step_rows / 5); }
  void DrainSubscriptions();  // XPUB: count (un)subscriptions for logs and metrics
  void UpdateOutboxGauges();

  // Set before Run(), then only read.
  const WriterOptions options_;
  InboundQueue* const queue_;
  Stats* const stats_;
  LinkEvents* const link_events_;
  std::function<void()> resume_reader_;
  Outbound::DeliverFn deliver_;
  std::function<void(uint64_t)> on_journaled_;
  const std::atomic<uint64_t>* age_hold_ = nullptr;
  std::string bound_endpoint_;
  int pub_fd_ = -1;  // the PUB socket's notification fd (ZMQ_FD), polled as a plain fd
  uint64_t epoch_ = 0;

  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> committed_upstream_seq_{0};

  // Guards everything below: held by the writer thread for each turn of its loop, or by
  // TryCommitInline().
  std::mutex mu_;
  std::unique_ptr<Store> store_;
  zmq::socket_t pub_;
  std::unique_ptr<EndpointGuard> pub_guard_;  // while bound (an ipc endpoint's lock)
  Outbound outbound_;  // the send endpoint: inline commits never touch it
  std::vector<InboundFrame> pending_;  // popped from the queue, not yet in a batch
  size_t pending_pos_ = 0;
  Batch batch_;
  std::vector<std::string> spent_;  // published payloads on their way to GiveBack()
  uint64_t accepted_upstream_seq_ = 0;  // highest upstream seq in the journal or current batch
  int64_t last_trim_ns_ = 0;
  uint64_t rows_since_trim_ = 0;  // journaled since the last retention step
  bool trim_behind_ = false;      // the last step deleted all it could: more to trim
  std::vector<LinkEvent> events_;
};

}  // namespace wsbridge
