// wsbridge-soak: the crash loop and the memory bound of issue 7 (`make soak`, not `make test`).
//
// Crash loop (G1-G4): the real daemon under simultaneous inbound load (wsbridge-upstream at
// --rate msg/s) and outbound load (--producers threads, each a DEALER sending ids p<k>-<n> one
// at a time, acks on, an unanswered request retried with the same id on a fresh socket), with
// wsbridge-faultproxy between the bridge and the upstream switched between pass, reset,
// blackhole and latency on a seeded schedule (driven through its control port), and the bridge
// SIGKILLed at seeded random points --kills times, restarted each time on the same database and
// the same ZeroMQ endpoints. A GapFillingSubscriber (client/) follows the whole run in a thread.
// At the end (upstream --count journaled, outbox drained) it checks and prints:
//   - journal = upstream sequence: seq 1..count, upstream_seq == seq, each once, in order
//   - every ACCEPTED outbound id is in the upstream's --log-received file, per producer in
//     acceptance order, and nothing else is there
//   - the gap-filling subscriber delivered seq 1..count exactly once, in order, one epoch
//   - peak RSS (VmHWM / VmRSS) of every incarnation of the bridge
// Memory bound (G7): RSS of the bridge while it accepts a 1 000 000-message outbox with the
// upstream down and while it drains it; and while ~200 000 msg/s flow in to a SUB that never
// reads.
//
// Everything derives from one seed (--seed / SOAK_SEED), printed first: rerun with it to replay
// the same schedule of faults and kills (timing on a real machine still varies).
// Exit status: 0 when every check holds, 1 on any violation, 2 on bad usage or setup failure.
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdarg>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "client/gap_filling_subscriber.h"
#include "integration/harness.h"
#include "storage/store.h"
#include "wsbridge.pb.h"

namespace wsbridge::soak {
namespace {

using namespace std::chrono_literals;
using testing::Bin;
using testing::Child;
using testing::FaultProxyCommand;
using testing::FreePort;
using testing::ReadFileOrEmpty;
using testing::WaitFor;
using Clock = std::chrono::steady_clock;

constexpr double kMiB = 1024.0 * 1024.0;

struct Config {
  uint64_t seed = 0;
  int kills = 100;
  double rate = 5000;       // inbound msg/s
  uint64_t count = 0;       // 0: derived from kills and rate
  int producers = 4;
  double producer_rate = 250;  // outbound msg/s per producer
  std::string mode = "all";   // all | crash | memory
  uint64_t outbox_messages = 1000000;
  double flood_rate = 200000;
  int flood_seconds = 20;
  bool flood_sub = true;      // false: control run without the stalled SUB
  size_t send_window = 500;   // requests in flight per DEALER in the outbox flood
  double rss_limit_mib = 64;
  std::string dir;
};

std::atomic<int> g_violations{0};
std::mutex g_print_mu;

void Say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Say(const char* fmt, ...) {
  std::lock_guard<std::mutex> lock(g_print_mu);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stdout, fmt, ap);
  va_end(ap);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void Violation(const std::string& what) {
  if (g_violations.fetch_add(1) < 50) Say("VIOLATION: %s", what.c_str());
}

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// VmRSS and VmHWM of a process, in bytes (0 when unreadable).
struct Rss {
  uint64_t rss = 0, hwm = 0;
};
Rss ReadRss(pid_t pid) {
  Rss r;
  if (pid <= 0) return r;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    unsigned long long kb = 0;
    if (std::sscanf(line.c_str(), "VmRSS: %llu kB", &kb) == 1) r.rss = kb * 1024;
    if (std::sscanf(line.c_str(), "VmHWM: %llu kB", &kb) == 1) r.hwm = kb * 1024;
  }
  return r;
}

// Samples the RSS of whatever pid is set, every 20 ms, keeping the maxima.
class RssSampler {
 public:
  RssSampler() : thread_([this] { Run(); }) {}
  ~RssSampler() {
    stop_ = true;
    thread_.join();
  }
  void Watch(pid_t pid) { pid_ = pid; }
  void ResetPhase() {
    std::lock_guard<std::mutex> l(mu_);
    phase_ = Rss();
  }
  Rss phase() {
    std::lock_guard<std::mutex> l(mu_);
    return phase_;
  }
  Rss total() {
    std::lock_guard<std::mutex> l(mu_);
    return total_;
  }
  // Also records a sample taken by the caller (e.g. just before a SIGKILL).
  void Note(const Rss& r) {
    std::lock_guard<std::mutex> l(mu_);
    for (Rss* m : {&phase_, &total_}) {
      m->rss = std::max(m->rss, r.rss);
      m->hwm = std::max(m->hwm, r.hwm);
    }
  }

 private:
  void Run() {
    while (!stop_) {
      Rss r = ReadRss(pid_.load());
      if (r.rss) Note(r);
      std::this_thread::sleep_for(20ms);
    }
  }
  std::atomic<bool> stop_{false};
  std::atomic<pid_t> pid_{-1};
  std::mutex mu_;
  Rss phase_, total_;
  std::thread thread_;
};

std::string Endpoint(int port) { return "tcp://127.0.0.1:" + std::to_string(port); }
std::string WsUrl(int port) { return "ws://127.0.0.1:" + std::to_string(port) + "/feed"; }

// The bridge on fixed endpoints (the same for every incarnation, so that clients reconnect).
struct BridgePorts {
  int pub = 0, send = 0, replay = 0;
  void Pick() {
    pub = FreePort();
    do send = FreePort(); while (send == pub);
    do replay = FreePort(); while (replay == pub || replay == send);
  }
};

Child StartBridgeChild(const std::string& dir, const std::string& upstream_url,
                       const std::string& db, const BridgePorts& ports,
                       const std::vector<std::string>& extra, const std::string& tag) {
  std::vector<std::string> argv = {Bin("wsbridge"),
                                   "--upstream=" + upstream_url,
                                   "--db=" + db,
                                   "--pub=" + Endpoint(ports.pub),
                                   "--send=" + Endpoint(ports.send),
                                   "--replay=" + Endpoint(ports.replay),
                                   "--set=http.listen=",
                                   "--log-level=info",
                                   "--set=protocol.ack_match=type=ack",
                                   "--set=reconnect.jitter=full",
                                   "--set=reconnect.base_delay_ms=20",
                                   "--set=reconnect.max_delay_ms=300",
                                   "--set=reconnect.min_uptime_ms=500",
                                   "--set=heartbeat.interval_ms=300",
                                   "--set=heartbeat.timeout_ms=700",
                                   "--set=upstream.connect_timeout_ms=2000"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return Child::Start(argv, dir, tag);
}

// Waits until this incarnation logged its replay endpoint (the last of the three), reading the
// log from `offset` on. False when it exited or `timeout` passed.
bool WaitBridgeUp(Child& c, const std::string& err_path, size_t offset,
                  std::chrono::milliseconds timeout) {
  return WaitFor(
      [&] {
        std::ifstream in(err_path, std::ios::binary);
        in.seekg(static_cast<std::streamoff>(offset));
        std::string line;
        while (std::getline(in, line))
          if (line.find("zmq: replay on") != std::string::npos) return true;
        return c.Exited();
      },
      timeout);
}

size_t FileSize(const std::string& path) {
  std::error_code ec;
  auto s = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<size_t>(s);
}

// ---- outbound producers -------------------------------------------------------------------------

struct ProducerStats {
  std::vector<uint64_t> accepted;  // n, in acceptance order
  uint64_t requests = 0, retries = 0, duplicates = 0, full = 0, storage = 0, stale = 0;
};

std::unique_ptr<zmq::socket_t> NewDealer(zmq::context_t& ctx, const std::string& ep) {
  auto s = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::dealer);
  s->set(zmq::sockopt::linger, 0);
  s->connect(ep);
  return s;
}

// One message at a time: id p<k>-<n> is sent until it is answered ACCEPTED or DUPLICATE (an
// earlier attempt was accepted, its reply lost with a killed bridge); only then comes n+1. So
// acceptance order is n order. Unanswered for a second: a fresh socket and the same id again.
void Producer(zmq::context_t& ctx, int k, const std::string& ep, double rate,
              std::atomic<bool>& stop, ProducerStats* st) {
  auto sock = NewDealer(ctx, ep);
  const auto start = Clock::now();
  std::string pad(64, 'x');
  for (uint64_t n = 1;; ++n) {
    if (stop) break;
    // Pace to `rate` per second.
    auto due = start + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(double(n - 1) / rate));
    while (Clock::now() < due && !stop) std::this_thread::sleep_for(2ms);
    if (stop) break;
    std::string id = "p" + std::to_string(k) + "-" + std::to_string(n);
    v1::SendRequest req;
    req.set_id(id);
    req.set_payload("{\"id\":\"" + id + "\",\"producer\":" + std::to_string(k) +
                    ",\"n\":" + std::to_string(n) + ",\"pad\":\"" + pad + "\"}");
    std::string bytes = req.SerializeAsString();
    bool done = false;
    while (!done) {  // never gives up: at the end every id sent has an answer
      st->requests++;
      sock->send(zmq::buffer(bytes), zmq::send_flags::dontwait);
      auto deadline = Clock::now() + 1000ms;
      bool answered = false;
      while (!answered && Clock::now() < deadline) {
        zmq::pollitem_t item{static_cast<void*>(*sock), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, 100ms);
        if (!(item.revents & ZMQ_POLLIN)) continue;
        zmq::message_t msg;
        if (!sock->recv(msg, zmq::recv_flags::dontwait)) continue;
        v1::SendReply rep;
        if (!rep.ParseFromArray(msg.data(), static_cast<int>(msg.size())) || rep.id() != id) {
          st->stale++;
          continue;
        }
        answered = true;
        switch (rep.status()) {
          case v1::ACCEPTED:
            done = true;
            break;
          case v1::DUPLICATE:
            st->duplicates++;
            done = true;
            break;
          case v1::REJECTED_FULL:
            st->full++;
            std::this_thread::sleep_for(50ms);
            break;
          case v1::REJECTED_STORAGE:
            st->storage++;
            std::this_thread::sleep_for(50ms);
            break;
          default:
            Violation("producer " + std::to_string(k) + ": " + id + " answered status " +
                      std::to_string(rep.status()) + " " + rep.error());
            done = true;  // not accepted; do not expect it upstream
            break;
        }
        if (done && (rep.status() == v1::ACCEPTED || rep.status() == v1::DUPLICATE))
          st->accepted.push_back(n);
      }
      if (!answered) {
        st->retries++;
        sock = NewDealer(ctx, ep);
      }
    }
  }
}

// ---- fault schedule ---------------------------------------------------------------------------

struct FaultStats {
  std::map<std::string, int> switches;
};

void FaultSchedule(int control_port, uint64_t seed, std::atomic<bool>& stop, FaultStats* st) {
  std::mt19937_64 rng(seed);
  while (!stop) {
    int r = static_cast<int>(rng() % 100);
    std::string cmd;
    int ms = 0;
    if (r < 45) {
      cmd = "pass";
      ms = 300 + static_cast<int>(rng() % 2000);
    } else if (r < 65) {
      cmd = "latency " + std::to_string(5 + rng() % 200);
      ms = 200 + static_cast<int>(rng() % 1500);
    } else if (r < 82) {
      cmd = "reset";
      ms = 50 + static_cast<int>(rng() % 700);
    } else {
      cmd = "blackhole";
      ms = 200 + static_cast<int>(rng() % 2500);
    }
    std::string answer = FaultProxyCommand(control_port, cmd);
    if (answer != "ok") Violation("fault proxy: \"" + cmd + "\" answered \"" + answer + "\"");
    st->switches[cmd.substr(0, cmd.find(' '))]++;
    auto until = Clock::now() + std::chrono::milliseconds(ms);
    while (!stop && Clock::now() < until) std::this_thread::sleep_for(10ms);
  }
  FaultProxyCommand(control_port, "pass");
}

// ---- gap-filling subscriber -------------------------------------------------------------------

struct SubState {
  std::atomic<uint64_t> delivered{0};
  std::atomic<uint64_t> last_seq{0};
  uint64_t out_of_order = 0, bad_upstream_seq = 0, epoch_changes = 0, lost = 0;
  uint64_t epoch = 0, warnings = 0;
  client::GapFillingStats stats;
};

void Subscribe(zmq::context_t& ctx, const BridgePorts& ports, std::atomic<bool>& stop,
               SubState* st) {
  client::GapFillingOptions o;
  o.pub_endpoint = Endpoint(ports.pub);
  o.replay_endpoint = Endpoint(ports.replay);
  o.start_seq = 1;
  o.replay_timeout = 2000ms;
  o.idle_check = 500ms;
  client::GapFillingHandlers h;
  h.on_message = [st](const v1::Envelope& env) {
    uint64_t expect = st->last_seq.load() + 1;
    if (env.seq() != expect) {
      if (st->out_of_order++ < 10)
        Violation("subscriber: got seq " + std::to_string(env.seq()) + ", expected " +
                  std::to_string(expect));
    }
    if (env.upstream_seq() != env.seq()) {
      if (st->bad_upstream_seq++ < 10)
        Violation("subscriber: seq " + std::to_string(env.seq()) + " carries upstream_seq " +
                  std::to_string(env.upstream_seq()));
    }
    st->epoch = env.epoch();
    st->last_seq = env.seq();
    st->delivered++;
  };
  h.on_epoch_change = [st](uint64_t a, uint64_t b) {
    st->epoch_changes++;
    Violation("subscriber: epoch changed " + std::to_string(a) + " -> " + std::to_string(b));
  };
  h.on_lost = [st](uint64_t a, uint64_t b) {
    st->lost += b - a + 1;
    Violation("subscriber: seqs " + std::to_string(a) + ".." + std::to_string(b) +
              " reported lost (trimmed)");
  };
  h.on_warning = [st](const std::string& what) {
    if (st->warnings++ < 5) Say("  subscriber warning: %s", what.c_str());
  };
  auto sub = client::GapFillingSubscriber::Create(&ctx, o, h);
  if (!sub.ok()) {
    Violation("subscriber: " + sub.status().ToString());
    return;
  }
  while (!stop) {
    Status s = (*sub)->Poll(100ms);
    if (!s.ok()) {
      Violation("subscriber: " + s.ToString());
      break;
    }
  }
  st->stats = (*sub)->stats();
}

// ---- final checks -----------------------------------------------------------------------------

std::unique_ptr<Store> OpenReadOnly(const std::string& db) {
  StoreOptions so;
  so.path = db;
  so.read_only = true;
  auto s = Store::Open(so);
  if (!s.ok()) return nullptr;
  return std::move(*s);
}

// One long-lived read-only Store per file, main thread only. Reopened after an error. Callers poll it at most every 100 ms.
Store* Watch(const std::string& db) {
  static std::map<std::string, std::unique_ptr<Store>> open;
  auto& st = open[db];
  if (!st) st = OpenReadOnly(db);
  return st.get();
}

uint64_t JournalLast(const std::string& db) {
  std::this_thread::sleep_for(50ms);  // WaitFor polls every 5 ms; this is plenty
  Store* st = Watch(db);
  if (!st) return 0;
  auto b = st->Bounds();
  return b.ok() ? b->last_seq : 0;
}

uint64_t OutboxDepth(const std::string& db) {
  std::this_thread::sleep_for(100ms);
  Store* st = Watch(db);
  if (!st) return UINT64_MAX;
  auto o = st->Outbox();
  return o.ok() ? o->depth : UINT64_MAX;
}

// Journal = upstream sequence 1..count, each once, in order; the file sound after all the
// kills (Store::Verify: integrity_check and the store's invariants, the cursor's included).
void CheckJournal(const std::string& db, uint64_t count, uint64_t* rows_out) {
  auto st = OpenReadOnly(db);
  if (!st) {
    Violation("journal: cannot open " + db + " read-only");
    return;
  }
  auto problems = st->Verify();
  if (!problems.ok()) Violation("journal: verify: " + problems.status().ToString());
  if (problems.ok()) {
    for (const std::string& p : *problems) Violation("journal: damaged: " + p);
  }
  uint64_t expect = 1, rows = 0, bad = 0;
  std::vector<JournalRow> page;
  for (;;) {
    page.clear();
    Status s = st->ReadJournal(expect, 0, "", 10000, &page);
    if (!s.ok()) {
      Violation("journal: " + s.ToString());
      return;
    }
    if (page.empty()) break;
    for (const auto& r : page) {
      if ((r.seq != expect || r.msg.upstream_seq != expect) && bad++ < 10)
        Violation("journal: row seq " + std::to_string(r.seq) + " upstream_seq " +
                  std::to_string(r.msg.upstream_seq) + ", expected both " +
                  std::to_string(expect));
      expect = r.seq + 1;
      rows++;
    }
  }
  *rows_out = rows;
  if (rows != count)
    Violation("journal: " + std::to_string(rows) + " rows, upstream produced " +
              std::to_string(count));
  Cursor c = st->cursor();
  if (c.last_upstream_seq != count || c.last_seq != count)
    Violation("journal: cursor last_upstream_seq " + std::to_string(c.last_upstream_seq) +
              " last_seq " + std::to_string(c.last_seq) + ", expected " + std::to_string(count));
}

// The upstream's --log-received lines for producer ids: per producer the n values in order.
std::map<int, std::vector<uint64_t>> ReadReceived(const std::string& path, uint64_t* lines,
                                                  uint64_t* foreign) {
  std::map<int, std::vector<uint64_t>> out;
  std::ifstream in(path);
  std::string line;
  *lines = 0;
  *foreign = 0;
  while (std::getline(in, line)) {
    (*lines)++;
    int k = 0;
    unsigned long long n = 0;
    auto pos = line.find("\"id\":\"p");
    if (pos == std::string::npos ||
        std::sscanf(line.c_str() + pos, "\"id\":\"p%d-%llu\"", &k, &n) != 2) {
      (*foreign)++;
      continue;
    }
    out[k].push_back(n);
  }
  return out;
}

// ---- crash loop -------------------------------------------------------------------------------

int CrashLoop(const Config& cfg) {
  const std::string dir = cfg.dir + "/crash";
  std::filesystem::create_directories(dir);
  const std::string db = dir + "/wsbridge.db";
  const std::string received = dir + "/received.log";
  std::mt19937_64 rng(cfg.seed);
  const uint64_t fault_seed = rng();

  // Kill points: 20% early (0-300 ms after the spawn: during start-up and the first connect),
  // 80% 0.3-2.2 s after it came up. The upstream's --count is what the run's length produces.
  std::vector<int> kill_ms(static_cast<size_t>(cfg.kills));
  std::vector<bool> kill_early(kill_ms.size());
  double total_ms = 0;
  for (size_t i = 0; i < kill_ms.size(); ++i) {
    kill_early[i] = rng() % 100 < 20;
    kill_ms[i] = kill_early[i] ? static_cast<int>(rng() % 300)
                               : 300 + static_cast<int>(rng() % 1900);
    total_ms += kill_ms[i] + (kill_early[i] ? 0 : 120);
  }
  const uint64_t count =
      cfg.count ? cfg.count : static_cast<uint64_t>(cfg.rate * (total_ms / 1000.0 + 5.0));

  Say("== crash loop: %d kills, inbound %.0f msg/s x %" PRIu64 " (about %.0f s), %d producers x "
      "%.0f msg/s, fault seed %" PRIu64,
      cfg.kills, cfg.rate, count, count / cfg.rate, cfg.producers, cfg.producer_rate, fault_seed);

  int up_port = 0;
  Child upstream = testing::StartUpstream(
      dir,
      {"--rate=" + std::to_string(static_cast<uint64_t>(cfg.rate)),
       "--count=" + std::to_string(count), "--history=" + std::to_string(count + 10),
       "--log-received=" + received, "--quiet"},
      &up_port);
  if (up_port == 0) {
    Say("setup: upstream did not start: %s", upstream.Stderr().c_str());
    return 2;
  }
  testing::FaultProxy proxy = testing::StartFaultProxy(dir, up_port, "pass");
  if (proxy.port == 0) {
    Say("setup: fault proxy did not start: %s", proxy.child.Stderr().c_str());
    return 2;
  }
  BridgePorts ports;
  ports.Pick();
  const std::string url = WsUrl(proxy.port);
  const std::vector<std::string> extra = {"--set=journal.max_rows=100000000",
                                          "--set=journal.max_age_s=100000000"};
  const std::string err_path = dir + "/bridge.err";

  zmq::context_t ctx;
  RssSampler sampler;
  std::atomic<bool> stop_faults{false}, stop_producers{false}, stop_sub{false};
  FaultStats fstats;
  std::thread faults(FaultSchedule, proxy.control_port, fault_seed, std::ref(stop_faults),
                     &fstats);
  SubState sub;
  std::thread subscriber(Subscribe, std::ref(ctx), std::cref(ports), std::ref(stop_sub), &sub);
  std::vector<ProducerStats> pstats(static_cast<size_t>(cfg.producers));
  std::vector<std::thread> producers;
  for (int k = 0; k < cfg.producers; ++k)
    producers.emplace_back(Producer, std::ref(ctx), k, Endpoint(ports.send), cfg.producer_rate,
                           std::ref(stop_producers), &pstats[static_cast<size_t>(k)]);

  const auto t0 = Clock::now();
  int kills = 0, failed_starts = 0;
  uint64_t peak_hwm = 0, peak_rss = 0;
  Child bridge;
  for (int i = 0; i <= cfg.kills; ++i) {
    size_t offset = FileSize(err_path);
    bridge = StartBridgeChild(dir, url, db, ports, extra, "bridge");
    sampler.Watch(bridge.pid());
    if (i == cfg.kills) break;  // the last incarnation runs to the end
    if (kill_early[static_cast<size_t>(i)]) {
      std::this_thread::sleep_for(std::chrono::milliseconds(kill_ms[static_cast<size_t>(i)]));
    } else {
      if (!WaitBridgeUp(bridge, err_path, offset, 30s) || bridge.Exited()) {
        failed_starts++;
        Violation("bridge incarnation " + std::to_string(i) + " did not come up; log tail: " +
                  ReadFileOrEmpty(err_path).substr(offset).substr(0, 2000));
        continue;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(kill_ms[static_cast<size_t>(i)]));
    }
    if (bridge.Exited()) {
      failed_starts++;
      Violation("bridge incarnation " + std::to_string(i) + " exited by itself; log: " +
                ReadFileOrEmpty(err_path).substr(offset).substr(0, 2000));
      continue;
    }
    Rss r = ReadRss(bridge.pid());
    sampler.Note(r);
    bridge.Kill(SIGKILL);
    kills++;
    if (kills % 10 == 0)
      Say("  %3d kills, %.0f s, journal at %" PRIu64 " of %" PRIu64 ", subscriber at %" PRIu64,
          kills, Seconds(t0), JournalLast(db), count, sub.last_seq.load());
  }
  const double kill_phase_s = Seconds(t0);
  stop_faults = true;
  faults.join();  // leaves the proxy in pass
  if (!WaitBridgeUp(bridge, err_path, 0, 30s)) Violation("final bridge did not come up");

  // Drain: every upstream message journaled, then the producers stop (each finishes the id it
  // holds), the outbox empties, and the subscriber catches up.
  const double upstream_left_s = std::max(0.0, count / cfg.rate - Seconds(t0));
  bool journaled = WaitFor([&] { return JournalLast(db) >= count; },
                           std::chrono::milliseconds(static_cast<int64_t>(
                               (upstream_left_s + 120) * 1000)));
  if (!journaled)
    Violation("journal reached only " + std::to_string(JournalLast(db)) + " of " +
              std::to_string(count));
  stop_producers = true;
  for (auto& t : producers) t.join();
  bool drained = WaitFor([&] { return OutboxDepth(db) == 0; }, 120s);
  if (!drained) Violation("outbox not drained: depth " + std::to_string(OutboxDepth(db)));
  uint64_t accepted = 0;
  for (auto& p : pstats) accepted += p.accepted.size();
  uint64_t log_lines = 0, foreign = 0;
  WaitFor(
      [&] {
        std::this_thread::sleep_for(200ms);
        ReadReceived(received, &log_lines, &foreign);
        return log_lines >= accepted;
      },
      30s);
  bool caught_up = WaitFor(
      [&] {
        std::this_thread::sleep_for(50ms);
        return sub.last_seq.load() >= count;
      },
      120s);
  if (!caught_up)
    Violation("subscriber reached only seq " + std::to_string(sub.last_seq.load()) + " of " +
              std::to_string(count));
  stop_sub = true;
  subscriber.join();
  Rss final_rss = ReadRss(bridge.pid());
  sampler.Note(final_rss);
  int status = bridge.Kill(SIGTERM);
  const double total_s = Seconds(t0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    Violation("final bridge: SIGTERM exit status " + std::to_string(status));
  peak_hwm = sampler.total().hwm;
  peak_rss = sampler.total().rss;

  // Checks.
  uint64_t rows = 0;
  CheckJournal(db, count, &rows);
  auto got = ReadReceived(received, &log_lines, &foreign);
  uint64_t out_missing = 0, out_disorder = 0, out_extra = 0;
  for (int k = 0; k < cfg.producers; ++k) {
    const auto& acc = pstats[static_cast<size_t>(k)].accepted;
    const auto& seen = got[k];
    // Accepted ids are n = 1..acc.size() in this order (one at a time per producer).
    for (size_t i = 0; i < acc.size(); ++i)
      if (acc[i] != i + 1) Violation("producer bookkeeping: accepted n out of order");
    std::vector<uint64_t> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < seen.size(); ++i) {
      if (i > 0 && seen[i] <= seen[i - 1]) {
        if (out_disorder++ < 10)
          Violation("upstream got p" + std::to_string(k) + "-" + std::to_string(seen[i]) +
                    " after p" + std::to_string(k) + "-" + std::to_string(seen[i - 1]));
      }
    }
    for (uint64_t n = 1; n <= acc.size(); ++n)
      if (!std::binary_search(sorted.begin(), sorted.end(), n) && out_missing++ < 10)
        Violation("accepted id p" + std::to_string(k) + "-" + std::to_string(n) +
                  " never reached the upstream");
    for (uint64_t n : sorted)
      if (n > acc.size() && out_extra++ < 10)
        Violation("upstream got p" + std::to_string(k) + "-" + std::to_string(n) +
                  " which was never answered ACCEPTED");
  }
  if (foreign) Violation(std::to_string(foreign) + " unexpected lines in the received log");
  uint64_t sub_dups = sub.stats.duplicates;  // resolved inside the library, never delivered
  uint64_t in_lost = count > rows ? count - rows : 0;
  uint64_t in_dup = sub.out_of_order;  // a repeat shows as an out-of-order seq
  if (sub.delivered != count)
    Violation("subscriber delivered " + std::to_string(sub.delivered.load()) + " messages, " +
              std::to_string(count) + " expected");

  uint64_t requests = 0, retries = 0, dups = 0, full = 0, storage = 0;
  for (auto& p : pstats) {
    requests += p.requests;
    retries += p.retries;
    dups += p.duplicates;
    full += p.full;
    storage += p.storage;
  }
  std::string faults_text;
  for (auto& [k, v] : fstats.switches) faults_text += k + "=" + std::to_string(v) + " ";
  Say("== crash loop results (seed %" PRIu64 ")", cfg.seed);
  Say("  duration            %.0f s (kill phase %.0f s)", total_s, kill_phase_s);
  Say("  kills               %d SIGKILLs (+%d incarnations that failed to start), %d "
      "incarnations",
      kills, failed_starts, kills + failed_starts + 1);
  Say("  fault switches      %s", faults_text.c_str());
  Say("  inbound             %" PRIu64 " produced by the upstream, %" PRIu64
      " journaled (seq 1..%" PRIu64 ", upstream_seq == seq)",
      count, rows, rows);
  Say("  subscriber          %" PRIu64 " delivered in order, epoch %016" PRIx64 " (%" PRIu64
      " live, %" PRIu64 " replayed, %" PRIu64 " gaps filled, %" PRIu64
      " duplicates dropped by the library, %" PRIu64 " replay requests, %" PRIu64
      " replay timeouts, %" PRIu64 " hold-buffer overflows, %" PRIu64 " warnings)",
      sub.delivered.load(), sub.epoch, sub.stats.live, sub.stats.replayed, sub.stats.gaps,
      sub_dups, sub.stats.replay_requests, sub.stats.replay_timeouts,
      sub.stats.buffer_overflows, sub.warnings);
  Say("  outbound            %" PRIu64 " ACCEPTED (%" PRIu64 " of them answered DUPLICATE on a "
      "retry), %" PRIu64 " requests, %" PRIu64 " unanswered retries, %" PRIu64
      " REJECTED_FULL, %" PRIu64 " REJECTED_STORAGE; upstream logged %" PRIu64 " ids",
      accepted, dups, requests, retries, full, storage, log_lines);
  Say("  lost                inbound %" PRIu64 ", subscriber %" PRIu64 ", outbound %" PRIu64,
      in_lost, count - std::min<uint64_t>(count, sub.delivered.load()), out_missing);
  Say("  duplicated          journal/subscriber %" PRIu64 ", outbound order violations %" PRIu64
      ", outbound never-accepted %" PRIu64,
      in_dup, out_disorder, out_extra);
  Say("  peak RSS (bridge)   VmHWM %.1f MiB, VmRSS %.1f MiB (max over %d incarnations)",
      peak_hwm / kMiB, peak_rss / kMiB, kills + failed_starts + 1);
  Say("  logs                %s", dir.c_str());
  return 0;
}

// ---- memory bound -----------------------------------------------------------------------------

// Accepts `total` messages on `senders` pipelined DEALERs (window each), waiting out
// REJECTED_FULL. Returns how many were ACCEPTED.
uint64_t Flood(zmq::context_t& ctx, const std::string& ep, uint64_t total, int senders,
               size_t window) {
  std::atomic<uint64_t> accepted{0}, next{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < senders; ++k) {
    threads.emplace_back([&, k] {
      auto s = NewDealer(ctx, ep);
      size_t in_flight = 0;
      std::string pad(48, 'y');
      bool out = false;
      auto last_reply = Clock::now();
      while (true) {
        while (!out && in_flight < window) {
          uint64_t n = next.fetch_add(1);
          if (n >= total) {
            out = true;
            break;
          }
          std::string id = "m" + std::to_string(k) + "-" + std::to_string(n);
          v1::SendRequest req;
          req.set_id(id);
          req.set_payload("{\"id\":\"" + id + "\",\"pad\":\"" + pad + "\"}");
          s->send(zmq::buffer(req.SerializeAsString()), zmq::send_flags::none);
          in_flight++;
        }
        if (out && in_flight == 0) break;
        zmq::pollitem_t item{static_cast<void*>(*s), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, 200ms);
        if (!(item.revents & ZMQ_POLLIN)) {
          if (Clock::now() - last_reply > 30s) {
            Violation("memory: send endpoint silent for 30 s");
            break;
          }
          continue;
        }
        zmq::message_t m;
        while (s->recv(m, zmq::recv_flags::dontwait)) {
          last_reply = Clock::now();
          in_flight--;
          v1::SendReply rep;
          rep.ParseFromArray(m.data(), static_cast<int>(m.size()));
          if (rep.status() == v1::ACCEPTED) {
            accepted++;
          } else {
            Violation("memory: " + rep.id() + " answered status " +
                      std::to_string(rep.status()) + " " + rep.error());
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  return accepted;
}

int MemoryBound(const Config& cfg) {
  const std::string dir = cfg.dir + "/memory";
  std::filesystem::create_directories(dir);
  zmq::context_t ctx;
  RssSampler sampler;
  const double limit = cfg.rss_limit_mib;
  auto check = [&](const char* what, const Rss& r) {
    if (r.rss / kMiB > limit)
      Violation(std::string("memory: ") + what + ": VmRSS " + std::to_string(r.rss / kMiB) +
                " MiB > " + std::to_string(limit) + " MiB");
  };

  // (a) A 1 000 000-message outbox: accepted with the upstream down, then drained.
  if (cfg.mode != "flood") {
    const std::string db = dir + "/outbox.db";
    BridgePorts ports;
    ports.Pick();
    const int up_port = FreePort();  // nothing listens there yet
    Say("== memory bound (a): %" PRIu64 "-message outbox, upstream down", cfg.outbox_messages);
    Child bridge = StartBridgeChild(
        dir, WsUrl(up_port), db, ports,
        {"--set=storage.outbox_max_messages=" + std::to_string(cfg.outbox_messages + 1000),
         "--set=reconnect.max_delay_ms=200"},
        "bridge-outbox");
    if (!WaitBridgeUp(bridge, dir + "/bridge-outbox.err", 0, 30s)) {
      Say("setup: bridge did not start: %s", bridge.Stderr().c_str());
      return 2;
    }
    Rss base = ReadRss(bridge.pid());
    sampler.Watch(bridge.pid());
    sampler.ResetPhase();
    auto t = Clock::now();
    uint64_t accepted = Flood(ctx, Endpoint(ports.send), cfg.outbox_messages, 4, cfg.send_window);
    double accept_s = Seconds(t);
    Rss accepting = sampler.phase();
    Rss after_accept = ReadRss(bridge.pid());
    uint64_t depth = OutboxDepth(db);
    Say("  accepted            %" PRIu64 " in %.1f s (%.0f msg/s), outbox depth %" PRIu64,
        accepted, accept_s, accepted / accept_s, depth);
    Say("  RSS accepting       start %.1f MiB, peak VmRSS %.1f MiB, VmHWM %.1f MiB, after %.1f "
        "MiB",
        base.rss / kMiB, accepting.rss / kMiB, accepting.hwm / kMiB, after_accept.rss / kMiB);
    check("accepting", accepting);
    if (accepted != cfg.outbox_messages || depth != cfg.outbox_messages)
      Violation("memory: outbox holds " + std::to_string(depth) + ", accepted " +
                std::to_string(accepted));

    sampler.ResetPhase();
    int port = up_port;
    Child upstream = testing::StartUpstream(dir, {"--rate=1", "--count=1", "--quiet"}, &port,
                                            "upstream-outbox");
    t = Clock::now();
    uint64_t last_depth = depth;
    auto last_print = Clock::now();
    bool drained = WaitFor(
        [&] {
          uint64_t d = OutboxDepth(db);
          if (Clock::now() - last_print > 10s) {
            last_print = Clock::now();
            Say("    draining: depth %" PRIu64 ", VmRSS %.1f MiB", d,
                ReadRss(bridge.pid()).rss / kMiB);
          }
          last_depth = d;
          return d == 0;
        },
        600s);
    double drain_s = Seconds(t);
    Rss draining = sampler.phase();
    Say("  drained             %s in %.1f s (%.0f msg/s), depth now %" PRIu64,
        drained ? "all" : "NOT all", drain_s, (depth - last_depth) / drain_s, last_depth);
    Say("  RSS draining        peak VmRSS %.1f MiB, VmHWM %.1f MiB", draining.rss / kMiB,
        draining.hwm / kMiB);
    check("draining", draining);
    if (!drained) Violation("memory: outbox not drained within 600 s");
    bridge.Kill(SIGTERM);
  }

  // (b) A subscriber that stopped reading while ~200 000 msg/s flow in.
  if (cfg.mode != "outbox") {
    const std::string db = dir + "/flood.db";
    BridgePorts ports;
    ports.Pick();
    Say("== memory bound (b): %.0f msg/s inbound, %s, %d s", cfg.flood_rate,
        cfg.flood_sub ? "a SUB that never reads" : "no subscriber (control)", cfg.flood_seconds);
    int up_port = 0;
    Child upstream = testing::StartUpstream(
        dir,
        {"--rate=" + std::to_string(static_cast<uint64_t>(cfg.flood_rate)), "--history=100000",
         "--quiet"},
        &up_port, "upstream-flood");
    Child bridge = StartBridgeChild(dir, WsUrl(up_port), db, ports, {}, "bridge-flood");
    if (!WaitBridgeUp(bridge, dir + "/bridge-flood.err", 0, 30s)) {
      Say("setup: bridge did not start: %s", bridge.Stderr().c_str());
      return 2;
    }
    zmq::socket_t stalled(ctx, zmq::socket_type::sub);
    stalled.set(zmq::sockopt::subscribe, "");
    if (cfg.flood_sub) stalled.connect(Endpoint(ports.pub));  // and never reads
    sampler.Watch(bridge.pid());
    sampler.ResetPhase();
    auto t = Clock::now();
    uint64_t first = JournalLast(db);
    std::vector<double> per_5s;
    for (int s = 5; s <= cfg.flood_seconds; s += 5) {
      std::this_thread::sleep_for(5s);
      Rss r = ReadRss(bridge.pid());
      per_5s.push_back(r.rss / kMiB);
      Say("    t=%2d s: journal at %" PRIu64 ", VmRSS %.1f MiB", s, JournalLast(db), r.rss / kMiB);
    }
    double secs = Seconds(t);
    uint64_t last = JournalLast(db);
    Rss flood = sampler.phase();
    Say("  inbound             %" PRIu64 " messages journaled in %.1f s (%.0f msg/s)",
        last - first, secs, (last - first) / secs);
    Say("  RSS                 peak VmRSS %.1f MiB, VmHWM %.1f MiB", flood.rss / kMiB,
        flood.hwm / kMiB);
    check("stalled subscriber", flood);
    bridge.Kill(SIGTERM);
  }
  return 0;
}

uint64_t EnvU64(const char* name, uint64_t def) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : def;
}

int Main(int argc, char** argv) {
  Config cfg;
  cfg.kills = static_cast<int>(EnvU64("SOAK_KILLS", 100));
  cfg.seed = EnvU64("SOAK_SEED", 0);
  cfg.mode = std::getenv("SOAK_MODE") && *std::getenv("SOAK_MODE") ? std::getenv("SOAK_MODE")
                                                                     : "all";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&](const char* flag) -> const char* {
      size_t n = std::strlen(flag);
      if (a.compare(0, n, flag) == 0 && a.size() > n && a[n] == '=') return argv[i] + n + 1;
      if (a == flag && i + 1 < argc) return argv[++i];
      return nullptr;
    };
    const char* v = nullptr;
    if ((v = val("--kills"))) cfg.kills = std::atoi(v);
    else if ((v = val("--seed"))) cfg.seed = std::strtoull(v, nullptr, 10);
    else if ((v = val("--rate"))) cfg.rate = std::atof(v);
    else if ((v = val("--count"))) cfg.count = std::strtoull(v, nullptr, 10);
    else if ((v = val("--producers"))) cfg.producers = std::atoi(v);
    else if ((v = val("--producer-rate"))) cfg.producer_rate = std::atof(v);
    else if ((v = val("--mode"))) cfg.mode = v;
    else if ((v = val("--outbox"))) cfg.outbox_messages = std::strtoull(v, nullptr, 10);
    else if ((v = val("--flood-rate"))) cfg.flood_rate = std::atof(v);
    else if ((v = val("--flood-seconds"))) cfg.flood_seconds = std::atoi(v);
    else if ((v = val("--flood-sub"))) cfg.flood_sub = std::atoi(v) != 0;
    else if ((v = val("--send-window"))) cfg.send_window = std::strtoull(v, nullptr, 10);
    else if ((v = val("--rss-limit-mib"))) cfg.rss_limit_mib = std::atof(v);
    else if ((v = val("--dir"))) cfg.dir = v;
    else {
      std::fprintf(stderr,
                   "usage: wsbridge-soak [--mode all|crash|memory|outbox|flood] [--kills N] [--seed S] "
                   "[--rate MSG/S] [--count N] [--producers N] [--producer-rate MSG/S] "
                   "[--outbox N] [--flood-rate MSG/S] [--flood-seconds S] [--flood-sub 0|1] [--send-window N] [--rss-limit-mib M] "
                   "[--dir DIR]\n(env: SOAK_KILLS, SOAK_SEED, SOAK_MODE)\n");
      return 2;
    }
  }
  if (cfg.seed == 0) cfg.seed = std::random_device{}() | (uint64_t{std::random_device{}()} << 32);
  if (cfg.dir.empty()) {
    char tmpl[] = "/tmp/wsbridge-soak-XXXXXX";
    cfg.dir = mkdtemp(tmpl);
  }
  signal(SIGPIPE, SIG_IGN);
  Say("wsbridge-soak seed %" PRIu64 " (replay: SOAK_SEED=%" PRIu64 " SOAK_KILLS=%d make soak, or "
      "wsbridge-soak --seed %" PRIu64 " --kills %d --mode %s), dir %s",
      cfg.seed, cfg.seed, cfg.kills, cfg.seed, cfg.kills, cfg.mode.c_str(), cfg.dir.c_str());
  auto t0 = Clock::now();
  int rc = 0;
  if (cfg.mode == "all" || cfg.mode == "crash") rc = std::max(rc, CrashLoop(cfg));
  if (rc != 2 && (cfg.mode == "all" || cfg.mode == "memory" || cfg.mode == "outbox" ||
                  cfg.mode == "flood")) rc = std::max(rc, MemoryBound(cfg));
  int v = g_violations.load();
  if (rc == 0 && v) rc = 1;
  Say("== wsbridge-soak %s: %d violations, %.0f s, seed %" PRIu64, rc == 0 ? "PASSED" : "FAILED",
      v, Seconds(t0), cfg.seed);
  return rc;
}

}  // namespace
}  // namespace wsbridge::soak

int main(int argc, char** argv) { return wsbridge::soak::Main(argc, argv); }
