// wsbridge-replay: prints (or republishes) journaled messages by seq range (SPEC §3).
//
//   source  --db FILE        a read-only connection to the database (safe while the daemon runs:
//                            WAL readers neither block the writer nor are blocked by it)
//           --endpoint EP    the daemon's replay endpoint (zmq.replay), paged ReplayReplies;
//                            with --server-key and --client-key-file as a CURVE client
//                            (client/curve_client.h); a refused handshake exits 2 saying so
//   range   --from N (default 1), --to N (default 0: the newest when the replay starts),
//           --topic PREFIX
//   output  --format json    one JSON line per message, as wsbridge-tail prints them
//           --format raw     the payload bytes and a newline
//           --republish EP   [topic][Envelope] on a PUB socket of its own, unchanged (same seq
//                            and epoch), once --subscribers have subscribed
//
// Both sources go through the same pages (bridge/endpoints/replay_endpoint.h ReplayPager), so memory is
// one page whatever the range. A range that retention has trimmed is refused with what is
// still available. A progress bar goes to stderr when it is a terminal and the range is long.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <zmq.hpp>

#include "bridge/endpoints/replay_endpoint.h"
#include "client/curve_client.h"
#include "common/docs.h"
#include "common/envelope_json.h"
#include "storage/store.h"
#include "tools/curve_flags.h"
#include "wsbridge.pb.h"

#ifndef WSBRIDGE_VERSION
#define WSBRIDGE_VERSION "dev"
#endif

namespace {

using Clock = std::chrono::steady_clock;
volatile std::sig_atomic_t g_stop = 0;

[[noreturn]] void Die(const std::string& msg, int code = 1) {
  std::fprintf(stderr, "wsbridge-replay: %s\n", msg.c_str());
  std::exit(code);
}

// Where pages come from.
class Source {
 public:
  virtual ~Source() = default;
  // The next page; a refusal or failure is an error one line long.
  virtual wsbridge::Status Next(wsbridge::v1::ReplayReply* page) = 0;
};

class FileSource final : public Source {
 public:
  static std::unique_ptr<Source> Open(const std::string& path,
                                      const wsbridge::v1::ReplayRequest& req) {
    wsbridge::StoreOptions o;
    o.path = path;
    o.read_only = true;
    auto store = wsbridge::Store::Open(o);
    if (!store.ok()) Die(store.status().message());
    auto src = std::make_unique<FileSource>();
    src->store_ = std::move(store).value();
    wsbridge::ReplayLimits limits;
    limits.max_page_messages = std::max<uint32_t>(limits.max_page_messages, req.max_messages());
    auto pager = wsbridge::ReplayPager::Start(src->store_.get(), req, limits);
    if (!pager.ok()) Die(pager.status().ToString());
    src->pager_ = std::make_unique<wsbridge::ReplayPager>(std::move(pager).value());
    return src;
  }
  wsbridge::Status Next(wsbridge::v1::ReplayReply* page) override { return pager_->NextPage(page); }

 private:
  std::unique_ptr<wsbridge::Store> store_;
  std::unique_ptr<wsbridge::ReplayPager> pager_;
};

class EndpointSource final : public Source {
 public:
  EndpointSource(zmq::context_t& ctx, std::string endpoint, int timeout_ms)
      : ctx_(ctx),
        sock_(ctx, zmq::socket_type::dealer),
        endpoint_(std::move(endpoint)),
        timeout_ms_(timeout_ms) {}
  void Start(const wsbridge::v1::ReplayRequest& req,
             const wsbridge::client::CurveClientKeys& keys) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.set(zmq::sockopt::rcvhwm, 4);
    auto watch = wsbridge::client::ConnectToBridge(ctx_, sock_, endpoint_, keys);
    if (!watch.ok()) Die(watch.status().message(), 2);
    watch_.emplace(std::move(watch).value());
    std::string body;
    req.SerializeToString(&body);
    (void)sock_.send(zmq::buffer(body), zmq::send_flags::dontwait);
  }
  wsbridge::Status Next(wsbridge::v1::ReplayReply* page) override {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms_);
    for (;;) {
      if (g_stop) return wsbridge::Status::Unavailable("interrupted");
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        return wsbridge::Status::Unavailable(
            "no answer from " + endpoint_ + " within " + std::to_string(timeout_ms_) +
            " ms (is the bridge running, and is this its zmq.replay endpoint?)");
      }
      auto ready = watch_->WaitReadable(sock_, std::min(left, std::chrono::milliseconds(200)));
      if (!ready.ok()) Die(ready.status().message(), 2);  // the bridge refused this client
      if (*ready) break;
    }
    zmq::message_t msg;
    (void)sock_.recv(msg, zmq::recv_flags::dontwait);
    bool ok = !msg.more() && page->ParseFromArray(msg.data(), static_cast<int>(msg.size()));
    while (msg.more()) (void)sock_.recv(msg);
    if (!ok)
      return wsbridge::Status::Corruption(endpoint_ +
                                          " answered something that is not a ReplayReply");
    if (!page->error().empty())
      return wsbridge::Status::InvalidArgument(endpoint_ + ": " + page->error());
    return wsbridge::Status::OK();
  }

 private:
  zmq::context_t& ctx_;
  zmq::socket_t sock_;
  std::optional<wsbridge::client::HandshakeWatch> watch_;  // set by Start()
  std::string endpoint_;
  int timeout_ms_;
};

// "[#####     ]  45%  450000/1000000  123456 msg/s" on one line of stderr, redrawn in place.
class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled), start_(Clock::now()) {}
  void Update(uint64_t done, uint64_t total, bool final = false) {
    if (!enabled_ || total == 0) return;
    auto now = Clock::now();
    if (!final && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    double frac = std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
    const int width = 30;
    int filled = static_cast<int>(frac * width);
    double secs = std::chrono::duration<double>(now - start_).count();
    std::string bar(static_cast<size_t>(filled), '#');
    bar.append(static_cast<size_t>(width - filled), ' ');
    std::fprintf(stderr, "\r[%s] %3d%%  %llu/%llu  %.0f msg/s ", bar.c_str(),
                 static_cast<int>(frac * 100), static_cast<unsigned long long>(done),
                 static_cast<unsigned long long>(total), secs > 0 ? done / secs : 0.0);
    drawn_ = true;
  }
  void Finish() {
    if (drawn_) std::fprintf(stderr, "\r\033[K");
  }

 private:
  bool enabled_;
  bool drawn_ = false;
  Clock::time_point start_, last_{};
};

class Republisher {
 public:
  Republisher(zmq::context_t& ctx, const std::string& endpoint, int subscribers, int wait_ms)
      : pub_(ctx, zmq::socket_type::xpub) {
    try {
      pub_.set(zmq::sockopt::xpub_nodrop, 1);  // wait for a slow subscriber, never drop
      pub_.set(zmq::sockopt::sndtimeo, 200);   // so that Ctrl-C is noticed while waiting
      pub_.set(zmq::sockopt::linger, 10000);   // flush what is queued before exiting
      pub_.bind(endpoint);
    } catch (const zmq::error_t& e) {
      Die("--republish: cannot bind " + endpoint + ": " + e.what(), 2);
    }
    endpoint_ = pub_.get(zmq::sockopt::last_endpoint);
    std::fprintf(stderr, "wsbridge-replay: republishing on %s\n", endpoint_.c_str());
    // A PUB sends nothing to a subscriber that has not subscribed yet: wait for them.
    auto deadline = Clock::now() + std::chrono::milliseconds(wait_ms);
    int seen = 0;
    pub_.set(zmq::sockopt::rcvtimeo, 100);
    while (seen < subscribers && !g_stop) {
      zmq::message_t m;
      try {
        if (pub_.recv(m) && m.size() > 0 && static_cast<const char*>(m.data())[0] == 1) ++seen;
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
      }
      if (seen < subscribers && Clock::now() > deadline) {
        Die("--republish: " + std::to_string(seen) + " of " + std::to_string(subscribers) +
            " subscriber(s) connected to " + endpoint_ + " within " + std::to_string(wait_ms) +
            " ms");
      }
    }
  }
  void Send(const wsbridge::v1::Envelope& env) {
    env.SerializeToString(&scratch_);
    for (;;) {
      if (g_stop) return;
      try {
        if (!pub_.send(zmq::buffer(env.topic()), zmq::send_flags::sndmore)) continue;
        (void)pub_.send(zmq::buffer(scratch_), zmq::send_flags::none);
        return;
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
      }
    }
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  zmq::socket_t pub_;
  std::string endpoint_;
  std::string scratch_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Print (or republish) journaled wsbridge messages by seq range, from the database file "
      "(read-only, safe while the daemon runs) or from the daemon's replay endpoint.",
      "wsbridge-replay"};
  std::string db, endpoint, topic, format = "json", republish;
  uint64_t from = 1, to = 0;
  uint32_t page = 1000;
  int timeout_ms = 5000, subscribers = 1, wait_ms = 10000;
  bool no_progress = false;
  auto* db_opt = app.add_option("--db", db, "database file (opened read-only)")->type_name("FILE");
  auto* ep_opt = app.add_option("--endpoint", endpoint, "the daemon's replay endpoint (zmq.replay)")
                     ->type_name("ENDPOINT");
  db_opt->excludes(ep_opt);
  app.add_option("--from", from, "first seq")->capture_default_str();
  app.add_option("--to", to, "last seq (0: the newest when the replay starts)")
      ->capture_default_str();
  app.add_option("--topic", topic, "only topics that start with this prefix");
  app.add_option("--format", format, "json: one JSON line per message; raw: payload + newline")
      ->check(CLI::IsMember({"json", "raw"}))
      ->capture_default_str();
  auto* rep_opt = app.add_option("--republish", republish,
                                 "re-emit [topic][Envelope] on a PUB socket bound here instead "
                                 "of printing (e.g. tcp://127.0.0.1:6000 or tcp://127.0.0.1:*)")
                      ->type_name("ENDPOINT");
  app.add_option("--subscribers", subscribers,
                 "with --republish: wait for this many subscribers before sending")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str()
      ->needs(rep_opt);
  app.add_option("--wait-ms", wait_ms, "with --republish: how long to wait for them")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str()
      ->needs(rep_opt);
  app.add_option("--page", page, "messages per page")
      ->check(CLI::Range(1u, 10000u))
      ->capture_default_str();
  app.add_option("--timeout-ms", timeout_ms, "with --endpoint: give up when a page takes longer")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--no-progress", no_progress, "no progress bar, even on a terminal");
  wsbridge::tools::CurveFlags curve;
  wsbridge::tools::AddCurveFlags(app, &curve, "subscribe");
  app.get_option("--server-key")->needs(ep_opt);
  app.get_option("--client-key-file")->needs(ep_opt);
  app.footer(wsbridge::DocsPointer("protocol.md"));
  app.set_version_flag("--version", std::string("wsbridge-replay ") + WSBRIDGE_VERSION);
  try {
    app.parse(argc, argv);
    if (db.empty() && endpoint.empty()) {
      throw CLI::ValidationError("one of --db FILE or --endpoint ENDPOINT is required");
    }
    if (to != 0 && from > to) {
      throw CLI::ValidationError("--from " + std::to_string(from) + " is above --to " +
                                 std::to_string(to));
    }
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::string what = e.what();
    for (char& c : what) c = c == '\n' ? ' ' : c;
    std::fprintf(stderr, "wsbridge-replay: %s (see --help)\n", what.c_str());
    return 2;
  }
  std::signal(SIGINT, [](int) { g_stop = 1; });
  std::signal(SIGTERM, [](int) { g_stop = 1; });
  std::signal(SIGPIPE, SIG_IGN);

  wsbridge::v1::ReplayRequest req;
  req.set_from_seq(from);
  req.set_to_seq(to);
  req.set_topic_prefix(topic);
  req.set_max_messages(page);

  zmq::context_t ctx(1);
  std::unique_ptr<Source> source;
  if (!db.empty()) {
    source = FileSource::Open(db, req);
  } else {
    auto keys = wsbridge::client::CurveClientKeys::Load(curve.server_key, curve.client_key_file);
    if (!keys.ok()) Die(keys.status().message(), 2);
    auto ep = std::make_unique<EndpointSource>(ctx, endpoint, timeout_ms);
    ep->Start(req, *keys);
    source = std::move(ep);
  }
  std::unique_ptr<Republisher> pub;
  if (!republish.empty()) pub = std::make_unique<Republisher>(ctx, republish, subscribers, wait_ms);

  Progress progress(!no_progress && ::isatty(2) && pub == nullptr);
  wsbridge::v1::ReplayReply reply;
  std::string out;
  uint64_t printed = 0, first_printed = 0, last_printed = 0, total = 0;
  bool first_page = true;
  while (!g_stop) {
    wsbridge::Status s = source->Next(&reply);
    if (!s.ok()) {
      progress.Finish();
      Die(s.message());
    }
    const uint64_t newest = reply.last_seq();
    if (first_page) {
      first_page = false;
      uint64_t end = to == 0 ? newest : std::min(to, newest);
      total = end >= from ? end - from + 1 : 0;
      if (reply.first_available_seq() != 0) {
        // Refused before printing anything: a partial range would look complete.
        uint64_t avail = reply.first_available_seq();
        std::string have = avail <= newest ? std::to_string(avail) + ".." + std::to_string(newest)
                                           : std::string("nothing");
        Die("seq " + std::to_string(from) + ".." + std::to_string(avail - 1) +
            " were trimmed by retention; the journal holds " + have +
            (avail <= newest && (to == 0 || avail <= to)
                 ? " (use --from " + std::to_string(avail) + ")"
                 : std::string("")));
      }
      if (total == 0 && reply.done()) {
        std::fprintf(stderr, "wsbridge-replay: nothing to replay: the journal ends at seq %llu\n",
                     static_cast<unsigned long long>(newest));
      } else if (total >= 10000) {
        progress.Update(0, total, true);
      }
    } else if (reply.first_available_seq() != 0) {
      progress.Finish();
      Die("retention trimmed seq " + std::to_string(last_printed ? last_printed + 1 : from) + ".." +
          std::to_string(reply.first_available_seq() - 1) +
          " while they were being replayed; the journal now starts at " +
          std::to_string(reply.first_available_seq()));
    }
    out.clear();
    for (const auto& env : reply.envelopes()) {
      if (pub) {
        pub->Send(env);
      } else if (format == "raw") {
        out += env.payload();
        out += '\n';
      } else {
        wsbridge::AppendEnvelopeJson(&out, env);
      }
      if (printed++ == 0) first_printed = env.seq();
      last_printed = env.seq();
    }
    if (!out.empty() && std::fwrite(out.data(), 1, out.size(), stdout) != out.size()) {
      progress.Finish();
      Die("cannot write to stdout");
    }
    if (total >= 10000) {
      uint64_t covered =
          reply.done() ? total : (last_printed >= from ? last_printed - from + 1 : 0);
      progress.Update(covered, total, reply.done());
    }
    if (reply.done()) break;
  }
  std::fflush(stdout);
  progress.Finish();
  if (g_stop) Die("interrupted", 130);
  if (pub) {
    std::fprintf(stderr, "wsbridge-replay: republished %llu message(s) (seq %llu..%llu) on %s\n",
                 static_cast<unsigned long long>(printed),
                 static_cast<unsigned long long>(first_printed),
                 static_cast<unsigned long long>(last_printed), pub->endpoint().c_str());
  }
  return 0;
}
