// The whole-file checks: the daemon's background pass and `wsbridge check`. See store_check.h.
#include "bridge/store_check.h"

#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/docs.h"
#include "common/thread_name.h"
#include "storage/store.h"

namespace wsbridge {
namespace {

constexpr size_t kMaxProblems = 20;

// The calling thread runs only when a CPU is otherwise idle, and reads at the idle I/O class
// (honoured by the BFQ scheduler; others ignore it), so that a pass never slows the writer.
void LowestPriority() {
  sched_param param{};
  (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &param);
  constexpr int kWhoProcess = 1, kClassIdle = 3, kClassShift = 13;  // <linux/ioprio.h>
  (void)::syscall(SYS_ioprio_set, kWhoProcess, static_cast<int>(::syscall(SYS_gettid)),
                  kClassIdle << kClassShift);
}

struct Outcome {
  Status status;                      // the check could not run
  std::vector<std::string> problems;  // it ran: what it found (none: sound)
  JournalBounds bounds;
  double seconds = 0;
};

Outcome Run(const std::string& path, const std::atomic<bool>* stop) {
  Outcome out;
  const auto start = std::chrono::steady_clock::now();
  StoreOptions o;
  o.path = path;
  o.read_only = true;
  auto store = Store::Open(o);
  if (!store.ok()) {
    out.status = store.status();
    return out;
  }
  auto problems = (*store)->Verify(kMaxProblems, stop);
  if (!problems.ok()) {
    out.status = problems.status();
    return out;
  }
  out.problems = std::move(problems).value();
  if (auto b = (*store)->Bounds(); b.ok()) out.bounds = *b;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

constexpr const char* kUsage =
    "Usage: wsbridge check --db FILE\n"
    "\n"
    "Reads the whole database file and checks it: SQLite's integrity_check (every page, every\n"
    "index) and wsbridge's own invariants (journal seqs contiguous, the byte count, the outbox's\n"
    "ids). Safe while the bridge runs (it reads one snapshot). Prints one line when the file is\n"
    "sound, or one line per problem found.\n"
    "\n"
    "Exit status: 0 sound, 1 damaged, 2 the check could not run (no such file, not a wsbridge\n"
    "database, I/O error).\n";

}  // namespace

StoreCheck::StoreCheck(std::string db_path, int64_t interval_s, Stats* stats)
    : db_path_(std::move(db_path)), interval_s_(interval_s), stats_(stats) {}

StoreCheck::~StoreCheck() { Stop(); }

void StoreCheck::Start() {
  if (interval_s_ <= 0 || thread_.joinable()) return;
  thread_ = std::thread([this] { Loop(); });
}

void StoreCheck::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StoreCheck::Loop() {
  LowestPriority();  // before the name: a thread named wsb-check is already at its priority
  NameThisThread("wsb-check");
  for (;;) {
    Pass();
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_for(lock, std::chrono::seconds(interval_s_), [this] { return stop_.load(); })) {
      return;
    }
  }
}

void StoreCheck::Pass() {
  Outcome out = Run(db_path_, &stop_);
  if (stop_) return;
  if (!out.status.ok()) {
    spdlog::warn("storage: the background check could not run: {}", out.status.ToString());
    return;
  }
  stats_->storage_check_ns = static_cast<int64_t>(out.seconds * 1e9);
  ++stats_->storage_checks;
  if (out.problems.empty()) {
    spdlog::info("storage: background check: {} sound ({} rows, {:.1f} s)", db_path_,
                 out.bounds.rows, out.seconds);
    return;
  }
  for (const std::string& p : out.problems) {
    spdlog::error("storage: background check: {} damaged: {}", db_path_, p);
  }
  stats_->SetDamage(out.problems.front() + " (" + std::to_string(out.problems.size()) +
                    " problem(s); run wsbridge check --db " + db_path_ + ")");
  stats_->storage_damaged = 1;
}

int CheckMain(int argc, char** argv) {
  std::string db;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::printf("\n%s\n", DocsPointer("operations.md").c_str());
      return 0;
    }
    if (arg == "--db" && i + 1 < argc) {
      db = argv[++i];
    } else if (arg.rfind("--db=", 0) == 0) {
      db = arg.substr(5);
    } else {
      std::fprintf(stderr, "wsbridge check: unexpected argument %s (try --help)\n", arg.c_str());
      return 2;
    }
  }
  if (db.empty()) {
    std::fprintf(stderr, "wsbridge check: --db FILE is required (try --help)\n");
    return 2;
  }
  Outcome out = Run(db, nullptr);
  if (!out.status.ok()) {
    std::fprintf(stderr, "wsbridge check: %s\n", out.status.message().c_str());
    return 2;
  }
  if (out.problems.empty()) {
    std::printf("%s: sound (%llu journal rows, seq %llu..%llu, checked in %.1f s)\n", db.c_str(),
                static_cast<unsigned long long>(out.bounds.rows),
                static_cast<unsigned long long>(out.bounds.first_seq),
                static_cast<unsigned long long>(out.bounds.last_seq), out.seconds);
    return 0;
  }
  for (const std::string& p : out.problems) std::printf("%s: damaged: %s\n", db.c_str(), p.c_str());
  return 1;
}

}  // namespace wsbridge
