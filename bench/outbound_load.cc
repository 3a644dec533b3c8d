// wsbridge-load-outbound: end-to-end outbound intake and drain, real processes.
//
//   intake  P concurrent DEALER producers (threads here, one socket each), each pipelining
//           `window` SendRequests, against a bridge whose upstream is down (so the figure is the
//           send endpoint + group commit alone). Reports accepted/s over the whole run and
//           p50/p99/max of request sent -> ACCEPTED received, per durability.
//   drain   N accepted with the upstream down, then wsbridge-upstream starts: time until the
//           outbox is empty (read-only Store on the live file), with acks and without.
//
// Latency is queueing (Little's law): P x window requests in flight at rate R wait about
// P x window / R. The default window, 16, is where 8 producers get both high throughput and a
// p99 near 2 ms on a 2-core machine; --window 64 shows the throughput ceiling.
//
// Usage: wsbridge-load-outbound [--messages N] [--power-messages N] [--drain N] [--window W]
//                               [--producers P] [--durability process|power]
// (--producers / --durability run that intake row alone, e.g. to profile it; no drain then)
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>

#include "integration/harness.h"
#include "storage/store.h"

using namespace wsbridge;
using namespace wsbridge::testing;
using namespace std::chrono;

namespace {

std::string DeadUrl() { return "ws://127.0.0.1:" + std::to_string(FreePort()) + "/feed"; }

struct ProducerOut {
  std::vector<int64_t> latencies_ns;
  int accepted = 0, other = 0;
  steady_clock::time_point first_send, last_reply;
  bool timed_out = false;
};

// One producer: `count` requests, `window` in flight; ids "<tag><k>-<n>".
void Produce(zmq::context_t& ctx, const std::string& ep, const std::string& tag, int k, int count,
             int window, ProducerOut* out) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::sndhwm, 0);
  s.set(zmq::sockopt::rcvhwm, 0);
  s.set(zmq::sockopt::rcvtimeo, 30000);
  s.connect(ep);
  std::vector<steady_clock::time_point> sent_at(count);
  out->latencies_ns.reserve(count);
  const std::string prefix = tag + std::to_string(k) + "-";
  v1::SendRequest req;
  v1::SendReply reply;
  std::string bytes, pad(60, 'x');
  int sent = 0, answered = 0;
  out->first_send = steady_clock::now();
  while (answered < count) {
    while (sent < count && sent - answered < window) {
      std::string id = prefix + std::to_string(sent);
      req.set_id(id);
      req.set_payload("{\"id\":\"" + id + "\",\"data\":\"" + pad + "\"}");
      req.SerializeToString(&bytes);
      sent_at[sent] = steady_clock::now();
      s.send(zmq::buffer(bytes), zmq::send_flags::none);
      ++sent;
    }
    zmq::message_t msg;
    if (!s.recv(msg)) {
      out->timed_out = true;
      return;
    }
    auto now = steady_clock::now();
    ++answered;
    if (!reply.ParseFromArray(msg.data(), static_cast<int>(msg.size()))) {
      ++out->other;
      continue;
    }
    if (reply.status() != v1::ACCEPTED) {
      ++out->other;
      continue;
    }
    ++out->accepted;
    int n = std::atoi(reply.id().c_str() + prefix.size());
    if (n >= 0 && n < count) out->latencies_ns.push_back((now - sent_at[n]).count());
    out->last_reply = now;
  }
}

struct IntakeResult {
  double rate = 0;
  double p50_us = 0, p99_us = 0, max_us = 0;
  int accepted = 0, other = 0;
  bool ok = false;
};

double Pct(std::vector<int64_t>& v, double p) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return static_cast<double>(v[i]) / 1000.0;
}

IntakeResult Intake(const std::string& durability, int producers, int total, int window) {
  TempDir dir;
  std::string ep;
  Child bridge = StartSendBridge(dir.path(), DeadUrl(), dir.File("b.db"),
                                 {"--set=storage.durability=" + durability,
                                  "--set=storage.outbox_max_messages=100000000",
                                  "--set=log.level=info", "--set=reconnect.base_delay_ms=1000",
                                  "--set=reconnect.max_delay_ms=5000"},
                                 &ep, "bridge");
  IntakeResult r;
  if (ep.empty()) {
    std::fprintf(stderr, "bridge did not start: %s\n", bridge.Stderr().c_str());
    return r;
  }
  zmq::context_t ctx(2);
  // Warm-up: a few requests so that connections and the database are set up.
  {
    ProducerOut w;
    Produce(ctx, ep, "w", 0, 200, 16, &w);
  }
  std::vector<ProducerOut> outs(producers);
  std::vector<std::thread> threads;
  const int each = total / producers;
  for (int k = 0; k < producers; ++k) {
    threads.emplace_back(Produce, std::ref(ctx), ep, "p", k, each, window, &outs[k]);
  }
  for (auto& t : threads) t.join();
  std::vector<int64_t> lat;
  steady_clock::time_point first = outs[0].first_send, last = outs[0].last_reply;
  r.ok = true;
  for (auto& o : outs) {
    if (o.timed_out) r.ok = false;
    r.accepted += o.accepted;
    r.other += o.other;
    first = std::min(first, o.first_send);
    last = std::max(last, o.last_reply);
    lat.insert(lat.end(), o.latencies_ns.begin(), o.latencies_ns.end());
  }
  r.rate = r.accepted / duration<double>(last - first).count();
  r.p50_us = Pct(lat, 0.50);
  r.p99_us = Pct(lat, 0.99);
  r.max_us = lat.empty() ? 0 : static_cast<double>(*std::max_element(lat.begin(), lat.end())) / 1000;
  bridge.Kill(SIGTERM);
  return r;
}

// Accepts n with the upstream down, then starts it; returns messages/s until the outbox is empty.
double Drain(int n, bool acks, int window) {
  TempDir dir;
  const std::string db = dir.File("b.db");
  int port = FreePort();
  std::string ep;
  std::vector<std::string> flags = {"--set=storage.outbox_max_messages=100000000",
                                    "--set=log.level=info"};
  if (acks) flags.push_back("--set=protocol.ack_match=type=ack");
  Child bridge = StartSendBridge(dir.path(), "ws://127.0.0.1:" + std::to_string(port) + "/feed",
                                 db, flags, &ep);
  if (ep.empty()) return 0;
  zmq::context_t ctx;
  ProducerOut o;
  Produce(ctx, ep, "d", 0, n, window, &o);
  if (o.accepted != n) {
    std::fprintf(stderr, "drain: only %d of %d accepted\n", o.accepted, n);
    return 0;
  }
  std::vector<std::string> up = {"--count=1", "--quiet"};
  if (!acks) up.push_back("--no-ack");
  auto t0 = steady_clock::now();
  Child upstream = StartUpstream(dir.path(), up, &port);
  std::optional<uint64_t> depth;
  bool done = WaitFor(
      [&] {
        depth = OutboxDepth(db);
        return depth && *depth == 0;
      },
      seconds(300));
  auto t1 = steady_clock::now();
  bridge.Kill(SIGTERM);
  if (!done) {
    std::fprintf(stderr, "drain: outbox still holds %llu\n",
                 static_cast<unsigned long long>(depth.value_or(0)));
    return 0;
  }
  return n / duration<double>(t1 - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  int messages = 200000, power_messages = 50000, drain = 100000, window = 16, only_producers = 0;
  std::string only_durability;
  for (int i = 1; i < argc; ++i) {
    auto arg = [&](const char* name, int* v) {
      if (std::strcmp(argv[i], name) == 0 && i + 1 < argc) {
        *v = std::atoi(argv[++i]);
        return true;
      }
      return false;
    };
    if (arg("--messages", &messages) || arg("--power-messages", &power_messages) ||
        arg("--drain", &drain) || arg("--window", &window) ||
        arg("--producers", &only_producers)) {
      continue;
    }
    if (std::strcmp(argv[i], "--durability") == 0 && i + 1 < argc) {
      only_durability = argv[++i];
      continue;
    }
    std::fprintf(stderr, "usage: %s [--messages N] [--power-messages N] [--drain N] [--window W] "
                 "[--producers P] [--durability process|power]\n", argv[0]);
    return 2;
  }
  std::printf("outbound intake: DEALER producers, %d requests in flight each, ~100 B payloads, "
              "upstream down\n", window);
  std::printf("%-10s %9s %9s %12s %10s %10s %10s\n", "durability", "producers", "messages",
              "accepted/s", "p50 us", "p99 us", "max us");
  bool ok = true;
  const bool one_row = only_producers != 0 || !only_durability.empty();
  for (std::string d : {"process", "power"}) {
    if (!only_durability.empty() && d != only_durability) continue;
    const std::vector<int> counts =
        only_producers != 0 ? std::vector<int>{only_producers} : std::vector<int>{1, 8};
    for (int p : counts) {
      int n = d == "process" ? messages : power_messages;
      IntakeResult r = Intake(d, p, n, window);
      ok = ok && r.ok && r.other == 0;
      std::printf("%-10s %9d %9d %12.0f %10.0f %10.0f %10.0f%s\n", d.c_str(), p, r.accepted,
                  r.rate, r.p50_us, r.p99_us, r.max_us,
                  r.ok && r.other == 0 ? "" : "  (INCOMPLETE: timeouts or rejections)");
      std::fflush(stdout);
    }
  }
  std::printf("targets (process, 8 producers): >= 150000 accepted/s, p99 <= 2000 us\n");
  if (one_row) return ok ? 0 : 1;
  std::printf("outbox drain to a local wsbridge-upstream (%d messages accepted while it was "
              "down; timed from its start to an empty outbox)\n", drain);
  for (bool acks : {true, false}) {
    double rate = Drain(drain, acks, window);
    std::printf("  %-32s %10.0f messages/s\n",
                acks ? "acks (protocol.ack_match=type=ack)" : "no acks (written = done)", rate);
    std::fflush(stdout);
  }
  return ok ? 0 : 1;
}
