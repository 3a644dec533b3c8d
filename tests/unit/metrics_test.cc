// /metrics from Stats, /readyz's decision, and the HTTP server answering on a real socket.
#include "bridge/metrics.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <prometheus/metric_family.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <map>
#include <regex>

#include "bridge/endpoints/http_server.h"
#include "testutil.h"

namespace wsbridge {
namespace {

const prometheus::MetricFamily* Find(const std::vector<prometheus::MetricFamily>& fams,
                                     const std::string& name) {
  for (const auto& f : fams) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

TEST(StatsCollectable, ExportsEveryFamilyTheDashboardUses) {
  Stats s;
  auto fams = StatsCollectable(&s).Collect();
  for (const char* name : {"wsbridge_connection_state",
                           "wsbridge_upstream_connected",
                           "wsbridge_reconnects_total",
                           "wsbridge_messages_in_total",
                           "wsbridge_messages_published_total",
                           "wsbridge_messages_journaled_total",
                           "wsbridge_messages_out_total",
                           "wsbridge_acks_total",
                           "wsbridge_duplicates_dropped_total",
                           "wsbridge_upstream_seq_gaps_total",
                           "wsbridge_upstream_seq_gap_messages_total",
                           "wsbridge_frames_without_seq_total",
                           "wsbridge_send_requests_total",
                           "wsbridge_send_rejections_total",
                           "wsbridge_outbox_depth",
                           "wsbridge_outbox_oldest_age_seconds",
                           "wsbridge_journal_rows",
                           "wsbridge_journal_bytes",
                           "wsbridge_last_seq",
                           "wsbridge_last_upstream_seq",
                           "wsbridge_subscriptions",
                           "wsbridge_heartbeat_rtt_seconds",
                           "wsbridge_storage_commit_seconds",
                           "wsbridge_storage_ok",
                           "wsbridge_commit_failures_total",
                           "wsbridge_reads_paused_total",
                           "wsbridge_oversized_frames_total",
                           "wsbridge_auth_failures_total"}) {
    const auto* f = Find(fams, name);
    ASSERT_NE(f, nullptr) << name;
    EXPECT_FALSE(f->help.empty()) << name;
  }
}

TEST(StatsCollectable, ValuesComeFromStatsAtCollectTime) {
  Stats s;
  s.frames_in = 7;
  s.journaled = 6;
  s.duplicates_dropped = 1;
  s.connected = 1;
  s.SetUpstreamState("open", "");
  s.CountReconnectReason("heartbeat_timeout");
  s.CountReconnectReason("heartbeat_timeout");
  s.CountReconnectReason("tcp");
  s.rejections[static_cast<size_t>(RejectReason::kFull)] = 3;
  s.auth_failures[static_cast<size_t>(AuthEndpoint::kSend)] = 2;
  s.commit_seconds.Observe(200000);      // 0.2 ms
  s.commit_seconds.Observe(3000000);     // 3 ms
  s.commit_seconds.Observe(5000000000);  // 5 s: beyond the last bound
  s.outbox_oldest_unix_ns = 1;           // long ago

  auto fams = StatsCollectable(&s).Collect();
  EXPECT_EQ(Find(fams, "wsbridge_messages_in_total")->metric[0].counter.value, 7);
  EXPECT_EQ(Find(fams, "wsbridge_messages_journaled_total")->metric[0].counter.value, 6);
  EXPECT_EQ(Find(fams, "wsbridge_upstream_connected")->metric[0].gauge.value, 1);

  const auto* states = Find(fams, "wsbridge_connection_state");
  ASSERT_EQ(states->metric.size(), 6u);
  for (const auto& m : states->metric) {
    EXPECT_EQ(m.gauge.value, m.label[0].value == "open" ? 1 : 0) << m.label[0].value;
  }
  // Every known reason has a series from the start; only the counted ones are above 0.
  const auto* reconnects = Find(fams, "wsbridge_reconnects_total");
  ASSERT_EQ(reconnects->metric.size(), 12u);
  std::map<std::string, double> by_reason;
  for (const auto& m : reconnects->metric) by_reason[m.label[0].value] = m.counter.value;
  EXPECT_EQ(by_reason.at("heartbeat_timeout"), 2);
  EXPECT_EQ(by_reason.at("tcp"), 1);
  EXPECT_EQ(by_reason.at("dns"), 0);
  EXPECT_EQ(by_reason.at("message_too_big"), 0);

  const auto* rejections = Find(fams, "wsbridge_send_rejections_total");
  ASSERT_EQ(rejections->metric.size(), 4u);
  EXPECT_EQ(rejections->metric[0].label[0].value, "full");
  EXPECT_EQ(rejections->metric[0].counter.value, 3);
  EXPECT_EQ(rejections->metric[3].label[0].value, "duplicate");

  const auto* auth = Find(fams, "wsbridge_auth_failures_total");
  ASSERT_EQ(auth->metric.size(), 3u);  // every endpoint has a series from the start
  EXPECT_EQ(auth->metric[1].label[0].name, "endpoint");
  EXPECT_EQ(auth->metric[1].label[0].value, "send");
  EXPECT_EQ(auth->metric[1].counter.value, 2);
  EXPECT_EQ(auth->metric[2].label[0].value, "replay");

  const auto& h = Find(fams, "wsbridge_storage_commit_seconds")->metric[0].histogram;
  EXPECT_EQ(h.sample_count, 3u);
  EXPECT_NEAR(h.sample_sum, 5.0032, 1e-9);
  ASSERT_EQ(h.bucket.size(), DurationHistogram::kBounds.size() + 1);
  EXPECT_EQ(h.bucket[0].cumulative_count, 0u);   // <= 50 us
  EXPECT_EQ(h.bucket[2].cumulative_count, 1u);   // <= 250 us
  EXPECT_EQ(h.bucket[6].cumulative_count, 2u);   // <= 5 ms
  EXPECT_EQ(h.bucket[13].cumulative_count, 2u);  // <= 1 s
  EXPECT_TRUE(std::isinf(h.bucket.back().upper_bound));
  EXPECT_EQ(h.bucket.back().cumulative_count, 3u);

  EXPECT_GT(Find(fams, "wsbridge_outbox_oldest_age_seconds")->metric[0].gauge.value, 1e9);
}

TEST(RenderMetrics, TextFormat) {
  Stats s;
  s.frames_in = 42;
  std::string text = RenderMetrics(
      {std::make_shared<StatsCollectable>(&s), std::make_shared<ProcessCollectable>()});
  EXPECT_NE(text.find("# TYPE wsbridge_messages_in_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("\nwsbridge_messages_in_total 42\n"), std::string::npos) << text;
  EXPECT_NE(text.find("wsbridge_heartbeat_rtt_seconds_bucket{le=\"+Inf\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("wsbridge_send_rejections_total{reason=\"storage\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("\nprocess_resident_memory_bytes "), std::string::npos);
  EXPECT_NE(text.find("\nprocess_open_fds "), std::string::npos);
}

TEST(Readiness, UpstreamAndStorage) {
  Stats s;
  s.SetUpstreamState("backing_off", "tcp: Connection refused");
  Readiness r = CheckReadiness(s);
  EXPECT_FALSE(r.ready);
  EXPECT_EQ(r.reason, "upstream backing_off: tcp: Connection refused\n");

  s.connected = 1;
  s.SetUpstreamState("open", "");
  EXPECT_TRUE(CheckReadiness(s).ready);

  s.storage_ok = 0;
  s.SetStorageReason("storage: disk full");
  r = CheckReadiness(s);
  EXPECT_FALSE(r.ready);
  EXPECT_EQ(r.reason, "storage: disk full\n");
}

// One request on a fresh connection; returns the whole response ("" when there is none).
std::string Request(int port, const std::string& raw) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      send(fd, raw.data(), raw.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(raw.size())) {
    char buf[8192];
    for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;)
      out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

int StatusOf(const std::string& response) {
  std::smatch m;
  if (!std::regex_search(response, m, std::regex(R"(^HTTP/1\.[01] (\d{3}))"))) return 0;
  return std::stoi(m[1]);
}

std::string BodyOf(const std::string& response) {
  size_t p = response.find("\r\n\r\n");
  return p == std::string::npos ? "" : response.substr(p + 4);
}

std::string Get(const std::string& path, const std::string& method = "GET") {
  return method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
}

class Http : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = HttpServer::Create("127.0.0.1:0", &stats_);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    std::smatch m;
    std::string addr = server_->address();
    ASSERT_TRUE(std::regex_match(addr, m, std::regex(R"(127\.0\.0\.1:(\d+))"))) << addr;
    port_ = std::stoi(m[1]);
    ASSERT_GT(port_, 0);
    server_->Start();
  }
  Stats stats_;
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

TEST_F(Http, Endpoints) {
  std::string r = Request(port_, Get("/healthz"));
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_EQ(BodyOf(r), "ok\n");

  r = Request(port_, Get("/readyz"));
  EXPECT_EQ(StatusOf(r), 503) << r;
  EXPECT_EQ(BodyOf(r), "upstream idle: not connected yet\n");
  stats_.connected = 1;
  stats_.SetUpstreamState("open", "");
  r = Request(port_, Get("/readyz?verbose=1"));
  EXPECT_EQ(StatusOf(r), 200) << r;

  stats_.frames_in = 5;
  r = Request(port_, Get("/metrics"));
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << r;
  EXPECT_NE(BodyOf(r).find("\nwsbridge_messages_in_total 5\n"), std::string::npos);

  server_->BeginShutdown();
  r = Request(port_, Get("/readyz"));
  EXPECT_EQ(StatusOf(r), 503) << r;
  EXPECT_EQ(BodyOf(r), "shutting down\n");
  EXPECT_EQ(StatusOf(Request(port_, Get("/healthz"))), 200);
}

TEST_F(Http, BadRequestsGet4xxAndTheServerGoesOn) {
  EXPECT_EQ(StatusOf(Request(port_, Get("/nope"))), 404);
  EXPECT_EQ(StatusOf(Request(port_, Get("/"))), 404);
  std::string r = Request(port_, Get("/metrics", "POST"));
  EXPECT_EQ(StatusOf(r), 405) << r;
  EXPECT_NE(r.find("Allow: GET, HEAD"), std::string::npos) << r;
  EXPECT_EQ(StatusOf(Request(port_, Get("/metrics", "DELETE"))), 405);
  EXPECT_EQ(StatusOf(Request(port_, "garbage\r\n\r\n")) / 100, 4);
  EXPECT_EQ(StatusOf(Request(
                port_, "GET /healthz HTTP/1.1\r\nX: " + std::string(20000, 'a') + "\r\n\r\n")) /
                100,
            4);
  // A WebSocket handshake: there is nothing to upgrade to.
  EXPECT_EQ(StatusOf(Request(port_,
                             "GET /metrics HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Key: "
                             "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")),
            400);
  std::string head = Request(port_, Get("/healthz", "HEAD"));
  EXPECT_EQ(StatusOf(head), 200) << head;
  EXPECT_EQ(BodyOf(head), "");
  EXPECT_EQ(StatusOf(Request(port_, Get("/healthz"))), 200);
}

TEST_F(Http, StopIsIdempotentAndFreesThePort) {
  server_->Stop();
  server_->Stop();
  EXPECT_EQ(Request(port_, Get("/healthz")), "");
  auto again = HttpServer::Create("127.0.0.1:" + std::to_string(port_), &stats_);
  EXPECT_TRUE(again.ok()) << again.status().ToString();
}

TEST(HttpCreate, AddressInUseNamesTheKey) {
  Stats s;
  auto first = HttpServer::Create("127.0.0.1:0", &s);
  ASSERT_TRUE(first.ok());
  auto second = HttpServer::Create((*first)->address(), &s);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("http.listen"), std::string::npos)
      << second.status().message();
}

}  // namespace
}  // namespace wsbridge
