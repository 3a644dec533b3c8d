// Outbound: the send endpoint and the outbox's way to the upstream (G3, G4).
//
//   producer --[SendRequest]--> ROUTER (zmq.send) --> joins the writer's next batch
//            <--[SendReply]---  ACCEPTED only after that batch committed (group commit)
//   outbox (SQLite) --rows--> Upstream::Deliver (I/O thread) --> WebSocket
//                   <--LinkEvent: open / closed / written / ack--
//
// A message leaves the outbox when the upstream acks it (protocol.ack_match set) or, without
// acks, once it was handed to the socket; after every (re)open the outbox is sent again from
// its oldest row, so a message is delivered at least once, in acceptance order. At most
// `window` messages are in flight at a time: the outbox on disk is the queue, memory stays flat.
//
// Threading: Outbound belongs to the writer thread (it owns the ROUTER socket). LinkEvents is
// the thread-safe hand-off from the I/O thread.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <zmq.hpp>

#include "bridge/endpoints/endpoint_security.h"
#include "bridge/stats.h"
#include "common/status.h"
#include "storage/store.h"

namespace wsbridge {

struct LinkEvent {
  enum class Kind { kOpen, kClosed, kWritten, kAck };
  Kind kind = Kind::kOpen;
  uint64_t conn = 0;     // the connection it is about
  uint64_t up_to = 0;    // kWritten: every outbox row <= this was written
  uint64_t count = 0;    // kWritten: how many rows that was
  std::string id;        // kAck: the acked id
};

// I/O thread -> writer thread. Push() wakes the writer through `wake`.
class LinkEvents {
 public:
  explicit LinkEvents(std::function<void()> wake) : wake_(std::move(wake)) {}
  void Push(LinkEvent e) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(e));
    }
    wake_();
  }
  void TakeAll(std::vector<LinkEvent>* out) {
    out->clear();
    std::lock_guard<std::mutex> lock(mu_);
    out->swap(events_);
  }

 private:
  std::function<void()> wake_;
  std::mutex mu_;
  std::vector<LinkEvent> events_;
};

struct OutboundOptions {
  std::string endpoint = "tcp://127.0.0.1:5557";
  bool acks = false;             // protocol.ack_match is set
  std::string ack_id_pointer;    // JSON pointer of protocol.ack_id_field, e.g. "/id"
  size_t window = 1000;          // messages in flight to the upstream at most
  size_t max_requests_per_batch = 4096;
  // More checks on a producer's payload (protocol.framing = engineio: a JSON array); an error
  // is answered REJECTED_INVALID with its message. Called on the writer thread. Optional.
  std::function<Status(std::string_view payload, bool binary)> check_payload;
  EndpointSecurity security;  // ipc mode and group, CURVE (SPEC §10)
};

class Outbound {
 public:
  Outbound(OutboundOptions options, zmq::context_t* ctx, Stats* stats);

  Status Bind();
  std::string endpoint() const { return bound_endpoint_; }
  zmq::socket_t& socket() { return router_; }

  // Reads the waiting SendRequests (never blocks): invalid ones are answered at once, valid
  // ones are appended to batch->outbound and answered by OnCommitted/OnCommitFailed.
  void ReadRequests(Batch* batch, int64_t now_unix_ns);
  bool has_pending_replies() const { return !pending_.empty(); }

  // The batch holding our requests committed: reply with each outcome.
  void OnCommitted(const BatchResult& result);
  // It did not: reply REJECTED_STORAGE with the error, and take our requests out of the batch
  // (inbound rows stay in it, to be retried).
  void OnCommitFailed(const Status& error, Batch* batch);

  // Applies the I/O thread's events; acks and written rows become deletions in `batch`.
  void HandleEvents(const std::vector<LinkEvent>& events, Batch* batch);

  // Hands the next outbox rows to the upstream while the window has room.
  using DeliverFn = std::function<void(uint64_t conn, std::vector<OutboxRow> rows)>;
  void FillDelivery(Store* store, const DeliverFn& deliver);

 private:
  // A reply owed, in request order: either the outcome of a request in the batch, or one
  // decided already (invalid) that must not overtake the requests before it.
  struct PendingReply {
    std::vector<zmq::message_t> envelope;  // routing id (+ empty delimiter for REQ)
    std::string id;
    bool in_batch = true;
    std::string error;  // !in_batch: REJECTED_INVALID with this error
  };
  void Reply(std::vector<zmq::message_t>& envelope, const std::string& id, int status,
             uint64_t outbox_seq, const std::string& error);
  std::string NewId();

  OutboundOptions options_;
  zmq::socket_t router_;
  std::unique_ptr<EndpointGuard> guard_;  // while bound (an ipc endpoint's lock)
  Stats* stats_;
  std::string bound_endpoint_;
  std::vector<PendingReply> pending_;  // same order as the batch's outbound requests

  // Delivery state for the current connection.
  uint64_t conn_ = 0;                  // 0: not open
  uint64_t sent_up_to_ = 0;            // highest outbox_seq handed to the upstream
  size_t in_flight_ = 0;               // handed, not yet written (no acks) / acked
  std::unordered_set<std::string> in_flight_ids_;  // with acks
  bool reread_ = false;                // the outbox may have rows past sent_up_to_
  std::vector<OutboxRow> rows_;
};

}  // namespace wsbridge
