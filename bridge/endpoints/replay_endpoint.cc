#include "bridge/endpoints/replay_endpoint.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace wsbridge {

// ---- ReplayPager

StatusOr<ReplayPager> ReplayPager::Start(Store* store, const v1::ReplayRequest& request,
                                         const ReplayLimits& limits) {
  if (request.to_seq() != 0 && request.from_seq() > request.to_seq()) {
    return Status::InvalidArgument("from_seq " + std::to_string(request.from_seq()) +
                                   " is above to_seq " + std::to_string(request.to_seq()));
  }
  auto bounds = store->Bounds();
  if (!bounds.ok()) return bounds.status();
  ReplayPager p;
  p.store_ = store;
  p.limits_ = limits;
  p.prefix_ = request.topic_prefix();
  p.epoch_ = store->cursor().epoch;
  p.last_seq_ = bounds->last_seq;
  p.from_ = std::max<uint64_t>(request.from_seq(), 1);
  // Fixing the end now makes the request a closed range of committed rows: every page after
  // the first reads rows that were already there when the request arrived.
  p.to_ = request.to_seq() == 0 ? p.last_seq_ : std::min(request.to_seq(), p.last_seq_);
  p.next_ = p.from_;
  uint32_t max =
      request.max_messages() == 0 ? limits.default_page_messages : request.max_messages();
  p.page_messages_ = std::max<uint32_t>(1, std::min(max, limits.max_page_messages));
  return p;
}

Status ReplayPager::NextPage(v1::ReplayReply* reply) {
  reply->Clear();
  reply->set_last_seq(last_seq_);
  size_t messages = 0, bytes = 0;
  bool page_full = false;
  while (!page_full && next_ <= to_) {
    const size_t chunk = std::min<size_t>(page_messages_ - messages, chunk_rows_);
    Status s = store_->ReadJournal(next_, to_, prefix_, chunk, &rows_);
    if (!s.ok()) return s;
    // Retention trims from the oldest end while we read. Taking the bounds after the read
    // tells which of the rows just read are certainly complete: everything from the oldest kept
    // row on (it was kept during the read too). Rows below it may have had neighbours trimmed
    // away under us, so they are skipped and the page says where the journal now begins.
    auto bounds = store_->Bounds();
    if (!bounds.ok()) return bounds.status();
    const uint64_t first_kept = bounds->first_seq != 0 ? bounds->first_seq : bounds->last_seq + 1;
    if (first_kept > next_) reply->set_first_available_seq(first_kept);
    // Where the next read starts: after the last row read, or past the range when the read
    // came back short (nothing more matches up to to_).
    uint64_t resume = rows_.size() == chunk ? rows_.back().seq + 1 : to_ + 1;
    size_t chunk_bytes = 0, chunk_rows = 0;
    for (JournalRow& r : rows_) {
      if (r.seq < first_kept) continue;
      ++chunk_rows;
      v1::Envelope* e = reply->add_envelopes();
      e->set_seq(r.seq);
      e->set_upstream_seq(r.msg.upstream_seq);
      e->set_topic(std::move(r.msg.topic));
      chunk_bytes += r.msg.payload.size();
      e->set_payload(std::move(r.msg.payload));
      e->set_binary(r.msg.binary);
      e->set_received_at_unix_ns(r.msg.received_at_unix_ns);
      e->set_epoch(epoch_);
      if (++messages >= page_messages_ || bytes + chunk_bytes >= limits_.max_page_bytes) {
        resume = r.seq + 1;  // the rest of this read is read again for the next page
        page_full = true;
        break;
      }
    }
    bytes += chunk_bytes;
    // Size the next read to the payloads seen, so that one read stays within a quarter of the
    // page budget (large payloads: a few rows at a time; small ones: the whole page at once).
    if (chunk_rows > 0) {
      size_t avg = chunk_bytes / chunk_rows + 64;
      chunk_rows_ =
          std::clamp<size_t>(limits_.max_page_bytes / 4 / avg, 1, limits_.max_page_messages);
    }
    next_ = std::max(resume, first_kept);
    rows_.clear();
  }
  done_ = next_ > to_;
  reply->set_done(done_);
  return Status::OK();
}

// ---- ReplayEndpoint

ReplayEndpoint::ReplayEndpoint(ReplayEndpointOptions options, zmq::context_t* ctx)
    : options_(std::move(options)), router_(*ctx, zmq::socket_type::router) {
  stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

ReplayEndpoint::~ReplayEndpoint() {
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

Status ReplayEndpoint::Bind() {
  if (stop_fd_ < 0) return Status::IOError("zmq.replay: eventfd: " + std::string(strerror(errno)));
  StoreOptions so;
  so.path = options_.db_path;
  so.read_only = true;
  auto store = Store::Open(so);
  if (!store.ok()) {
    const Status& e = store.status();
    std::string what = "zmq.replay: cannot open the journal for reading: " + e.message();
    switch (e.code()) {
      case Status::Code::kNotFound:
        return Status::NotFound(what);
      case Status::Code::kCorruption:
        return Status::Corruption(what);
      default:
        return Status::IOError(what);
    }
  }
  store_ = std::move(store).value();
  try {
    router_.set(zmq::sockopt::router_mandatory, 1);  // a full client queue: EAGAIN, not a drop
    router_.set(zmq::sockopt::sndhwm, options_.pages_in_flight);
    router_.set(zmq::sockopt::rcvhwm, 1000);
    router_.set(zmq::sockopt::linger, 0);
    auto guard = BindEndpoint(router_, options_.endpoint,
                              kReplayEndpoint, options_.security);
    if (!guard.ok()) return guard.status();
    guard_ = std::move(guard).value();
    bound_endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return Status::InvalidArgument("zmq.replay: cannot bind " + options_.endpoint + ": " +
                                   e.what());
  }
  return Status::OK();
}

void ReplayEndpoint::Stop() {
  stop_ = true;
  uint64_t one = 1;
  if (stop_fd_ >= 0) (void)!::write(stop_fd_, &one, sizeof one);
}

void ReplayEndpoint::Run() {
  if (options_.nice != 0) {
    // Per-thread on Linux: replay is background work; the inbound path keeps the CPU.
    (void)setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), options_.nice);
  }
  zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0},
                             {nullptr, stop_fd_, ZMQ_POLLIN, 0}};
  bool progressed = false;
  while (!stop_.load()) {
    // Idle: wait for a request. Serving: look for new requests without waiting, between pages.
    // Every client's queue full: wait a little for them to read.
    long timeout = clients_.empty() && pending_errors_.empty() ? 1000
                   : progressed                                 ? 0
                                                                : options_.poll_ms_when_blocked;
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(timeout));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      spdlog::error("replay: poll failed: {}", e.what());
      break;
    }
    if (items[1].revents & ZMQ_POLLIN) break;
    FlushPendingErrors();
    if (items[0].revents & ZMQ_POLLIN) ReceiveRequests();
    progressed = !clients_.empty() && ServeRound();
  }
  clients_.clear();
}

void ReplayEndpoint::ReceiveRequests() {
  // A bounded number per turn, so that a flood of requests cannot starve the pages in progress.
  for (int n = 0; n < 100; ++n) {
    std::vector<zmq::message_t> frames;
    try {
      zmq::message_t frame;
      if (!router_.recv(frame, zmq::recv_flags::dontwait)) return;
      bool more = frame.more();
      frames.push_back(std::move(frame));
      while (more) {
        zmq::message_t part;
        (void)router_.recv(part);  // the rest of a multipart message is already here
        more = part.more();
        // Keep four at most: a longer message is refused anyway, and memory stays bounded.
        if (frames.size() < 4) frames.push_back(std::move(part));
      }
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      spdlog::warn("replay: receive failed: {}", e.what());
      return;
    }
    HandleRequest(frames);
  }
}

void ReplayEndpoint::HandleRequest(std::vector<zmq::message_t>& frames) {
  // [identity][request] from a DEALER, [identity][""][request] from a REQ.
  std::string identity = frames[0].to_string();
  const bool req = frames.size() >= 3 && frames[1].size() == 0;
  const size_t body_index = req ? 2 : 1;
  if (frames.size() != body_index + 1) {
    SendError(identity, req,
              "expected one frame holding a ReplayRequest, got " +
                  std::to_string(frames.size() >= 4 ? 3 : frames.size() - 1) +
                  (frames.size() >= 4 ? " or more" : ""));
    return;
  }
  v1::ReplayRequest request;
  const zmq::message_t& body = frames[body_index];
  if (!request.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    SendError(identity, req,
              "not a ReplayRequest (" + std::to_string(body.size()) + " bytes that do not parse)");
    return;
  }
  auto it = clients_.find(identity);
  if (it == clients_.end() && clients_.size() >= options_.max_active_requests) {
    SendError(identity, req,
              "busy: " + std::to_string(clients_.size()) + " replays in progress, try again");
    return;
  }
  auto pager = ReplayPager::Start(store_.get(), request, options_.limits);
  if (!pager.ok()) {
    spdlog::debug("replay: refused a request: {}", pager.status().ToString());
    SendError(identity, req, pager.status().ToString());
    if (it != clients_.end()) clients_.erase(it);
    return;
  }
  SPDLOG_DEBUG("replay: request for seq {}..{} topic prefix \"{}\"", pager->from(), pager->to(),
               request.topic_prefix());
  // A new request from the same client replaces the one in progress (it gave up on it).
  Client& c = clients_[identity];
  c.identity = identity;
  c.req = req;
  c.pager = std::make_unique<ReplayPager>(std::move(pager).value());
  c.has_pending = false;
  c.pending.clear();
  c.messages = c.pages = 0;
}

constexpr size_t kMaxPendingErrors = 1024;

void ReplayEndpoint::SendError(const std::string& identity, bool req, const std::string& error) {
  v1::ReplayReply reply;
  reply.set_error(error);
  reply.set_done(true);
  if (store_) {
    auto b = store_->Bounds();
    if (b.ok()) reply.set_last_seq(b->last_seq);
  }
  std::string body;
  reply.SerializeToString(&body);
  // A client whose queue is momentarily full (ZeroMQ's I/O thread has not flushed it yet) gets
  // its error reply on a later turn: a request is never left unanswered.
  if (!pending_errors_.empty() || SendTo(identity, req, body) == SendResult::kFull) {
    if (pending_errors_.size() >= kMaxPendingErrors) {
      spdlog::warn("replay: too many unsent error replies; dropping one for a client that does "
                   "not read: {}", error);
      return;
    }
    pending_errors_.push_back(PendingError{identity, req, std::move(body)});
  }
}

void ReplayEndpoint::FlushPendingErrors() {
  while (!pending_errors_.empty()) {
    PendingError& p = pending_errors_.front();
    if (SendTo(p.identity, p.req, p.body) == SendResult::kFull) return;
    pending_errors_.pop_front();
  }
}

ReplayEndpoint::SendResult ReplayEndpoint::SendTo(const std::string& identity, bool req,
                                                  const std::string& body) {
  try {
    zmq::message_t id(identity.data(), identity.size());
    if (!router_.send(id, zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      return SendResult::kFull;
    }
    // Once the identity frame is accepted the rest of the message goes to the same pipe.
    if (req) (void)router_.send(zmq::message_t(), zmq::send_flags::sndmore);
    (void)router_.send(zmq::message_t(body.data(), body.size()), zmq::send_flags::none);
    return SendResult::kSent;
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return SendResult::kGone;
    spdlog::warn("replay: send failed: {}", e.what());
    return SendResult::kGone;
  }
}

bool ReplayEndpoint::ServeRound() {
  bool sent_any = false;
  for (auto it = clients_.begin(); it != clients_.end();) {
    Client& c = it->second;
    if (!c.has_pending) {
      Status s = c.pager->NextPage(&reply_);
      if (!s.ok()) {
        spdlog::warn("replay: reading the journal failed: {}", s.ToString());
        reply_.Clear();
        reply_.set_error("storage: " + s.ToString());
        reply_.set_done(true);
      }
      reply_.SerializeToString(&c.pending);
      c.has_pending = true;
      c.pending_last = reply_.done() || c.req;
      c.messages += static_cast<uint64_t>(reply_.envelopes_size());
      c.pages += 1;
    }
    switch (SendTo(c.identity, c.req, c.pending)) {
      case SendResult::kSent:
        sent_any = true;
        c.has_pending = false;
        if (c.pending_last) {
          SPDLOG_DEBUG("replay: served {} message(s) in {} page(s)", c.messages, c.pages);
          it = clients_.erase(it);
          continue;
        }
        break;
      case SendResult::kFull:
        break;  // keep the page; the client reads it when it can
      case SendResult::kGone:
        spdlog::debug("replay: client went away after {} message(s)", c.messages);
        it = clients_.erase(it);
        continue;
    }
    ++it;
  }
  return sent_any;
}

}  // namespace wsbridge
