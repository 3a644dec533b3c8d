// examples/jetstream_consumer.js against a real bridge and a real JetStream server (SPEC §11): the
// reference upstream, the bridge with sink.jetstream.servers set, nats-server -js; once the
// bridge's /metrics says the stream acknowledged every row, the example (Node, npm nats v2) reads
// the stream and must print the journal: seq 1..N in order, each row's epoch, upstream seq,
// topic (percent-decoded), receive time and payload as the journal holds them (read-only Store).
//
// Needs the ctest fixture "jetstream_npm" (tests/jetstream/setup.sh puts the npm package in the
// build folder): `ctest -R jetstream_consumer` runs jetstream_setup first. By hand, after it ran
// once: build/tests/jetstream_consumer_test. WSB_JETSTREAM_NODE_MODULES in the environment
// overrides where the npm package is; WSB_NATS_SERVER which nats-server runs (nats_harness.h).
#include <gtest/gtest.h>
#include <simdjson.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "integration/harness.h"
#include "integration/nats_harness.h"

namespace wsbridge::testing {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kRows = 300;
// The upstream's topics, and their subjects (SPEC §11: bytes outside [A-Za-z0-9_-] become '_'):
// '.' and '/' are not subject tokens, '%' and a control character are also percent-encoded in
// Wsbridge-Topic.
const std::map<std::string, std::string> kSubjects = {{"ticks", "wsbridge.ticks"},
                                                      {"fx/eur.usd", "wsbridge.fx_eur_usd"},
                                                      {"50%\x01", "wsbridge.50__"}};

std::string NodeModules() {
  const char* env = std::getenv("WSB_JETSTREAM_NODE_MODULES");
  return env != nullptr && *env != '\0' ? env : WSB_JETSTREAM_NODE_MODULES;
}

// node examples/jetstream_consumer.js `args`, NODE_PATH set, output in <dir>/<tag>.out/.err.
Child StartConsumer(const std::string& dir, const std::vector<std::string>& args,
                    const std::string& tag) {
  std::vector<std::string> argv = {"/usr/bin/env", "node",
                                   std::string(WSB_SOURCE_DIR) + "/examples/jetstream_consumer.js"};
  argv.insert(argv.end(), args.begin(), args.end());
  return Child::Start(argv, dir, tag, {"NODE_PATH=" + NodeModules()});
}

// The value of a sample in /metrics' text (nullopt: not there).
std::optional<double> MetricValue(const std::string& text, const std::string& name) {
  const double v = MetricSample(text, name);
  return v < 0 ? std::nullopt : std::optional<double>(v);
}

std::string Hex16(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

TEST(JetStreamConsumer, ExamplePrintsTheJournalInSeqOrder) {
  TempDir dir;
  NatsServer nats(dir.path());
  ASSERT_OK(nats.Start());

  std::string topics_flag = "--topics=";
  for (const auto& [topic, subject] : kSubjects) topics_flag += topic + ",";
  topics_flag.pop_back();
  int port = 0;
  Child upstream = StartUpstream(
      dir.path(), {"--rate=0", "--count=" + std::to_string(kRows), topics_flag}, &port);
  ASSERT_GT(port, 0) << upstream.Stderr();
  const std::string db = dir.File("bridge.db");
  OsPortBridge bridge =
      StartOsPortBridge(dir.path(), "ws://127.0.0.1:" + std::to_string(port) + "/feed", db,
                        {"--set=sink.jetstream.servers=[\"" + nats.url() + "\"]"});
  ASSERT_GT(bridge.http_port, 0) << bridge.child.Stderr();

  std::string metrics;
  ASSERT_TRUE(WaitFor(
      [&] {
        metrics = HttpRequest(bridge.http_port, "/metrics").body;
        return MetricValue(metrics, "wsbridge_sink_acked_seq").value_or(0) >= kRows;
      },
      10s))
      << metrics << "\n"
      << bridge.child.Stderr();
  EXPECT_EQ(MetricValue(metrics, "wsbridge_sink_connected"), 1.0);
  EXPECT_EQ(MetricValue(metrics, "wsbridge_sink_skipped_total"), 0.0);

  Child consumer = StartConsumer(
      dir.path(), {nats.url(), "WSBRIDGE", "--count", std::to_string(kRows), "--timeout", "10"},
      "consumer");
  const int status = consumer.Wait(15s);
  ASSERT_TRUE(ExitedZero(status)) << "status " << status << ": " << consumer.Stderr();

  const std::vector<JournalRow> rows = ReadJournalRows(db);
  ASSERT_EQ(rows.size(), kRows);
  const auto cursor = ReadCursor(db);
  ASSERT_TRUE(cursor.has_value());
  const std::string epoch = Hex16(cursor->epoch);

  const std::string out = consumer.Stdout();
  ASSERT_EQ(LineCount(out), kRows) << out.substr(0, 2000) << consumer.Stderr();
  std::istringstream lines(out);
  simdjson::dom::parser parser;
  std::set<std::string> topics;
  uint64_t n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    const JournalRow& row = rows[n];
    const InboundMessage& msg = row.msg;
    SCOPED_TRACE("line " + std::to_string(n + 1) + ": " + line);
    simdjson::dom::element e;
    ASSERT_EQ(parser.parse(line).get(e), simdjson::SUCCESS);
    uint64_t seq = 0, stream_seq = 0, upstream_seq = 0, received_at = 0;
    std::string_view subject, got_epoch, topic, payload;
    ASSERT_EQ(e["seq"].get(seq), simdjson::SUCCESS);
    ASSERT_EQ(e["stream_seq"].get(stream_seq), simdjson::SUCCESS);
    ASSERT_EQ(e["upstream_seq"].get(upstream_seq), simdjson::SUCCESS);
    ASSERT_EQ(e["received_at_unix_ns"].get(received_at), simdjson::SUCCESS);
    ASSERT_EQ(e["subject"].get(subject), simdjson::SUCCESS);
    ASSERT_EQ(e["epoch"].get(got_epoch), simdjson::SUCCESS);
    ASSERT_EQ(e["topic"].get(topic), simdjson::SUCCESS);
    ASSERT_EQ(e["payload"].get(payload), simdjson::SUCCESS);
    EXPECT_EQ(seq, n + 1);
    EXPECT_EQ(seq, row.seq);
    EXPECT_EQ(stream_seq, n + 1);  // the stream holds this journal alone, from its start
    EXPECT_EQ(got_epoch, epoch);
    EXPECT_EQ(upstream_seq, msg.upstream_seq);
    EXPECT_EQ(received_at, static_cast<uint64_t>(msg.received_at_unix_ns));
    EXPECT_EQ(topic, msg.topic);
    topics.insert(std::string(topic));
    EXPECT_EQ(subject, kSubjects.at(msg.topic));
    EXPECT_EQ(payload, msg.payload);
    EXPECT_TRUE(e["payload_base64"].error() == simdjson::NO_SUCH_FIELD);  // the payloads are text
  }
  // Every topic came through, the encoded ones included.
  EXPECT_EQ(topics.size(), kSubjects.size());

  // --from-seq: the stream from there on.
  Child tail = StartConsumer(
      dir.path(),
      {nats.url(), "--from-seq", std::to_string(kRows - 1), "--count", "2", "--timeout", "10"},
      "consumer-from");
  ASSERT_TRUE(ExitedZero(tail.Wait(15s))) << tail.Stderr();
  const auto from = LinesWith(tail.Stdout(), "\"seq\":");
  ASSERT_EQ(from.size(), 2u) << tail.Stdout();
  EXPECT_NE(from[0].find("\"seq\":" + std::to_string(kRows - 1) + ","), std::string::npos)
      << from[0];
  EXPECT_NE(from[1].find("\"seq\":" + std::to_string(kRows) + ","), std::string::npos) << from[1];

  // --durable: the server keeps the position, a second run resumes after the first's.
  for (uint64_t first : {uint64_t{1}, kRows / 2 + 1}) {
    Child durable = StartConsumer(
        dir.path(),
        {nats.url(), "--durable", "app", "--count", std::to_string(kRows / 2), "--timeout", "10"},
        "consumer-durable");
    ASSERT_TRUE(ExitedZero(durable.Wait(15s))) << durable.Stderr();
    // The tag's log appends: the runs' lines so far, this run's from index first - 1 on.
    const auto got = LinesWith(durable.Stdout(), "\"seq\":");
    ASSERT_EQ(got.size(), first - 1 + kRows / 2) << durable.Stdout();
    EXPECT_NE(got[first - 1].find("\"seq\":" + std::to_string(first) + ","), std::string::npos)
        << got[first - 1];
    EXPECT_NE(got.back().find("\"seq\":" + std::to_string(first - 1 + kRows / 2) + ","),
              std::string::npos)
        << got.back();
  }
}

// The errors an operator meets first: one line each, exit status 1 (2: a bad flag).
TEST(JetStreamConsumer, ExampleErrorsAreOneLine) {
  TempDir dir;
  NatsServer nats(dir.path());
  ASSERT_OK(nats.Start());

  Child missing = StartConsumer(dir.path(), {nats.url(), "NOPE", "--count", "1"}, "missing");
  EXPECT_TRUE(ExitedWith(missing.Wait(15s), 1));
  EXPECT_EQ(missing.Stderr(),
            "jetstream_consumer.js: stream NOPE not found on " + nats.url() + "\n");
  EXPECT_EQ(missing.Stdout(), "");

  const std::string closed = "nats://127.0.0.1:" + std::to_string(FreePort());
  Child refused = StartConsumer(dir.path(), {closed, "--count", "1"}, "refused");
  EXPECT_TRUE(ExitedWith(refused.Wait(15s), 1));
  EXPECT_EQ(refused.Stderr(),
            "jetstream_consumer.js: cannot connect to " + closed + ": connection refused\n");

  Child bad = StartConsumer(dir.path(), {nats.url(), "--count", "zero"}, "bad");
  EXPECT_TRUE(ExitedWith(bad.Wait(15s), 2));
  EXPECT_EQ(LineCount(bad.Stderr()), 1u) << bad.Stderr();
}

}  // namespace
}  // namespace wsbridge::testing
