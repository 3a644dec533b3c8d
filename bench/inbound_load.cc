// wsbridge-load-inbound: end-to-end inbound throughput and latency, measured in one run against
// a raw websocketpp client on the same machine, so that the figure that matters is a ratio.
//
//   raw     wsbridge-upstream -> a bare websocketpp client (the library's stock asio_client
//           configuration) that counts messages
//   bridge  wsbridge-upstream -> wsbridge (journal commit, then publish) -> a ZeroMQ subscriber
//
// Both read the same N messages as fast as the upstream builds and sends them (1 000 000 of
// 100 B: long enough for the bridge's periodic costs, WAL restarts included, to be in the
// figure; the upstream keeps the last kHistory for resume, so its memory stays flat). Then three
// latency runs of each: the upstream produces 10 000 msg/s live and the subscriber measures,
// for each message, its receipt time minus the upstream's send time (data.ts_ns, wall clock).
//
// `wsbridge-load-inbound 1 feeds`: the compressed feeds of SPEC §9 instead, as ratios to the same
// bridge run without compression: the upstream sending permessage-deflate (context takeover),
// and sending every frame gzipped (protocol.decompress = gzip); CPU per message of the bridge
// and of its I/O thread, where the inflation runs.
//
// `wsbridge-load-inbound 1 endpoints`: the bridge's PUB endpoint (SPEC §10) three ways, as ratios
// to the first, 300 000 messages of 100 B as fast as possible, durability=process, the PUB queue
// unbounded (zmq.pub_hwm = 0: a CURVE subscriber falls behind by more than the default):
//   tcp plain   tcp://127.0.0.1 without CURVE (the default)
//   tcp CURVE   zmq.curve.secret_key_file and zmq.curve.authorized_keys_file set (keys made with
//               zmq_curve_keypair), the subscriber a CURVE client listed with role `subscribe`
//   ipc         the three endpoints as socket files in the run's directory
// with the CPU per message of the bridge (and of each of its threads) and of the subscriber,
// and two headlines: CURVE / plain (the goal: at least 0.7) and ipc / loopback tcp.
//
// feeds and endpoints run their variants interleaved (one of each, three times) and print the
// medians; a run that fell short, or in which the subscriber missed messages, is said so.
#include <simdjson.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <thread>
#include <websocketpp/client.hpp>
#include <websocketpp/config/asio_no_tls_client.hpp>

#include "integration/harness.h"

using namespace wsbridge::testing;
using namespace std::chrono;

namespace {

double Seconds(steady_clock::duration d) { return duration<double>(d).count(); }

// Frames the upstream keeps for resume. Kept as a constant, not the whole run: with every frame
// kept, the upstream's memory grew through the run and the raw run, paced by the upstream's one
// thread, slowed with it (200 000 messages: raw 0.51-1.2 M/s over 12 runs; with this history,
// 1 000 000 messages: 1.05-1.32 M/s).
constexpr int kHistory = 50000;
// Messages of the throughput runs, 100 B and 4 KiB (times the scale argument).
constexpr int kMessages100B = 1000000;
constexpr int kMessages4KiB = 50000;
std::string HistoryFlag(int n) { return "--history=" + std::to_string(std::min(n, kHistory)); }


// CPU seconds a child process has used so far, all its threads.
double ChildCpuSeconds(pid_t pid) { return ProcessCpuSeconds(pid); }

// CPU seconds each thread of a child process has used so far, by thread name (threads of the
// same name summed), from /proc/<pid>/task/<tid>/stat.
std::map<std::string, double> ChildThreadCpuSeconds(pid_t pid) {
  std::map<std::string, double> out;
  for (const ThreadInfo& t : ThreadsOf(pid)) {
    out[t.name] += StatCpuSeconds("/proc/" + std::to_string(pid) + "/task/" +
                                  std::to_string(t.tid) + "/stat");
  }
  return out;
}

// CPU seconds this process (the measuring client) has used so far.
double SelfCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Microseconds of CPU per message, per process of one run: where a 2-core machine's time goes.
struct CpuPerMessage {
  double upstream = 0, bridge = 0, client = 0;
  std::map<std::string, double> bridge_threads;  // the bridge's share, by thread name
};

// CPU time the hypervisor gave other guests while this one wanted it ("steal", all CPUs), from
// /proc/stat: the noise a latency run on a shared machine cannot control.
double StealSeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  unsigned long long v[8] = {};
  in >> cpu;
  for (auto& x : v) in >> x;  // user nice system idle iowait irq softirq steal
  return double(v[7]) / double(sysconf(_SC_CLK_TCK));
}

int64_t WallNs() {
  return duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count();
}

// Reads n messages with a bare websocketpp client; returns messages per second. With
// `latencies`, the upstream produces at `rate` and each message's send->receipt time is kept.
double RawRate(const std::string& dir, int n, int bytes, const std::string& rate = "0",
               std::vector<int64_t>* latencies = nullptr, CpuPerMessage* cpu = nullptr) {
  static int run = 0;  // each run's logs get their own name: the port is read from them
  int port = 0;
  Child up = StartUpstream(dir, {"--count=" + std::to_string(n), "--rate=" + rate,
                                 HistoryFlag(n),
                                 "--payload-bytes=" + std::to_string(bytes)},
                           &port, "raw" + std::to_string(++run) + "-upstream");
  using Client = websocketpp::client<websocketpp::config::asio_client>;  // stock websocketpp
  Client c;
  c.clear_access_channels(websocketpp::log::alevel::all);
  c.clear_error_channels(websocketpp::log::elevel::all);
  c.init_asio();
  int got = 0;
  steady_clock::time_point first, last;
  c.set_open_handler([&](websocketpp::connection_hdl h) {
    c.send(h, R"({"type":"resume","after":0})", websocketpp::frame::opcode::text);
  });
  simdjson::dom::parser parser;
  c.set_message_handler([&](websocketpp::connection_hdl h, Client::message_ptr msg) {
    if (latencies && got > n / 10) {
      simdjson::dom::element doc;
      int64_t ts = 0;
      if (parser.parse(msg->get_payload()).get(doc) == simdjson::SUCCESS &&
          doc.at_pointer("/data/ts_ns").get_int64().get(ts) == simdjson::SUCCESS) {
        latencies->push_back(WallNs() - ts);
      }
    }
    if (got++ == 0) first = steady_clock::now();
    if (got == n) {
      last = steady_clock::now();
      c.close(h, websocketpp::close::status::normal, "");
    }
  });
  websocketpp::lib::error_code ec;
  auto con = c.get_connection("ws://127.0.0.1:" + std::to_string(port) + "/feed", ec);
  const double self0 = SelfCpuSeconds();
  c.connect(con);
  c.run();
  if (cpu != nullptr) {
    cpu->upstream = ChildCpuSeconds(up.pid()) * 1e6 / n;
    cpu->client = (SelfCpuSeconds() - self0) * 1e6 / n;
  }
  up.Kill(SIGTERM);
  if (got != n) std::fprintf(stderr, "raw run incomplete: %d of %d messages\n", got, n);
  return got == n ? (n - 1) / Seconds(last - first) : 0;
}

struct BridgeRun {
  double rate = 0;      // 0: the run was incomplete (it says why on stderr)
  uint64_t missed = 0;  // journaled, but the subscriber missed them (it says so on stderr)
  CpuPerMessage cpu;
  std::vector<int64_t> latencies_ns;  // upstream send -> subscriber receipt
  std::vector<int64_t> in_bridge_ns;  // bridge receipt (received_at) -> subscriber receipt
};

// What a run adds to the default one: flags of the upstream and of the bridge (the compressed
// feeds; the endpoints' transport, CURVE), and the subscriber's CURVE keys (none: plain).
struct FeedFlags {
  std::vector<std::string> upstream;
  std::vector<std::string> bridge;
  wsbridge::client::CurveClientKeys subscriber;
};

// Starts the bridge first, subscribes, then the upstream; measures at the subscriber.
BridgeRun BridgeRate(const std::string& dir, int n, int bytes, const std::string& rate,
                     const std::string& durability, bool latency, const FeedFlags& feed = {}) {
  static int run = 0;
  std::string tag = "run" + std::to_string(++run);
  int port = FreePort();
  BridgeEndpoints ep;
  std::vector<std::string> bridge_flags = {"--set=storage.durability=" + durability,
                                           "--set=heartbeat.interval_ms=0"};
  bridge_flags.insert(bridge_flags.end(), feed.bridge.begin(), feed.bridge.end());
  Child bridge = StartBridge(dir, "ws://127.0.0.1:" + std::to_string(port) + "/feed",
                             dir + "/" + tag + ".db", bridge_flags, &ep, tag + "-bridge");
  if (ep.pub.empty()) {  // no "publishing on" line: it did not come up
    std::fprintf(stderr, "bridge run %s: the bridge did not start:\n%s", tag.c_str(),
                 bridge.Stderr().c_str());
    return {};
  }
  zmq::context_t ctx;
  Subscriber sub(ctx, ep.pub, "", feed.subscriber);
  bridge.WaitForOutput("subscription to topic prefix", "err");
  std::vector<std::string> upstream_flags = {"--count=" + std::to_string(n), "--rate=" + rate,
                                             HistoryFlag(n),
                                             "--payload-bytes=" + std::to_string(bytes)};
  upstream_flags.insert(upstream_flags.end(), feed.upstream.begin(), feed.upstream.end());
  Child up = StartUpstream(dir, upstream_flags, &port, tag + "-upstream");
  BridgeRun out;
  const double self0 = SelfCpuSeconds();
  const double bridge0 = ChildCpuSeconds(bridge.pid());  // its start-up is not the run's
  const std::map<std::string, double> threads0 = ChildThreadCpuSeconds(bridge.pid());
  simdjson::dom::parser parser;
  const uint64_t end_seq = static_cast<uint64_t>(n);
  auto take_latency = [&](const wsbridge::v1::Envelope& env) {
    if (env.seq() <= static_cast<uint64_t>(n / 10)) return;  // skip the warm-up tenth
    int64_t recv = WallNs();
    simdjson::dom::element doc;
    int64_t ts = 0;
    if (parser.parse(env.payload()).get(doc) == simdjson::SUCCESS &&
        doc.at_pointer("/data/ts_ns").get_int64().get(ts) == simdjson::SUCCESS) {
      out.latencies_ns.push_back(recv - ts);
      out.in_bridge_ns.push_back(recv - env.received_at_unix_ns());
    }
  };
  // Throughput: the subscriber reads each message's seq and counts, as the raw client counts
  // frames. Latency: it decodes each envelope, for the send time inside the payload.
  const ReceivedSpan got = latency ? ReceiveUntilSeq(sub, end_seq, seconds(20), take_latency)
                                   : ReceiveUntilSeq(sub, end_seq, seconds(20));
  if (got.last_seq == end_seq && got.last_seq > got.first_seq) {
    out.rate = got.Rate();
    const uint64_t span = got.last_seq - got.first_seq + 1;
    if (got.received < span) {  // journaled, but the PUB queue for this subscriber overflowed
      out.missed = span - got.received;
      std::fprintf(stderr, "bridge run %s: the subscriber missed %llu of %llu (PUB high-water "
                   "mark; replay has them)\n", tag.c_str(),
                   static_cast<unsigned long long>(span - got.received),
                   static_cast<unsigned long long>(span));
    }
  } else {
    std::fprintf(stderr, "bridge run %s incomplete: got up to seq %llu of %d\n", tag.c_str(),
                 static_cast<unsigned long long>(got.last_seq), n);
  }
  out.cpu.upstream = ChildCpuSeconds(up.pid()) * 1e6 / n;
  out.cpu.bridge = (ChildCpuSeconds(bridge.pid()) - bridge0) * 1e6 / n;
  for (const auto& [name, seconds] : ChildThreadCpuSeconds(bridge.pid())) {
    const auto before = threads0.find(name);
    out.cpu.bridge_threads[name] =
        (seconds - (before == threads0.end() ? 0 : before->second)) * 1e6 / n;
  }
  out.cpu.client = (SelfCpuSeconds() - self0) * 1e6 / n;
  bridge.Kill(SIGTERM);
  up.Kill(SIGTERM);
  // One connection from start to end is part of the result: a reconnect or a seq jump in a
  // run on loopback is a bug, whatever the rate says.
  for (const LogEvent& e : LogEvents(bridge.Stderr(), "connection closed|seq jumped")) {
    std::fprintf(stderr, "bridge run %s: BUG, the bridge logged: %s\n", tag.c_str(),
                 e.line.c_str());
    out.rate = 0;
  }
  return out;
}

std::string Micros(double us) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", us);
  return buf;
}

double Percentile(std::vector<int64_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))] / 1e3;  // microseconds
}

// The machine is shared and noisy: each figure is the median of kRounds runs, the variants
// compared interleaved (raw and bridge; one configuration after the other), so that a
// disturbance hits them alike.
constexpr int kRounds = 3;

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One bridge configuration of a comparison: its name, and what it adds to the default run.
using Variant = std::pair<std::string, FeedFlags>;

// A variant's kRounds runs: each figure the median of its own.
struct MedianRun {
  double rate = 0;
  std::vector<double> rates;  // each run's, in order
  CpuPerMessage cpu;          // bridge_threads: each thread name's median
  int incomplete = 0;         // runs that fell short (rate 0, and in the median as such)
  int missed = 0;             // runs in which the subscriber missed messages
};

// kRounds rounds, each one run of every variant in turn: n messages of 100 B, sent as fast as
// the upstream can, durability=process. The medians, in the variants' order.
std::vector<MedianRun> InterleavedRuns(const std::string& dir, int n,
                                       const std::vector<Variant>& variants) {
  std::vector<std::vector<BridgeRun>> runs(variants.size());
  for (int round = 0; round < kRounds; ++round) {
    for (size_t i = 0; i < variants.size(); ++i) {
      runs[i].push_back(BridgeRate(dir, n, 100, "0", "process", false, variants[i].second));
    }
  }
  std::vector<MedianRun> out;
  for (const std::vector<BridgeRun>& of : runs) {
    auto median = [&of](const std::function<double(const BridgeRun&)>& figure) {
      std::vector<double> v;
      for (const BridgeRun& r : of) v.push_back(figure(r));
      return Median(v);
    };
    MedianRun m;
    m.rate = median([](const BridgeRun& r) { return r.rate; });
    for (const BridgeRun& r : of) m.rates.push_back(r.rate);
    m.cpu.upstream = median([](const BridgeRun& r) { return r.cpu.upstream; });
    m.cpu.bridge = median([](const BridgeRun& r) { return r.cpu.bridge; });
    m.cpu.client = median([](const BridgeRun& r) { return r.cpu.client; });
    for (const BridgeRun& r : of) {
      m.incomplete += r.rate == 0;
      m.missed += r.missed > 0;
      for (const auto& thread : r.cpu.bridge_threads) {
        const std::string& name = thread.first;
        if (m.cpu.bridge_threads.count(name) != 0) continue;
        m.cpu.bridge_threads[name] = median([&name](const BridgeRun& x) {
          const auto t = x.cpu.bridge_threads.find(name);
          return t == x.cpu.bridge_threads.end() ? 0.0 : t->second;  // not in that run
        });
      }
    }
    out.push_back(std::move(m));
  }
  return out;
}

// The CPU per message of the bridge's thread `name` (0: it has none of that name).
double ThreadCpu(const CpuPerMessage& cpu, const std::string& name) {
  const auto t = cpu.bridge_threads.find(name);
  return t == cpu.bridge_threads.end() ? 0 : t->second;
}

// " <thread name> <CPU per message> us" for each of the bridge's threads that used any.
std::string ThreadsLine(const CpuPerMessage& cpu) {
  std::string line;
  for (const auto& [name, us] : cpu.bridge_threads) {
    if (us >= 0.005) line += " " + name + " " + Micros(us) + " us";
  }
  return line;
}

// One line for each variant whose runs were not all whole (stderr has each run's why).
void PrintShortRuns(const std::vector<Variant>& variants, const std::vector<MedianRun>& runs) {
  for (size_t i = 0; i < variants.size(); ++i) {
    if (runs[i].incomplete == 0 && runs[i].missed == 0) continue;
    std::printf("NOTE %s: %d of %d runs incomplete (in its median as 0 msg/s), %d in which the "
                "subscriber missed messages (see stderr)\n",
                variants[i].first.c_str(), runs[i].incomplete, kRounds, runs[i].missed);
  }
}

// The compressed feeds against the same run uncompressed, kRounds interleaved runs each.
int FeedsMain(const std::string& dir, int scale) {
  const int n = 300000 * scale;
  const std::vector<Variant> feeds = {
      {"plain", {}},
      {"permessage-deflate", {{"--permessage-deflate"}, {}}},
      {"gzip frames", {{"--compress=gzip"}, {"--set=protocol.decompress=gzip"}}},
  };
  const std::vector<MedianRun> runs = InterleavedRuns(dir, n, feeds);
  const MedianRun& plain = runs[0];
  const double plain_io = ThreadCpu(plain.cpu, "wsb-upstream");
  std::printf("compressed feeds, %d messages of 100 B, median of %d interleaved runs, "
              "durability=process\n", n, kRounds);
  std::printf("%-20s %12s %8s %14s %10s %16s %18s %16s\n", "feed", "bridge msg/s", "ratio",
              "bridge us/msg", "CPU ratio", "I/O thread us/msg", "I/O extra us/msg",
              "upstream us/msg");
  for (size_t i = 0; i < feeds.size(); ++i) {
    const MedianRun& r = runs[i];
    const double io = ThreadCpu(r.cpu, "wsb-upstream");
    std::printf("%-20s %12.0f %8.2f %14.2f %10.2f %16.2f %18.2f %16.2f\n",
                feeds[i].first.c_str(), r.rate, plain.rate ? r.rate / plain.rate : 0,
                r.cpu.bridge, r.cpu.bridge ? plain.cpu.bridge / r.cpu.bridge : 0, io,
                io - plain_io, r.cpu.upstream);
  }
  std::printf("(ratio: rate against the plain run's; CPU ratio: the plain run's bridge CPU per "
              "message over this one's, the ratio were the bridge the bottleneck; I/O extra: the "
              "I/O thread's CPU per message over the plain run's, i.e. inflation; upstream: "
              "wsbridge-upstream's CPU per message, which compresses each one on one thread)\n");
  PrintShortRuns(feeds, runs);
  return 0;
}

// CURVE on the bridge's tcp endpoints: a server key pair and a client one (zmq_curve_keypair),
// the files the bridge reads, in `dir` (zmq.curve.secret_key_file: the server's secret key
// alone, mode 0600, as the bridge requires; zmq.curve.authorized_keys_file: the client's public
// key with role `subscribe`), and the subscriber's keys. nullopt, and why on stderr, when
// libzmq has no CURVE or a file cannot be written.
std::optional<FeedFlags> CurveEndpoints(const std::string& dir) {
  char server_public[41], server_secret[41], client_public[41], client_secret[41];  // Z85 + NUL
  if (zmq_curve_keypair(server_public, server_secret) != 0 ||
      zmq_curve_keypair(client_public, client_secret) != 0) {
    std::fprintf(stderr, "zmq_curve_keypair: %s\n", zmq_strerror(zmq_errno()));
    return std::nullopt;
  }
  const std::string key_file = dir + "/curve-server.key";
  const std::string keys_file = dir + "/curve-authorized-keys";
  if (!WriteFileBytes(key_file, std::string(server_secret) + "\n") ||
      ::chmod(key_file.c_str(), 0600) != 0 ||
      !WriteFileBytes(keys_file,
                      "subscribe " + std::string(client_public) + " wsbridge-load-inbound\n")) {
    std::fprintf(stderr, "cannot write the CURVE key files in %s\n", dir.c_str());
    return std::nullopt;
  }
  auto binary = [](const char* z85) {  // CurveClientKeys holds the 32-byte keys
    std::string key(32, '\0');
    zmq_z85_decode(reinterpret_cast<uint8_t*>(key.data()), z85);
    return key;
  };
  FeedFlags curve;
  curve.bridge = {"--set=zmq.curve.secret_key_file=" + key_file,
                  "--set=zmq.curve.authorized_keys_file=" + keys_file};
  curve.subscriber = {binary(server_public), binary(client_public), binary(client_secret)};
  return curve;
}

// The bridge's three endpoints as socket files in `dir` (the run's temporary directory, mode
// 0700: the bridge refuses a world-writable one).
FeedFlags IpcEndpoints(const std::string& dir) {
  FeedFlags ipc;
  for (const std::string name : {"pub", "send", "replay"}) {
    ipc.bridge.push_back("--set=zmq." + name + "=ipc://" + dir + "/" + name + ".sock");
  }
  return ipc;
}

// Inbound throughput by the PUB endpoint's transport and security, kRounds interleaved runs
// each: loopback tcp (the default), the same with CURVE, ipc.
int EndpointsMain(const std::string& dir, int scale) {
  const int n = 300000 * scale;
  const std::optional<FeedFlags> curve = CurveEndpoints(dir);
  if (!curve) return 1;
  std::vector<Variant> configs = {
      {"tcp plain", {}},
      {"tcp CURVE", *curve},
      {"ipc", IpcEndpoints(dir)},
  };
  // The PUB queue unbounded in all three (zmq.pub_hwm 0, not 100 000): the CURVE subscriber,
  // decrypting, falls further behind than that, and the end of the run, dropped, left 2 of 3
  // CURVE runs incomplete. The rate is then the endpoint's, as the subscriber receives it.
  for (Variant& config : configs) config.second.bridge.push_back("--set=zmq.pub_hwm=0");
  const std::vector<MedianRun> runs = InterleavedRuns(dir, n, configs);
  auto ratio = [&runs](size_t i) { return runs[0].rate ? runs[i].rate / runs[0].rate : 0; };
  std::printf("inbound by endpoint, %d messages of 100 B as fast as possible, median of %d "
              "interleaved runs, durability=process, zmq.pub_hwm=0\n", n, kRounds);
  std::printf("%-10s %12s %8s %14s %18s %16s\n", "config", "msg/s", "ratio", "bridge us/msg",
              "subscriber us/msg", "upstream us/msg");
  for (size_t i = 0; i < configs.size(); ++i) {
    std::printf("%-10s %12.0f %8.2f %14.2f %18.2f %16.2f\n", configs[i].first.c_str(),
                runs[i].rate, ratio(i), runs[i].cpu.bridge, runs[i].cpu.client,
                runs[i].cpu.upstream);
  }
  std::printf("(ratio: rate against tcp plain's; bridge: wsbridge's CPU per message, all its "
              "threads; subscriber: this process's, its ZeroMQ I/O thread included, where CURVE "
              "decrypts)\n");
  std::printf("each run, msg/s (rounds in order) | the bridge's threads, CPU per message:\n");
  for (size_t i = 0; i < configs.size(); ++i) {
    std::string rates;
    for (double r : runs[i].rates) rates += " " + std::to_string(std::lround(r));
    std::printf("  %-10s%s |%s\n", configs[i].first.c_str(), rates.c_str(),
                ThreadsLine(runs[i].cpu).c_str());
  }
  PrintShortRuns(configs, runs);
  std::printf("CURVE / plain at 100 B: %.2f\u00d7 (goal \u2265 0.7\u00d7)\n", ratio(1));
  std::printf("ipc / loopback tcp: %.2f\u00d7\n", ratio(2));
  return 0;
}

}  // namespace

// The floor under the bridge's latency: ZeroMQ alone, a PUB in another process (this binary,
// run as "zmq-publisher N") -> a SUB here, paced as the upstream paces 10 000 msg/s (a burst
// every millisecond), 100 B messages that carry their send time in the first 8 bytes.
int ZmqPublisherMain(int n) {
  zmq::context_t ctx;
  zmq::socket_t pub(ctx, zmq::socket_type::xpub);
  pub.bind("tcp://127.0.0.1:*");
  std::printf("publishing on %s\n", pub.get(zmq::sockopt::last_endpoint).c_str());
  std::fflush(stdout);
  zmq::message_t subscription;
  if (!pub.recv(subscription)) return 1;  // blocks until the subscriber is there
  const auto start = steady_clock::now();
  for (int i = 0; i < n; ++i) {
    if (i % 10 == 0) std::this_thread::sleep_until(start + microseconds(100 * i));
    char body[100] = {};
    const int64_t ts = WallNs();
    std::memcpy(body, &ts, sizeof ts);
    (void)pub.send(zmq::buffer(body, sizeof body), zmq::send_flags::dontwait);
  }
  return 0;
}

std::vector<int64_t> ZmqFloorLatency(const std::string& dir, int n) {
  static int run = 0;
  Child pub = Child::Start({std::filesystem::read_symlink("/proc/self/exe").string(),
                            "0", "zmq-publisher", std::to_string(n)},
                           dir, "zmq-floor" + std::to_string(++run));
  std::vector<int64_t> out;
  const auto endpoint = pub.WaitForOutput(R"(publishing on (tcp://[0-9.]+:\d+))", "out");
  if (!endpoint) return out;
  zmq::context_t ctx;
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, "");
  sub.set(zmq::sockopt::rcvtimeo, 5000);
  sub.connect(*endpoint);
  zmq::message_t m;
  for (int i = 0; i < n && sub.recv(m); ++i) {
    const int64_t recv = WallNs();
    int64_t ts = 0;
    if (m.size() < sizeof ts) continue;
    std::memcpy(&ts, m.data(), sizeof ts);
    if (i > n / 10) out.push_back(recv - ts);  // skip the warm-up tenth, as the others do
  }
  pub.Kill(SIGTERM);
  return out;
}

int main(int argc, char** argv) {
  if (argc > 3 && std::string(argv[2]) == "zmq-publisher") {
    return ZmqPublisherMain(std::atoi(argv[3]));
  }
  int scale = argc > 1 ? std::atoi(argv[1]) : 1;  // multiply message counts
  TempDir dir;
  // "latency", "bridge", "feeds", "endpoints": one part
  const std::string mode = argc > 2 ? argv[2] : "";
  if (mode == "feeds") return FeedsMain(dir.path(), scale);
  if (mode == "endpoints") return EndpointsMain(dir.path(), scale);
  std::printf("inbound throughput (messages/s, median of 3 interleaved runs), same machine, "
              "same run\n");
  std::printf("%-8s %12s %12s %8s %12s %8s\n", "size", "raw ws", "bridge", "ratio",
              "bridge/power", "ratio");
  if (mode == "bridge") {  // the 100 B bridge run alone, e.g. to profile it
    const BridgeRun run =
        BridgeRate(dir.path(), kMessages100B * scale, 100, "0", "process", false);
    std::printf("bridge, 100 B, process: %.0f/s; CPU per message: upstream %.2f us, bridge "
                "%.2f us, subscriber %.2f us\n",
                run.rate, run.cpu.upstream, run.cpu.bridge, run.cpu.client);
    std::printf("  the bridge's threads, CPU per message:%s\n", ThreadsLine(run.cpu).c_str());
    return 0;
  }
  const bool latency_only = mode == "latency";
  std::vector<std::string> cpu_lines;
  // Each rate the median of kRounds runs, raw and bridge interleaved.
  for (int bytes : {100, 4096}) {
    if (latency_only) break;
    int n = (bytes == 100 ? kMessages100B : kMessages4KiB) * scale;
    std::vector<double> raws, processes, powers;
    CpuPerMessage raw_cpu;
    BridgeRun process;
    for (int round = 0; round < kRounds; ++round) {
      raws.push_back(RawRate(dir.path(), n, bytes, "0", nullptr, &raw_cpu));
      process = BridgeRate(dir.path(), n, bytes, "0", "process", false);
      processes.push_back(process.rate);
      powers.push_back(BridgeRate(dir.path(), n, bytes, "0", "power", false).rate);
    }
    const double raw = Median(raws), proc = Median(processes), power = Median(powers);
    std::printf("%-8s %12.0f %12.0f %8.2f %12.0f %8.2f\n",
                (std::to_string(bytes) + " B").c_str(), raw, proc, raw ? proc / raw : 0, power,
                raw ? power / raw : 0);
    cpu_lines.push_back(std::to_string(bytes) + " B: raw run: upstream " +
                        Micros(raw_cpu.upstream) + ", client " + Micros(raw_cpu.client) +
                        " | bridge run (process): upstream " + Micros(process.cpu.upstream) +
                        ", bridge " + Micros(process.cpu.bridge) + ", subscriber " +
                        Micros(process.cpu.client) + " (last round)");
  }
  if (!cpu_lines.empty()) {
    std::printf("CPU time per message, microseconds (the machine has %ld cores for all of them)\n",
                sysconf(_SC_NPROCESSORS_ONLN));
    for (const std::string& line : cpu_lines) std::printf("  %s\n", line.c_str());
  }
  // Latency: kRounds runs of each, raw and bridge interleaved. On a shared VM a run's p99 moves
  // with how much CPU other guests take ("steal" in /proc/stat): each run is printed with it,
  // then the medians.
  std::vector<double> raw50, raw99, br50, br99, in50, in99, zmq50, zmq99;
  for (int round = 0; round < kRounds; ++round) {
    const double steal0 = StealSeconds();
    std::vector<int64_t> raw_lat;
    RawRate(dir.path(), 50000 * scale, 100, "10000", &raw_lat);
    BridgeRun lat = BridgeRate(dir.path(), 50000 * scale, 100, "10000", "process", true);
    const std::vector<int64_t> floor_lat = ZmqFloorLatency(dir.path(), 50000 * scale);
    const double stolen_ms = (StealSeconds() - steal0) * 1e3;
    zmq50.push_back(Percentile(floor_lat, 0.5));
    zmq99.push_back(Percentile(floor_lat, 0.99));
    raw50.push_back(Percentile(raw_lat, 0.5));
    raw99.push_back(Percentile(raw_lat, 0.99));
    br50.push_back(Percentile(lat.latencies_ns, 0.5));
    br99.push_back(Percentile(lat.latencies_ns, 0.99));
    in50.push_back(Percentile(lat.in_bridge_ns, 0.5));
    in99.push_back(Percentile(lat.in_bridge_ns, 0.99));
    std::printf("latency run %d (10000 msg/s, 100 B, durability=process, %zu samples): raw "
                "websocketpp p50 %.0f us, p99 %.0f us | upstream send -> subscriber receipt "
                "p50 %.0f us, p99 %.0f us, max %.0f us | inside the bridge p50 %.0f us, p99 "
                "%.0f us | ZeroMQ alone p50 %.0f us, p99 %.0f us | CPU taken by other guests "
                "meanwhile: %.0f ms\n",
                round + 1, lat.latencies_ns.size(), raw50.back(), raw99.back(), br50.back(),
                br99.back(), Percentile(lat.latencies_ns, 1.0), in50.back(), in99.back(),
                zmq50.back(), zmq99.back(), stolen_ms);
  }
  std::printf("latency upstream send -> raw websocketpp client at 10000 msg/s, 100 B: "
              "p50 %.0f us, p99 %.0f us (median of %d runs)\n",
              Median(raw50), Median(raw99), kRounds);
  std::printf("latency upstream send -> subscriber receipt at 10000 msg/s, 100 B, "
              "durability=process: p50 %.0f us, p99 %.0f us (median of %d runs)\n",
              Median(br50), Median(br99), kRounds);
  std::printf("  of which inside the bridge (frame received -> subscriber receipt): p50 %.0f us, "
              "p99 %.0f us\n",
              Median(in50), Median(in99));
  std::printf("latency ZeroMQ PUB -> SUB alone, another process, same pacing, 100 B: p50 %.0f us, "
              "p99 %.0f us (median of %d runs; the floor under the bridge's last hop)\n",
              Median(zmq50), Median(zmq99), kRounds);
  return 0;
}
