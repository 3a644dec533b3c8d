// wsbridge-load-journal: the journal at scale, with real processes (make bench). Prints figures;
// asserts nothing.
//
//   bytes written per message  wsbridge-upstream at 1 000 and 10 000 msg/s of ~100 B into the
//                              bridge for kSeconds each, after a second of warm-up: the bridge's
//                              /proc/<pid>/io write_bytes (what it made the kernel write: WAL,
//                              database, checkpoints) per journaled message. Twice: a new
//                              database with the default 4 KiB pages, and one with
//                              storage.page_size = 1024.
//   restart                    exec -> /readyz 200 with an empty database and with a 1 M-row
//                              journal (page cache warm; then dropped, when this is root and may),
//                              and after a SIGKILL at full rate (the WAL recovered at open).
//   retention at full rate     journal.max_rows = 50 000 against --rate 0 (as fast as the
//                              upstream builds, 400 000 messages): the peak row count, how long
//                              after the feed ended the journal is back under its bound, and the
//                              database file's size a third of the way in and at the end.
//
// `wsbridge-load-journal bytes`: the first part only (with WSB_BIN_DIR=<another build>/bridge,
// an A/B of two builds; only the default row when that build has no storage.page_size).
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness.h"

using namespace wsbridge;
using namespace wsbridge::testing;
using namespace std::chrono;

namespace {

constexpr int kSeconds = 10;

std::string Url(int port) { return "ws://127.0.0.1:" + std::to_string(port) + "/"; }

// write_bytes from /proc/<pid>/io (0 when unreadable).
uint64_t WriteBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/io");
  std::string key;
  uint64_t value = 0;
  while (in >> key >> value) {
    if (key == "write_bytes:") return value;
  }
  return 0;
}

off_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

// Bytes written per journaled message at `rate` msg/s, on database `db`.
double BytesPerMessage(const std::string& dir, int rate, const std::string& db,
                       std::vector<std::string> flags, const std::string& tag) {
  int port = 0;
  Child up = StartUpstream(
      dir, {"--rate=" + std::to_string(rate), "--payload-bytes=100", "--history=1000", "-q"}, &port,
      tag + "-upstream");
  flags.push_back("--set=log.level=info");
  OsPortBridge b = StartOsPortBridge(dir, Url(port), db, flags, tag);
  if (b.http_port == 0) {
    std::fprintf(stderr, "%s: the bridge did not start:\n%s", tag.c_str(),
                 b.child.Stderr().c_str());
    return -1;
  }
  auto journaled = [&] { return MetricAt(b.http_port, "wsbridge_messages_journaled_total"); };
  if (!WaitFor([&] { return journaled() >= rate; }, seconds(30))) return -1;  // warm-up
  const uint64_t w0 = WriteBytes(b.child.pid());
  const double m0 = journaled();
  std::this_thread::sleep_for(seconds(kSeconds));  // the measured run
  const uint64_t w1 = WriteBytes(b.child.pid());
  const double m1 = journaled();
  b.child.Kill(SIGTERM);
  return m1 > m0 ? static_cast<double>(w1 - w0) / (m1 - m0) : -1;
}

double MillisToReady(const std::string& dir, int port, const std::string& db,
                     const std::string& tag) {
  const double s = SecondsToReady(dir, Url(port), db, {"--set=log.level=info"}, tag);
  return s < 0 ? -1 : s * 1e3;
}

// The fastest of `n` runs.
double BestMillisToReady(const std::string& dir, int port, const std::string& db,
                         const std::string& tag, int n = 3) {
  double best = -1;
  for (int i = 0; i < n; ++i) {
    const double ms = MillisToReady(dir, port, db, tag);
    if (ms >= 0 && (best < 0 || ms < best)) best = ms;
  }
  return best;
}

bool DropPageCache() {
  ::sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  f << "1\n";
  f.flush();
  return static_cast<bool>(f);
}

void Restart(const std::string& dir) {
  int port = 0;
  Child up = StartUpstream(dir, {"--rate=100", "--history=1000", "-q"}, &port, "restart-up");
  const std::string empty = dir + "/empty.db", large = dir + "/large.db";
  { (void)Store::Open(StoreOptions{empty}); }
  if (Status s = FillJournal(large, 1000000); !s.ok()) {
    std::fprintf(stderr, "cannot write the 1 M-row journal: %s\n", s.ToString().c_str());
    return;
  }
  std::printf("  empty database              %7.1f ms\n",
              BestMillisToReady(dir, port, empty, "ready-empty"));
  std::printf("  1 M rows (%3lld MiB), warm    %7.1f ms\n",
              static_cast<long long>(FileSize(large) >> 20),
              BestMillisToReady(dir, port, large, "ready-large"));
  if (DropPageCache()) {
    std::printf("  1 M rows, page cache dropped %6.1f ms\n",
                MillisToReady(dir, port, large, "ready-cold"));
  } else {
    std::printf("  1 M rows, page cache dropped  (cannot drop the page cache here)\n");
  }
  // Killed at full rate: the next start recovers the WAL.
  int fast_port = 0;
  Child fast = StartUpstream(dir, {"--rate=0", "--history=1000", "-q"}, &fast_port, "kill-up");
  const std::string killed = dir + "/killed.db";
  {
    OsPortBridge b =
        StartOsPortBridge(dir, Url(fast_port), killed, {"--set=log.level=info"}, "kill");
    WaitFor([&] { return MetricAt(b.http_port, "wsbridge_messages_journaled_total") >= 300000; },
            seconds(60));
    b.child.Kill(SIGKILL);
  }
  fast.Kill(SIGTERM);
  const off_t wal = FileSize(killed + "-wal");
  std::printf("  after kill -9 at full rate  %7.1f ms (a WAL of %lld KiB to recover)\n",
              MillisToReady(dir, port, killed, "ready-killed"), static_cast<long long>(wal >> 10));
}

void Retention(const std::string& dir) {
  constexpr uint64_t kCount = 400000, kBound = 50000;
  int port = 0;
  Child up =
      StartUpstream(dir, {"--rate=0", "--count=" + std::to_string(kCount), "--history=50000", "-q"},
                    &port, "retention-up");
  const std::string db = dir + "/retention.db";
  OsPortBridge b = StartOsPortBridge(
      dir, Url(port), db,
      {"--set=log.level=info", "--set=journal.max_rows=" + std::to_string(kBound)}, "retention");
  uint64_t peak = 0;
  off_t size_third = -1;
  steady_clock::time_point fed;
  bool done = WaitFor(
      [&] {
        auto bounds = ReadBounds(db);
        if (!bounds) return false;
        peak = std::max(peak, bounds->rows);
        if (size_third < 0 && bounds->last_seq >= kCount / 3) size_third = FileSize(db);
        return bounds->last_seq == kCount;
      },
      seconds(120));
  fed = steady_clock::now();
  WaitFor(
      [&] {
        auto bounds = ReadBounds(db);
        return bounds && bounds->rows <= kBound;
      },
      seconds(60));
  const double back_ms = duration<double, std::milli>(steady_clock::now() - fed).count();
  std::printf("  journal.max_rows %llu, %llu messages at full rate%s\n",
              static_cast<unsigned long long>(kBound), static_cast<unsigned long long>(kCount),
              done ? "" : " (INCOMPLETE)");
  std::printf("  peak %llu rows (%.2fx the bound), back under it %.0f ms after the feed ended\n",
              static_cast<unsigned long long>(peak), static_cast<double>(peak) / kBound, back_ms);
  std::printf("  database file: %.1f MiB a third of the way in, %.1f MiB at the end\n",
              static_cast<double>(size_third) / (1 << 20),
              static_cast<double>(FileSize(db)) / (1 << 20));
  b.child.Kill(SIGTERM);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string part = argc > 1 ? argv[1] : "";  // "bytes": that part only
  TempDir dir;
  std::printf("bytes written per journaled message, %d s at each rate, ~100 B messages\n",
              kSeconds);
  std::printf("  %-34s %12s %12s\n", "", "1 000 msg/s", "10 000 msg/s");
  for (int page : {4096, 2048, 1024}) {
    double bpm[2];
    int i = 0;
    for (int rate : {1000, 10000}) {
      const std::string tag = "bpm" + std::to_string(page) + "-" + std::to_string(rate);
      std::vector<std::string> flags;  // none for the default: WSB_BIN_DIR may be an older build
      if (page != 4096) flags.push_back("--set=storage.page_size=" + std::to_string(page));
      bpm[i++] = BytesPerMessage(dir.path(), rate, dir.File(tag + ".db"), flags, tag);
    }
    const std::string label =
        "storage.page_size " + std::to_string(page) + (page == 4096 ? " (default)" : "");
    std::printf("  %-34s %10.0f B %10.0f B\n", label.c_str(), bpm[0], bpm[1]);
  }
  std::printf("  goals: <= 2048 B at 1 000 msg/s, <= 1024 B at 10 000 msg/s\n\n");
  if (part == "bytes") return 0;
  std::printf("restart: exec -> /readyz 200 (fastest of 3)\n");
  Restart(dir.path());
  std::printf("\nretention at full rate\n");
  Retention(dir.path());
  return 0;
}
