#include "bridge/link/connection_policy.h"

#include <algorithm>
#include <utility>

#include "common/text.h"

namespace wsbridge {

namespace {

std::string WithMessage(const char* prefix, const std::string& message) {
  std::string m = OneLine(message);
  return m.empty() ? std::string(prefix) : std::string(prefix) + ": " + m;
}

uint32_t SaturatingIncrement(uint32_t v) { return v == UINT32_MAX ? v : v + 1; }

std::string DescribeClose(const CloseInfo& c) {
  std::string out;
  if (c.local) {
    out = "closed by bridge: code " + std::to_string(c.code);
  } else if (c.code == 1006) {
    out = "connection lost (1006, no close frame)";
  } else {
    out = "closed by upstream: code " + std::to_string(c.code);
  }
  std::string r = OneLine(c.reason);
  if (!r.empty()) out += " \"" + r + "\"";
  return out;
}

// A close the peer took part in (a close frame arrived): proof the link was alive until now.
bool PeerSentCloseFrame(const CloseInfo& c) {
  return !c.local && c.code != 1006 && c.code != 1015 && c.code != 0;
}

}  // namespace

const char* ToString(PolicyState state) {
  switch (state) {
    case PolicyState::kIdle:
      return "idle";
    case PolicyState::kConnecting:
      return "connecting";
    case PolicyState::kOpen:
      return "open";
    case PolicyState::kBackingOff:
      return "backing_off";
    case PolicyState::kStopped:
      return "stopped";
    case PolicyState::kFailed:
      return "failed";
  }
  return "?";
}

const char* ToString(Failure::Kind kind) {
  switch (kind) {
    case Failure::Kind::kDns:
      return "dns";
    case Failure::Kind::kTcp:
      return "tcp";
    case Failure::Kind::kTls:
      return "tls";
    case Failure::Kind::kTimeout:
      return "timeout";
    case Failure::Kind::kHandshakeStatus:
      return "handshake_status";
    case Failure::Kind::kAuthCommand:
      return "auth_command";
    case Failure::Kind::kProxy:
      return "proxy";
    case Failure::Kind::kExtension:
      return "extension";
    case Failure::Kind::kOther:
      return "other";
  }
  return "?";
}

std::string Failure::ToString() const {
  switch (kind) {
    case Kind::kDns:
      return WithMessage("DNS lookup failed", message);
    case Kind::kTcp:
      return WithMessage("TCP connect failed", message);
    case Kind::kTls:
      return WithMessage("TLS handshake failed", message);
    case Kind::kTimeout:
      return WithMessage("connect timed out", message);
    case Kind::kHandshakeStatus: {
      std::string out = "handshake refused: HTTP " + std::to_string(http_status);
      std::string m = OneLine(message);
      return m.empty() ? out : out + " " + m;
    }
    case Kind::kAuthCommand:
      return WithMessage("auth command failed", message);
    case Kind::kProxy:
      if (http_status != 0) {
        std::string out = "proxy refused: HTTP " + std::to_string(http_status);
        std::string m = OneLine(message);
        return m.empty() ? out : out + " " + m;
      }
      return WithMessage("proxy failed", message);
    case Kind::kExtension:
      return WithMessage("handshake refused by the bridge", message);
    case Kind::kOther:
      return WithMessage("connection failed", message);
  }
  return "connection failed";
}

bool Failure::IsFatal() const {
  return (kind == Kind::kHandshakeStatus && (http_status == 401 || http_status == 403)) ||
         (kind == Kind::kProxy && http_status == 407);
}

std::string ToString(const Action& a) {
  std::string id = " #" + std::to_string(a.conn);
  switch (a.kind) {
    case Action::Kind::kConnect:
      return "connect" + id;
    case Action::Kind::kSendPing:
      return "ping" + id;
    case Action::Kind::kCloseDead:
      return "close-dead" + id + " (" + a.reason + ")";
    case Action::Kind::kExit:
      return "exit (" + a.reason + ")";
  }
  return "?";
}

StatusOr<PolicyOptions> PolicyOptions::FromConfig(const Config& config) {
  const ReconnectConfig& rc = config.reconnect;
  const HeartbeatConfig& hb = config.heartbeat;
  auto bad = [](const std::string& key, const std::string& what, int64_t got) {
    return Status::InvalidArgument(key + ": " + what + " (got " + std::to_string(got) + ")");
  };
  PolicyOptions o;
  StatusOr<Jitter> jitter = ParseJitter(rc.jitter);
  if (!jitter.ok()) return jitter.status();
  o.jitter = *jitter;
  if (rc.base_delay_ms < 0) return bad("reconnect.base_delay_ms", "must be >= 0", rc.base_delay_ms);
  if (rc.max_delay_ms < rc.base_delay_ms) {
    return bad("reconnect.max_delay_ms",
               "must be >= reconnect.base_delay_ms (" + std::to_string(rc.base_delay_ms) + ")",
               rc.max_delay_ms);
  }
  if (rc.min_uptime_ms < 0) return bad("reconnect.min_uptime_ms", "must be >= 0", rc.min_uptime_ms);
  if (rc.max_attempts < 0 || rc.max_attempts > UINT32_MAX) {
    return bad("reconnect.max_attempts", "must be between 0 and 4294967295", rc.max_attempts);
  }
  for (int code : rc.fatal_close_codes) {
    if (code < 1000 || code > 4999) {
      return bad("reconnect.fatal_close_codes", "close codes are 1000..4999", code);
    }
  }
  if (config.upstream.connect_timeout_ms < 0) {
    return bad("upstream.connect_timeout_ms", "must be >= 0", config.upstream.connect_timeout_ms);
  }
  if (hb.interval_ms < 0) return bad("heartbeat.interval_ms", "must be >= 0", hb.interval_ms);
  if (hb.interval_ms > 0 && hb.timeout_ms <= 0) {
    return bad("heartbeat.timeout_ms", "must be > 0 when heartbeat.interval_ms is set",
               hb.timeout_ms);
  }
  o.backoff.base = MillisToDuration(rc.base_delay_ms);
  o.backoff.cap = MillisToDuration(rc.max_delay_ms);
  o.min_uptime = MillisToDuration(rc.min_uptime_ms);
  o.max_attempts = static_cast<uint32_t>(rc.max_attempts);
  o.fatal_close_codes = rc.fatal_close_codes;
  o.connect_timeout = MillisToDuration(config.upstream.connect_timeout_ms);
  o.heartbeat_interval = MillisToDuration(hb.interval_ms);
  o.heartbeat_timeout = MillisToDuration(hb.timeout_ms);
  return o;
}

ConnectionPolicy::ConnectionPolicy(PolicyOptions options, RandomSource* rng)
    : options_(std::move(options)), rng_(rng) {}

void ConnectionPolicy::SetState(PolicyState s, TimePoint now) {
  if (s != state_) {
    state_ = s;
    state_since_ = now;
  }
}

bool ConnectionPolicy::IsFatalClose(int code) const {
  const auto& codes = options_.fatal_close_codes;
  return std::find(codes.begin(), codes.end(), code) != codes.end();
}

Actions ConnectionPolicy::Start(TimePoint now) {
  if (state_ != PolicyState::kIdle) return {};
  state_since_ = now;
  return BeginConnect(now);
}

Actions ConnectionPolicy::BeginConnect(TimePoint now) {
  conn_ = next_conn_++;
  ++connects_;
  SetState(PolicyState::kConnecting, now);
  connect_deadline_.reset();
  if (options_.connect_timeout > Duration::zero())
    connect_deadline_ = now + options_.connect_timeout;
  return {Action{Action::Kind::kConnect, conn_, ""}};
}

Actions ConnectionPolicy::OnConnectFailed(TimePoint now, ConnId conn, const Failure& failure) {
  if (state_ != PolicyState::kConnecting || conn != conn_) return {};
  std::string reason = failure.ToString();
  const bool fatal = failure.IsFatal();
  if (fatal) reason += " (fatal)";
  if (failure.retry_after) reason += " (Retry-After " + FormatDuration(*failure.retry_after) + ")";
  Actions out;
  EndConnection(now, reason, fatal, failure.retry_after, &out);
  return out;
}

Actions ConnectionPolicy::OnOpen(TimePoint now, ConnId conn) {
  if (state_ == PolicyState::kConnecting && conn == conn_) {
    SetState(PolicyState::kOpen, now);
    connect_deadline_.reset();
    opened_at_ = now;
    uptime_proven_ = false;
    fatal_ = false;
    fatal_reason_.clear();
    silent_since_.reset();
    ping_sent_at_.reset();
    next_ping_at_.reset();
    last_activity_ = now;
    silence_bound_.reset();
    if (HeartbeatOn()) next_ping_at_ = now + options_.heartbeat_interval;
    ProveAlive(now);  // resets at once when min_uptime is 0
    return {};
  }
  if (conn == conn_ || conn == 0 || state_ == PolicyState::kStopped ||
      state_ == PolicyState::kFailed) {
    return {};  // a duplicate report, or shutting down (the I/O layer closes everything)
  }
  // A connection the policy already abandoned (e.g. its connect timeout fired) opened anyway.
  return {Action{Action::Kind::kCloseDead, conn, "stale connection"}};
}

Actions ConnectionPolicy::OnClosed(TimePoint now, ConnId conn, const CloseInfo& close) {
  if (conn != conn_) return {};
  std::string reason;
  if (state_ == PolicyState::kConnecting) {
    reason = "closed during handshake: " + DescribeClose(close);
  } else if (state_ == PolicyState::kOpen) {
    // With the heartbeat off, a quiet link and a dead one look alike: trust time, as OnTimer does.
    if (PeerSentCloseFrame(close) || !HeartbeatOn()) ProveAlive(now);
    reason = DescribeClose(close);
  } else {
    return {};
  }
  const bool fatal = close.fatal || (!close.local && IsFatalClose(close.code));
  if (fatal) reason += " (fatal)";
  Actions out;
  EndConnection(now, reason, fatal, std::nullopt, &out);
  return out;
}

void ConnectionPolicy::OnActivity(TimePoint now, ConnId conn) {
  if (state_ != PolicyState::kOpen || conn != conn_) return;
  silent_since_.reset();
  last_activity_ = now;
  ProveAlive(now);
}

void ConnectionPolicy::SetSilenceBound(TimePoint now, ConnId conn, Duration bound) {
  if (state_ != PolicyState::kOpen || conn != conn_ || bound <= Duration::zero()) return;
  silence_bound_ = bound;
  last_activity_ = now;  // the packet that told us is activity
}

void ConnectionPolicy::OnPong(TimePoint now, ConnId conn) {
  if (state_ != PolicyState::kOpen || conn != conn_) return;
  if (ping_sent_at_) {
    last_rtt_ = now - *ping_sent_at_;
    ping_sent_at_.reset();
  }
  OnActivity(now, conn);
}

void ConnectionPolicy::ProveAlive(TimePoint now) {
  if (uptime_proven_ || now - opened_at_ < options_.min_uptime) return;
  uptime_proven_ = true;
  failures_ = 0;
  backoff_index_ = 0;
  prev_delay_ = Duration::zero();
}

Actions ConnectionPolicy::OnTimer(TimePoint now) {
  Actions out;
  switch (state_) {
    case PolicyState::kConnecting:
      if (connect_deadline_ && now >= *connect_deadline_) {
        std::string reason =
            "connect timeout: not open after " + FormatDuration(options_.connect_timeout);
        out.push_back(Action{Action::Kind::kCloseDead, conn_, reason});
        EndConnection(now, reason, false, std::nullopt, &out);
      }
      break;
    case PolicyState::kBackingOff:
      if (now >= retry_at_) out = BeginConnect(now);
      break;
    case PolicyState::kOpen:
      // Dead first: a timer that fires late must not send a ping on a link already found dead.
      if (HeartbeatOn() && silent_since_ && now >= *silent_since_ + options_.heartbeat_timeout) {
        std::string reason = "heartbeat timeout: nothing received for " +
                             FormatDuration(now - *silent_since_) + " after ping";
        out.push_back(Action{Action::Kind::kCloseDead, conn_, reason});
        EndConnection(now, reason, false, std::nullopt, &out);
        break;
      }
      if (silence_bound_ && now >= last_activity_ + *silence_bound_) {
        std::string reason = "heartbeat timeout: nothing received for " +
                             FormatDuration(now - last_activity_) + " (the server's ping bound is " +
                             FormatDuration(*silence_bound_) + ")";
        out.push_back(Action{Action::Kind::kCloseDead, conn_, reason});
        EndConnection(now, reason, false, std::nullopt, &out);
        break;
      }
      // Without a heartbeat there is no way to tell a quiet link from a dead one: trust time.
      if (!HeartbeatOn()) ProveAlive(now);
      if (next_ping_at_ && now >= *next_ping_at_) {
        out.push_back(Action{Action::Kind::kSendPing, conn_, ""});
        if (!silent_since_) silent_since_ = now;
        ping_sent_at_ = now;
        // Fixed cadence from this ping (not from the planned time): a late timer never bursts.
        next_ping_at_ = now + options_.heartbeat_interval;
      }
      break;
    case PolicyState::kIdle:
    case PolicyState::kStopped:
    case PolicyState::kFailed:
      break;
  }
  return out;
}

void ConnectionPolicy::EndConnection(TimePoint now, const std::string& reason, bool fatal,
                                     std::optional<Duration> retry_after, Actions* out) {
  const bool healthy = state_ == PolicyState::kOpen && uptime_proven_;
  if (!healthy) failures_ = SaturatingIncrement(failures_);
  last_failure_ = reason;
  if (fatal) {
    fatal_ = true;
    fatal_reason_ = reason;
  }
  conn_ = 0;
  connect_deadline_.reset();
  next_ping_at_.reset();
  silent_since_.reset();
  silence_bound_.reset();
  ping_sent_at_.reset();

  if (options_.max_attempts > 0 && failures_ >= options_.max_attempts) {
    exit_reason_ = "giving up after " + std::to_string(failures_) +
                   " failed connection attempts in a row (reconnect.max_attempts); last: " + reason;
    SetState(PolicyState::kFailed, now);
    out->push_back(Action{Action::Kind::kExit, 0, exit_reason_});
    return;
  }

  // Fatal: stay polite at the cap until a connection opens again.
  Duration delay =
      fatal_ ? options_.backoff.cap
             : NextDelay(options_.jitter, options_.backoff, backoff_index_, prev_delay_, *rng_);
  prev_delay_ = delay;
  backoff_index_ = SaturatingIncrement(backoff_index_);
  if (retry_after && *retry_after > delay) delay = *retry_after;
  last_delay_ = delay;
  retry_at_ = now + delay;
  SetState(PolicyState::kBackingOff, now);
}

void ConnectionPolicy::Stop(TimePoint now) {
  if (state_ == PolicyState::kStopped || state_ == PolicyState::kFailed) return;
  SetState(PolicyState::kStopped, now);
  conn_ = 0;
  connect_deadline_.reset();
  next_ping_at_.reset();
  silent_since_.reset();
  ping_sent_at_.reset();
}

std::optional<TimePoint> ConnectionPolicy::NextDeadline() const {
  switch (state_) {
    case PolicyState::kConnecting:
      return connect_deadline_;
    case PolicyState::kBackingOff:
      return retry_at_;
    case PolicyState::kOpen: {
      std::optional<TimePoint> next = next_ping_at_;
      auto consider = [&next](TimePoint t) {
        if (!next || t < *next) next = t;
      };
      if (HeartbeatOn() && silent_since_) consider(*silent_since_ + options_.heartbeat_timeout);
      if (!HeartbeatOn() && !uptime_proven_) consider(opened_at_ + options_.min_uptime);
      if (silence_bound_) consider(last_activity_ + *silence_bound_);
      return next;
    }
    case PolicyState::kIdle:
    case PolicyState::kStopped:
    case PolicyState::kFailed:
      return std::nullopt;
  }
  return std::nullopt;
}

PolicyStatus ConnectionPolicy::status() const {
  PolicyStatus s;
  s.state = state_;
  s.state_since = state_since_;
  s.fatal = fatal_;
  s.last_failure = last_failure_;
  s.attempt = failures_;
  s.connects = connects_;
  s.reconnects = connects_ > 0 ? connects_ - 1 : 0;
  s.conn = conn_;
  s.last_rtt = last_rtt_;
  s.last_delay = last_delay_;
  switch (state_) {
    case PolicyState::kIdle:
      s.reason = "not started";
      break;
    case PolicyState::kOpen:
      break;
    case PolicyState::kStopped:
      s.reason = "stopped";
      break;
    case PolicyState::kFailed:
      s.reason = exit_reason_;
      break;
    case PolicyState::kConnecting:
    case PolicyState::kBackingOff:
      s.reason = fatal_ ? fatal_reason_ : last_failure_.empty() ? "connecting" : last_failure_;
      break;
  }
  if (state_ == PolicyState::kBackingOff) s.next_attempt_at = retry_at_;
  return s;
}

}  // namespace wsbridge
