// wsbridge-tail: subscribes to the bridge's PUB endpoint and prints one JSON line per message
// (the format is in common/envelope_json.h, shared with wsbridge-replay).
//
// With --fill-gaps it uses the gap-filling subscriber (client/): every seq is printed once and
// in order, whatever the PUB socket dropped, by asking the replay endpoint (--replay) for what
// is missing; --from-seq N starts at seq N, replaying what came before the tail started.
//
// --server-key and --client-key-file make it a CURVE client of both endpoints
// (client/curve_client.h). When the bridge refuses its handshake (a key not authorized to
// subscribe, a plain client on a CURVE endpoint) it says so and exits 1 instead of waiting for
// messages that will never come. Exit codes: 0 done (--count reached, or Ctrl-C), 1 refused or
// failed, 2 bad flags or endpoint.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "client/curve_client.h"
#include "client/gap_filling_subscriber.h"
#include "common/docs.h"
#include "common/envelope_json.h"
#include "tools/curve_flags.h"
#include "wsbridge.pb.h"

#ifndef WSBRIDGE_VERSION
#define WSBRIDGE_VERSION "dev"
#endif

namespace {

volatile std::sig_atomic_t g_stop = 0;

void Print(const wsbridge::v1::Envelope& env) {
  std::string line = wsbridge::EnvelopeJsonLine(env);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

bool Matches(const std::vector<std::string>& prefixes, const std::string& topic) {
  for (const auto& p : prefixes) {
    if (topic.compare(0, p.size(), p) == 0) return true;
  }
  return false;
}

int PlainTail(zmq::context_t& ctx, const std::string& endpoint, std::vector<std::string> topics,
              uint64_t count, const wsbridge::client::CurveClientKeys& keys) {
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::rcvhwm, 0);
  if (topics.empty()) topics.push_back("");
  for (const auto& t : topics) sub.set(zmq::sockopt::subscribe, t);
  auto watch = wsbridge::client::ConnectToBridge(ctx, sub, endpoint, keys);
  if (!watch.ok()) {
    std::fprintf(stderr, "wsbridge-tail: %s\n", watch.status().message().c_str());
    return 2;
  }
  wsbridge::v1::Envelope env;
  uint64_t seen = 0;
  while (!g_stop && (count == 0 || seen < count)) {
    // In slices, so that Ctrl-C is noticed.
    auto ready = watch->WaitReadable(sub, std::chrono::milliseconds(200));
    if (!ready.ok()) {
      std::fprintf(stderr, "wsbridge-tail: %s\n", ready.status().message().c_str());
      return 1;
    }
    if (!*ready) continue;
    zmq::message_t topic, body;
    try {
      if (!sub.recv(topic, zmq::recv_flags::dontwait)) continue;
      if (!topic.more() || !sub.recv(body)) continue;
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    while (body.more()) (void)sub.recv(body);  // a frame we do not understand: skip the rest
    if (!env.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
      std::fprintf(stderr, "wsbridge-tail: skipped a message that is not an Envelope\n");
      continue;
    }
    Print(env);
    ++seen;
  }
  return 0;
}

int GapFillingTail(zmq::context_t& ctx, const std::string& endpoint, const std::string& replay,
                   const std::vector<std::string>& topics, uint64_t count, uint64_t from_seq,
                   int idle_check_ms, const wsbridge::tools::CurveFlags& curve) {
  namespace client = wsbridge::client;
  client::GapFillingOptions o;
  o.pub_endpoint = endpoint;
  o.replay_endpoint = replay;
  o.server_key = curve.server_key;
  o.client_key_file = curve.client_key_file;
  o.start_seq = from_seq;
  o.idle_check = std::chrono::milliseconds(idle_check_ms);
  // One prefix goes to the replay endpoint as a filter; several are filtered here.
  if (topics.size() == 1) o.topic_prefix = topics[0];
  uint64_t seen = 0;
  client::GapFillingHandlers h;
  h.on_message = [&](const wsbridge::v1::Envelope& env) {
    if (topics.size() > 1 && !Matches(topics, env.topic())) return;
    if (count != 0 && seen >= count) return;
    Print(env);
    ++seen;
  };
  h.on_epoch_change = [](uint64_t old_epoch, uint64_t new_epoch) {
    std::fprintf(stderr,
                 "wsbridge-tail: the bridge's database was replaced (epoch %s -> %s): "
                 "starting over at seq 1 of the new history\n",
                 wsbridge::EpochHex(old_epoch).c_str(), wsbridge::EpochHex(new_epoch).c_str());
  };
  h.on_lost = [](uint64_t from, uint64_t to) {
    std::fprintf(stderr,
                 "wsbridge-tail: seq %llu..%llu are lost: trimmed by retention before they "
                 "could be replayed\n",
                 static_cast<unsigned long long>(from), static_cast<unsigned long long>(to));
  };
  h.on_warning = [](const std::string& what) {
    std::fprintf(stderr, "wsbridge-tail: %s\n", what.c_str());
  };
  auto sub = client::GapFillingSubscriber::Create(&ctx, o, std::move(h));
  if (!sub.ok()) {
    std::fprintf(stderr, "wsbridge-tail: %s\n", sub.status().message().c_str());
    return 2;
  }
  while (!g_stop && (count == 0 || seen < count)) {
    wsbridge::Status s = (*sub)->Poll(std::chrono::milliseconds(200));
    if (!s.ok()) {
      std::fprintf(stderr, "wsbridge-tail: %s\n", s.message().c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Subscribe to a wsbridge PUB endpoint and print one JSON line per message.",
               "wsbridge-tail"};
  std::string endpoint = "tcp://127.0.0.1:5556";
  std::string replay;
  std::vector<std::string> topics;
  uint64_t count = 0;
  uint64_t from_seq = 0;
  bool fill_gaps = false;
  int idle_check_ms = 1000;
  app.add_option("--endpoint,--pub", endpoint, "PUB endpoint of the bridge")->capture_default_str();
  app.add_option("--topic", topics, "topic prefix to subscribe to (repeatable; default: all)");
  app.add_option("--count", count, "exit after this many messages (0: run until Ctrl-C)");
  auto* fill = app.add_flag("--fill-gaps", fill_gaps,
                            "print every seq once and in order: ask the replay endpoint for "
                            "whatever the PUB socket dropped");
  auto* rep = app.add_option("--replay", replay,
                             "replay endpoint of the bridge (zmq.replay), for --fill-gaps");
  app.add_option("--from-seq", from_seq,
                 "with --fill-gaps: start at this seq, replaying what came before "
                 "(default: the first live message)")
      ->needs(fill);
  app.add_option("--idle-check-ms", idle_check_ms,
                 "with --fill-gaps: after this long without messages, ask the journal whether "
                 "any were missed (0: never)")
      ->capture_default_str()
      ->needs(fill);
  fill->needs(rep);
  wsbridge::tools::CurveFlags curve;
  wsbridge::tools::AddCurveFlags(app, &curve, "subscribe");
  app.footer(wsbridge::DocsPointer("protocol.md"));
  app.set_version_flag("--version", std::string("wsbridge-tail ") + WSBRIDGE_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::string what = e.what();
    for (char& c : what) c = c == '\n' ? ' ' : c;
    std::fprintf(stderr, "wsbridge-tail: %s (see --help)\n", what.c_str());
    return 2;
  }

  std::signal(SIGINT, [](int) { g_stop = 1; });
  std::signal(SIGTERM, [](int) { g_stop = 1; });

  zmq::context_t ctx(1);
  if (!fill_gaps) {
    auto keys = wsbridge::client::CurveClientKeys::Load(curve.server_key, curve.client_key_file);
    if (!keys.ok()) {
      std::fprintf(stderr, "wsbridge-tail: %s\n", keys.status().message().c_str());
      return 2;
    }
    return PlainTail(ctx, endpoint, topics, count, *keys);
  }
  return GapFillingTail(ctx, endpoint, replay, topics, count, from_seq, idle_check_ms, curve);
}
