// ConnectionPolicy on simulated time (SPEC G5, G6).
//
// A Harness plays the I/O layer: it owns a SimulatedClock, the policy, and a small scripted
// upstream ("fake transport") that answers each kConnect with the next scripted Behavior
// (refuse, hang, open then drop, open and live, go silent...). The loop jumps the clock straight
// to the next transport event or policy deadline, so an hour of flapping runs in milliseconds.
// Every connect time, delay, transition, ping and reason is asserted exactly.
#include "bridge/link/connection_policy.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "bridge/clock.h"
#include "bridge/link/backoff.h"

namespace wsbridge {
namespace {

using namespace std::chrono_literals;  // NOLINT: 50ms, 15s, 1h in tests
using Kind = Action::Kind;
using S = PolicyState;

constexpr Duration kLatency = 50ms;  // connect -> outcome, for every scripted attempt
constexpr Duration kRtt = 20ms;

// Seconds since `origin`, for readable failure messages.
std::string At(TimePoint t, TimePoint origin) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "t=%.3fs", std::chrono::duration<double>(t - origin).count());
  return buf;
}

// Exact, readable forms for assertions (gtest would print chrono values as raw bytes).
const TimePoint kOrigin = SimulatedClock().Now();
std::string Show(Duration d) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.9fs", std::chrono::duration<double>(d).count());
  return buf;
}
std::string Show(TimePoint t) { return "t=" + Show(t - kOrigin); }
template <typename T>
std::string Show(const std::optional<T>& v) {
  return v ? Show(*v) : "none";
}
template <typename T>
std::string Show(const std::vector<T>& v) {
  std::string out;
  for (const T& x : v) out += Show(x) + " ";
  return out;
}

Failure Fail(Failure::Kind kind, std::string message, int http = 0,
             std::optional<Duration> retry_after = std::nullopt) {
  Failure f;
  f.kind = kind;
  f.message = std::move(message);
  f.http_status = http;
  f.retry_after = retry_after;
  return f;
}
Failure TcpRefused() { return Fail(Failure::Kind::kTcp, "connection refused"); }

// What the scripted upstream does with one connection attempt.
struct Behavior {
  enum class Type { kRefuse, kHang, kOpen };
  Type type = Type::kOpen;
  Failure failure;  // kRefuse
  // kOpen:
  std::optional<Duration> close_after;  // the upstream closes `close` this long after open
  CloseInfo close;
  Duration data_every = Duration::zero();  // a data frame every ... from open (0: none)
  std::optional<Duration> silent_after;    // from open + this, nothing arrives any more (half-open)
  bool answers_pings = true;

  static Behavior Refuse(Failure f) {
    Behavior b;
    b.type = Type::kRefuse;
    b.failure = std::move(f);
    return b;
  }
  static Behavior Hang() {
    Behavior b;
    b.type = Type::kHang;
    return b;
  }
  // Accepts, lives `life` sending a data frame every second, then the upstream closes.
  static Behavior Live(Duration life, int code, std::string reason) {
    Behavior b;
    b.data_every = 1s;
    b.close_after = life;
    b.close = CloseInfo{code, std::move(reason), false};
    return b;
  }
  // Accepts, then the connection is lost `after` later (no close frame).
  static Behavior Drop(Duration after) {
    Behavior b;
    b.close_after = after;
    b.close = CloseInfo{1006, "", false};
    return b;
  }
  // Accepts, then never a byte again: no data, no pong, no FIN (half-open from the start).
  static Behavior Silent() {
    Behavior b;
    b.silent_after = Duration::zero();
    return b;
  }
};

// What the harness saw of one connection.
struct ConnRecord {
  TimePoint connect_at{};
  std::optional<TimePoint> open_at;
  std::optional<TimePoint> end_at;  // the policy left kConnecting/kOpen for it
  PolicyStatus end_status;          // status() right then
  PolicyStatus open_status;
  std::vector<TimePoint> pings;
  std::optional<TimePoint> last_activity;
  std::string close_dead_reason;
};

struct Transition {
  TimePoint at;
  PolicyState to;
  bool operator==(const Transition& o) const { return at == o.at && to == o.to; }
};

class Harness {
 public:
  explicit Harness(PolicyOptions options, uint64_t seed = 7)
      : rng_(seed), policy_(std::move(options), &rng_), origin_(clock_.Now()) {}

  void Script(std::vector<Behavior> behaviors) {
    for (auto& b : behaviors) script_.push_back(std::move(b));
  }

  TimePoint Now() const { return clock_.Now(); }
  TimePoint origin() const { return origin_; }
  ConnectionPolicy& policy() { return policy_; }
  SimulatedClock& clock() { return clock_; }
  const std::map<ConnId, ConnRecord>& conns() const { return conns_; }
  const ConnRecord& conn(ConnId id) { return conns_.at(id); }
  const std::vector<Transition>& transitions() const { return transitions_; }
  bool exited() const { return exited_; }
  const std::string& exit_reason() const { return exit_reason_; }
  int stale_ignored() const { return stale_ignored_; }
  std::string Where() const { return At(Now(), origin_); }

  void Start() { Handle(policy_.Start(Now())); }
  void Stop() {
    policy_.Stop(Now());
    Observe();
  }

  // Jumps from event to event (transport first at equal times: what arrived is handled before
  // the timer that would declare it missing) until `end`, then sets the clock to `end`.
  void RunUntil(TimePoint end) {
    int spins = 0;
    while (!exited_) {
      std::optional<TimePoint> deadline = policy_.NextDeadline();
      std::optional<TimePoint> event =
          events_.empty() ? std::nullopt : std::optional<TimePoint>(events_.begin()->first.first);
      if (event && (!deadline || *event <= *deadline)) {
        if (*event > end) break;
        clock_.Set(*event);
        auto fn = std::move(events_.begin()->second);
        events_.erase(events_.begin());
        fn();
        spins = 0;
      } else if (deadline) {
        if (*deadline > end) break;
        clock_.Set(*deadline);
        Actions actions = policy_.OnTimer(Now());
        const bool idle = actions.empty() && policy_.NextDeadline() == deadline;
        Handle(actions);
        // A deadline that fires and stays put without doing anything would spin the I/O loop.
        if (idle && ++spins > 3) {
          ADD_FAILURE() << "policy spins at " << Where() << " in " << ToString(policy_.state());
          return;
        }
      } else {
        break;
      }
    }
    clock_.Set(end);
  }
  void RunFor(Duration d) { RunUntil(Now() + d); }

  // The I/O layer's calls, for tests that drive events by hand.
  void Handle(const Actions& actions) {
    Observe();
    for (const Action& a : actions) {
      switch (a.kind) {
        case Kind::kConnect:
          Connect(a.conn);
          break;
        case Kind::kSendPing:
          Ping(a.conn);
          break;
        case Kind::kCloseDead:
          if (conns_.count(a.conn)) conns_[a.conn].close_dead_reason = a.reason;
          Abort(a.conn);
          break;
        case Kind::kExit:
          exited_ = true;
          exit_reason_ = a.reason;
          break;
      }
    }
  }

 private:
  struct Link {
    Behavior b;
    bool alive = true;
    bool open = false;
    TimePoint open_at{};
  };

  void Schedule(TimePoint at, std::function<void()> fn) {
    events_.emplace(std::make_pair(at, seq_++), std::move(fn));
  }

  void Observe() {
    const PolicyState s = policy_.state();
    if (s == last_state_) return;
    transitions_.push_back({Now(), s});
    if ((last_state_ == S::kConnecting || last_state_ == S::kOpen) && cur_ != 0) {
      conns_[cur_].end_at = Now();
      conns_[cur_].end_status = policy_.status();
    }
    if (s == S::kOpen) {
      conns_[cur_].open_at = Now();
      conns_[cur_].open_status = policy_.status();
    }
    last_state_ = s;
  }

  bool Silent(const Link& l) const {
    return l.b.silent_after && Now() >= l.open_at + *l.b.silent_after;
  }

  void Connect(ConnId id) {
    if (script_.empty()) {
      ADD_FAILURE() << "unexpected connect #" << id << " at " << Where();
      return;
    }
    cur_ = id;
    conns_[id].connect_at = Now();
    links_[id] = Link{script_.front()};
    script_.pop_front();
    const Behavior& b = links_[id].b;
    if (b.type == Behavior::Type::kRefuse) {
      Schedule(Now() + kLatency, [this, id] {
        if (!links_[id].alive) return;
        links_[id].alive = false;
        Handle(policy_.OnConnectFailed(Now(), id, links_[id].b.failure));
      });
    } else if (b.type == Behavior::Type::kOpen) {
      Schedule(Now() + kLatency, [this, id] { Opened(id); });
    }  // kHang: nothing ever comes back
  }

  void Opened(ConnId id) {
    Link& l = links_[id];
    if (!l.alive) return;
    l.open = true;
    l.open_at = Now();
    Handle(policy_.OnOpen(Now(), id));
    if (l.b.data_every > Duration::zero())
      Schedule(Now() + l.b.data_every, [this, id] { Data(id); });
    if (l.b.close_after) {
      Schedule(Now() + *l.b.close_after, [this, id] {
        Link& link = links_[id];
        if (!link.alive) return;
        link.alive = false;
        Handle(policy_.OnClosed(Now(), id, link.b.close));
      });
    }
  }

  void Data(ConnId id) {
    Link& l = links_[id];
    if (!l.alive || Silent(l)) return;
    conns_[id].last_activity = Now();
    policy_.OnActivity(Now(), id);
    Observe();
    Schedule(Now() + l.b.data_every, [this, id] { Data(id); });
  }

  void Ping(ConnId id) {
    conns_[id].pings.push_back(Now());
    Link& l = links_[id];
    if (!l.alive || !l.b.answers_pings) return;
    Schedule(Now() + kRtt, [this, id] {
      Link& link = links_[id];
      if (!link.alive || Silent(link)) return;
      conns_[id].last_activity = Now();
      policy_.OnPong(Now(), id);
      Observe();
    });
  }

  // kCloseDead: the socket is gone. Like websocketpp, the aborted connection's own handler
  // still fires a moment later; the policy must ignore it.
  void Abort(ConnId id) {
    Link& l = links_[id];
    const bool was_open = l.open;
    l.alive = false;
    Schedule(Now() + 1ms, [this, id, was_open] {
      const PolicyState before = policy_.state();
      const std::optional<TimePoint> deadline = policy_.NextDeadline();
      Actions late = was_open ? policy_.OnClosed(Now(), id, CloseInfo{1006, "aborted", true})
                              : policy_.OnConnectFailed(
                                    Now(), id, Fail(Failure::Kind::kOther, "operation aborted"));
      EXPECT_TRUE(late.empty()) << "stale event for #" << id << " acted on at " << Where();
      EXPECT_EQ(policy_.state(), before);
      EXPECT_EQ(Show(policy_.NextDeadline()), Show(deadline));
      ++stale_ignored_;
    });
  }

  SimulatedClock clock_;
  SplitMix64Random rng_;
  ConnectionPolicy policy_;
  TimePoint origin_;
  std::deque<Behavior> script_;
  std::map<std::pair<TimePoint, uint64_t>, std::function<void()>> events_;
  uint64_t seq_ = 0;
  std::map<ConnId, Link> links_;
  std::map<ConnId, ConnRecord> conns_;
  std::vector<Transition> transitions_;
  PolicyState last_state_ = S::kIdle;
  ConnId cur_ = 0;
  bool exited_ = false;
  std::string exit_reason_;
  int stale_ignored_ = 0;
};

// The defaults of SPEC §4, jitter off so that every delay is exact.
PolicyOptions ExactOptions() {
  PolicyOptions o;
  o.jitter = Jitter::kNone;
  o.backoff = {500ms, 30s};
  o.min_uptime = 5s;
  o.max_attempts = 0;
  o.fatal_close_codes = {1008, 4001, 4003};
  o.connect_timeout = 10s;
  o.heartbeat_interval = 15s;
  o.heartbeat_timeout = 10s;
  return o;
}

// ---- one simulated hour of a flapping upstream -----------------------------------------------

struct Step {
  Behavior behavior;
  Duration lifetime;  // connect -> the policy gives up on / leaves this connection
  Duration delay;     // end -> next connect
  uint32_t attempt;   // status().attempt after the end
  bool fatal;
  std::string reason;        // status().reason while backing off
  std::string last_failure;  // status().last_failure ("" = same as reason)
};

TEST(ConnectionPolicyHour, FlappingUpstreamEveryDelayAndTransition) {
  const auto real_start = std::chrono::steady_clock::now();
  Harness h(ExactOptions());

  const std::string kLost = "connection lost (1006, no close frame)";
  const std::string kRefused = "TCP connect failed: connection refused";
  const std::string kDead = "heartbeat timeout: nothing received for 10 s after ping";
  const std::string k403 = "handshake refused: HTTP 403 Forbidden (fatal)";

  // Conn 12: healthy for two minutes, then half-open right after the pong of its 8th ping
  // (open + 120 s + RTT): the 9th ping (open + 135 s) goes unanswered -> dead at open + 145 s.
  Behavior half_open_later = Behavior::Live(24h, 1000, "");
  half_open_later.close_after.reset();
  half_open_later.silent_after = 120s + kRtt + 1ms;

  const std::vector<Step> steps = {
      // 1: a long healthy connection (reset at open + 5 s), then the upstream goes away.
      {Behavior::Live(1800s, 1001, "going away"), kLatency + 1800s, 500ms, 0, false,
       "closed by upstream: code 1001 \"going away\"", ""},
      // 2-8: accept, then dropped at once: never proven alive, the delay keeps growing.
      {Behavior::Drop(10ms), kLatency + 10ms, 1s, 1, false, kLost, ""},
      {Behavior::Drop(10ms), kLatency + 10ms, 2s, 2, false, kLost, ""},
      {Behavior::Drop(10ms), kLatency + 10ms, 4s, 3, false, kLost, ""},
      {Behavior::Drop(10ms), kLatency + 10ms, 8s, 4, false, kLost, ""},
      {Behavior::Drop(10ms), kLatency + 10ms, 16s, 5, false, kLost, ""},
      {Behavior::Drop(10ms), kLatency + 10ms, 30s, 6, false, kLost, ""},
      {Behavior::Drop(10ms), kLatency + 10ms, 30s, 7, false, kLost, ""},
      // 9-10: refused outright.
      {Behavior::Refuse(TcpRefused()), kLatency, 30s, 8, false, kRefused, ""},
      {Behavior::Refuse(TcpRefused()), kLatency, 30s, 9, false, kRefused, ""},
      // 11: the handshake never completes: the policy's own connect timeout.
      {Behavior::Hang(), 10s, 30s, 10, false, "connect timeout: not open after 10 s", ""},
      // 12: healthy (reset), then half-open: found at the first unanswered ping + timeout.
      {half_open_later, kLatency + 145s, 500ms, 0, false, kDead, ""},
      // 13-14: dead from the start: not proven alive, so the delay grows again.
      {Behavior::Silent(), kLatency + 25s, 1s, 1, false, kDead, ""},
      {Behavior::Silent(), kLatency + 25s, 2s, 2, false, kDead, ""},
      // 15-19: fatal: retry at the cap, reason kept, even across a non-fatal failure.
      {Behavior::Refuse(Fail(Failure::Kind::kHandshakeStatus, "Unauthorized", 401)), kLatency, 30s,
       3, true, "handshake refused: HTTP 401 Unauthorized (fatal)", ""},
      {Behavior::Refuse(Fail(Failure::Kind::kHandshakeStatus, "Forbidden", 403)), kLatency, 30s, 4,
       true, k403, ""},
      {Behavior::Refuse(TcpRefused()), kLatency, 30s, 5, true, k403, kRefused},
      {Behavior::Live(100ms, 4001, "token expired"), kLatency + 100ms, 30s, 6, true,
       "closed by upstream: code 4001 \"token expired\" (fatal)", ""},
      {Behavior::Refuse(Fail(Failure::Kind::kProxy, "Proxy Authentication Required", 407)),
       kLatency, 30s, 7, true, "proxy refused: HTTP 407 Proxy Authentication Required (fatal)", ""},
      // 20: credentials fixed: healthy for ten minutes, fatal cleared, counters reset.
      {Behavior::Live(600s, 1012, "service restart"), kLatency + 600s, 500ms, 0, false,
       "closed by upstream: code 1012 \"service restart\"", ""},
      // 21-22: throttled: Retry-After wins when longer than the backoff, not when shorter.
      {Behavior::Refuse(Fail(Failure::Kind::kHandshakeStatus, "Too Many Requests", 429, 120s)),
       kLatency, 120s, 1, false,
       "handshake refused: HTTP 429 Too Many Requests (Retry-After 120 s)", ""},
      {Behavior::Refuse(Fail(Failure::Kind::kHandshakeStatus, "Service Unavailable", 503, 1s)),
       kLatency, 2s, 2, false, "handshake refused: HTTP 503 Service Unavailable (Retry-After 1 s)",
       ""},
      // 23-24: plain refusals: the backoff goes on growing from where it was.
      {Behavior::Refuse(Fail(Failure::Kind::kHandshakeStatus, "Service Unavailable", 503)),
       kLatency, 4s, 3, false, "handshake refused: HTTP 503 Service Unavailable", ""},
      {Behavior::Refuse(Fail(Failure::Kind::kDns, "Name or service not known")), kLatency, 8s, 4,
       false, "DNS lookup failed: Name or service not known", ""},
  };
  std::vector<Behavior> script;
  for (const Step& s : steps) script.push_back(s.behavior);
  script.push_back(Behavior::Live(24h, 1000, ""));  // 25: stays up past the hour
  h.Script(script);

  h.Start();
  const TimePoint end = h.origin() + 61min;
  h.RunUntil(end);
  ASSERT_FALSE(h.exited());
  ASSERT_EQ(h.policy().state(), S::kOpen) << h.Where();
  EXPECT_GE(h.Now() - h.origin(), 1h);
  h.Stop();

  // Expected timeline, built from the table alone.
  std::vector<Transition> expected;
  TimePoint t = h.origin();
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& s = steps[i];
    const ConnId id = i + 1;
    SCOPED_TRACE("connection #" + std::to_string(id));
    ASSERT_EQ(h.conns().count(id), 1u);
    const ConnRecord& r = h.conn(id);
    EXPECT_EQ(Show(r.connect_at), Show(t));
    expected.push_back({t, S::kConnecting});
    const bool opens = s.behavior.type == Behavior::Type::kOpen;
    ASSERT_EQ(r.open_at.has_value(), opens);
    if (opens) {
      EXPECT_EQ(Show(*r.open_at), Show(t + kLatency));
      expected.push_back({t + kLatency, S::kOpen});
      EXPECT_FALSE(r.open_status.fatal);  // an open clears fatal
      EXPECT_EQ(r.open_status.reason, "");
    }
    ASSERT_TRUE(r.end_at.has_value());
    EXPECT_EQ(Show(*r.end_at), Show(t + s.lifetime));
    expected.push_back({t + s.lifetime, S::kBackingOff});
    const PolicyStatus& st = r.end_status;
    EXPECT_EQ(st.state, S::kBackingOff);
    EXPECT_EQ(st.attempt, s.attempt);
    EXPECT_EQ(st.fatal, s.fatal);
    EXPECT_EQ(st.reason, s.reason);
    EXPECT_EQ(st.last_failure, s.last_failure.empty() ? s.reason : s.last_failure);
    EXPECT_EQ(Show(st.last_delay), Show(s.delay));
    EXPECT_EQ(Show(st.next_attempt_at), Show(*r.end_at + s.delay));
    EXPECT_EQ(st.connects, id);
    EXPECT_EQ(st.reconnects, id - 1);
    EXPECT_LE(s.delay, 30s + (s.behavior.failure.retry_after.value_or(0s)));
    t += s.lifetime + s.delay;
  }
  const ConnRecord& last = h.conn(steps.size() + 1);
  EXPECT_EQ(Show(last.connect_at), Show(t));
  expected.push_back({t, S::kConnecting});
  expected.push_back({t + kLatency, S::kOpen});
  expected.push_back({end, S::kStopped});
  EXPECT_EQ(h.conns().size(), steps.size() + 1);
  ASSERT_EQ(h.transitions().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(h.transitions()[i].to, expected[i].to) << "transition " << i;
    EXPECT_EQ(Show(h.transitions()[i].at), Show(expected[i].at)) << "transition " << i;
  }

  // Heartbeat, connection 1: a ping every 15 s (the one due at the close never went out), RTT.
  {
    const ConnRecord& r = h.conn(1);
    ASSERT_EQ(r.pings.size(), 119u);
    for (size_t k = 0; k < r.pings.size(); ++k) {
      EXPECT_EQ(Show(r.pings[k]), Show(*r.open_at + 15s * static_cast<int>(k + 1)));
    }
    EXPECT_EQ(Show(r.end_status.last_rtt), Show(kRtt));
    EXPECT_EQ(r.close_dead_reason, "");
  }
  // Connection 12 (half-open after two minutes): detected within interval + timeout of its
  // last sign of life, exactly at the first unanswered ping + timeout.
  {
    const ConnRecord& r = h.conn(12);
    ASSERT_EQ(r.pings.size(), 9u);
    EXPECT_EQ(Show(r.pings.back()), Show(*r.open_at + 135s));
    EXPECT_EQ(Show(*r.last_activity), Show(*r.open_at + 120s + kRtt));  // the 8th pong
    EXPECT_EQ(Show(*r.end_at), Show(r.pings.back() + 10s));
    EXPECT_LE(*r.end_at - *r.last_activity, 15s + 10s);
    EXPECT_EQ(r.close_dead_reason, kDead);
  }
  // Connections 13, 14 (dead from the start): one ping, then closed 10 s later.
  for (ConnId id : {13, 14}) {
    const ConnRecord& r = h.conn(id);
    ASSERT_EQ(r.pings.size(), 1u);
    EXPECT_EQ(Show(r.pings[0]), Show(*r.open_at + 15s));
    EXPECT_FALSE(r.last_activity.has_value());
    EXPECT_EQ(Show(*r.end_at), Show(*r.open_at + 25s));
  }
  EXPECT_EQ(h.conn(11).close_dead_reason, "connect timeout: not open after 10 s");
  EXPECT_EQ(h.stale_ignored(), 4);  // #11, #12, #13, #14 reported after their abort

  EXPECT_EQ(h.policy().state(), S::kStopped);
  EXPECT_EQ(Show(h.policy().NextDeadline()), "none");
  const double real_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - real_start)
          .count();
  std::printf("[ info ] %.0f simulated seconds, %zu connections, in %.1f ms of real time\n",
              std::chrono::duration<double>(h.Now() - h.origin()).count(), h.conns().size(),
              real_ms);
}

// ---- an hour of random flapping in every jitter mode, checked against an independent model -----

struct ModelCase {
  Jitter jitter;
  uint64_t seed;
};
void PrintTo(const ModelCase& c, std::ostream* os) {
  *os << ToString(c.jitter) << " seed " << c.seed;
}
class RandomHourTest : public ::testing::TestWithParam<ModelCase> {};

TEST_P(RandomHourTest, EveryDelayWithinItsModeBounds) {
  const auto real_start = std::chrono::steady_clock::now();
  PolicyOptions o = ExactOptions();
  o.jitter = GetParam().jitter;
  Harness h(o, GetParam().seed);

  // A random mix, decided up front from its own generator.
  enum Kind2 { kRefused, kDropped, kHealthy, kAuth, kThrottled };
  SplitMix64Random pick(GetParam().seed * 31 + 1);
  std::vector<Kind2> kinds;
  std::vector<Behavior> script;
  for (int i = 0; i < 5000; ++i) {
    uint64_t r = pick.UniformInclusive(99);
    Kind2 k = r < 40   ? kRefused
              : r < 70 ? kDropped
              : r < 80 ? kHealthy
              : r < 90 ? kAuth
                       : kThrottled;
    kinds.push_back(k);
    switch (k) {
      case kRefused:
        script.push_back(Behavior::Refuse(TcpRefused()));
        break;
      case kDropped:
        script.push_back(Behavior::Drop(2s));
        break;
      case kHealthy:
        script.push_back(Behavior::Live(60s, 1000, ""));
        break;
      case kAuth:
        script.push_back(
            Behavior::Refuse(Fail(Failure::Kind::kHandshakeStatus, "Unauthorized", 401)));
        break;
      case kThrottled:
        script.push_back(Behavior::Refuse(Fail(Failure::Kind::kHandshakeStatus, "", 429,
                                               std::chrono::seconds(pick.UniformInclusive(60)))));
        break;
    }
  }
  h.Script(script);
  h.Start();
  h.RunUntil(h.origin() + 1h);
  ASSERT_FALSE(h.exited());

  // The model: exponent resets after a healthy connection; fatal sticks until an open.
  uint32_t index = 0;
  bool fatal = false;
  size_t checked = 0;
  for (const auto& [id, r] : h.conns()) {
    if (!r.end_at || !h.conns().count(id + 1)) break;
    const Kind2 k = kinds[id - 1];
    const Duration delay = h.conn(id + 1).connect_at - *r.end_at;
    if (r.open_at) fatal = false;
    if (k == kHealthy) index = 0;
    if (k == kAuth) fatal = true;
    const Duration ceiling = BackoffCeiling(o.backoff, index);
    Duration lo, hi;
    if (fatal) {
      lo = hi = o.backoff.cap;
    } else {
      switch (o.jitter) {
        case Jitter::kNone:
          lo = hi = ceiling;
          break;
        case Jitter::kFull:
          lo = 0s;
          hi = ceiling;
          break;
        case Jitter::kEqual:
          lo = ceiling / 2, hi = ceiling;
          break;
        case Jitter::kDecorrelated:
          lo = o.backoff.base, hi = o.backoff.cap;
          break;
      }
    }
    const auto& ra = script[id - 1].failure.retry_after;
    if (ra) {
      lo = std::max(lo, *ra);
      hi = std::max(hi, *ra);
    }
    EXPECT_GE(delay, lo) << "#" << id << " index " << index;
    EXPECT_LE(delay, hi) << "#" << id << " index " << index;
    EXPECT_EQ(Show(r.end_status.last_delay), Show(delay));
    EXPECT_EQ(r.end_status.fatal, fatal) << "#" << id;
    ++index;
    ++checked;
  }
  EXPECT_GT(checked, 100u);
  const double real_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - real_start)
          .count();
  std::printf("[ info ] %s: %zu delays checked over a simulated hour in %.1f ms real time\n",
              ToString(o.jitter), checked, real_ms);
}

INSTANTIATE_TEST_SUITE_P(AllModes, RandomHourTest,
                         ::testing::Values(ModelCase{Jitter::kNone, 1}, ModelCase{Jitter::kFull, 2},
                                           ModelCase{Jitter::kEqual, 3},
                                           ModelCase{Jitter::kDecorrelated, 4}),
                         [](const ::testing::TestParamInfo<ModelCase>& param_info) {
                           return std::string(ToString(param_info.param.jitter));
                         });

// ---- focused rules -------------------------------------------------------------------------

TEST(ConnectionPolicy, StartConnectsAtOnceAndOnlyOnce) {
  SplitMix64Random rng(1);
  ConnectionPolicy p(ExactOptions(), &rng);
  const TimePoint t0 = SimulatedClock().Now();
  EXPECT_EQ(p.state(), S::kIdle);
  EXPECT_EQ(Show(p.NextDeadline()), "none");
  EXPECT_EQ(p.status().reason, "not started");
  Actions a = p.Start(t0);
  ASSERT_EQ(a, (Actions{{Kind::kConnect, 1, ""}}));
  EXPECT_EQ(p.state(), S::kConnecting);
  EXPECT_EQ(Show(p.status().state_since), Show(t0));
  EXPECT_EQ(p.status().reason, "connecting");
  EXPECT_EQ(Show(p.NextDeadline()), Show(t0 + 10s));  // connect timeout
  EXPECT_TRUE(p.Start(t0 + 1s).empty());
  EXPECT_EQ(ToString(a[0]), "connect #1");
}

TEST(ConnectionPolicy, StopDuringBackoffCancelsAtOnce) {
  Harness h(ExactOptions());
  h.Script({Behavior::Refuse(TcpRefused()), Behavior::Refuse(TcpRefused()),
            Behavior::Refuse(TcpRefused())});
  h.Start();
  h.RunFor(kLatency + 500ms + kLatency + 1ms);  // two refusals, now waiting 1 s
  ASSERT_EQ(h.policy().state(), S::kBackingOff);
  const TimePoint retry_at = *h.policy().NextDeadline();
  EXPECT_EQ(Show(retry_at), Show(h.conn(2).connect_at + kLatency + 1s));

  h.Stop();
  EXPECT_EQ(h.policy().state(), S::kStopped);
  EXPECT_EQ(Show(h.policy().NextDeadline()), "none");  // the wait is gone: nothing to wake for
  EXPECT_EQ(Show(h.policy().status().state_since), Show(h.Now()));
  EXPECT_EQ(h.policy().status().reason, "stopped");
  EXPECT_TRUE(h.policy().OnTimer(retry_at).empty());
  EXPECT_TRUE(h.policy().OnTimer(retry_at + 1h).empty());
  EXPECT_TRUE(h.policy().Start(h.Now()).empty());
  h.RunFor(1h);
  EXPECT_EQ(h.conns().size(), 2u);  // the third attempt never happened
  EXPECT_EQ(h.policy().state(), S::kStopped);
}

TEST(ConnectionPolicy, StopWhileConnectingOrOpenIgnoresEverythingAfter) {
  for (bool open : {false, true}) {
    SplitMix64Random rng(1);
    ConnectionPolicy p(ExactOptions(), &rng);
    TimePoint t = SimulatedClock().Now();
    ASSERT_EQ(p.Start(t).size(), 1u);
    if (open) {
      EXPECT_TRUE(p.OnOpen(t + 1s, 1).empty());
    }
    p.Stop(t + 2s);
    EXPECT_EQ(p.state(), S::kStopped);
    EXPECT_EQ(Show(p.NextDeadline()), "none");
    EXPECT_TRUE(p.OnOpen(t + 3s, 1).empty());
    EXPECT_TRUE(p.OnClosed(t + 3s, 1, CloseInfo{1000, "", true}).empty());
    EXPECT_TRUE(p.OnConnectFailed(t + 3s, 1, TcpRefused()).empty());
    EXPECT_TRUE(p.OnTimer(t + 1h).empty());
    EXPECT_EQ(p.state(), S::kStopped);
  }
}

TEST(ConnectionPolicy, RttMeasuredFromLatestPingToPong) {
  SplitMix64Random rng(1);
  ConnectionPolicy p(ExactOptions(), &rng);
  TimePoint t = SimulatedClock().Now();
  ASSERT_EQ(p.Start(t).size(), 1u);
  ASSERT_TRUE(p.OnOpen(t, 1).empty());
  EXPECT_EQ(p.status().last_rtt, std::nullopt);
  p.OnPong(t + 1s, 1);  // unsolicited pong: no ping to measure from
  EXPECT_EQ(p.status().last_rtt, std::nullopt);

  ASSERT_EQ(Show(p.NextDeadline()), Show(t + 15s));
  ASSERT_EQ(p.OnTimer(t + 15s), (Actions{{Kind::kSendPing, 1, ""}}));
  p.OnPong(t + 15s + 37ms, 1);
  EXPECT_EQ(Show(p.status().last_rtt), Show(37ms));
  p.OnPong(t + 15s + 90ms, 1);  // a second pong for the same ping changes nothing
  EXPECT_EQ(Show(p.status().last_rtt), Show(37ms));

  // Data arriving between ping and pong does not disturb the measurement.
  ASSERT_EQ(p.OnTimer(t + 30s).size(), 1u);
  p.OnActivity(t + 30s + 5ms, 1);
  p.OnPong(t + 30s + 80ms, 1);
  EXPECT_EQ(Show(p.status().last_rtt), Show(80ms));
  // A pong from another (stale) connection is ignored.
  ASSERT_EQ(p.OnTimer(t + 45s).size(), 1u);
  p.OnPong(t + 45s + 1ms, 99);
  EXPECT_EQ(Show(p.status().last_rtt), Show(80ms));
}

TEST(ConnectionPolicy, ActivityResetsTheSilenceTimer) {
  SplitMix64Random rng(1);
  ConnectionPolicy p(ExactOptions(), &rng);
  TimePoint t = SimulatedClock().Now();
  ASSERT_EQ(p.Start(t).size(), 1u);
  ASSERT_TRUE(p.OnOpen(t, 1).empty());
  ASSERT_EQ(p.OnTimer(t + 15s).size(), 1u);  // ping, unanswered
  EXPECT_EQ(Show(p.NextDeadline()), Show(t + 25s));
  p.OnActivity(t + 24s, 1);                          // a data frame just in time: alive
  EXPECT_EQ(Show(p.NextDeadline()), Show(t + 30s));  // only the next ping left
  EXPECT_TRUE(p.OnTimer(t + 25s).empty());           // the old deadline, if the timer still fires
  EXPECT_EQ(p.state(), S::kOpen);
  ASSERT_EQ(p.OnTimer(t + 30s), (Actions{{Kind::kSendPing, 1, ""}}));
  EXPECT_TRUE(p.OnTimer(t + 40s - 1ns).empty());
  Actions dead = p.OnTimer(t + 40s);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].kind, Kind::kCloseDead);
  EXPECT_EQ(dead[0].conn, 1u);
  EXPECT_EQ(dead[0].reason, "heartbeat timeout: nothing received for 10 s after ping");
  EXPECT_EQ(p.state(), S::kBackingOff);
  // Alive since t + 24 s >= open + min_uptime: this was a healthy connection.
  EXPECT_EQ(p.status().attempt, 0u);
  EXPECT_EQ(Show(p.NextDeadline()), Show(t + 40s + 500ms));
}

TEST(ConnectionPolicy, TimeoutLongerThanIntervalCountsFromTheFirstUnansweredPing) {
  PolicyOptions o = ExactOptions();
  o.heartbeat_interval = 5s;
  o.heartbeat_timeout = 12s;
  SplitMix64Random rng(1);
  ConnectionPolicy p(o, &rng);
  TimePoint t = SimulatedClock().Now();
  ASSERT_EQ(p.Start(t).size(), 1u);
  ASSERT_TRUE(p.OnOpen(t, 1).empty());
  std::vector<TimePoint> pings;
  Actions dead;
  TimePoint now = t;
  for (int guard = 0; p.state() == S::kOpen && guard < 100; ++guard) {
    now = *p.NextDeadline();
    for (const Action& a : p.OnTimer(now)) {
      if (a.kind == Kind::kSendPing) pings.push_back(now);
      if (a.kind == Kind::kCloseDead) dead.push_back(a);
    }
  }
  EXPECT_EQ(Show(pings), Show((std::vector<TimePoint>{t + 5s, t + 10s, t + 15s})));
  EXPECT_EQ(Show(now), Show(t + 17s));  // 5 s + 12 s, not 15 s + 12 s
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].reason, "heartbeat timeout: nothing received for 12 s after ping");
  EXPECT_EQ(p.status().attempt, 1u);  // never proven alive: a failed attempt
}

TEST(ConnectionPolicy, HeartbeatOffMeansNoPingsAndUptimeByTime) {
  PolicyOptions o = ExactOptions();
  o.heartbeat_interval = Duration::zero();
  SplitMix64Random rng(1);
  ConnectionPolicy p(o, &rng);
  TimePoint t = SimulatedClock().Now();
  ASSERT_EQ(p.Start(t).size(), 1u);
  ASSERT_FALSE(p.OnConnectFailed(t + 1s, 1, TcpRefused()).size());
  ASSERT_EQ(p.OnTimer(t + 1500ms).size(), 1u);
  ASSERT_TRUE(p.OnOpen(t + 2s, 2).empty());
  EXPECT_EQ(p.status().attempt, 1u);
  EXPECT_EQ(Show(p.NextDeadline()), Show(t + 7s));  // min_uptime only
  EXPECT_TRUE(p.OnTimer(t + 7s).empty());
  EXPECT_EQ(p.status().attempt, 0u);
  EXPECT_EQ(Show(p.NextDeadline()), "none");  // a silent link is never declared dead
  EXPECT_TRUE(p.OnTimer(t + 10h).empty());
  EXPECT_EQ(p.state(), S::kOpen);
}

TEST(ConnectionPolicy, ConnectTimeoutIsExactAndAbortsTheAttempt) {
  SplitMix64Random rng(1);
  ConnectionPolicy p(ExactOptions(), &rng);
  TimePoint t = SimulatedClock().Now();
  ASSERT_EQ(p.Start(t).size(), 1u);
  EXPECT_TRUE(p.OnTimer(t + 10s - 1ns).empty());
  Actions a = p.OnTimer(t + 10s);
  ASSERT_EQ(a, (Actions{{Kind::kCloseDead, 1, "connect timeout: not open after 10 s"}}));
  EXPECT_EQ(p.state(), S::kBackingOff);
  EXPECT_EQ(p.conn(), 0u);
  // The abandoned connection finishes its handshake anyway: it is closed, not adopted.
  Actions late = p.OnOpen(t + 10s + 1ms, 1);
  ASSERT_EQ(late, (Actions{{Kind::kCloseDead, 1, "stale connection"}}));
  EXPECT_EQ(p.state(), S::kBackingOff);
  // The next attempt gets a new id; events for the old one stay ignored.
  ASSERT_EQ(p.OnTimer(t + 10s + 500ms), (Actions{{Kind::kConnect, 2, ""}}));
  EXPECT_TRUE(p.OnConnectFailed(t + 10s + 600ms, 1, TcpRefused()).empty());
  EXPECT_EQ(p.state(), S::kConnecting);
  EXPECT_TRUE(p.OnOpen(t + 10s + 700ms, 2).empty());
  EXPECT_EQ(p.state(), S::kOpen);
}

TEST(ConnectionPolicy, MaxAttemptsExitsAfterThatManyFailuresInARow) {
  PolicyOptions o = ExactOptions();
  o.max_attempts = 3;
  Harness h(o);
  h.Script({Behavior::Refuse(TcpRefused()), Behavior::Drop(10ms),  // 2 failures
            Behavior::Live(60s, 1000, "bye"),                      // healthy: resets the count
            Behavior::Refuse(TcpRefused()), Behavior::Drop(1s),
            Behavior::Refuse(Fail(Failure::Kind::kHandshakeStatus, "Unauthorized", 401))});
  h.Start();
  h.RunFor(24h);
  ASSERT_TRUE(h.exited());
  EXPECT_EQ(h.conns().size(), 6u);
  EXPECT_EQ(h.exit_reason(),
            "giving up after 3 failed connection attempts in a row (reconnect.max_attempts); "
            "last: handshake refused: HTTP 401 Unauthorized (fatal)");
  EXPECT_EQ(h.policy().state(), S::kFailed);
  EXPECT_EQ(Show(h.policy().NextDeadline()), "none");
  const PolicyStatus st = h.policy().status();
  EXPECT_EQ(st.reason, h.exit_reason());
  EXPECT_EQ(st.attempt, 3u);
  EXPECT_EQ(Show(st.state_since), Show(*h.conn(6).end_at));
  EXPECT_EQ(h.conn(2).end_status.attempt, 2u);
  EXPECT_EQ(h.conn(3).end_status.attempt, 0u);
  // Terminal: Stop keeps the failure visible, nothing else happens.
  h.policy().Stop(h.Now());
  EXPECT_EQ(h.policy().state(), S::kFailed);
  EXPECT_TRUE(h.policy().OnTimer(h.Now() + 1h).empty());
}

TEST(ConnectionPolicy, MaxAttemptsOnAConnectTimeoutClosesThenExits) {
  PolicyOptions o = ExactOptions();
  o.max_attempts = 1;
  SplitMix64Random rng(1);
  ConnectionPolicy p(o, &rng);
  TimePoint t = SimulatedClock().Now();
  ASSERT_EQ(p.Start(t).size(), 1u);
  Actions a = p.OnTimer(t + 10s);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0], (Action{Kind::kCloseDead, 1, "connect timeout: not open after 10 s"}));
  EXPECT_EQ(a[1].kind, Kind::kExit);
  EXPECT_EQ(a[1].reason,
            "giving up after 1 failed connection attempts in a row (reconnect.max_attempts); "
            "last: connect timeout: not open after 10 s");
  EXPECT_EQ(p.state(), S::kFailed);
}

TEST(ConnectionPolicy, FatalCloseOnlyWhenTheUpstreamSendsIt) {
  SplitMix64Random rng(1);
  ConnectionPolicy p(ExactOptions(), &rng);
  TimePoint t = SimulatedClock().Now();
  ASSERT_EQ(p.Start(t).size(), 1u);
  ASSERT_TRUE(p.OnOpen(t, 1).empty());
  // The bridge itself closing with 1008 is not the upstream's verdict.
  ASSERT_TRUE(p.OnClosed(t + 1s, 1, CloseInfo{1008, "policy", true}).empty());
  EXPECT_FALSE(p.status().fatal);
  EXPECT_EQ(p.status().reason, "closed by bridge: code 1008 \"policy\"");
  EXPECT_EQ(Show(p.status().last_delay), Show(500ms));
  ASSERT_EQ(p.OnTimer(t + 1500ms).size(), 1u);
  ASSERT_TRUE(p.OnOpen(t + 2s, 2).empty());
  ASSERT_TRUE(p.OnClosed(t + 3s, 2, CloseInfo{1008, "bad\nline", false}).empty());
  EXPECT_TRUE(p.status().fatal);
  EXPECT_EQ(p.status().reason, "closed by upstream: code 1008 \"bad line\" (fatal)");
  EXPECT_EQ(Show(p.status().last_delay), Show(30s));
  EXPECT_FALSE(p.status().ready());
}

TEST(ConnectionPolicy, SilenceBoundFromTheServerClosesAQuietLink) {
  SplitMix64Random rng(1);
  ConnectionPolicy p(ExactOptions(), &rng);  // heartbeat 15 s + 10 s
  TimePoint t = SimulatedClock().Now();
  ASSERT_EQ(p.Start(t).size(), 1u);
  ASSERT_TRUE(p.OnOpen(t, 1).empty());
  p.SetSilenceBound(t + 1s, 1, 5s);  // an Engine.IO open packet: pingInterval + pingTimeout
  EXPECT_EQ(Show(p.NextDeadline()), Show(t + 6s));  // earlier than the first ping
  p.OnActivity(t + 4s, 1);                          // the server's ping: alive
  EXPECT_EQ(Show(p.NextDeadline()), Show(t + 9s));
  EXPECT_TRUE(p.OnTimer(t + 9s - 1ns).empty());
  Actions dead = p.OnTimer(t + 9s);
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].kind, Kind::kCloseDead);
  EXPECT_EQ(dead[0].reason,
            "heartbeat timeout: nothing received for 5 s (the server's ping bound is 5 s)");
  EXPECT_EQ(p.state(), S::kBackingOff);
  // The bound belonged to that connection: the next one starts without it.
  ASSERT_EQ(p.OnTimer(t + 9s + 500ms).size(), 1u);
  ASSERT_TRUE(p.OnOpen(t + 10s, 2).empty());
  EXPECT_EQ(Show(p.NextDeadline()), Show(t + 25s));  // the first ping only
  p.SetSilenceBound(t + 10s, 1, 1s);                 // about a connection that is gone: ignored
  EXPECT_EQ(Show(p.NextDeadline()), Show(t + 25s));
}

TEST(ConnectionPolicy, AFatalLocalCloseIsFatal) {
  SplitMix64Random rng(1);
  ConnectionPolicy p(ExactOptions(), &rng);
  TimePoint t = SimulatedClock().Now();
  ASSERT_EQ(p.Start(t).size(), 1u);
  ASSERT_TRUE(p.OnOpen(t, 1).empty());
  CloseInfo close{1000, "socket.io connect error: unauthorized", true};
  close.fatal = true;
  ASSERT_TRUE(p.OnClosed(t + 1s, 1, close).empty());
  EXPECT_TRUE(p.status().fatal);
  EXPECT_EQ(p.status().reason,
            "closed by bridge: code 1000 \"socket.io connect error: unauthorized\" (fatal)");
  EXPECT_EQ(Show(p.status().last_delay), Show(30s));
}

TEST(ConnectionPolicy, ManyFailuresDoNotOverflowTheCounters) {
  PolicyOptions o = ExactOptions();
  o.backoff = {1ns, 30s};
  o.connect_timeout = Duration::zero();
  SplitMix64Random rng(1);
  ConnectionPolicy p(o, &rng);
  TimePoint t = SimulatedClock().Now();
  ASSERT_EQ(p.Start(t).size(), 1u);
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(p.OnConnectFailed(t, p.conn(), TcpRefused()).empty());
    EXPECT_LE(*p.status().last_delay, 30s);
    t = *p.NextDeadline();
    ASSERT_EQ(p.OnTimer(t).size(), 1u);
  }
  EXPECT_EQ(p.status().attempt, 200u);
  EXPECT_EQ(Show(p.status().last_delay), Show(30s));
  EXPECT_EQ(Show(p.NextDeadline()), "none");  // connect_timeout 0: no policy timeout
}

TEST(ConnectionPolicy, LateTimerNeverBurstsPings) {
  SplitMix64Random rng(1);
  ConnectionPolicy p(ExactOptions(), &rng);
  TimePoint t = SimulatedClock().Now();
  ASSERT_EQ(p.Start(t).size(), 1u);
  ASSERT_TRUE(p.OnOpen(t, 1).empty());
  p.OnActivity(t + 5s, 1);
  // The I/O thread was blocked for a minute: one ping, and the next one an interval later.
  ASSERT_EQ(p.OnTimer(t + 60s), (Actions{{Kind::kSendPing, 1, ""}}));
  EXPECT_EQ(Show(p.NextDeadline()), Show(t + 70s));  // dead deadline first
  // Blocked again past both deadlines: dead wins, no ping on a dead link.
  Actions a = p.OnTimer(t + 200s);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, Kind::kCloseDead);
  EXPECT_EQ(a[0].reason, "heartbeat timeout: nothing received for 140 s after ping");
}

TEST(ConnectionPolicy, ToStrings) {
  EXPECT_STREQ(ToString(S::kIdle), "idle");
  EXPECT_STREQ(ToString(S::kConnecting), "connecting");
  EXPECT_STREQ(ToString(S::kOpen), "open");
  EXPECT_STREQ(ToString(S::kBackingOff), "backing_off");
  EXPECT_STREQ(ToString(S::kStopped), "stopped");
  EXPECT_STREQ(ToString(S::kFailed), "failed");
  EXPECT_EQ(ToString(Action{Kind::kSendPing, 3, ""}), "ping #3");
  EXPECT_EQ(ToString(Action{Kind::kCloseDead, 3, "x"}), "close-dead #3 (x)");
  EXPECT_EQ(Fail(Failure::Kind::kTls, "certificate verify failed").ToString(),
            "TLS handshake failed: certificate verify failed");
  EXPECT_EQ(Fail(Failure::Kind::kProxy, "connection refused").ToString(),
            "proxy failed: connection refused");
  EXPECT_EQ(Fail(Failure::Kind::kAuthCommand, "exit status 1").ToString(),
            "auth command failed: exit status 1");
  EXPECT_EQ(Fail(Failure::Kind::kOther, "").ToString(), "connection failed");
  EXPECT_EQ(Fail(Failure::Kind::kHandshakeStatus, "", 401).ToString(),
            "handshake refused: HTTP 401");
  EXPECT_TRUE(Fail(Failure::Kind::kHandshakeStatus, "", 403).IsFatal());
  EXPECT_TRUE(Fail(Failure::Kind::kProxy, "", 407).IsFatal());
  EXPECT_FALSE(Fail(Failure::Kind::kHandshakeStatus, "", 407).IsFatal());
  EXPECT_FALSE(Fail(Failure::Kind::kHandshakeStatus, "", 429).IsFatal());
  EXPECT_STREQ(ToString(Failure::Kind::kHandshakeStatus), "handshake_status");
}

// ---- options from the configuration --------------------------------------------------------

TEST(PolicyOptions, FromDefaultConfig) {
  StatusOr<PolicyOptions> o = PolicyOptions::FromConfig(Config{});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->jitter, Jitter::kFull);
  EXPECT_EQ(Show(o->backoff.base), Show(Duration(500ms)));
  EXPECT_EQ(Show(o->backoff.cap), Show(Duration(30s)));
  EXPECT_EQ(Show(o->min_uptime), Show(Duration(5s)));
  EXPECT_EQ(o->max_attempts, 0u);
  EXPECT_EQ(o->fatal_close_codes, (std::vector<int>{1008, 4001, 4003}));
  EXPECT_EQ(Show(o->connect_timeout), Show(Duration(10s)));
  EXPECT_EQ(Show(o->heartbeat_interval), Show(Duration(15s)));
  EXPECT_EQ(Show(o->heartbeat_timeout), Show(Duration(10s)));
}

TEST(PolicyOptions, BadValuesNameTheKey) {
  struct Case {
    std::function<void(Config&)> set;
    std::string error;
  };
  const std::vector<Case> cases = {
      {[](Config& c) { c.reconnect.jitter = "fast"; },
       "reconnect.jitter: must be one of full, equal, decorrelated, none (got \"fast\")"},
      {[](Config& c) { c.reconnect.base_delay_ms = -1; },
       "reconnect.base_delay_ms: must be >= 0 (got -1)"},
      {[](Config& c) { c.reconnect.max_delay_ms = 100; },
       "reconnect.max_delay_ms: must be >= reconnect.base_delay_ms (500) (got 100)"},
      {[](Config& c) { c.reconnect.min_uptime_ms = -5; },
       "reconnect.min_uptime_ms: must be >= 0 (got -5)"},
      {[](Config& c) { c.reconnect.max_attempts = -1; },
       "reconnect.max_attempts: must be between 0 and 4294967295 (got -1)"},
      {[](Config& c) {
         c.reconnect.fatal_close_codes = {4001, 99};
       },
       "reconnect.fatal_close_codes: close codes are 1000..4999 (got 99)"},
      {[](Config& c) { c.upstream.connect_timeout_ms = -1; },
       "upstream.connect_timeout_ms: must be >= 0 (got -1)"},
      {[](Config& c) { c.heartbeat.interval_ms = -1; },
       "heartbeat.interval_ms: must be >= 0 (got -1)"},
      {[](Config& c) { c.heartbeat.timeout_ms = 0; },
       "heartbeat.timeout_ms: must be > 0 when heartbeat.interval_ms is set (got 0)"},
  };
  for (const Case& c : cases) {
    Config config;
    c.set(config);
    StatusOr<PolicyOptions> o = PolicyOptions::FromConfig(config);
    ASSERT_FALSE(o.ok()) << c.error;
    EXPECT_EQ(o.status().code(), Status::Code::kInvalidArgument);
    EXPECT_EQ(o.status().message(), c.error);
  }
  Config off;
  off.heartbeat.interval_ms = 0;
  off.heartbeat.timeout_ms = 0;  // irrelevant with the heartbeat off
  EXPECT_TRUE(PolicyOptions::FromConfig(off).ok());
}

}  // namespace
}  // namespace wsbridge
