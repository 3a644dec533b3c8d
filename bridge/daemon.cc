#include "bridge/daemon.h"

#include <grp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#include "bridge/endpoints/curve_keys.h"
#include "bridge/endpoints/endpoint_security.h"
#include "bridge/endpoints/http_server.h"
#include "bridge/endpoints/replay_endpoint.h"
#include "bridge/sink/jetstream_sink.h"
#include "bridge/endpoints/zap_handler.h"
#include "bridge/link/upstream.h"
#include "bridge/pipeline/inbound_queue.h"
#include "bridge/pipeline/writer.h"
#include "bridge/protocol/frame_protocol.h"
#include "bridge/protocol/json_fields.h"
#include "bridge/stats.h"
#include "bridge/store_check.h"
#include "common/thread_name.h"

namespace wsbridge {
namespace {

// Backpressure bound of the inbound hand-off (bytes of frames queued for the writer).
// 8 MiB is ~40 ms of 200 k msg/s of 100-byte frames: enough to ride out a slow commit, small
// enough that the writer's taken batch plus a refilled queue stay far below G7's 64 MiB.
constexpr size_t kQueueHighWater = 8u << 20;

// How long an orderly stop may take before the process exits anyway (k8s waits 30 s by
// default before SIGKILL; systemd 90 s).
constexpr std::chrono::seconds kStopBound{10};

// Armed once the first SIGTERM/SIGINT has been taken: a second one exits at once (128 + signal),
// and so does a stop that overruns `bound` (exit 1). What was committed stays committed; what
// was not was never acknowledged. The signals must be blocked in every thread.
class StopGuard {
 public:
  StopGuard(const sigset_t& signals, std::chrono::seconds bound)
      : thread_([this, signals, bound] { Watch(signals, bound); }) {}
  ~StopGuard() {
    done_ = true;
    thread_.join();
  }

 private:
  void Watch(sigset_t signals, std::chrono::seconds bound) {
    auto deadline = std::chrono::steady_clock::now() + bound;
    while (!done_) {
      timespec tick{0, 100 * 1000 * 1000};
      int sig = sigtimedwait(&signals, nullptr, &tick);
      if (sig > 0) {
        spdlog::warn("received signal {} again: exiting now", sig);
        spdlog::default_logger()->flush();
        _exit(128 + sig);
      }
      if (!done_ && std::chrono::steady_clock::now() > deadline) {
        spdlog::error("stopping took longer than {} s: exiting now", bound.count());
        spdlog::default_logger()->flush();
        _exit(1);
      }
    }
  }
  std::atomic<bool> done_{false};
  std::thread thread_;  // last: starts once done_ exists
};

class DaemonImpl final : public Daemon {
 public:
  explicit DaemonImpl(const Config& config)
      : config_(config),
        queue_(kQueueHighWater),
        link_events_([this] { queue_.Wake(); }) {}

  Status Init() {
    // First what the configuration alone decides (URL, TLS files, proxy, field paths): a
    // mistake there is reported before any file is opened or port bound.
    UpstreamHooks hooks;
    hooks.queue = &queue_;
    hooks.stats = &stats_;
    hooks.resume_seq = [this] { return writer_->committed_upstream_seq(); };  // once running
    hooks.events = &link_events_;
    hooks.try_commit_inline = [this](std::vector<InboundFrame>* frames) {
      return writer_->TryCommitInline(frames);  // the writer exists before the I/O thread runs
    };
    auto up = Upstream::Create(config_, std::move(hooks));
    if (!up.ok()) return up.status();
    upstream_ = std::move(up).value();

    // The endpoints' security (SPEC §10): keys read, every endpoint checked, and the CURVE
    // authentication handler bound before any endpoint is.
    auto security = SecurityFromConfig();
    if (!security.ok()) return security.status();
    const EndpointSecurity& sec = *security;
    for (const auto& [endpoint, role] : EndpointRoles()) {
      if (Status st = CheckEndpoint(endpoint, role, sec); !st.ok()) return st;
    }
    if (!sec.curve_secret_key.empty()) {
      auto keys = LoadAuthorizedKeys();
      if (!keys.ok()) return keys.status();
      auto zap = ZapHandler::Start(&zmq_, std::move(keys).value(), &stats_,
                                   [this](const std::string& why) { OnZapStopped(why); });
      if (!zap.ok()) return zap.status();
      zap_ = std::move(zap).value();
      security->watch_handshakes = [z = zap_.get()](zmq::socket_t& socket,
                                                    const std::string& domain) {
        return z->WatchHandshakes(socket, domain);
      };
      spdlog::info("zmq: CURVE on the tcp endpoints, {} authorized keys from {}",
                   zap_->key_count(), config_.zmq.curve.authorized_keys_file);
    }

    StoreOptions so;
    so.path = config_.storage.path;
    so.durability =
        config_.storage.durability == "power" ? Durability::kPower : Durability::kProcess;
    so.outbox_max_messages = config_.storage.outbox_max_messages;
    so.page_size = static_cast<int>(config_.storage.page_size);
    so.journal_max_rows = config_.journal.max_rows;
    so.journal_max_bytes = config_.journal.max_bytes;
    so.journal_max_age_s = config_.journal.max_age_s;
    auto store = Store::Open(so);
    if (!store.ok()) return Status(store.status());
    Cursor c = (*store)->cursor();
    spdlog::info("storage: {} (epoch {:016x}, last seq {}, last upstream seq {})", so.path,
                 c.epoch, c.last_seq, c.last_upstream_seq);

    // ZeroMQ's I/O thread is woken for nearly every batch the writer publishes. As SCHED_BATCH
    // it does not preempt the thread that woke it (it runs on the other core if that is idle,
    // else when the waker yields): at full rate the writer was preempted once per ~90
    // messages. Measured: p50 at 10 000 msg/s 163-187 -> 112-114 us (docs/performance.md).
    zmq_.set(zmq::ctxopt::thread_sched_policy, SCHED_BATCH);
    WriterOptions wo;
    wo.security = sec;
    wo.outbound.security = sec;
    wo.pub_endpoint = config_.zmq.pub;
    wo.pub_hwm = config_.zmq.pub_hwm;
    wo.outbound.endpoint = config_.zmq.send;
    wo.outbound.acks = !config_.protocol.ack_match.empty();
    wo.outbound.ack_id_pointer = DottedToPointer(config_.protocol.ack_id_field);
    if (config_.protocol.framing != "json") {
      // The writer thread's own instance: a FrameProtocol belongs to one thread.
      auto checker = CreateFrameProtocol(config_);
      if (!checker.ok()) return checker.status();
      wo.outbound.check_payload = [p = std::shared_ptr<FrameProtocol>(std::move(*checker))](
                                      std::string_view payload, bool binary) {
        return p->CheckOutbound(payload, binary);
      };
    }
    writer_ = std::make_unique<Writer>(wo, std::move(store).value(), &zmq_, &queue_,
                                       &link_events_, &stats_);
    if (Status s = writer_->Bind(); !s.ok()) return s;
    spdlog::info("zmq: publishing on {}", writer_->pub_endpoint());
    spdlog::info("zmq: send endpoint on {}", writer_->send_endpoint());

    // After the writer: the database file exists and has its schema. Own read-only connection.
    ReplayEndpointOptions ro;
    ro.endpoint = config_.zmq.replay;
    ro.db_path = config_.storage.path;
    ro.security = sec;
    replay_ = std::make_unique<ReplayEndpoint>(ro, &zmq_);
    if (Status s = replay_->Bind(); !s.ok()) return s;
    spdlog::info("zmq: replay on {}", replay_->endpoint());

    // The JetStream sink (SPEC §11), when configured: its own read-only connection too. The
    // writer tells it about new rows and keeps undelivered ones against the age bound.
    if (!config_.sink.jetstream.servers.empty()) {
      JetStreamSinkOptions so;
      so.config = config_.sink.jetstream;
      so.db_path = config_.storage.path;
      so.base_delay_ms = config_.reconnect.base_delay_ms;
      so.max_delay_ms = config_.reconnect.max_delay_ms;
      so.jitter = config_.reconnect.jitter;
      sink_ = std::make_unique<JetStreamSink>(so, &stats_);
      writer_->set_on_journaled([s = sink_.get()](uint64_t last) { s->NotifyJournaled(last); });
      writer_->set_age_hold(sink_->age_hold());
    }

    if (!config_.http.listen.empty()) {
      auto http = HttpServer::Create(config_.http.listen, &stats_);
      if (!http.ok()) return http.status();
      http_ = std::move(http).value();
    }

    writer_->set_resume_reader([u = upstream_.get()] { u->ResumeReading(); });
    writer_->set_deliver([u = upstream_.get()](uint64_t conn, std::vector<OutboxRow> rows) {
      u->Deliver(conn, std::move(rows));
    });
    return Status::OK();
  }

  int Run() override {
    // Signals are taken by sigwait in this thread only; block them before starting threads.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);   // reload zmq.curve.authorized_keys_file
    sigaddset(&set, SIGUSR2);  // tests: stop the CURVE authentication handler
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    if (sink_) {  // first: nothing else runs yet should it fail
      if (Status s = sink_->Start(); !s.ok()) {
        spdlog::critical("stopped (exit 1): {}", s.ToString());
        return 1;
      }
      spdlog::info("sink: copying the journal into JetStream stream {} ({})",
                   config_.sink.jetstream.stream, config_.sink.jetstream.subject_prefix + ".>");
    }
    std::thread writer([this] {
      NameThisThread("wsb-writer");
      writer_->Run();
    });
    std::thread replay([this] {
      NameThisThread("wsb-replay");
      replay_->Run();
    });
    if (http_) http_->Start();
    // The whole-file check, off the start path: the daemon is ready without waiting for it.
    store_check_ = std::make_unique<StoreCheck>(config_.storage.path,
                                                config_.storage.check_interval_s, &stats_);
    store_check_->Start();
    int upstream_code = 0;
    std::thread io([this, &upstream_code] {
      NameThisThread("wsb-upstream");
      upstream_code = upstream_->Run();
      // A fatal upstream condition ends the daemon as a signal would.
      upstream_done_ = true;
      pthread_kill(main_thread_, SIGTERM);
    });

    int sig = 0;
    for (;;) {
      sigwait(&set, &sig);
      if (sig == SIGHUP) {
        ReloadAuthorizedKeys();
      } else if (sig == SIGUSR2) {
        if (zap_) zap_->StopForTest();
      } else {
        break;
      }
    }
    if (!upstream_done_ && ZapFailure().empty()) spdlog::info("received signal {}, stopping", sig);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    StopGuard guard(stop_signals, kStopBound);
    if (http_) http_->BeginShutdown();
    upstream_->Stop();
    io.join();
    writer_->Stop();
    writer.join();
    replay_->Stop();
    replay.join();
    if (sink_) sink_->Stop();
    store_check_->Stop();
    if (http_) http_->Stop();
    if (const std::string why = ZapFailure(); !why.empty()) {
      // Never fail open: without its authentication handler the daemon does not serve.
      spdlog::critical("stopped (exit 4): the CURVE authentication handler stopped: {}; last seq {}",
                       why, stats_.last_seq.load());
      return 4;
    }
    if (upstream_code != 0) {
      // The last line says why the process ends (reconnect.max_attempts exhausted).
      spdlog::critical("stopped (exit {}): {}; last seq {}", upstream_code,
                       stats_.UpstreamReason(), stats_.last_seq.load());
    } else {
      spdlog::info("stopped: last seq {}", stats_.last_seq.load());
    }
    return upstream_code;
  }

  pthread_t main_thread_ = pthread_self();

 private:
  // (endpoint, role) of the three ZeroMQ endpoints.
  std::vector<std::pair<std::string, EndpointRole>> EndpointRoles() const {
    return {{config_.zmq.pub, kPubEndpoint},
            {config_.zmq.send, kSendEndpoint},
            {config_.zmq.replay, kReplayEndpoint}};
  }

  // zmq.ipc_mode, zmq.ipc_group, zmq.allow_insecure and the CURVE secret key.
  StatusOr<EndpointSecurity> SecurityFromConfig() const {
    const ZmqConfig& z = config_.zmq;
    EndpointSecurity sec;
    sec.ipc_mode = static_cast<mode_t>(std::stoul(z.ipc_mode, nullptr, 8));  // checked octal
    if (!z.ipc_group.empty()) {
      struct group* g = getgrnam(z.ipc_group.c_str());
      if (g == nullptr) {
        return Status::InvalidArgument("zmq.ipc_group: no group named \"" + z.ipc_group + "\"");
      }
      sec.ipc_gid = g->gr_gid;
    }
    sec.allow_insecure = z.allow_insecure;
    if (!z.curve.secret_key_file.empty()) {
      auto secret = ReadSecretKeyFile(z.curve.secret_key_file, "zmq.curve.secret_key_file");
      if (!secret.ok()) return secret.status();
      sec.curve_secret_key = std::move(secret).value();
    }
    return sec;
  }

  StatusOr<AuthorizedKeys> LoadAuthorizedKeys() const {
    return ReadAuthorizedKeysFile(config_.zmq.curve.authorized_keys_file);
  }

  // SIGHUP: a file that does not parse keeps the previous list, and says why.
  void ReloadAuthorizedKeys() {
    if (!zap_) {
      spdlog::info("received SIGHUP: no CURVE configured, nothing to reload");
      return;
    }
    auto keys = LoadAuthorizedKeys();
    if (!keys.ok()) {
      spdlog::error("SIGHUP: keeping the previous authorized keys: {}", keys.status().message());
      return;
    }
    const size_t n = keys->size();
    zap_->Reload(std::move(keys).value());
    spdlog::info("SIGHUP: {} authorized keys loaded from {}", n,
                 config_.zmq.curve.authorized_keys_file);
  }

  // The authentication handler's thread ended on its own: stop the daemon, exit non-zero.
  void OnZapStopped(const std::string& why) {
    {
      std::lock_guard<std::mutex> lock(zap_mu_);
      zap_failure_ = why;
    }
    pthread_kill(main_thread_, SIGTERM);
  }

  std::string ZapFailure() {
    std::lock_guard<std::mutex> lock(zap_mu_);
    return zap_failure_;
  }

  const Config config_;
  Stats stats_;
  zmq::context_t zmq_{1};
  // With CURVE: bound before the endpoints, and destroyed after them (declared before them):
  // a CURVE socket left without its handler would admit any client that knows the server key.
  std::unique_ptr<ZapHandler> zap_;
  std::mutex zap_mu_;
  std::string zap_failure_;  // why the handler stopped (guarded by zap_mu_)
  InboundQueue queue_;
  LinkEvents link_events_;  // the upstream reports here, the writer takes; wakes queue_
  std::unique_ptr<Writer> writer_;
  std::unique_ptr<ReplayEndpoint> replay_;
  std::unique_ptr<JetStreamSink> sink_;
  std::unique_ptr<StoreCheck> store_check_;
  std::unique_ptr<Upstream> upstream_;
  std::unique_ptr<HttpServer> http_;

  std::atomic<bool> upstream_done_{false};
};

}  // namespace

StatusOr<std::unique_ptr<Daemon>> Daemon::Create(const Config& config) {
  auto d = std::make_unique<DaemonImpl>(config);
  if (Status s = d->Init(); !s.ok()) return s;
  return std::unique_ptr<Daemon>(std::move(d));
}

}  // namespace wsbridge
