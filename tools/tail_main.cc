// wsbridge-tail: subscribes to the bridge's PUB endpoint and prints one JSON line per message:
//   {"seq":1,"upstream_seq":1,"topic":"t","payload":"...","encoding":"utf8",
//    "binary":false,"received_at_unix_ns":...,"epoch":"..."}
// The payload is printed as text when it is valid UTF-8, else base64 ("encoding":"base64").
#include <simdjson.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/json_text.h"
#include "wsbridge.pb.h"

#ifndef WSBRIDGE_VERSION
#define WSBRIDGE_VERSION "dev"
#endif

namespace {

volatile std::sig_atomic_t g_stop = 0;

std::string FormatLine(const wsbridge::v1::Envelope& e) {
  std::string line = "{\"seq\":" + std::to_string(e.seq()) +
                     ",\"upstream_seq\":" + std::to_string(e.upstream_seq()) + ",\"topic\":";
  wsbridge::AppendJsonString(&line, e.topic());
  line += ",\"payload\":";
  if (simdjson::validate_utf8(e.payload().data(), e.payload().size())) {
    wsbridge::AppendJsonString(&line, e.payload());
    line += ",\"encoding\":\"utf8\"";
  } else {
    line += "\"" + wsbridge::Base64(e.payload()) + "\",\"encoding\":\"base64\"";
  }
  char epoch[24];
  std::snprintf(epoch, sizeof epoch, "%016llx", static_cast<unsigned long long>(e.epoch()));
  line += std::string(",\"binary\":") + (e.binary() ? "true" : "false") +
          ",\"received_at_unix_ns\":" + std::to_string(e.received_at_unix_ns()) +
          ",\"epoch\":\"" + epoch + "\"}\n";
  return line;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Subscribe to a wsbridge PUB endpoint and print one JSON line per message."};
  std::string endpoint = "tcp://127.0.0.1:5556";
  std::vector<std::string> topics;
  uint64_t count = 0;
  app.add_option("--endpoint,--pub", endpoint, "PUB endpoint of the bridge")
      ->capture_default_str();
  app.add_option("--topic", topics, "topic prefix to subscribe to (repeatable; default: all)");
  app.add_option("--count", count, "exit after this many messages (0: run until Ctrl-C)");
  app.set_version_flag("--version", std::string("wsbridge-tail ") + WSBRIDGE_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "wsbridge-tail: %s\n", e.what());
    return 2;
  }

  std::signal(SIGINT, [](int) { g_stop = 1; });
  std::signal(SIGTERM, [](int) { g_stop = 1; });

  zmq::context_t ctx(1);
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  try {
    sub.set(zmq::sockopt::rcvhwm, 0);
    sub.set(zmq::sockopt::rcvtimeo, 200);  // so that Ctrl-C is noticed
    if (topics.empty()) topics.push_back("");
    for (const auto& t : topics) sub.set(zmq::sockopt::subscribe, t);
    sub.connect(endpoint);
  } catch (const zmq::error_t& e) {
    std::fprintf(stderr, "wsbridge-tail: cannot connect to %s: %s\n", endpoint.c_str(), e.what());
    return 2;
  }

  wsbridge::v1::Envelope env;
  uint64_t seen = 0;
  while (!g_stop && (count == 0 || seen < count)) {
    zmq::message_t topic, body;
    try {
      if (!sub.recv(topic)) continue;
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
    std::string line = FormatLine(env);
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
    ++seen;
  }
  return 0;
}
