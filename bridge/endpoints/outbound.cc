#include "bridge/endpoints/outbound.h"

#include <spdlog/spdlog.h>
#include <sys/random.h>

#include <cstdio>

#include "bridge/protocol/json_fields.h"
#include "wsbridge.pb.h"

namespace wsbridge {
namespace {

constexpr size_t kMaxIdBytes = 256;
constexpr int kReplyQueue = 100000;  // replies queued per producer at most

}  // namespace

Outbound::Outbound(OutboundOptions options, zmq::context_t* ctx, Stats* stats)
    : options_(std::move(options)), router_(*ctx, zmq::socket_type::router), stats_(stats) {}

Status Outbound::Bind() {
  try {
    router_.set(zmq::sockopt::linger, 1000);  // let the last replies out on shutdown
    // A reply must never vanish without a trace: room for deep producer pipelines, and a
    // failed send (peer gone, or its queue full) is an error ZeroMQ reports, counted below.
    router_.set(zmq::sockopt::sndhwm, kReplyQueue);
    router_.set(zmq::sockopt::router_mandatory, 1);
    auto guard = BindEndpoint(router_, options_.endpoint,
                              kSendEndpoint, options_.security);
    if (!guard.ok()) return guard.status();
    guard_ = std::move(guard).value();
    bound_endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return Status::InvalidArgument("zmq.send: cannot bind " + options_.endpoint + ": " +
                                   e.what());
  }
  return Status::OK();
}

std::string Outbound::NewId() {
  // A per-process random prefix and a counter: unique across restarts without a lookup.
  static const std::string prefix = [] {
    uint64_t r = 0;
    while (getrandom(&r, sizeof r, 0) != sizeof r) {
    }
    char buf[24];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(r));
    return std::string(buf);
  }();
  static uint64_t counter = 0;
  return "gen-" + prefix + "-" + std::to_string(++counter);
}

void Outbound::Reply(std::vector<zmq::message_t>& envelope, const std::string& id, int status,
                     uint64_t outbox_seq, const std::string& error) {
  v1::SendReply reply;
  reply.set_id(id);
  reply.set_status(static_cast<v1::Status>(status));
  reply.set_outbox_seq(outbox_seq);
  reply.set_error(error);
  std::string bytes = reply.SerializeAsString();
  // ROUTER_MANDATORY: a producer that is gone throws (EHOSTUNREACH), one whose queue is full
  // returns false (EAGAIN). Either way the reply is lost, never silently.
  bool sent = true;
  try {
    for (auto& frame : envelope) {
      sent = sent && router_.send(frame, zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    }
    sent = sent && router_.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
  } catch (const zmq::error_t&) {
    sent = false;
  }
  if (!sent) {
    // The message's fate is in the outbox either way, and a retry with the same id learns it
    // (DUPLICATE). Counted and logged.
    stats_->send_replies_lost.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("send: reply for {} not delivered ({}): the producer is gone or not reading",
                 id, v1::Status_Name(static_cast<v1::Status>(status)));
  }
  switch (status) {
    case v1::ACCEPTED:
      stats_->send_accepted.fetch_add(1, std::memory_order_relaxed);
      break;
    case v1::DUPLICATE:
      stats_->rejections[static_cast<size_t>(RejectReason::kDuplicate)]++;
      break;
    case v1::REJECTED_FULL:
      stats_->rejections[static_cast<size_t>(RejectReason::kFull)]++;
      break;
    case v1::REJECTED_INVALID:
      stats_->rejections[static_cast<size_t>(RejectReason::kInvalid)]++;
      break;
    case v1::REJECTED_STORAGE:
      stats_->rejections[static_cast<size_t>(RejectReason::kStorage)]++;
      break;
    default:
      break;
  }
}

void Outbound::ReadRequests(Batch* batch, int64_t now_unix_ns) {
  v1::SendRequest req;
  for (size_t n = 0; n < options_.max_requests_per_batch; ++n) {
    std::vector<zmq::message_t> frames;
    zmq::message_t frame;
    if (!router_.recv(frame, zmq::recv_flags::dontwait)) return;
    frames.push_back(std::move(frame));
    while (frames.back().more()) {
      zmq::message_t next;
      if (!router_.recv(next, zmq::recv_flags::dontwait)) break;
      frames.push_back(std::move(next));
    }
    stats_->send_requests.fetch_add(1, std::memory_order_relaxed);
    if (frames.size() < 2) continue;  // a routing id alone: nothing to answer
    zmq::message_t body = std::move(frames.back());
    frames.pop_back();  // the rest is the reply envelope (routing id, REQ's empty delimiter)
    std::string error;
    bool parsed = false;
    if (frames.size() > 2) {
      error = "expected one frame [SendRequest], got " + std::to_string(frames.size()) + " frames";
    } else if (!(parsed = req.ParseFromArray(body.data(), static_cast<int>(body.size())))) {
      error = "not a SendRequest (protobuf parse failed, " + std::to_string(body.size()) + " bytes)";
    } else if (req.payload().empty()) {
      error = "payload is empty";
    } else if (req.id().size() > kMaxIdBytes) {
      error = "id longer than " + std::to_string(kMaxIdBytes) + " bytes";
    }
    if (error.empty() && options_.check_payload) {
      Status st = options_.check_payload(req.payload(), req.binary());
      if (!st.ok()) error = st.message();
    }
    std::string id = req.id();
    if (error.empty() && options_.acks) {
      // With acks the upstream names a message by a field of its payload: that is its id.
      auto ack_id = req.binary() ? std::nullopt
                                 : ExtractStringField(req.payload(), options_.ack_id_pointer);
      if (!ack_id || ack_id->empty()) {
        error = "payload has no \"" + options_.ack_id_pointer.substr(1) +
                "\" field; with protocol.ack_match set every message needs one to be acked";
      } else if (!id.empty() && id != *ack_id) {
        error = "id \"" + id + "\" differs from the payload's ack id \"" + *ack_id + "\"";
      } else {
        id = *ack_id;
      }
    }
    if (!error.empty()) {
      spdlog::warn("send: rejected a request: {}", error);
      // A request that did not parse may hold a partly read id (protobuf stores the field
      // before it refuses, e.g., invalid UTF-8): echoing it would make the reply unparseable.
      const std::string reply_id = parsed ? req.id() : std::string();
      if (pending_.empty()) {
        Reply(frames, reply_id, v1::REJECTED_INVALID, 0, error);
      } else {
        pending_.push_back(PendingReply{std::move(frames), reply_id, false, error});
      }
      req.Clear();
      continue;
    }
    if (id.empty()) id = NewId();
    OutboundRequest out;
    out.id = id;
    out.payload = std::move(*req.mutable_payload());
    out.binary = req.binary();
    batch->outbound.push_back(std::move(out));
    batch->now_unix_ns = now_unix_ns;
    pending_.push_back(PendingReply{std::move(frames), std::move(id), true, ""});
    req.Clear();
  }
}

void Outbound::OnCommitted(const BatchResult& result) {
  bool accepted_any = false;
  size_t k = 0;
  for (PendingReply& p : pending_) {
    if (!p.in_batch || k >= result.outbound.size()) {
      Reply(p.envelope, p.id, v1::REJECTED_INVALID, 0, p.error);
      continue;
    }
    const SendOutcome& o = result.outbound[k++];
    switch (o.kind) {
      case SendOutcome::Kind::kAccepted:
        accepted_any = true;
        Reply(p.envelope, p.id, v1::ACCEPTED, o.outbox_seq, "");
        break;
      case SendOutcome::Kind::kDuplicate:
        Reply(p.envelope, p.id, v1::DUPLICATE, o.outbox_seq, "id already accepted");
        break;
      case SendOutcome::Kind::kFull:
        spdlog::warn("send: outbox full (storage.outbox_max_messages), rejected {}", p.id);
        Reply(p.envelope, p.id, v1::REJECTED_FULL, 0,
              "outbox full (storage.outbox_max_messages)");
        break;
    }
  }
  pending_.clear();
  if (accepted_any) reread_ = true;
}

void Outbound::OnCommitFailed(const Status& error, Batch* batch) {
  for (PendingReply& p : pending_) {
    if (p.in_batch) {
      Reply(p.envelope, p.id, v1::REJECTED_STORAGE, 0, error.ToString());
    } else {
      Reply(p.envelope, p.id, v1::REJECTED_INVALID, 0, p.error);
    }
  }
  if (!pending_.empty()) {
    spdlog::warn("send: rejected {} request(s): {}", pending_.size(), error.ToString());
  }
  pending_.clear();
  batch->outbound.clear();
}

void Outbound::HandleEvents(const std::vector<LinkEvent>& events, Batch* batch) {
  for (const LinkEvent& e : events) {
    switch (e.kind) {
      case LinkEvent::Kind::kOpen:
        // Every open starts again from the oldest row still in the outbox.
        conn_ = e.conn;
        sent_up_to_ = 0;
        in_flight_ = 0;
        in_flight_ids_.clear();
        reread_ = true;
        break;
      case LinkEvent::Kind::kClosed:
        if (e.conn == conn_) conn_ = 0;
        break;
      case LinkEvent::Kind::kWritten:
        // Rows up to `up_to` went out in order on that connection: done, whichever it was.
        batch->delivered_up_to = std::max(batch->delivered_up_to, e.up_to);
        stats_->messages_out.fetch_add(e.count, std::memory_order_relaxed);
        if (e.conn == conn_) {
          in_flight_ -= std::min<size_t>(in_flight_, e.count);
          reread_ = true;
        }
        break;
      case LinkEvent::Kind::kAck:
        stats_->acks.fetch_add(1, std::memory_order_relaxed);
        batch->acked_ids.push_back(e.id);
        if (in_flight_ids_.erase(e.id) > 0) {
          --in_flight_;
          reread_ = true;
        }
        break;
    }
  }
}

void Outbound::FillDelivery(Store* store, const DeliverFn& deliver) {
  if (conn_ == 0 || !reread_ || in_flight_ >= options_.window) return;
  size_t want = options_.window - in_flight_;
  Status s = store->ReadOutbox(sent_up_to_, want, &rows_);
  if (!s.ok()) {
    spdlog::warn("send: cannot read the outbox: {}", s.ToString());
    return;
  }
  if (rows_.size() < want) reread_ = false;  // read to the end; new accepts set it again
  if (rows_.empty()) return;
  sent_up_to_ = rows_.back().outbox_seq;
  in_flight_ += rows_.size();
  if (options_.acks) {
    for (const OutboxRow& r : rows_) in_flight_ids_.insert(r.id);
    stats_->messages_out.fetch_add(rows_.size(), std::memory_order_relaxed);
  }
  deliver(conn_, std::move(rows_));
  rows_.clear();
}

}  // namespace wsbridge
