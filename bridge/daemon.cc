#include "bridge/daemon.h"

#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <thread>
#include <zmq.hpp>

#include "bridge/inbound_queue.h"
#include "bridge/stats.h"
#include "bridge/upstream.h"
#include "bridge/writer.h"

namespace wsbridge {
namespace {

// Backpressure bounds of the inbound hand-off (bytes of payload queued for the writer).
constexpr size_t kQueueHighWater = 32u << 20;
constexpr size_t kQueueLowWater = 8u << 20;

class DaemonImpl final : public Daemon {
 public:
  explicit DaemonImpl(const Config& config)
      : config_(config), queue_(kQueueHighWater, kQueueLowWater) {}

  Status Init() {
    StoreOptions so;
    so.path = config_.storage.path;
    so.durability =
        config_.storage.durability == "power" ? Durability::kPower : Durability::kProcess;
    so.outbox_max_messages = config_.storage.outbox_max_messages;
    so.journal_max_rows = config_.journal.max_rows;
    so.journal_max_bytes = config_.journal.max_bytes;
    so.journal_max_age_s = config_.journal.max_age_s;
    auto store = Store::Open(so);
    if (!store.ok()) return Status(store.status());
    Cursor c = (*store)->cursor();
    spdlog::info("storage: {} (epoch {:016x}, last seq {}, last upstream seq {})", so.path,
                 c.epoch, c.last_seq, c.last_upstream_seq);

    WriterOptions wo;
    wo.pub_endpoint = config_.zmq.pub;
    wo.pub_hwm = config_.zmq.pub_hwm;
    writer_ = std::make_unique<Writer>(wo, std::move(store).value(), &zmq_, &queue_, &stats_);
    if (Status s = writer_->Bind(); !s.ok()) return s;
    spdlog::info("zmq: publishing on {}", writer_->pub_endpoint());

    UpstreamHooks hooks;
    hooks.queue = &queue_;
    hooks.stats = &stats_;
    hooks.resume_seq = [w = writer_.get()] { return w->committed_upstream_seq(); };
    auto up = Upstream::Create(config_, std::move(hooks));
    if (!up.ok()) return up.status();
    upstream_ = std::move(up).value();
    writer_->set_resume_reader([u = upstream_.get()] { u->ResumeReading(); });
    return Status::OK();
  }

  int Run() override {
    // Signals are taken by sigwait in this thread only; block them before starting threads.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    std::thread writer([this] { writer_->Run(); });
    int upstream_code = 0;
    std::thread io([this, &upstream_code] {
      upstream_code = upstream_->Run();
      // A fatal upstream condition ends the daemon as a signal would.
      upstream_done_ = true;
      pthread_kill(main_thread_, SIGTERM);
    });

    int sig = 0;
    sigwait(&set, &sig);
    if (!upstream_done_) spdlog::info("received signal {}, stopping", sig);
    upstream_->Stop();
    io.join();
    writer_->Stop();
    writer.join();
    spdlog::info("stopped: last seq {}", stats_.last_seq.load());
    return upstream_code;
  }

  pthread_t main_thread_ = pthread_self();

 private:
  const Config config_;
  Stats stats_;
  zmq::context_t zmq_{1};
  InboundQueue queue_;
  std::unique_ptr<Writer> writer_;
  std::unique_ptr<Upstream> upstream_;
  std::atomic<bool> upstream_done_{false};
};

}  // namespace

StatusOr<std::unique_ptr<Daemon>> Daemon::Create(const Config& config) {
  auto d = std::make_unique<DaemonImpl>(config);
  if (Status s = d->Init(); !s.ok()) return s;
  return std::unique_ptr<Daemon>(std::move(d));
}

}  // namespace wsbridge
