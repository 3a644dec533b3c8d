// The gap-filling subscriber: live messages, gaps filled from the replay endpoint, CURVE on
// both sockets. See gap_filling_subscriber.h (one thread; handlers run inside Poll()).
#include "client/gap_filling_subscriber.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace wsbridge::client {
namespace {

// How many live messages and replay pages one Poll() handles at most, so that it returns
// regularly even under a flood.
constexpr int kLivePerPoll = 2000;
constexpr int kPagesPerPoll = 8;
// Pause before asking again after the endpoint refused a request (busy, storage error).
constexpr std::chrono::milliseconds kRetryAfterRefusal{200};

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

StatusOr<std::unique_ptr<GapFillingSubscriber>> GapFillingSubscriber::Create(
    zmq::context_t* ctx, GapFillingOptions options, GapFillingHandlers handlers) {
  if (!handlers.on_message) return Status::InvalidArgument("gap filling: on_message is required");
  if (options.replay_endpoint.empty()) {
    return Status::InvalidArgument("gap filling: a replay endpoint is required");
  }
  auto keys = CurveClientKeys::Load(options.server_key, options.client_key_file);
  if (!keys.ok()) return keys.status();
  std::unique_ptr<GapFillingSubscriber> s(
      new GapFillingSubscriber(ctx, std::move(options), std::move(handlers)));
  s->keys_ = std::move(keys).value();
  if (Status st = s->Connect(); !st.ok()) return st;
  return s;
}

GapFillingSubscriber::GapFillingSubscriber(zmq::context_t* ctx, GapFillingOptions options,
                                           GapFillingHandlers handlers)
    : ctx_(ctx),
      options_(std::move(options)),
      handlers_(std::move(handlers)),
      sub_(*ctx, zmq::socket_type::sub) {}

GapFillingSubscriber::~GapFillingSubscriber() = default;

Status GapFillingSubscriber::Connect() {
  try {
    sub_.set(zmq::sockopt::rcvhwm, options_.sub_rcvhwm);
    if (options_.sub_rcvbuf_bytes > 0) sub_.set(zmq::sockopt::rcvbuf, options_.sub_rcvbuf_bytes);
    sub_.set(zmq::sockopt::linger, 0);
    // Everything: a jump in seq must mean a missed message, not another topic (see the header).
    sub_.set(zmq::sockopt::subscribe, "");
  } catch (const zmq::error_t& e) {
    return Status::InvalidArgument(std::string("PUB endpoint: ") + e.what());
  }
  auto watch = ConnectToBridge(*ctx_, sub_, options_.pub_endpoint, keys_);
  if (!watch.ok()) return Status::InvalidArgument("PUB endpoint: " + watch.status().message());
  sub_watch_.emplace(std::move(watch).value());
  if (Status s = NewDealer(); !s.ok()) return s;
  epoch_ = options_.start_epoch;
  last_activity_ = Clock::now();
  if (options_.start_seq > 0) {
    // Joined late on purpose: everything from start_seq up to now comes from the journal;
    // live messages are held meanwhile.
    expected_ = options_.start_seq;
    StartFill(0);
  }
  return Status::OK();
}

Status GapFillingSubscriber::NewDealer() {
  // A fresh socket has a fresh identity: pages still on their way to the old one are dropped
  // by the bridge, so a retried request can never be confused with the one it replaces.
  auto d = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::dealer);
  d->set(zmq::sockopt::linger, 0);
  d->set(zmq::sockopt::rcvhwm, 4);  // pages held here; the bridge waits for room beyond that
  auto watch = ConnectToBridge(*ctx_, *d, options_.replay_endpoint, keys_);
  if (!watch.ok()) return Status::InvalidArgument("replay endpoint: " + watch.status().message());
  dealer_watch_.emplace(std::move(watch).value());
  dealer_ = std::move(d);
  return Status::OK();
}

void GapFillingSubscriber::ReplaceDealer() {
  if (Status s = NewDealer(); !s.ok() && failed_.ok()) failed_ = s;
}

Status GapFillingSubscriber::Poll(std::chrono::milliseconds timeout) {
  if (!failed_.ok()) return failed_;
  auto now = Clock::now();
  auto wait = timeout;
  auto until = [&](Clock::time_point t) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - now) +
              std::chrono::milliseconds(1);
    wait = std::max(std::chrono::milliseconds(0), std::min(wait, ms));
  };
  if (fill_)
    until(fill_->deadline);
  else if (expected_ != 0 && options_.idle_check.count() > 0)
    until(last_activity_ + options_.idle_check);

  zmq::pollitem_t items[] = {{sub_.handle(), 0, ZMQ_POLLIN, 0},
                             {dealer_->handle(), 0, ZMQ_POLLIN, 0},
                             {sub_watch_->events().handle(), 0, ZMQ_POLLIN, 0},
                             {dealer_watch_->events().handle(), 0, ZMQ_POLLIN, 0}};
  try {
    zmq::poll(items, 4, wait);
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return Status::OK();
    return Status::Unavailable(std::string("poll: ") + e.what());
  }
  // A refused handshake is for good (libzmq does not try again): say so rather than wait.
  for (HandshakeWatch* watch : {&*sub_watch_, &*dealer_watch_}) {
    if (Status s = watch->Check(); !s.ok()) failed_ = s;
  }
  if (!failed_.ok()) return failed_;
  try {
    // Pages first: they hold the messages that come before anything live that is held.
    if (items[1].revents & ZMQ_POLLIN) {
      v1::ReplayReply reply;
      for (int i = 0; i < kPagesPerPoll; ++i) {
        zmq::message_t msg;
        if (!dealer_->recv(msg, zmq::recv_flags::dontwait)) break;
        bool ok = !msg.more() && reply.ParseFromArray(msg.data(), static_cast<int>(msg.size()));
        while (msg.more()) (void)dealer_->recv(msg);
        if (!ok) {
          Warn("replay endpoint sent something that is not a ReplayReply; ignored");
          continue;
        }
        OnPage(reply);
      }
    }
    if (items[0].revents & ZMQ_POLLIN) {
      v1::Envelope env;
      for (int i = 0; i < kLivePerPoll; ++i) {
        zmq::message_t topic, body;
        if (!sub_.recv(topic, zmq::recv_flags::dontwait)) break;
        if (!topic.more()) continue;
        (void)sub_.recv(body);
        bool ok = !body.more() && env.ParseFromArray(body.data(), static_cast<int>(body.size()));
        while (body.more()) (void)sub_.recv(body);
        if (!ok) continue;  // not an Envelope: not from a wsbridge
        ++stats_.live;
        last_activity_ = Clock::now();
        OnLive(env);
      }
    }
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return Status::OK();
    return Status::Unavailable(std::string("receive: ") + e.what());
  }
  OnTimers(Clock::now());
  return Status::OK();
}

bool GapFillingSubscriber::CheckEpoch(uint64_t epoch) {
  if (epoch == epoch_) return true;
  if (epoch_ == 0) {  // the first message: this is the history we track
    epoch_ = epoch;
    return true;
  }
  // Another database: its seqs have nothing to do with ours. Forget everything held or asked.
  const uint64_t old = epoch_;
  epoch_ = epoch;
  ++stats_.epoch_changes;
  held_.clear();
  if (fill_) {
    fill_.reset();
    ReplaceDealer();
  }
  expected_ = options_.new_epoch_from_start ? 1 : 0;
  last_activity_ = Clock::now();
  if (handlers_.on_epoch_change) handlers_.on_epoch_change(old, epoch);
  return false;
}

void GapFillingSubscriber::OnLive(v1::Envelope& env) {
  (void)CheckEpoch(env.epoch());              // on a change, tracking restarts with this message
  if (expected_ == 0) expected_ = env.seq();  // start with the first live message
  if (fill_ || !held_.empty()) {
    if (env.seq() < expected_) {
      ++stats_.duplicates;
    } else if (held_.size() >= options_.max_buffered) {
      ++stats_.buffer_overflows;  // still in the journal: the next gap fetches it
    } else {
      held_.push_back(std::move(env));
    }
    return;
  }
  if (env.seq() < expected_) {
    ++stats_.duplicates;
  } else if (env.seq() == expected_) {
    Deliver(env);
  } else {
    ++stats_.gaps;
    const uint64_t to = env.seq() - 1;
    held_.push_back(std::move(env));
    StartFill(to);
  }
}

void GapFillingSubscriber::OnPage(const v1::ReplayReply& reply) {
  if (!fill_) return;  // cannot happen on a fresh socket; harmless anyway
  if (fill_->probe) {
    OnProbe(reply);
    return;
  }
  const auto now = Clock::now();
  if (!reply.error().empty()) {
    Warn("replay endpoint refused the request (" + reply.error() + "); asking again");
    fill_->deadline = now + kRetryAfterRefusal;
    fill_->refused = true;
    return;
  }
  fill_->deadline = now + options_.replay_timeout;
  if (reply.first_available_seq() > expected_) {
    // Trimmed before we could have it. Report only what we cannot have from elsewhere: not
    // beyond the gap asked for, nor at or beyond a message we hold.
    uint64_t limit = std::numeric_limits<uint64_t>::max();
    if (fill_->to != 0) limit = fill_->to;
    if (!held_.empty()) limit = std::min(limit, held_.front().seq() - 1);
    const uint64_t lost_to = std::min(reply.first_available_seq() - 1, limit);
    if (lost_to >= expected_) {
      stats_.lost += lost_to - expected_ + 1;
      if (handlers_.on_lost) handlers_.on_lost(expected_, lost_to);
      expected_ = lost_to + 1;
    }
  }
  for (const v1::Envelope& env : reply.envelopes()) {
    ++stats_.replayed;
    if (!CheckEpoch(env.epoch())) {
      // The database was replaced under this request: ask the new one from the start.
      if (expected_ != 0) StartFill(0);
      return;
    }
    if (env.seq() < expected_) {
      ++stats_.duplicates;
      continue;
    }
    Deliver(env);  // seqs in between did not match the prefix: covered all the same
  }
  if (!reply.done()) return;
  // The request covered its whole range, matched or not, up to the newest seq at the time.
  const uint64_t end = fill_->to == 0 ? reply.last_seq() : std::min(fill_->to, reply.last_seq());
  expected_ = std::max(expected_, end + 1);
  fill_.reset();
  last_activity_ = now;
  Drain();
}

void GapFillingSubscriber::Deliver(const v1::Envelope& env) {
  expected_ = env.seq() + 1;
  if (!StartsWith(env.topic(), options_.topic_prefix)) return;
  ++stats_.delivered;
  handlers_.on_message(env);
}

void GapFillingSubscriber::Drain() {
  while (!fill_ && !held_.empty()) {
    v1::Envelope& env = held_.front();
    if (env.seq() < expected_) {
      ++stats_.duplicates;
    } else if (env.seq() == expected_) {
      Deliver(env);
    } else {
      ++stats_.gaps;
      StartFill(env.seq() - 1);
      return;
    }
    held_.pop_front();
  }
}

void GapFillingSubscriber::StartFill(uint64_t to) {
  fill_ = Fill{false, false, to, Clock::now() + options_.replay_timeout, false};
  SendRequest(expected_, to, options_.topic_prefix, options_.page_messages);
}

void GapFillingSubscriber::StartProbe(uint64_t seq, bool followup) {
  fill_ = Fill{true, followup, seq, Clock::now() + options_.replay_timeout, false};
  SendRequest(seq, seq, "", 1);
}

void GapFillingSubscriber::SendRequest(uint64_t from, uint64_t to, const std::string& prefix,
                                       uint32_t max) {
  v1::ReplayRequest req;
  req.set_from_seq(from);
  req.set_to_seq(to);
  req.set_topic_prefix(prefix);
  req.set_max_messages(max);
  req.SerializeToString(&scratch_);
  ++stats_.replay_requests;
  // Queued even while the bridge is away (it goes out on reconnection); a full queue is
  // treated like an unanswered request and retried on a fresh socket.
  (void)dealer_->send(zmq::buffer(scratch_), zmq::send_flags::dontwait);
}

void GapFillingSubscriber::OnProbe(const v1::ReplayReply& reply) {
  const bool followup = fill_->followup;
  const uint64_t probed = fill_->to;
  fill_.reset();
  last_activity_ = Clock::now();
  if (!reply.error().empty()) {
    Warn("replay endpoint refused a probe (" + reply.error() + ")");
    Drain();  // live messages held during the probe must not wait for the next one
    return;  // the next idle check tries again
  }
  if (reply.envelopes_size() > 0) {
    if (!CheckEpoch(reply.envelopes(0).epoch())) {
      if (expected_ != 0) StartFill(0);  // the new history, from its start
      return;
    }
  } else if (!followup && reply.last_seq() > 0 && reply.last_seq() != probed) {
    // The seq we asked for is gone: trimmed, or the journal went back because the database
    // was replaced (its newest seq is below one we had). The newest row tells which.
    StartProbe(reply.last_seq(), true);
    return;
  }
  if (expected_ != 0 && reply.last_seq() >= expected_) StartFill(0);  // there is something new
  else Drain();  // nothing new: release the live messages held during the probe
}

void GapFillingSubscriber::OnTimers(Clock::time_point now) {
  if (fill_) {
    if (now < fill_->deadline) return;
    if (!fill_->refused) {
      ++stats_.replay_timeouts;
      Warn("no answer from replay endpoint " + options_.replay_endpoint + " within " +
           std::to_string(options_.replay_timeout.count()) + " ms; asking again");
    }
    const uint64_t to = fill_->to;
    const bool probe = fill_->probe;
    fill_.reset();
    ReplaceDealer();
    if (probe) {
      last_activity_ = now;                  // the next idle check probes again
      Drain();                               // and release what arrived meanwhile
    } else if (to != 0 && expected_ > to) {  // the part already received covered it
      last_activity_ = now;
      Drain();
    } else {
      StartFill(to);
    }
    return;
  }
  // Quiet for a while: were the last messages of a burst dropped? Only the journal knows.
  if (expected_ != 0 && held_.empty() && options_.idle_check.count() > 0 &&
      now - last_activity_ >= options_.idle_check) {
    StartProbe(std::max<uint64_t>(1, expected_ - 1), false);
  }
}

void GapFillingSubscriber::Warn(const std::string& what) {
  if (handlers_.on_warning) handlers_.on_warning(what);
}

}  // namespace wsbridge::client
