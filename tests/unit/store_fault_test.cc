// The Store under storage faults, through the fault-injecting VFS (storage/testing/fault_vfs.h):
// power cuts at seeded random points (inside commits and background checkpoints), a kill -9 of
// the process, disk full, I/O errors at every write of a commit, and a failing fsync.
//
// Every test drives the Store with a seeded random workload (journal rows of random bytes,
// outbox accepts, duplicates, acks and deliveries) and keeps a model of what Commit() said was
// committed. After each fault the file is reopened and compared with the model, field by field.
//
// What these tests show (docs/reliability.md quotes it):
//   durability=power    a power cut loses no commit that returned OK. The commit in flight at
//                       the cut is either wholly there or wholly absent.
//   durability=process  a crash of the process (SIGKILL) loses no commit that returned OK. A
//                       power cut loses exactly the commits whose WAL frames were not yet
//                       fsynced, which in WAL mode with synchronous=NORMAL happens at each
//                       checkpoint (every ~1000 WAL pages, ~4 MiB): what survives is always
//                       the state after some earlier commit (a prefix), never a torn one.
//   disk full / EIO     Commit() returns an IOError ("database or disk is full" / "disk I/O
//                       error"), nothing of the batch is applied, and the same batch commits
//                       once space returns: nothing lost, nothing twice.
//   fsync failure       Commit() returns an IOError; nothing of it is applied, also after a
//                       power cut that follows.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "storage/store.h"
#include "storage/testing/fault_vfs.h"
#include "testutil.h"

namespace wsbridge {
namespace {

using testing::FaultVfs;
using testing::FileCounters;
using testing::TempDir;
using testing::WriteFault;
using Kind = SendOutcome::Kind;

// ---- Workload and model

// Random batches: 1-4 journal rows of random bytes (so every batch moves last_seq), sometimes
// outbox accepts, a re-sent id, acks and deliveries. Depends only on its seed and the number
// of batches drawn, not on what was committed: a forked child and its parent draw the same.
class Workload {
 public:
  Workload(uint64_t seed, size_t payload_max) : rng_(seed), payload_max_(payload_max) {}

  Batch Next() {
    ++step_;
    Batch b;
    const int rows = 1 + static_cast<int>(rng_() % 4);
    for (int i = 0; i < rows; ++i) {
      InboundMessage m;
      m.upstream_seq = next_upstream_++;
      m.topic = "t" + std::to_string(rng_() % 3);
      m.payload = Bytes(1 + rng_() % payload_max_);
      m.binary = rng_() % 2 == 0;
      m.received_at_unix_ns = static_cast<int64_t>(step_);
      b.inbound.push_back(std::move(m));
    }
    b.last_upstream_seq = next_upstream_ - 1;
    if (rng_() % 3 == 0) {
      const int n = 1 + static_cast<int>(rng_() % 2);
      for (int j = 0; j < n; ++j) {
        OutboundRequest r;
        r.id = "id-" + std::to_string(step_) + "-" + std::to_string(j);
        r.payload = Bytes(1 + rng_() % 200);
        r.binary = rng_() % 2 == 0;
        b.outbound.push_back(std::move(r));
      }
    }
    if (rng_() % 20 == 0) {  // a producer retrying an id it sent before (maybe accepted)
      OutboundRequest r;
      r.id = "id-" + std::to_string(1 + rng_() % step_) + "-0";
      r.payload = "retry";
      b.outbound.push_back(std::move(r));
    }
    if (rng_() % 4 == 0) b.acked_ids.push_back("id-" + std::to_string(1 + rng_() % step_) + "-1");
    if (rng_() % 10 == 0) b.delivered_up_to = rng_() % (step_ / 2 + 1);
    b.now_unix_ns = static_cast<int64_t>(step_);
    return b;
  }

 private:
  std::string Bytes(size_t n) {
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(rng_());
    return s;
  }

  std::mt19937_64 rng_;
  size_t payload_max_;
  uint64_t step_ = 0;
  uint64_t next_upstream_ = 1;
};

// What the store must hold after a sequence of committed batches (same rules as the Store:
// deletions first, then the journal, then accepts in order, an id seen before is a duplicate).
struct Model {
  std::vector<JournalRow> rows;
  uint64_t last_upstream_seq = 0;
  uint64_t last_outbox_seq = 0;
  std::map<uint64_t, OutboxRow> outbox;
  std::map<std::string, uint64_t> ids;  // every id ever accepted -> its outbox_seq

  // Applies a committed batch; when `result` is given, checks the Store's answers against it.
  void Apply(const Batch& b, const BatchResult* result) {
    if (b.delivered_up_to > 0) outbox.erase(outbox.begin(), outbox.upper_bound(b.delivered_up_to));
    for (const std::string& id : b.acked_ids) {
      for (auto it = outbox.begin(); it != outbox.end();) {
        it = it->second.id == id ? outbox.erase(it) : std::next(it);
      }
    }
    if (result != nullptr && !b.inbound.empty()) {
      EXPECT_EQ(result->first_seq, rows.size() + 1);
    }
    for (const InboundMessage& m : b.inbound) rows.push_back(JournalRow{rows.size() + 1, m});
    last_upstream_seq = std::max(last_upstream_seq, b.last_upstream_seq);
    for (size_t i = 0; i < b.outbound.size(); ++i) {
      const OutboundRequest& r = b.outbound[i];
      SendOutcome want;
      if (auto it = ids.find(r.id); it != ids.end()) {
        want.kind = Kind::kDuplicate;
        want.outbox_seq = it->second;
      } else {
        want.outbox_seq = ++last_outbox_seq;
        ids[r.id] = want.outbox_seq;
        outbox[want.outbox_seq] = OutboxRow{want.outbox_seq, r.id, r.payload, r.binary,
                                            b.now_unix_ns};
      }
      if (result != nullptr && i < result->outbound.size()) {
        EXPECT_EQ(static_cast<int>(result->outbound[i].kind), static_cast<int>(want.kind))
            << "request " << r.id;
        EXPECT_EQ(result->outbound[i].outbox_seq, want.outbox_seq) << "request " << r.id;
      }
    }
    if (result != nullptr) EXPECT_EQ(result->outbound.size(), b.outbound.size());
  }
};

Model ModelOf(const std::vector<Batch>& batches, size_t n) {
  Model m;
  for (size_t i = 0; i < n && i < batches.size(); ++i) m.Apply(batches[i], nullptr);
  return m;
}

// "" when the store holds exactly what the model says, else the first difference.
std::string Diff(Store& store, const Model& model) {
  const Cursor c = store.cursor();
  if (c.last_seq != model.rows.size()) {
    return "cursor.last_seq " + std::to_string(c.last_seq) + ", want " +
           std::to_string(model.rows.size());
  }
  if (c.last_upstream_seq != model.last_upstream_seq) {
    return "cursor.last_upstream_seq " + std::to_string(c.last_upstream_seq) + ", want " +
           std::to_string(model.last_upstream_seq);
  }
  std::vector<JournalRow> rows;
  Status s = store.ReadJournal(1, 0, "", 1u << 30, &rows);
  if (!s.ok()) return "ReadJournal: " + s.ToString();
  if (rows.size() != model.rows.size()) {
    return "journal has " + std::to_string(rows.size()) + " rows, want " +
           std::to_string(model.rows.size());
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    const JournalRow& got = rows[i];
    const JournalRow& want = model.rows[i];
    if (got.seq != want.seq || got.msg.upstream_seq != want.msg.upstream_seq ||
        got.msg.topic != want.msg.topic || got.msg.payload != want.msg.payload ||
        got.msg.binary != want.msg.binary ||
        got.msg.received_at_unix_ns != want.msg.received_at_unix_ns) {
      return "journal row " + std::to_string(i + 1) + " differs";
    }
  }
  std::vector<OutboxRow> out;
  s = store.ReadOutbox(0, 1u << 30, &out);
  if (!s.ok()) return "ReadOutbox: " + s.ToString();
  if (out.size() != model.outbox.size()) {
    return "outbox has " + std::to_string(out.size()) + " rows, want " +
           std::to_string(model.outbox.size());
  }
  auto it = model.outbox.begin();
  for (const OutboxRow& got : out) {
    const OutboxRow& want = (it++)->second;
    if (got.outbox_seq != want.outbox_seq || got.id != want.id || got.payload != want.payload ||
        got.binary != want.binary || got.accepted_at_unix_ns != want.accepted_at_unix_ns) {
      return "outbox row " + std::to_string(got.outbox_seq) + " differs";
    }
  }
  auto stats = store.Outbox();
  if (!stats.ok()) return "Outbox: " + stats.status().ToString();
  if (stats->depth != model.outbox.size()) return "outbox depth differs";
  return "";
}

// How many of `batches` a store holds: every batch adds at least one journal row, so last_seq
// names the prefix.
size_t CommittedPrefix(const Cursor& c, const std::vector<Batch>& batches) {
  uint64_t rows = 0;
  for (size_t i = 0; i < batches.size(); ++i) {
    if (rows == c.last_seq) return i;
    rows += batches[i].inbound.size();
  }
  return rows == c.last_seq ? batches.size() : SIZE_MAX;
}

StoreOptions FaultOptions(const std::string& path, const FaultVfs& vfs, Durability d) {
  StoreOptions o;
  o.path = path;
  o.durability = d;
  o.vfs_name = vfs.name();
  return o;
}

std::unique_ptr<Store> OpenOrDie(const StoreOptions& o) {
  auto s = Store::Open(o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

uint64_t Seed() {
  // WSB_SEED=n replays a run; the seed is printed either way.
  const char* env = std::getenv("WSB_SEED");
  uint64_t seed = env != nullptr ? std::strtoull(env, nullptr, 10) : std::random_device()();
  std::printf("seed %llu (replay with WSB_SEED=%llu)\n", static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  return seed;
}

// ---- The injector itself

// With synchronous=OFF nothing is ever synced, so a power cut takes every commit back; with
// FULL nothing is lost. Shows that the VFS drops what it must, and only that.
TEST(FaultVfsTest, PowerCutDropsExactlyTheUnsyncedWrites) {
  TempDir dir;
  FaultVfs vfs;
  const std::string path = dir.File("raw.db");
  auto count_rows = [&]() {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, vfs.name().c_str()),
              SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    int n = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      n = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
  };
  auto exec = [](sqlite3* db, const char* sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
    EXPECT_EQ(rc, SQLITE_OK) << sql << ": " << (err ? err : "");
    sqlite3_free(err);
  };
  for (const char* sync : {"FULL", "OFF"}) {
    SCOPED_TRACE(sync);
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                              vfs.name().c_str()),
              SQLITE_OK);
    exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
             "CREATE TABLE IF NOT EXISTS t(x); DELETE FROM t;");
    exec(db, (std::string("PRAGMA synchronous=") + sync).c_str());
    for (int i = 0; i < 10; ++i) exec(db, "INSERT INTO t VALUES(randomblob(3000))");
    vfs.PowerCut();
    sqlite3_close(db);  // a dead connection: closing it writes nothing
    EXPECT_EQ(count_rows(), std::string(sync) == "FULL" ? 10 : 0);
  }
  EXPECT_EQ(vfs.power_cuts(), 2u);
}

// ---- Power cuts

struct RoundStats {
  size_t committed = 0;  // Commit() returned OK (since the last reopen)
  size_t survived = 0;   // of those (plus the one in flight), found after the cut
};

// Runs `rounds` of: open, check, commit until a scheduled power cut hits (at a random I/O
// operation, in a commit or in a checkpoint), reopen. `check` judges each round.
void PowerCutRounds(Durability durability, uint64_t seed, int rounds, uint64_t max_ops,
                    size_t payload_max,
                    const std::function<void(int round, size_t ok_before, size_t ok,
                                             size_t survivors,
                                             const std::vector<uint64_t>& wal_writes_after,
                                             const FileCounters& wal)>& check) {
  TempDir dir;
  FaultVfs vfs;
  const std::string path = dir.File("bridge.db");
  const StoreOptions o = FaultOptions(path, vfs, durability);
  Workload work(seed, payload_max);
  std::mt19937_64 rng(seed ^ 0x5eed);
  std::vector<Batch> kept;  // committed and still in the store, in order
  uint64_t epoch = 0;
  for (int round = 0; round < rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::unique_ptr<Store> store = OpenOrDie(o);
    ASSERT_TRUE(store);
    if (epoch == 0) epoch = store->cursor().epoch;
    ASSERT_EQ(store->cursor().epoch, epoch);
    ASSERT_EQ(Diff(*store, ModelOf(kept, kept.size())), "");

    const size_t ok_before = kept.size();
    // Per batch of this round that Commit() returned OK for: the number of the WAL's last write
    // (FileCounters) when it returned. Only this (the writer) thread writes the WAL (the
    // checkpoints only read and sync it), so that is the number of the batch's own last WAL
    // write. It stays right when the cut struck before it was read: a Commit() can return OK
    // after the cut, which may hit the checkpointer thread, or the writer's own checkpoint in
    // the wal_hook, once the batch's frames are in the WAL; the counters never go back.
    std::vector<uint64_t> wal_writes_after;
    vfs.SchedulePowerCut(rng() % max_ops);
    const uint64_t cuts = vfs.power_cuts();
    size_t in_flight = 0;  // 1 when the last Commit() failed (the cut hit it)
    for (int i = 0; i < 5000 && vfs.power_cuts() == cuts; ++i) {
      Batch b = work.Next();
      BatchResult r;
      kept.push_back(b);
      if (store->Commit(b, &r).ok()) {
        wal_writes_after.push_back(vfs.Counters(path + "-wal").writes);
        continue;
      }
      in_flight = 1;
      break;
    }
    if (vfs.power_cuts() == cuts) vfs.PowerCut();  // the schedule lay beyond this round
    const FileCounters wal = vfs.Counters(path + "-wal");
    const size_t ok = kept.size() - in_flight;
    store.reset();

    store = OpenOrDie(o);
    ASSERT_TRUE(store);
    const size_t survivors = CommittedPrefix(store->cursor(), kept);
    ASSERT_NE(survivors, SIZE_MAX) << "last_seq " << store->cursor().last_seq
                                   << " is not the end of any committed batch";
    ASSERT_GE(survivors, 0u);
    if (store->cursor().epoch != epoch) {
      // Everything since the file was created was lost (process durability before its first
      // checkpoint): a new database, with a new epoch. Only acceptable when nothing was synced.
      ASSERT_EQ(survivors, 0u);
      epoch = store->cursor().epoch;
    }
    check(round, ok_before, ok, survivors, wal_writes_after, wal);
    kept.resize(survivors);
    ASSERT_EQ(Diff(*store, ModelOf(kept, kept.size())), "") << "after the cut";
  }
}

TEST(StoreFaultTest, PowerDurabilityLosesNoCommitAcrossPowerCuts) {
  const uint64_t seed = Seed();
  size_t total_ok = 0, in_flight_kept = 0;
  PowerCutRounds(Durability::kPower, seed, /*rounds=*/8, /*max_ops=*/3000, /*payload_max=*/6000,
                 [&](int round, size_t ok_before, size_t ok, size_t survivors,
                     const std::vector<uint64_t>&, const FileCounters&) {
                   // Every commit that returned OK is there; the one the cut interrupted is
                   // there whole (its WAL fsync completed before the cut) or not at all.
                   EXPECT_GE(survivors, ok) << "a commit that returned OK was lost";
                   EXPECT_LE(survivors, ok + 1);
                   total_ok += ok - ok_before;
                   if (survivors == ok + 1) ++in_flight_kept;
                   std::printf("power round %d: %zu commits OK, %zu in the file after the cut\n",
                               round, ok - ok_before, survivors - ok_before);
                 });
  std::printf("power: %zu commits OK over 8 power cuts, none lost; %zu interrupted commit(s) "
              "found whole\n", total_ok, in_flight_kept);
  EXPECT_GT(total_ok, 0u);
}

TEST(StoreFaultTest, ProcessDurabilityPowerCutLosesOnlyCommitsNotYetSynced) {
  const uint64_t seed = Seed();
  size_t total_ok = 0, total_lost = 0, rounds_with_sync = 0;
  // Large payloads: ~16 KiB per commit, so that rounds cross the 1000-page checkpoint mark.
  PowerCutRounds(
      Durability::kProcess, seed, /*rounds=*/6, /*max_ops=*/12000, /*payload_max=*/8000,
      [&](int round, size_t ok_before, size_t ok, size_t survivors,
          const std::vector<uint64_t>& wal_writes_after, const FileCounters& wal) {
        // Exactly the commits whose WAL writes had all been fsynced (by a checkpoint) before
        // the cut survive: one that returned OK may be lost to a power cut with
        // durability=process, but not once its frames were synced.
        size_t synced = ok_before;
        for (uint64_t w : wal_writes_after) {
          if (w <= wal.durable) ++synced;
        }
        EXPECT_EQ(survivors, synced) << "WAL writes durable " << wal.durable;
        EXPECT_GE(survivors, ok_before) << "lost a commit that an earlier round had synced";
        EXPECT_LE(survivors, ok);
        total_ok += ok - ok_before;
        total_lost += ok - survivors;
        if (survivors > ok_before) ++rounds_with_sync;
        std::printf("process round %d: %zu commits OK, %zu lost to the power cut (not yet "
                    "synced by a checkpoint), %llu WAL syncs\n",
                    round, ok - ok_before, ok - survivors,
                    static_cast<unsigned long long>(wal.syncs));
      });
  std::printf("process: %zu commits OK, %zu lost to power cuts, all of them after the last WAL "
              "sync; %zu round(s) kept synced commits\n", total_ok, total_lost, rounds_with_sync);
}

// ---- Process crash

// A child process commits in a loop and reports each commit that returned OK through a pipe;
// the parent SIGKILLs it at a random point, reopens the file, and finds every reported commit.
TEST(StoreFaultTest, ProcessCrashLosesNoCommit) {
  const uint64_t seed = Seed();
  TempDir dir;
  StoreOptions o;
  o.path = dir.File("bridge.db");
  o.durability = Durability::kProcess;
  Workload work(seed, 2000);
  std::mt19937_64 rng(seed ^ 0xc0ffee);
  std::vector<Batch> kept;
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const uint64_t kill_after = 20 + rng() % 200;
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      auto store = Store::Open(o);
      if (!store.ok()) _exit(2);
      for (uint64_t i = 1;; ++i) {
        Batch b = work.Next();
        if (!(*store)->Commit(b, nullptr).ok()) _exit(3);
        if (::write(fds[1], &i, sizeof i) != sizeof i) _exit(4);
      }
    }
    ::close(fds[1]);
    uint64_t reported = 0, n = 0;
    while (::read(fds[0], &n, sizeof n) == sizeof n) {
      reported = n;
      if (n == kill_after) ::kill(pid, SIGKILL);
    }
    ::close(fds[0]);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;

    // The parent draws the same batches the child committed (one more: the one in flight).
    std::vector<Batch> drawn = kept;
    Workload replay = work;
    for (uint64_t i = 0; i <= reported; ++i) drawn.push_back(replay.Next());
    std::unique_ptr<Store> store = OpenOrDie(o);
    ASSERT_TRUE(store);
    const size_t survivors = CommittedPrefix(store->cursor(), drawn);
    ASSERT_NE(survivors, SIZE_MAX);
    EXPECT_GE(survivors, kept.size() + reported) << "a commit that returned OK was lost";
    EXPECT_LE(survivors, kept.size() + reported + 1);
    for (size_t i = kept.size(); i < survivors; ++i) kept.push_back(work.Next());
    ASSERT_EQ(Diff(*store, ModelOf(kept, kept.size())), "");
    std::printf("crash round %d: killed after %llu reported commits, %zu in the file\n", round,
                static_cast<unsigned long long>(reported), survivors);
  }
}

// ---- Disk full, I/O errors, fsync

TEST(StoreFaultTest, DiskFullRejectsCommitAndRecoversWhenSpaceReturns) {
  const uint64_t seed = Seed();
  TempDir dir;
  FaultVfs vfs;
  const StoreOptions o = FaultOptions(dir.File("bridge.db"), vfs, Durability::kProcess);
  std::unique_ptr<Store> store = OpenOrDie(o);
  ASSERT_TRUE(store);
  Workload work(seed, 3000);
  Model model;
  for (int i = 0; i < 30; ++i) {
    Batch b = work.Next();
    BatchResult r;
    ASSERT_OK(store->Commit(b, &r));
    model.Apply(b, &r);
  }
  const Cursor before = store->cursor();

  // A batch of journal rows and two accepts that needs new pages: the disk has none left.
  Batch big = work.Next();
  for (int i = 0; i < 20; ++i) {
    InboundMessage m = big.inbound.front();
    m.upstream_seq = big.last_upstream_seq + 1 + static_cast<uint64_t>(i);
    m.payload.assign(4000, static_cast<char>('a' + i));
    big.inbound.push_back(m);
  }
  big.last_upstream_seq += 20;
  big.outbound = {OutboundRequest{"full-1", "x", false}, OutboundRequest{"full-2", "y", false}};
  vfs.SetWriteFault(WriteFault::kNoSpace);
  for (int attempt = 0; attempt < 3; ++attempt) {  // the writer retries while the disk is full
    BatchResult r;
    Status s = store->Commit(big, &r);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), Status::Code::kIOError) << s.ToString();
    EXPECT_NE(s.message().find("disk is full"), std::string::npos) << s.ToString();
    EXPECT_EQ(store->cursor().last_seq, before.last_seq);
    EXPECT_EQ(store->cursor().last_upstream_seq, before.last_upstream_seq);
    ASSERT_EQ(Diff(*store, model), "") << "a failed commit left something behind";
  }
  EXPECT_GT(vfs.Counters(o.path + "-wal").failed_writes, 0u);

  // Space returns: the same batch commits once, with the seqs it would have had.
  vfs.ClearFaults();
  BatchResult r;
  ASSERT_OK(store->Commit(big, &r));
  EXPECT_EQ(r.first_seq, before.last_seq + 1);
  model.Apply(big, &r);
  ASSERT_EQ(Diff(*store, model), "");
  Batch again = Batch();
  again.outbound = {OutboundRequest{"full-1", "x", false}};
  ASSERT_OK(store->Commit(again, &r));
  ASSERT_EQ(r.outbound.size(), 1u);
  EXPECT_EQ(r.outbound[0].kind, Kind::kDuplicate);
  model.Apply(again, nullptr);

  store.reset();
  store = OpenOrDie(o);
  ASSERT_TRUE(store);
  EXPECT_EQ(Diff(*store, model), "") << "after reopening";
}

// A write fault at the 1st, 2nd, ... write of a commit (and of the checkpoints running beside
// it): each failed commit leaves the store as it was, and the retry commits the batch once.
void FaultAtEveryWrite(WriteFault fault, const char* message) {
  const uint64_t seed = Seed();
  TempDir dir;
  FaultVfs vfs;
  const StoreOptions o = FaultOptions(dir.File("bridge.db"), vfs, Durability::kProcess);
  std::unique_ptr<Store> store = OpenOrDie(o);
  ASSERT_TRUE(store);
  StoreOptions ro;
  ro.path = o.path;
  ro.read_only = true;
  Workload work(seed, 6000);
  Model model;
  int failures = 0;
  for (uint64_t n = 0; n < 60; ++n) {
    SCOPED_TRACE("fault after " + std::to_string(n) + " writes");
    Batch b = work.Next();
    vfs.SetWriteFault(fault, n);
    BatchResult r;
    Status s = store->Commit(b, &r);
    vfs.ClearFaults();
    if (!s.ok()) {
      ++failures;
      EXPECT_EQ(s.code(), Status::Code::kIOError) << s.ToString();
      EXPECT_NE(s.message().find(message), std::string::npos) << s.ToString();
      ASSERT_EQ(Diff(*store, model), "") << "the failed commit left something behind";
      {
        std::unique_ptr<Store> reader = OpenOrDie(ro);
        ASSERT_TRUE(reader);
        ASSERT_EQ(Diff(*reader, model), "") << "seen by another connection";
      }
      Status retry = store->Commit(b, &r);
      ASSERT_OK(retry) << "retry after the fault cleared";
    }
    model.Apply(b, &r);
    ASSERT_EQ(Diff(*store, model), "");
  }
  EXPECT_GE(failures, 5);  // the fault hit at several different points of commits
  store.reset();
  store = OpenOrDie(o);
  ASSERT_TRUE(store);
  EXPECT_EQ(Diff(*store, model), "") << "after reopening";
}

TEST(StoreFaultTest, NoSpaceAtEveryWriteOfACommitIsAtomic) {
  FaultAtEveryWrite(WriteFault::kNoSpace, "disk is full");
}

TEST(StoreFaultTest, IoErrorAtEveryWriteOfACommitIsAtomic) {
  FaultAtEveryWrite(WriteFault::kIoError, "disk I/O error");
}

TEST(StoreFaultTest, FsyncFailureIsAnIOErrorAndAppliesNothing) {
  const uint64_t seed = Seed();
  TempDir dir;
  FaultVfs vfs;
  const StoreOptions o = FaultOptions(dir.File("bridge.db"), vfs, Durability::kPower);
  std::unique_ptr<Store> store = OpenOrDie(o);
  ASSERT_TRUE(store);
  Workload work(seed, 3000);
  Model model;
  for (int i = 0; i < 10; ++i) {
    Batch b = work.Next();
    BatchResult r;
    ASSERT_OK(store->Commit(b, &r));
    model.Apply(b, &r);
  }

  // fsync fails: the commit is an IOError and changes nothing; the retry commits it once.
  Batch b = work.Next();
  vfs.SetSyncFault(true);
  BatchResult r;
  Status s = store->Commit(b, &r);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kIOError) << s.ToString();
  EXPECT_GT(vfs.Counters(o.path + "-wal").failed_syncs, 0u);
  ASSERT_EQ(Diff(*store, model), "");
  vfs.ClearFaults();
  ASSERT_OK(store->Commit(b, &r));
  model.Apply(b, &r);
  ASSERT_EQ(Diff(*store, model), "");

  // fsync fails and the power goes before any retry: the failed commit is not in the file.
  Batch lost = work.Next();
  vfs.SetSyncFault(true);
  ASSERT_FALSE(store->Commit(lost, &r).ok());
  vfs.PowerCut();
  store.reset();
  vfs.ClearFaults();
  store = OpenOrDie(o);
  ASSERT_TRUE(store);
  EXPECT_EQ(Diff(*store, model), "") << "after the power cut";
}

}  // namespace
}  // namespace wsbridge
