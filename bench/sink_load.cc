// wsbridge-load-sink: the JetStream sink's cost and speed (SPEC §11), as ratios measured in one
// run against a real nats-server (replicas 1, file storage, on loopback):
//
//   inbound   the bridge's inbound rate to a ZeroMQ subscriber at saturation (100 B messages, as
//             fast as the upstream sends) with the sink on, against the same run without it,
//             interleaved rounds (goal >= 0.8x)
//   catch-up  the sink publishing a journal of N rows it has not delivered yet (the bridge
//             started on a full database, no upstream traffic), against a plain nats.c loop that
//             js_PublishAsync's the same rows with the same headers (read from the same file
//             beforehand) to the same server with the same max pending (goal >= 0.7x)
//   lag       the upstream at 10 000 msg/s for 10 s; a core NATS subscriber on wsbridge.> takes,
//             for each message, its arrival time minus Wsbridge-Received-At (when the bridge read
//             it off the socket): p50 / p99 / max (goal p99 <= 50 ms)
//
//   wsbridge-load-sink [SCALE [inbound|catchup|lag]]   (SCALE multiplies the message counts;
//                                                      one part alone, or all three)
#include <nats/nats.h>
#include <sys/resource.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <mutex>
#include <thread>

#include "integration/harness.h"
#include "integration/nats_harness.h"

using namespace wsbridge;
using namespace wsbridge::testing;
using namespace std::chrono;

namespace {

constexpr int kMaxPending = 4096;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// A sample of the daemon's /metrics, -1 when absent (harness).
double Metric(int http_port, const std::string& name) { return MetricAt(http_port, name); }

std::string Servers(const NatsServer& nats) { return "[\"" + nats.url() + "\"]"; }

// The bridge's inbound rate (msg/s at the subscriber) for n messages, sink on or off.
double InboundRate(const std::string& dir, const NatsServer& nats, int n, bool sink, int run) {
  const std::string tag = (sink ? "sink" : "plain") + std::to_string(run);
  std::vector<std::string> flags = {"--set=heartbeat.interval_ms=0"};
  if (sink) {
    flags.push_back("--set=sink.jetstream.servers=" + Servers(nats));
    flags.push_back("--set=sink.jetstream.stream=RUN" + std::to_string(run));
    flags.push_back("--set=sink.jetstream.subject_prefix=run" + std::to_string(run));
  }
  int port = FreePort();
  BridgeEndpoints ep;
  Child bridge = StartBridge(dir, "ws://127.0.0.1:" + std::to_string(port) + "/feed",
                             dir + "/" + tag + ".db", flags, &ep, tag + "-bridge");
  zmq::context_t ctx;
  Subscriber sub(ctx, ep.pub);
  bridge.WaitForOutput("subscription to topic prefix", "err");
  Child up = StartUpstream(
      dir, {"--count=" + std::to_string(n), "--rate=0", "--history=50000", "--payload-bytes=100"},
      &port, tag + "-upstream");
  const ReceivedSpan got = ReceiveUntilSeq(sub, n, seconds(30));
  bridge.Kill(SIGTERM);
  if (got.last_seq != static_cast<uint64_t>(n)) {
    std::fprintf(stderr, "inbound run %s incomplete: up to seq %" PRIu64 "\n", tag.c_str(),
                 got.last_seq);
    return 0;
  }
  return got.Rate();
}

// The journal's rows as the sink would publish them: subject, data and headers.
struct Prepared {
  std::string subject;  // the topic: the subject without its prefix
  std::string data;
  std::vector<std::pair<std::string, std::string>> headers;
};

double SelfCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// A plain nats.c loop: js_PublishAsync of every row, at most kMaxPending in flight, until all
// are acknowledged. Seconds taken.
double PlainPublish(const NatsServer& nats, const std::vector<Prepared>& rows,
                    const std::string& prefix) {
  auto client = NatsClient::Connect(nats.url());
  if (!client.ok()) return 0;
  jsCtx* js = nullptr;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.PublishAsync.MaxPending = kMaxPending;
  natsConnection_JetStream(&js, client->connection(), &jo);
  const auto t0 = steady_clock::now();
  for (const Prepared& r : rows) {
    natsMsg* m = nullptr;
    const std::string subject = prefix + "." + r.subject;
    natsMsg_Create(&m, subject.c_str(), nullptr, r.data.data(), static_cast<int>(r.data.size()));
    for (const auto& [k, v] : r.headers) natsMsgHeader_Set(m, k.c_str(), v.c_str());
    if (js_PublishMsgAsync(js, &m, nullptr) != NATS_OK) {
      natsMsg_Destroy(m);
      std::fprintf(stderr, "plain publish failed\n");
      break;
    }
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = 60000;
  js_PublishAsyncComplete(js, &po);
  const double s = duration<double>(steady_clock::now() - t0).count();
  jsCtx_Destroy(js);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const int scale = argc > 1 ? std::max(1, std::atoi(argv[1])) : 1;
  const std::string only = argc > 2 ? argv[2] : "";
  TempDir dir;
  NatsServer nats(dir.path());
  if (Status s = nats.Start(); !s.ok()) {
    std::fprintf(stderr, "nats-server: %s\n", s.ToString().c_str());
    return 1;
  }

  // 1. Inbound at saturation, sink on and off, interleaved.
  const int n = 300000 * scale;
  std::vector<double> plain, with_sink;
  for (int round = 0; round < 3; ++round) {
    plain.push_back(InboundRate(dir.path(), nats, n, false, round));
    if (only == "catchup" || only == "lag") break;  // one journal for the catch-up
    with_sink.push_back(InboundRate(dir.path(), nats, n, true, round));
  }
  const double ratio = Median(plain) > 0 ? Median(with_sink) / Median(plain) : 0;
  if (!with_sink.empty())
    std::printf("inbound at saturation, %d messages of 100 B, median of 3 interleaved runs\n", n);
  if (!with_sink.empty()) {
    std::printf("  without the sink  %10.0f msg/s\n  with the sink     %10.0f msg/s\n",
                Median(plain), Median(with_sink));
    std::printf("  ratio             %10.2fx   (goal >= 0.8x)\n\n", ratio);
  }
  if (only == "inbound") return 0;

  // 2. Catch-up: the sink on plain0.db's rows (never delivered) against a plain loop.
  const std::string db = dir.path() + "/plain0.db";
  std::vector<JournalRow> rows;
  if (auto store = OpenStoreReadOnly(db);
      !store.ok() || !(*store)->ReadJournal(1, 0, "", n, &rows).ok()) {
    std::fprintf(stderr, "cannot read %s\n", db.c_str());
    return 1;
  }
  const uint64_t epoch = ReadCursor(db)->epoch;
  std::vector<Prepared> prepared;
  prepared.reserve(rows.size());
  for (const JournalRow& r : rows) {
    char id[48];
    std::snprintf(id, sizeof id, "%016" PRIx64 "-%" PRIu64, epoch, r.seq);
    char hex[20];
    std::snprintf(hex, sizeof hex, "%016" PRIx64, epoch);
    prepared.push_back({r.msg.topic,
                        r.msg.payload,
                        {{"Nats-Msg-Id", id},
                         {"Wsbridge-Seq", std::to_string(r.seq)},
                         {"Wsbridge-Epoch", hex},
                         {"Wsbridge-Upstream-Seq", std::to_string(r.msg.upstream_seq)},
                         {"Wsbridge-Topic", r.msg.topic},
                         {"Wsbridge-Received-At", std::to_string(r.msg.received_at_unix_ns)}}});
  }
  std::vector<double> plain_rates, sink_rates, plain_cpu, sink_cpu, plain_server, sink_server;
  const double per_row = 1e6 / rows.size();  // seconds -> microseconds per row
  for (int round = 0; round < 3; ++round) {
    // A stream of its own each round: the same rows into a purged stream would be duplicates
    // (same Nats-Msg-Id within the window), which the server drops at a third of the cost.
    const std::string prefix = "plain" + std::to_string(round);
    (void)CreateStream(nats.url(), "PLAIN" + std::to_string(round), {prefix + ".>"});
    const double self0 = SelfCpuSeconds(), server0 = ProcessCpuSeconds(nats.pid());
    const double plain_s = PlainPublish(nats, prepared, prefix);
    plain_rates.push_back(plain_s > 0 ? rows.size() / plain_s : 0);
    plain_cpu.push_back((SelfCpuSeconds() - self0) * per_row);
    plain_server.push_back((ProcessCpuSeconds(nats.pid()) - server0) * per_row);
    // The bridge on the same database, its upstream absent: all it does is catch up.
    const std::string stream = "CATCHUP" + std::to_string(round);
    OsPortBridge b = StartOsPortBridge(
        dir.path(), "ws://127.0.0.1:" + std::to_string(FreePort()) + "/feed", db,
        {"--set=sink.jetstream.servers=" + Servers(nats), "--set=sink.jetstream.stream=" + stream,
         "--set=sink.jetstream.subject_prefix=catchup" + std::to_string(round),
         "--set=log.level=info"},
        "catchup" + std::to_string(round));
    const auto t0 = steady_clock::now();
    const double bridge0 = ProcessCpuSeconds(b.child.pid());
    const double sink_server0 = ProcessCpuSeconds(nats.pid());
    WaitFor([&] { return Metric(b.http_port, "wsbridge_sink_acked_seq") >= rows.size(); },
            seconds(120));
    sink_cpu.push_back((ProcessCpuSeconds(b.child.pid()) - bridge0) * per_row);
    sink_server.push_back((ProcessCpuSeconds(nats.pid()) - sink_server0) * per_row);
    // Its start-up is in the figure (opening, creating the stream): a little against it.
    const double s = duration<double>(steady_clock::now() - t0).count();
    sink_rates.push_back(rows.size() / s);
    b.child.Kill(SIGTERM);
  }
  std::printf(
      "catch-up of %zu rows (100 B), median of 3 interleaved runs; CPU per row of the "
      "publishing process and of nats-server\n",
      rows.size());
  std::printf(
      "  nats.c js_PublishAsync loop  %10.0f msg/s   client %5.2f us   server %5.2f us "
      "(6 headers)\n",
      Median(plain_rates), Median(plain_cpu), Median(plain_server));
  std::printf(
      "  the sink                     %10.0f msg/s   client %5.2f us   server %5.2f us "
      "(+ expected last sequence and msg id)\n",
      Median(sink_rates), Median(sink_cpu), Median(sink_server));
  std::printf("  ratio                        %10.2fx   (goal >= 0.7x)\n\n",
              Median(plain_rates) > 0 ? Median(sink_rates) / Median(plain_rates) : 0);

  if (only == "catchup") return 0;

  // 3. Lag at 10 000 msg/s: arrival at a core subscriber minus Wsbridge-Received-At.
  auto client = NatsClient::Connect(nats.url());
  if (!client.ok()) return 1;
  std::mutex mu;
  std::vector<int64_t> lags;
  natsSubscription* sub = nullptr;
  auto on_msg = [](natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* state = static_cast<std::pair<std::mutex*, std::vector<int64_t>*>*>(closure);
    const int64_t now = WallNowUs() * 1000;
    const char* at = nullptr;
    if (natsMsgHeader_Get(msg, "Wsbridge-Received-At", &at) == NATS_OK) {
      std::lock_guard<std::mutex> lock(*state->first);
      state->second->push_back(now - std::stoll(at));
    }
    natsMsg_Destroy(msg);
  };
  std::pair<std::mutex*, std::vector<int64_t>*> state{&mu, &lags};
  natsConnection_Subscribe(&sub, client->connection(), "lag.>", on_msg, &state);
  natsSubscription_SetPendingLimits(sub, -1, -1);
  natsConnection_Flush(client->connection());
  const int live = 100000 * scale;
  int port = 0;
  Child up = StartUpstream(
      dir.path(),
      {"--count=" + std::to_string(live), "--rate=10000", "--history=" + std::to_string(live)},
      &port, "lag-upstream");
  OsPortBridge b = StartOsPortBridge(
      dir.path(), "ws://127.0.0.1:" + std::to_string(port) + "/feed", dir.path() + "/lag.db",
      {"--set=sink.jetstream.servers=" + Servers(nats), "--set=sink.jetstream.stream=LAG",
       "--set=sink.jetstream.subject_prefix=lag", "--set=log.level=info"},
      "lag");
  WaitFor([&] { return Metric(b.http_port, "wsbridge_sink_acked_seq") >= live; }, seconds(120));
  WaitFor(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return lags.size() >= static_cast<size_t>(live);
      },
      seconds(10));
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  std::vector<int64_t> v;
  {
    std::lock_guard<std::mutex> lock(mu);
    v.assign(lags.begin() + std::min(lags.size(), lags.size() / 10), lags.end());  // warm-up
  }
  std::sort(v.begin(), v.end());
  auto pct = [&](double p) {
    return v.empty() ? 0.0 : v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))] / 1e6;
  };
  std::printf(
      "sink lag at 10 000 msg/s, %d messages (last 90 %%): received by the bridge -> "
      "at a NATS subscriber\n",
      live);
  std::printf("  p50 %.2f ms   p99 %.2f ms   max %.2f ms   (goal p99 <= 50 ms)\n", pct(0.5),
              pct(0.99), v.empty() ? 0.0 : v.back() / 1e6);
  b.child.Kill(SIGTERM);
  return 0;
}
