#include "bridge/metrics.h"

#include <dirent.h>
#include <prometheus/text_serializer.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>

#include "bridge/clock.h"

namespace wsbridge {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Every state the connection policy reports (connection_policy.h ToString(PolicyState)).
constexpr const char* kConnectionStates[] = {"idle",        "connecting", "open",
                                             "backing_off", "stopped",    "failed"};

// Label values of wsbridge_send_rejections_total, indexed by RejectReason.
constexpr const char* kRejectReasons[] = {"full", "invalid", "storage", "duplicate"};
static_assert(std::size(kRejectReasons) == static_cast<size_t>(RejectReason::kCount));

// Label values of wsbridge_auth_failures_total, indexed by AuthEndpoint.
constexpr const char* kAuthEndpoints[] = {"pub", "send", "replay"};
static_assert(std::size(kAuthEndpoints) == static_cast<size_t>(AuthEndpoint::kCount));

// Label values of wsbridge_sink_errors_total, indexed by SinkError.
constexpr const char* kSinkErrorReasons[] = {"connect",  "auth",     "stream",  "stream_mismatch",
                                             "rejected", "conflict", "timeout", "disconnected"};
static_assert(std::size(kSinkErrorReasons) == static_cast<size_t>(SinkError::kCount));

double Load(const std::atomic<uint64_t>& v) {
  return static_cast<double>(v.load(std::memory_order_relaxed));
}
double Load(const std::atomic<int64_t>& v) {
  return static_cast<double>(v.load(std::memory_order_relaxed));
}

// Collects families in the order they are added.
class Families {
 public:
  MetricFamily& Add(const char* name, const char* help, MetricType type) {
    MetricFamily f;
    f.name = name;
    f.help = help;
    f.type = type;
    out_.push_back(std::move(f));
    return out_.back();
  }
  void Counter(const char* name, const char* help, double value) {
    Add(name, help, MetricType::Counter).metric.push_back(CounterSample(value));
  }
  void Gauge(const char* name, const char* help, double value) {
    Add(name, help, MetricType::Gauge).metric.push_back(GaugeSample(value));
  }
  void Histogram(const char* name, const char* help, const DurationHistogram& h) {
    ClientMetric m;
    uint64_t cumulative = 0;
    for (size_t i = 0; i < DurationHistogram::kBounds.size(); ++i) {
      cumulative += h.bucket(i);
      m.histogram.bucket.push_back({cumulative, DurationHistogram::kBounds[i]});
    }
    cumulative += h.bucket(DurationHistogram::kBounds.size());  // the +Inf bucket
    m.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
    m.histogram.sample_count = cumulative;
    m.histogram.sample_sum = h.sum_seconds();
    Add(name, help, MetricType::Histogram).metric.push_back(std::move(m));
  }

  static ClientMetric CounterSample(double v, std::vector<ClientMetric::Label> labels = {}) {
    ClientMetric m;
    m.label = std::move(labels);
    m.counter.value = v;
    return m;
  }
  static ClientMetric GaugeSample(double v, std::vector<ClientMetric::Label> labels = {}) {
    ClientMetric m;
    m.label = std::move(labels);
    m.gauge.value = v;
    return m;
  }

  std::vector<MetricFamily> Take() { return std::move(out_); }

 private:
  std::vector<MetricFamily> out_;
};


}  // namespace

std::vector<MetricFamily> StatsCollectable::Collect() const {
  const Stats& s = *stats_;
  Families f;

  MetricFamily& build =
      f.Add("wsbridge_build_info", "wsbridge version (always 1)", MetricType::Gauge);
  build.metric.push_back(Families::GaugeSample(1, {{"version", WSBRIDGE_VERSION}}));

  // Upstream connection.
  std::string state = s.UpstreamState();
  MetricFamily& states =
      f.Add("wsbridge_connection_state",
            "Upstream connection state: 1 for the current state, 0 otherwise", MetricType::Gauge);
  for (const char* st : kConnectionStates) {
    states.metric.push_back(Families::GaugeSample(state == st ? 1 : 0, {{"state", st}}));
  }
  f.Gauge("wsbridge_upstream_connected", "1 while the upstream WebSocket is open",
          Load(s.connected));
  MetricFamily& reconnects = f.Add(
      "wsbridge_reconnects_total",
      "Upstream connections lost or attempts failed, by reason (each one leads to a reconnect)",
      MetricType::Counter);
  for (const auto& [reason, n] : s.ReconnectReasons()) {
    reconnects.metric.push_back(
        Families::CounterSample(static_cast<double>(n), {{"reason", reason}}));
  }
  f.Counter("wsbridge_upstream_connects_total", "Successful upstream WebSocket opens",
            Load(s.connects));
  f.Counter("wsbridge_upstream_connect_failures_total", "Failed upstream connection attempts",
            Load(s.connect_failures));
  f.Histogram("wsbridge_heartbeat_rtt_seconds", "Heartbeat round-trip time (ping to pong)",
              s.rtt_seconds);
  f.Counter("wsbridge_oversized_frames_total",
            "Upstream connections closed with 1009 for a frame above upstream.max_message_bytes "
            "(on the wire or once inflated)",
            Load(s.oversized_closes));
  f.Counter("wsbridge_reads_paused_total",
            "Times reading from the upstream paused because the writer fell behind",
            Load(s.reads_paused));

  // Inbound.
  f.Counter("wsbridge_messages_in_total", "Data frames received from the upstream (before dedup)",
            Load(s.frames_in));
  f.Counter("wsbridge_bytes_in_total",
            "Payload bytes received from the upstream, after inflation", Load(s.bytes_in));
  f.Counter("wsbridge_wire_bytes_in_total",
            "Payload bytes received from the upstream as on the wire (before permessage-deflate "
            "and protocol.decompress inflation)",
            Load(s.wire_bytes_in));
  f.Counter("wsbridge_replies_sent_total",
            "Answers sent to the upstream's own pings (protocol.replies, Engine.IO pings)",
            Load(s.replies_sent));
  f.Counter("wsbridge_reply_failures_total",
            "Frames that matched a protocol.replies rule whose {{path}} they lack: no reply sent",
            Load(s.reply_failures));
  f.Counter("wsbridge_inflate_failures_total",
            "Binary frames that protocol.decompress could not inflate (journaled as received)",
            Load(s.inflate_failures));
  f.Counter("wsbridge_malformed_packets_total",
            "Engine.IO / socket.io packets that could not be read (journaled as received)",
            Load(s.malformed_packets));
  f.Counter("wsbridge_frames_without_seq_total",
            "Data frames without a usable upstream sequence number", Load(s.frames_no_seq));
  f.Counter("wsbridge_duplicates_dropped_total",
            "Inbound messages dropped because their upstream seq was already committed",
            Load(s.duplicates_dropped));
  f.Counter("wsbridge_upstream_seq_gaps_total",
            "Forward jumps in the upstream sequence (history the upstream no longer has)",
            Load(s.seq_gaps));
  f.Counter("wsbridge_upstream_seq_gap_messages_total",
            "Upstream sequence numbers skipped by those jumps", Load(s.seq_gap_messages));
  f.Counter("wsbridge_messages_journaled_total", "Inbound messages committed to the journal",
            Load(s.journaled));
  f.Counter("wsbridge_messages_published_total", "Inbound messages published on ZeroMQ",
            Load(s.published));
  f.Gauge("wsbridge_last_seq", "Last bridge sequence number committed", Load(s.last_seq));
  f.Gauge("wsbridge_last_upstream_seq", "Last upstream sequence number committed",
          Load(s.last_upstream_seq));
  f.Gauge("wsbridge_subscriptions", "Live topic subscriptions on the PUB socket",
          Load(s.subscriptions));

  // Storage.
  f.Gauge("wsbridge_storage_ok", "1 while storage commits succeed, 0 while they fail",
          Load(s.storage_ok));
  f.Gauge("wsbridge_storage_damaged",
          "1 once the background check found the database file damaged (see wsbridge check)",
          Load(s.storage_damaged));
  f.Counter("wsbridge_storage_checks_total", "Background whole-file checks completed",
            Load(s.storage_checks));
  f.Gauge("wsbridge_storage_check_seconds", "Duration of the latest background check",
          Load(s.storage_check_ns) / 1e9);
  f.Counter("wsbridge_storage_commits_total", "Storage transactions committed", Load(s.commits));
  f.Counter("wsbridge_commit_failures_total", "Storage commits that failed",
            Load(s.commit_failures));
  f.Histogram("wsbridge_storage_commit_seconds", "Storage commit time per batch", s.commit_seconds);
  f.Gauge("wsbridge_journal_rows", "Rows in the inbound journal", Load(s.journal_rows));
  f.Gauge("wsbridge_journal_bytes", "Payload bytes in the inbound journal", Load(s.journal_bytes));

  // Outbound.
  f.Counter("wsbridge_send_requests_total", "SendRequests received on the send endpoint",
            Load(s.send_requests));
  f.Counter("wsbridge_send_accepted_total", "SendRequests accepted (committed to the outbox)",
            Load(s.send_accepted));
  f.Counter("wsbridge_send_replies_lost_total",
            "SendReplies ZeroMQ could not deliver (producer gone or not reading)",
            Load(s.send_replies_lost));
  MetricFamily& rejections = f.Add("wsbridge_send_rejections_total",
                                   "SendRequests not accepted, by reason", MetricType::Counter);
  for (size_t i = 0; i < s.rejections.size(); ++i) {
    rejections.metric.push_back(
        Families::CounterSample(Load(s.rejections[i]), {{"reason", kRejectReasons[i]}}));
  }
  f.Counter("wsbridge_messages_out_total", "Outbox messages written to the upstream",
            Load(s.messages_out));
  f.Counter("wsbridge_acks_total", "Upstream acks of outbound messages", Load(s.acks));
  f.Gauge("wsbridge_outbox_depth", "Messages in the outbox", Load(s.outbox_depth));
  int64_t oldest = s.outbox_oldest_unix_ns.load(std::memory_order_relaxed);
  double age =
      oldest > 0 ? std::max<double>(0, static_cast<double>(WallNowNs() - oldest) / 1e9) : 0;
  f.Gauge("wsbridge_outbox_oldest_age_seconds",
          "Age of the oldest message in the outbox (0 when empty)", age);

  // Endpoint security.
  MetricFamily& auth_failures =
      f.Add("wsbridge_auth_failures_total",
            "Clients refused during the ZeroMQ handshake, by endpoint (a CURVE key not authorized "
            "for it, or a failed CURVE handshake such as a plain client)",
            MetricType::Counter);
  for (size_t i = 0; i < s.auth_failures.size(); ++i) {
    auth_failures.metric.push_back(
        Families::CounterSample(Load(s.auth_failures[i]), {{"endpoint", kAuthEndpoints[i]}}));
  }

  // The JetStream sink, when configured.
  if (Load(s.sink.enabled) != 0) {
    f.Gauge("wsbridge_sink_connected",
            "1 while the JetStream sink is connected and in step with its stream",
            Load(s.sink.connected));
    f.Counter("wsbridge_sink_published_total", "Journal rows published to JetStream",
              Load(s.sink.published));
    f.Gauge("wsbridge_sink_acked_seq", "Highest journal seq JetStream acknowledged",
            Load(s.sink.acked_seq));
    f.Gauge("wsbridge_sink_lag_messages", "Journal rows not yet acknowledged by JetStream",
            Load(s.sink.lag_messages));
    f.Gauge("wsbridge_sink_lag_seconds",
            "Age of the oldest journal row not yet acknowledged by JetStream (0: none)",
            Load(s.sink.lag_ns) / 1e9);
    f.Counter("wsbridge_sink_skipped_total",
              "Journal rows trimmed by retention (rows/bytes) before the sink delivered them",
              Load(s.sink.skipped));
    MetricFamily& errors = f.Add("wsbridge_sink_errors_total",
                                 "JetStream sink failures, by reason", MetricType::Counter);
    for (size_t i = 0; i < s.sink.errors.size(); ++i) {
      errors.metric.push_back(
          Families::CounterSample(Load(s.sink.errors[i]), {{"reason", kSinkErrorReasons[i]}}));
    }
  }
  return f.Take();
}

std::vector<MetricFamily> ProcessCollectable::Collect() const {
  Families f;
  // /proc/self/stat: fields after the ")" that ends the command name.
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  size_t paren = stat.rfind(')');
  if (paren != std::string::npos) {
    std::istringstream in(stat.substr(paren + 2));
    std::vector<std::string> fields;  // fields[0] is field 3 (state)
    for (std::string v; in >> v;) fields.push_back(v);
    if (fields.size() > 21) {
      const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
      const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
      double utime = std::stod(fields[11]), stime = std::stod(fields[12]);
      double start_ticks = std::stod(fields[19]);
      f.Counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds",
                (utime + stime) / ticks);
      f.Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes",
              std::stod(fields[20]));
      f.Gauge("process_resident_memory_bytes", "Resident memory size in bytes",
              std::stod(fields[21]) * page);
      std::ifstream boot("/proc/stat");
      for (std::string key; boot >> key;) {
        if (key == "btime") {
          double btime = 0;
          boot >> btime;
          f.Gauge("process_start_time_seconds",
                  "Start time of the process since unix epoch in seconds",
                  btime + start_ticks / ticks);
          break;
        }
      }
    }
  }
  if (DIR* d = opendir("/proc/self/fd")) {
    int n = 0;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    closedir(d);
    f.Gauge("process_open_fds", "Number of open file descriptors", n - 1);  // minus the DIR's
  }
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    f.Gauge("process_max_fds", "Maximum number of open file descriptors",
            static_cast<double>(lim.rlim_cur));
  }
  return f.Take();
}

std::string RenderMetrics(const std::vector<std::shared_ptr<prometheus::Collectable>>& from) {
  std::vector<MetricFamily> families;
  for (const auto& c : from) {
    auto more = c->Collect();
    families.insert(families.end(), std::make_move_iterator(more.begin()),
                    std::make_move_iterator(more.end()));
  }
  return prometheus::TextSerializer().Serialize(families);
}

Readiness CheckReadiness(const Stats& stats) {
  Readiness r;
  bool open = stats.connected.load(std::memory_order_relaxed) == 1;
  bool storage = stats.storage_ok.load(std::memory_order_relaxed) == 1;
  r.ready = open && storage;
  if (!open) {
    std::string reason = stats.UpstreamReason();
    r.reason += "upstream " + stats.UpstreamState() + (reason.empty() ? "" : ": " + reason) + "\n";
  }
  if (!storage) {
    std::string reason = stats.StorageReason();
    r.reason += reason.empty() ? "storage: commits failing\n" : reason + "\n";
  }
  // Damage found by the background check: committed rows may be unreadable. Someone must look.
  if (stats.storage_damaged.load(std::memory_order_relaxed) == 1) {
    r.ready = false;
    r.reason += "storage: damaged: " + stats.Damage() + "\n";
  }
  // A required sink that is not delivering (SPEC §11); an optional one never holds /readyz.
  if (stats.sink.required.load(std::memory_order_relaxed) == 1 &&
      stats.sink.connected.load(std::memory_order_relaxed) == 0) {
    r.ready = false;
    r.reason += "sink: " + stats.SinkReason() + "\n";
  }
  return r;
}

}  // namespace wsbridge
