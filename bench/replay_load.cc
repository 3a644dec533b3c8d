// wsbridge-load-replay: replay throughput, and what a large replay costs the inbound path.
//
//   1. A database with 1 000 000 journaled messages of ~100 B is written directly (Store).
//   2. Replay throughput in messages per second:
//        file      ReplayPager in process; wsbridge-replay --db (raw and json, to /dev/null)
//        endpoint  a DEALER in process against the daemon's zmq.replay; wsbridge-replay --endpoint
//   3. Inbound rate at a subscriber (wsbridge-upstream -> wsbridge -> SUB, N messages as fast as
//      they come) on a copy of that database, without and then with a client replaying all
//      1 000 000 messages from the endpoint over and over during the whole run. The ratio is the
//      figure that matters (issue 5: it must not fall by more than a third, i.e. >= 0.67).
//
// Usage: wsbridge-load-replay [inbound_messages (500000)] [replay_messages (1000000)] [rounds (3)]
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "bridge/endpoints/replay_endpoint.h"
#include "integration/harness.h"
#include "storage/store.h"

using namespace wsbridge;
using namespace wsbridge::testing;
using namespace std::chrono;

namespace {

double Seconds(steady_clock::duration d) { return duration<double>(d).count(); }

// A payload shaped like wsbridge-upstream's: {"seq":N,"topic":"T","data":{...}}, ~100 bytes.
std::string Payload(uint64_t seq, const std::string& topic) {
  std::string p = "{\"seq\":" + std::to_string(seq) + ",\"topic\":\"" + topic +
                  "\",\"data\":{\"ts_ns\":1700000000000000000,\"pad\":\"";
  p.append(p.size() < 96 ? 96 - p.size() : 0, 'x');
  return p + "\"}}";
}

void Prefill(const std::string& path, uint64_t n) {
  StoreOptions o;
  o.path = path;
  o.journal_max_rows = 0;
  o.journal_max_bytes = 0;
  o.journal_max_age_s = 0;
  auto store = Store::Open(o);
  if (!store.ok()) {
    std::fprintf(stderr, "prefill: %s\n", store.status().ToString().c_str());
    std::exit(1);
  }
  const char* topics[] = {"ticks", "trades", "quotes"};
  // Now, so that the daemon's age-based retention (journal.max_age_s) leaves them alone.
  const int64_t now_ns = duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count();
  auto t0 = steady_clock::now();
  for (uint64_t seq = 1; seq <= n;) {
    Batch b;
    for (int i = 0; i < 4096 && seq <= n; ++i, ++seq) {
      InboundMessage m;
      m.topic = topics[seq % 3];
      m.payload = Payload(seq, m.topic);
      m.received_at_unix_ns = now_ns;
      b.inbound.push_back(std::move(m));  // upstream_seq 0: the bridge's upstream starts at 1
    }
    Status s = (*store)->Commit(b, nullptr);
    if (!s.ok()) {
      std::fprintf(stderr, "prefill: %s\n", s.ToString().c_str());
      std::exit(1);
    }
  }
  std::printf("prefill: %llu messages written in %.1f s\n", static_cast<unsigned long long>(n),
              Seconds(steady_clock::now() - t0));
}

// Runs argv with stdout to /dev/null; returns wall seconds, or -1 when it failed.
double RunQuiet(const std::vector<std::string>& argv) {
  auto t0 = steady_clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return -1;
  return Seconds(steady_clock::now() - t0);
}

// Pulls [1, n] from a replay endpoint once; returns the messages received (0 on failure).
uint64_t ReplayOnce(zmq::context_t& ctx, const std::string& endpoint, uint64_t n,
                    const std::atomic<bool>* stop = nullptr) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, 200);
  s.set(zmq::sockopt::rcvhwm, 4);
  s.connect(endpoint);
  v1::ReplayRequest req;
  req.set_from_seq(1);
  req.set_to_seq(n);
  req.set_max_messages(1000);
  std::string body;
  req.SerializeToString(&body);
  (void)s.send(zmq::buffer(body));
  v1::ReplayReply reply;
  uint64_t got = 0;
  int idle = 0;
  for (;;) {
    if (stop && stop->load()) return got;
    zmq::message_t m;
    if (!s.recv(m)) {
      if (++idle > 100) return 0;  // 20 s without a page
      continue;
    }
    idle = 0;
    if (!reply.ParseFromArray(m.data(), static_cast<int>(m.size())) || !reply.error().empty()) {
      return 0;
    }
    got += static_cast<uint64_t>(reply.envelopes_size());
    if (reply.done()) return got;
  }
}

std::string Url(int port) { return "ws://127.0.0.1:" + std::to_string(port) + "/feed"; }

void CopyDb(const std::string& from, const std::string& to) {
  namespace fs = std::filesystem;
  for (const char* suffix : {"", "-wal"}) {
    std::error_code ec;
    fs::remove(to + suffix, ec);
    if (fs::exists(from + suffix)) fs::copy_file(from + suffix, to + suffix, ec);
  }
}

struct InboundRun {
  double rate = 0;         // at the subscriber, messages/s
  double replay_rate = 0;  // replay messages/s during the run (0: no replay)
  uint64_t replayed = 0;
};

// Inbound of n messages on a copy of the prefilled database; with `replay`, a client replays
// replay_n messages from the endpoint in a loop for the whole run.
InboundRun Inbound(const std::string& dir, const std::string& prefilled, int n, bool replay,
                   uint64_t replay_n) {
  static int run = 0;
  std::string tag = "inbound" + std::to_string(++run);
  std::string db = dir + "/" + tag + ".db";
  CopyDb(prefilled, db);
  int port = FreePort();
  ReplayBridgeEndpoints ep;
  Child bridge = StartReplayBridge(dir, Url(port), db,
                                   {"--set=heartbeat.interval_ms=0", "--set=journal.max_rows=0"},
                                   &ep, tag + "-bridge");
  if (ep.replay.empty()) {
    std::fprintf(stderr, "bridge did not start: %s\n", bridge.Stderr().c_str());
    std::exit(1);
  }
  zmq::context_t ctx;
  Subscriber sub(ctx, ep.pub);
  // The subscription must reach the bridge before the upstream starts.
  bridge.WaitForOutput("subscription to topic prefix", "err");

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> replayed{0};
  steady_clock::time_point replay_start;
  std::thread replayer;
  if (replay) {
    replay_start = steady_clock::now();
    replayer = std::thread([&] {
      zmq::context_t rctx;
      while (!stop.load()) replayed += ReplayOnce(rctx, ep.replay, replay_n, &stop);
    });
  }
  Child up = StartUpstream(
      dir,
      {"--count=" + std::to_string(n), "--rate=0", "--history=" + std::to_string(n), "--quiet"},
      &port, tag + "-upstream");
  InboundRun out;
  const uint64_t end_seq = replay_n + static_cast<uint64_t>(n);  // bridge seqs follow the prefill
  const ReceivedSpan got = ReceiveUntilSeq(sub, end_seq, seconds(30));
  if (replay) {
    stop = true;
    replayer.join();
    out.replayed = replayed.load();
    out.replay_rate = out.replayed / Seconds(steady_clock::now() - replay_start);
  }
  if (got.last_seq == end_seq && got.last_seq > got.first_seq) {
    out.rate = got.Rate();
  } else {
    std::fprintf(stderr, "inbound run %s incomplete: got up to seq %llu of %llu\n", tag.c_str(),
                 static_cast<unsigned long long>(got.last_seq),
                 static_cast<unsigned long long>(end_seq));
  }
  bridge.Kill(SIGTERM);
  up.Kill(SIGTERM);
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(db + suffix, ec);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const int inbound_n = argc > 1 ? std::atoi(argv[1]) : 500000;
  const uint64_t replay_n = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1000000;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 3;
  TempDir dir;
  const std::string db = dir.File("replay.db");
  Prefill(db, replay_n);

  std::printf("\nreplay throughput, %llu messages of ~100 B (messages/s)\n",
              static_cast<unsigned long long>(replay_n));
  {
    StoreOptions o;
    o.path = db;
    o.read_only = true;
    auto store = Store::Open(o);
    v1::ReplayRequest req;
    req.set_from_seq(1);
    req.set_max_messages(1000);
    auto t0 = steady_clock::now();
    auto pager = ReplayPager::Start(store->get(), req);
    v1::ReplayReply page;
    uint64_t got = 0;
    do {
      if (!pager->NextPage(&page).ok()) break;
      got += static_cast<uint64_t>(page.envelopes_size());
    } while (!page.done());
    std::printf("  %-58s %10.0f\n", "file: ReplayPager in process (pages of 1000)",
                got / Seconds(steady_clock::now() - t0));
  }
  const std::string tool = Bin("wsbridge-replay");
  for (const char* format : {"raw", "json"}) {
    double s = RunQuiet({tool, "--db=" + db, std::string("--format=") + format, "--no-progress"});
    std::printf(
        "  %-58s %10.0f  (%.2f s, process start and open included)\n",
        (std::string("file: wsbridge-replay --db --format ") + format + " > /dev/null").c_str(),
        s > 0 ? replay_n / s : 0, s);
  }
  {
    int port = FreePort();  // nothing listens there: the bridge only serves replay here
    ReplayBridgeEndpoints ep;
    Child bridge = StartReplayBridge(dir.path(), Url(port), db, {}, &ep, "endpoint-bridge");
    if (ep.replay.empty()) {
      std::fprintf(stderr, "bridge did not start: %s\n", bridge.Stderr().c_str());
      return 1;
    }
    zmq::context_t ctx;
    auto t0 = steady_clock::now();
    uint64_t got = ReplayOnce(ctx, ep.replay, 0 /* newest */, nullptr);
    std::printf("  %-58s %10.0f\n", "endpoint: DEALER in process (pages of 1000)",
                got / Seconds(steady_clock::now() - t0));
    double s = RunQuiet({tool, "--endpoint=" + ep.replay, "--format=raw", "--no-progress"});
    std::printf("  %-58s %10.0f  (%.2f s)\n",
                "endpoint: wsbridge-replay --endpoint --format raw > /dev/null",
                s > 0 ? replay_n / s : 0, s);
    bridge.Kill(SIGTERM);
  }

  std::printf(
      "\ninbound while a replay of %llu messages runs (messages/s at the subscriber, "
      "%d messages of ~100 B)\n",
      static_cast<unsigned long long>(replay_n), inbound_n);
  // Alternating runs, medians: one run on a shared 2-core machine is too noisy to compare.
  std::vector<double> without, with, replay_rates;
  uint64_t replayed = 0;
  for (int round = 0; round < rounds; ++round) {
    without.push_back(Inbound(dir.path(), db, inbound_n, false, replay_n).rate);
    InboundRun loaded = Inbound(dir.path(), db, inbound_n, true, replay_n);
    with.push_back(loaded.rate);
    replay_rates.push_back(loaded.replay_rate);
    replayed += loaded.replayed;
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  auto list = [](const std::vector<double>& v) {
    std::string s;
    for (double x : v) s += (s.empty() ? "" : " ") + std::to_string(static_cast<long>(x));
    return s;
  };
  std::printf("  %-58s %10.0f  (runs: %s)\n", "without replay (median)", median(without),
              list(without).c_str());
  std::printf("  %-58s %10.0f  (runs: %s)\n", "with a client replaying from the endpoint (median)",
              median(with), list(with).c_str());
  std::printf("  %-58s %10.0f  (%llu messages replayed in all)\n", "replay rate meanwhile (median)",
              median(replay_rates), static_cast<unsigned long long>(replayed));
  double ratio = median(without) > 0 ? median(with) / median(without) : 0;
  std::printf("  %-58s %10.2f  (must be >= 0.67)\n", "ratio with / without", ratio);
  return 0;
}
