// The Store on SQLite (WAL). See store.h for the contract and sqlite_store.h for the handles.
//
// Schema (user_version 2, application_id kApplicationId; version 1 files are read as they are
// and marked 2 by the first read-write open):
//   journal     seq INTEGER PRIMARY KEY (= rowid), contiguous; trimmed from the oldest end only,
//               so rows = last_seq - min(seq) + 1 whenever it is not empty.
//   meta        one row (id = 1): the database's random epoch, and a checkpoint of the cursor
//               (last_upstream_seq, last_seq), of the last outbox_seq ever assigned and of the
//               sum of journal payload sizes up to meta.last_seq. A commit does not rewrite it
//               (that was a page of its own, 4 KiB written per commit): the state is meta
//               combined with what was added since, all found at O(log n) cost at open:
//                 last_seq          max(meta.last_seq, max(journal.seq))
//                 last_upstream_seq max(meta.last_upstream_seq, the newest row's upstream_seq)
//                 last_outbox_seq   max(meta.last_outbox_seq, max(outbox_ids.outbox_seq))
//                 journal_bytes     meta.journal_bytes + payload sizes of rows past meta.last_seq
//               So meta is written when that would no longer hold: a commit whose cursor the
//               newest row does not carry (upstream seq without a row, or a newest row without
//               one), every kMetaEveryRows rows (the sum at open stays short), and every trim
//               (it may delete the newest row; journal_bytes shrinks). Keeping last_seq and
//               last_outbox_seq here means neither goes back when the journal or the outbox
//               is emptied.
//   outbox      outbox_seq INTEGER PRIMARY KEY, in acceptance order; indexed by id for acks.
//   outbox_ids  every id accepted (outbox_seq -> id, id unique), so that an id is answered
//               DUPLICATE after its message was delivered and deleted, across restarts. Only the
//               newest max(1,000,000, outbox_max_messages) are kept: trimmed by outbox_seq range
//               in the Commit that pushes them out, a cheap rowid-range delete.
//
// Unsigned 64-bit values are stored as the int64 with the same bit pattern.
#include "storage/sqlite_store.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>

#include "common/thread_name.h"

namespace wsbridge {
namespace sqlite {

namespace {

int Primary(int rc) { return rc & 0xff; }

}  // namespace

Status ErrorStatus(int rc, sqlite3* db, std::string_view what) {
  // sqlite3_errmsg() describes the connection's last error, which is `rc` unless `rc` came from
  // somewhere else (a remembered bind failure); then the generic text for the code is right.
  const char* msg = (db != nullptr && Primary(sqlite3_errcode(db)) == Primary(rc))
                        ? sqlite3_errmsg(db)
                        : sqlite3_errstr(rc);
  std::string text(what);
  text += ": ";
  text += msg;
  switch (Primary(rc)) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Status::Corruption(std::move(text));
    default:
      return Status::IOError(std::move(text));
  }
}

// ---------------------------------------------------------------------------------------------
// Stmt

Stmt::~Stmt() { sqlite3_finalize(stmt_); }

Stmt& Stmt::operator=(Stmt&& other) noexcept {
  if (this != &other) {
    sqlite3_finalize(stmt_);
    stmt_ = other.stmt_;
    bind_rc_ = other.bind_rc_;
    other.stmt_ = nullptr;
  }
  return *this;
}

void Stmt::BindInt64(int index, int64_t value) {
  int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK && bind_rc_ == 0) bind_rc_ = rc;
}

void Stmt::BindNull(int index) {
  int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK && bind_rc_ == 0) bind_rc_ = rc;
}

void Stmt::BindText(int index, std::string_view value) {
  // data() of an empty view may be null, which SQLite would bind as NULL: bind "" instead.
  const char* p = value.empty() ? "" : value.data();
  int rc = sqlite3_bind_text64(stmt_, index, p, value.size(), SQLITE_STATIC, SQLITE_UTF8);
  if (rc != SQLITE_OK && bind_rc_ == 0) bind_rc_ = rc;
}

void Stmt::BindBlob(int index, std::string_view value) {
  const char* p = value.empty() ? "" : value.data();
  int rc = sqlite3_bind_blob64(stmt_, index, p, value.size(), SQLITE_STATIC);
  if (rc != SQLITE_OK && bind_rc_ == 0) bind_rc_ = rc;
}

int Stmt::Step() {
  if (bind_rc_ != 0) return bind_rc_;
  return sqlite3_step(stmt_);
}

void Stmt::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bind_rc_ = 0;
}

int64_t Stmt::ColumnInt64(int column) const { return sqlite3_column_int64(stmt_, column); }

bool Stmt::ColumnIsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

std::string_view Stmt::ColumnBytes(int column) const {
  const void* p = sqlite3_column_blob(stmt_, column);
  int n = sqlite3_column_bytes(stmt_, column);  // after _blob(), as SQLite asks
  if (p == nullptr || n <= 0) return {};
  return std::string_view(static_cast<const char*>(p), static_cast<size_t>(n));
}

// ---------------------------------------------------------------------------------------------
// Db

Db::~Db() { sqlite3_close_v2(db_); }

Db& Db::operator=(Db&& other) noexcept {
  if (this != &other) {
    sqlite3_close_v2(db_);
    db_ = other.db_;
    other.db_ = nullptr;
  }
  return *this;
}

Status Db::Open(const std::string& path, int flags, const std::string& vfs) {
  // Before SQLite initializes (a no-op after): without memory statistics its allocator takes
  // no global mutex, on every row of every commit.
  static const int kConfigured = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  (void)kConfigured;
  sqlite3_close_v2(db_);
  db_ = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db_, flags | SQLITE_OPEN_NOMUTEX,
                           vfs.empty() ? nullptr : vfs.c_str());
  if (rc != SQLITE_OK) {
    Status s = ErrorStatus(rc, db_, path);
    sqlite3_close_v2(db_);  // SQLite hands out a handle even on failure
    db_ = nullptr;
    return s;
  }
  return Status::OK();
}

Status Db::Exec(const char* sql, std::string_view what) {
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  return rc == SQLITE_OK ? Status::OK() : ErrorStatus(rc, db_, what);
}

Status Db::Prepare(std::string_view sql, Stmt* out) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return ErrorStatus(rc, db_, "prepare");
  }
  *out = Stmt(stmt);
  return Status::OK();
}

Status Db::QueryRow(const char* sql, std::string_view what, Stmt* stmt) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql, -1, &raw, nullptr);
  *stmt = Stmt(raw);
  if (rc != SQLITE_OK) return ErrorStatus(rc, db_, what);
  rc = stmt->Step();
  if (rc == SQLITE_ROW) return Status::OK();
  if (rc == SQLITE_DONE) return Status::IOError(std::string(what) + ": no result");
  return ErrorStatus(rc, db_, what);
}

StatusOr<int64_t> Db::QueryInt(const char* sql, std::string_view what) {
  Stmt stmt;
  Status s = QueryRow(sql, what, &stmt);
  if (!s.ok()) return s;
  return stmt.ColumnInt64(0);
}

StatusOr<std::string> Db::QueryText(const char* sql, std::string_view what) {
  Stmt stmt;
  Status s = QueryRow(sql, what, &stmt);
  if (!s.ok()) return s;
  return std::string(stmt.ColumnBytes(0));
}

int64_t Db::Changes() const { return sqlite3_changes64(db_); }

int64_t Db::LastInsertRowid() const { return sqlite3_last_insert_rowid(db_); }

bool Db::InTransaction() const { return sqlite3_get_autocommit(db_) == 0; }

}  // namespace sqlite

namespace {

using sqlite::Db;
using sqlite::ErrorStatus;
using sqlite::Stmt;

constexpr int32_t kApplicationId = 0x57534231;  // "WSB1"
constexpr int64_t kSchemaVersion = 2;
constexpr int64_t kOldestSchemaVersion = 1;  // read as it is; see the top
// Rows between meta writes at most, so that opening sums few payload sizes (see the top).
constexpr uint64_t kMetaEveryRows = 1024;
constexpr uint64_t kOutboxIdsKept = 1000000;
constexpr int kBusyTimeoutMs = 5000;
constexpr int64_t kJournalSizeLimit = 64ll << 20;  // WAL file truncated to this after checkpoints

// Journal inserts: one row, and kJournalRowsPerInsert rows in one statement. OR ROLLBACK: a
// failing row ends the whole transaction (the commit fails as a whole anyway), so SQLite keeps
// no statement journal for the multi-row form (~5% of a row's cost).
constexpr size_t kJournalColumns = 6;
constexpr size_t kJournalRowsPerInsert = 16;
std::string InsertJournalSql(size_t rows) {
  std::string sql = "INSERT OR ROLLBACK INTO journal(seq, upstream_seq, topic, payload, binary, "
                    "received_at) VALUES";
  for (size_t r = 0; r < rows; ++r) sql += r == 0 ? "(?,?,?,?,?,?)" : ",(?,?,?,?,?,?)";
  return sql;
}
const std::string kInsertJournal = InsertJournalSql(1);
const std::string kInsertJournalRows = InsertJournalSql(kJournalRowsPerInsert);

constexpr const char kSchemaSql[] = R"sql(
CREATE TABLE journal(
  seq          INTEGER PRIMARY KEY,
  upstream_seq INTEGER NOT NULL,
  topic        TEXT    NOT NULL,
  payload      BLOB    NOT NULL,
  binary       INTEGER NOT NULL,
  received_at  INTEGER NOT NULL
);
CREATE TABLE meta(
  id                INTEGER PRIMARY KEY CHECK (id = 1),
  last_upstream_seq INTEGER NOT NULL,
  last_seq          INTEGER NOT NULL,
  epoch             INTEGER NOT NULL,
  last_outbox_seq   INTEGER NOT NULL,
  journal_bytes     INTEGER NOT NULL
);
CREATE TABLE outbox(
  outbox_seq  INTEGER PRIMARY KEY,
  id          TEXT    NOT NULL,
  payload     BLOB    NOT NULL,
  binary      INTEGER NOT NULL,
  accepted_at INTEGER NOT NULL
);
CREATE TABLE outbox_ids(
  outbox_seq INTEGER PRIMARY KEY,
  id         TEXT    NOT NULL UNIQUE
);
)sql";

int64_t ToDb(uint64_t v) { return static_cast<int64_t>(v); }
uint64_t FromDb(int64_t v) { return static_cast<uint64_t>(v); }
// For range bounds and limits: values beyond int64 mean "no bound".
int64_t Clamp(uint64_t v) {
  return static_cast<int64_t>(std::min<uint64_t>(v, std::numeric_limits<int64_t>::max()));
}

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// Creates `path` with mode 0600 unless it exists. SQLite gives the -wal and -shm files it
// creates later the main file's mode, so they are 0600 as well.
Status CreateFileIfMissing(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return Status::OK();
    return Status::IOError(Errno("cannot create " + path));
  }
  // The umask may only have taken bits away; make it exactly 0600 whatever it is.
  int rc = ::fchmod(fd, 0600);
  int saved = errno;
  ::close(fd);
  if (rc != 0) {
    errno = saved;
    return Status::IOError(Errno("cannot chmod " + path));
  }
  // Make the new directory entry durable too; SQLite syncs its own files, not this one.
  std::string dir = path.substr(0, path.find_last_of('/') + 1);
  if (dir.empty()) dir = ".";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::OK();
}

StatusOr<uint64_t> NewEpoch() {
  uint64_t epoch = 0;
  while (epoch == 0) {
    ssize_t n = ::getrandom(&epoch, sizeof(epoch), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof(epoch))) {
      return Status::IOError(Errno("getrandom"));
    }
  }
  return epoch;
}

Status CreateSchema(Db& db) {
  StatusOr<uint64_t> epoch = NewEpoch();
  if (!epoch.ok()) return epoch.status();
  std::string sql = std::string("BEGIN IMMEDIATE;") + kSchemaSql +
                    "INSERT INTO meta VALUES(1, 0, 0, " + std::to_string(ToDb(*epoch)) +
                    ", 0, 0);" + "PRAGMA application_id = " + std::to_string(kApplicationId) + ";" +
                    "PRAGMA user_version = " + std::to_string(kSchemaVersion) + ";" + "COMMIT;";
  Status s = db.Exec(sql.c_str(), "create schema");
  if (!s.ok() && db.InTransaction()) (void)db.Exec("ROLLBACK", "rollback");
  return s;
}

// Checkpointer: copies the WAL back into the database file on a thread of its own.
//
// SQLite's automatic checkpoint runs inside the COMMIT that crosses the threshold, on the
// writer thread, and (synchronous=NORMAL) fsyncs the database file there: a stall of tens of
// milliseconds for every ~4 MB written, seen as the inbound p99. Here the writer's connection
// has wal_autocheckpoint off; its wal_hook only notes the WAL size, and this thread, on its
// own connection, runs PASSIVE checkpoints, which never block the writer or readers. Woken
// once the WAL passes pages_threshold, it then runs a pass every kRecheck until one copies
// everything with no commit meanwhile (the next commit starts the WAL over) or the WAL passes
// restart_frames (the writer finishes the checkpoint itself, see WalHook): a committing thread
// never pays for waking it while it works.
//
// Owned by the read-write SqliteStore; Notify() is called on the writer thread (from the
// wal_hook), everything else on the checkpointer's own thread.
class Checkpointer {
 public:
  // The thresholds below are in frames, set from the page size so that they mean the same
  // bytes whatever it is. pages_threshold: SQLite's own default, 1000 pages of 4 KiB.
  static constexpr int64_t kThresholdBytes = 1000 * 4096;
  // The WAL's bound under a busy writer, restart_frames: 16 times that fills the
  // kJournalSizeLimit the file is truncated to. Each restart is a writer stall of two or three
  // fsyncs (~20 ms here); at 8 times, a saturated writer spent twice as often there.
  static int PagesThreshold(int page_size) {
    return static_cast<int>(kThresholdBytes / std::max(page_size, 512));
  }
  static int RestartFrames(int page_size) {
    return static_cast<int>(std::min<int64_t>(16 * int64_t{PagesThreshold(page_size)},
                                              kJournalSizeLimit / (std::max(page_size, 512) + 24)));
  }
  const int pages_threshold;
  const int restart_frames;
  // While the WAL stays over the threshold, the next pass starts this long after the last one
  // ended, by the checkpointer's own clock: a busy writer never wakes it.
  static constexpr std::chrono::milliseconds kRecheck{50};

  Checkpointer(Db db, int page_size)
      : pages_threshold(PagesThreshold(page_size)),
        restart_frames(RestartFrames(page_size)),
        db_(std::move(db)),
        thread_([this] { Loop(); }) {}
  ~Checkpointer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

  std::atomic<uint64_t> writer_checkpoints{0};  // run by the writer itself (WalHook), for tests

  // Writer thread, after each commit. Wakes the checkpointer (a syscall, and a cross-CPU
  // wake-up the committing thread pays for) only when it sleeps with nothing to do.
  void Notify(int wal_pages) {
    wal_pages_.store(wal_pages, std::memory_order_relaxed);
    commits_.fetch_add(1, std::memory_order_relaxed);
    // Past restart_frames the writer finishes the checkpoint itself (WalHook).
    if (wal_pages < pages_threshold || wal_pages > restart_frames ||
        busy_.load(std::memory_order_relaxed)) {
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (due_) return;
      due_ = true;
    }
    cv_.notify_one();
  }

 private:
  void Loop() {
    NameThisThread("wsb-checkpoint");
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      busy_.store(false, std::memory_order_relaxed);
      cv_.wait(lock, [this] { return due_ || stop_; });
      // From here until the WAL is small again, this thread schedules its own passes.
      busy_.store(true, std::memory_order_relaxed);
      due_ = false;
      while (!stop_) {
        lock.unlock();
        const uint64_t commits_before = commits_.load(std::memory_order_relaxed);
        int log_frames = 0, done_frames = 0;
        int rc = sqlite3_wal_checkpoint_v2(db_.get(), nullptr, SQLITE_CHECKPOINT_PASSIVE,
                                           &log_frames, &done_frames);
        lock.lock();
        // All copied and nothing committed meanwhile: the next commit starts the WAL over.
        if (rc != SQLITE_OK || (done_frames >= log_frames &&
                                commits_.load(std::memory_order_relaxed) == commits_before)) {
          break;
        }
        if (cv_.wait_for(lock, kRecheck, [this] { return stop_; })) break;
        // Past restart_frames, step aside: a pass of ours running when the writer tries its
        // own would make that one fail, and the writer would try again, fsyncs and all, on
        // every commit until one got through.
        const int pages = wal_pages_.load(std::memory_order_relaxed);
        if (pages < pages_threshold || pages > restart_frames) break;
      }
      if (stop_) return;
    }
  }

  Db db_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool due_ = false;
  bool stop_ = false;
  std::atomic<int> wal_pages_{0};  // the WAL's size after the latest commit
  std::atomic<uint64_t> commits_{0};  // Notify() calls: commits since the start
  std::atomic<bool> busy_{false};  // in its own pass loop: Notify() need not wake it
  std::thread thread_;  // last: starts after the members it uses exist
};

// Runs on the writer thread right after each commit.
int WalHook(void* arg, sqlite3* db, const char*, int pages) {
  // A busy writer always adds frames behind the background checkpoint, and the WAL starts over
  // only when a transaction begins with every frame copied back. So once the WAL is large,
  // the writer itself finishes the checkpoint (the background one has already copied most of
  // it), and its next transaction restarts the WAL: bounded disk use, one short stall per
  // restart_frames pages instead of one per pages_threshold.
  auto* checkpointer = static_cast<Checkpointer*>(arg);
  checkpointer->Notify(pages);  // every commit: the checkpointer steps aside past the threshold
  // SQLITE_BUSY while a background pass runs: nothing done, tried again at the next commit.
  if (pages > checkpointer->restart_frames &&
      sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr) ==
          SQLITE_OK) {
    checkpointer->writer_checkpoints.fetch_add(1, std::memory_order_relaxed);
  }
  return SQLITE_OK;
}

// The Store on one SQLite connection. Owns the connection and its prepared statements
// (declared after db_, so destroyed before it). Not thread-safe: one thread at a time, which
// for the read-write store is the writer thread. A read-only store is a separate object on its
// own connection, usable from another thread or process while the writer works.
class SqliteStore final : public Store {
 public:
  static StatusOr<std::unique_ptr<Store>> Open(const StoreOptions& options);

  Cursor cursor() const override { return state_.cursor; }
  Status Commit(const Batch& batch, BatchResult* result) override;
  Status ReadJournal(uint64_t from_seq, uint64_t to_seq, std::string_view topic_prefix,
                     size_t max_rows, std::vector<JournalRow>* out) override;
  StatusOr<JournalBounds> Bounds() override;
  Status ReadOutbox(uint64_t after, size_t max_rows, std::vector<OutboxRow>* out) override;
  StatusOr<OutboxStats> Outbox() override;
  StatusOr<uint64_t> TrimJournal(int64_t now_unix_ns, uint64_t max_delete,
                                 uint64_t age_hold_seq) override;
  StatusOr<std::vector<std::string>> Verify(size_t max_problems,
                                            const std::atomic<bool>* stop) override;

  StatusOr<int64_t> SetMaxPageCount(int64_t max_pages);
  uint64_t WriterCheckpoints() const {
    return checkpointer_ ? checkpointer_->writer_checkpoints.load() : 0;
  }

 private:
  // The meta row's values (see the top of this file).
  struct Meta {
    uint64_t last_upstream_seq = 0;
    uint64_t last_seq = 0;
    uint64_t last_outbox_seq = 0;
    uint64_t journal_bytes = 0;
  };
  // What a Commit changes in memory: all of it moves together, after COMMIT succeeded.
  struct State {
    Cursor cursor;
    uint64_t last_outbox_seq = 0;
    uint64_t journal_bytes = 0;
    uint64_t outbox_depth = 0;
    uint64_t newest_row_upstream_seq = 0;  // the newest journal row's (0: none, or empty)
    Meta meta;                             // as the meta row holds it
  };

  SqliteStore(const StoreOptions& options, Db db)
      : options_(options),
        ids_kept_(std::max(kOutboxIdsKept, options.outbox_max_messages)),
        db_(std::move(db)) {}

  Status PrepareStatements();
  Status LoadState();
  Status StartCheckpointer();
  Status ApplyBatch(const Batch& batch, State* next, BatchResult* result);
  // Writes `state` into the meta row (inside the caller's transaction) and notes it in
  // state->meta.
  Status WriteMeta(State* state, std::string_view what);
  // Whether the meta row and the journal's newest row no longer give `state` (see the top).
  static bool MetaNeeded(const State& state);
  StatusOr<uint64_t> CountOutbox(std::string_view what);
  // Runs a statement that returns no rows.
  Status Run(Stmt& stmt, std::string_view what);
  // BEGIN IMMEDIATE: takes the write lock now, so that COMMIT cannot meet SQLITE_BUSY.
  Status Begin(std::string_view what);
  // COMMIT when `s` is OK, else (or when COMMIT fails) ROLLBACK. Returns the first error.
  Status Finish(Status s, std::string_view what);
  Status Rollback(std::string_view what);
  Status RequireWritable(std::string_view what) const;
  // Verify()'s checks, inside its read transaction.
  Status VerifyInSnapshot(size_t max_problems, std::vector<std::string>* problems);

  const StoreOptions options_;
  const uint64_t ids_kept_;
  std::unique_ptr<Checkpointer> checkpointer_;  // read-write only; outlives db_'s hook use
  Db db_;
  State state_;

  Stmt begin_, commit_, rollback_;
  Stmt read_meta_, update_meta_, count_outbox_, newest_row_, bytes_after_, last_outbox_id_;
  Stmt insert_journal_, insert_journal_rows_, read_journal_, bounds_, trim_scan_, trim_delete_;
  Stmt find_id_, insert_outbox_, insert_id_, trim_ids_;
  Stmt delete_delivered_, delete_acked_, read_outbox_, oldest_outbox_;
};

StatusOr<std::unique_ptr<Store>> SqliteStore::Open(const StoreOptions& options) {
  const std::string& path = options.path;
  if (path.empty()) return Status::InvalidArgument("storage path is empty");

  int flags = 0;
  if (options.read_only) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return Status::NotFound(path + ": no such file");
      return Status::IOError(Errno(path));
    }
    flags = SQLITE_OPEN_READONLY;
  } else {
    Status s = CreateFileIfMissing(path);
    if (!s.ok()) return s;
    flags = SQLITE_OPEN_READWRITE;  // never SQLITE_OPEN_CREATE: the file exists, with our mode
  }

  Db db;
  Status s = db.Open(path, flags, options.vfs_name);
  if (!s.ok()) return s;
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);

  // Identify the file before writing anything to it: one that is not ours must be left
  // byte-for-byte as it was (journal_mode=WAL alone would rewrite its header).
  StatusOr<int64_t> app_id = db.QueryInt("PRAGMA application_id", path);
  if (!app_id.ok()) return app_id.status();
  StatusOr<int64_t> version = db.QueryInt("PRAGMA user_version", path);
  if (!version.ok()) return version.status();
  StatusOr<int64_t> objects = db.QueryInt("SELECT count(*) FROM sqlite_master", path);
  if (!objects.ok()) return objects.status();

  // An empty file (ours, just created, or left empty by a creation that failed half-way) or
  // an SQLite database without a single object in it becomes a new wsbridge database.
  const bool fresh = *app_id == 0 && *version == 0 && *objects == 0;
  if (!fresh) {
    if (*app_id != kApplicationId) {
      char id[16];
      std::snprintf(id, sizeof(id), "%08" PRIx32, static_cast<uint32_t>(*app_id));
      return Status::Corruption(path + ": not a wsbridge database (application_id 0x" + id + ", " +
                                std::to_string(*objects) + " schema object(s))");
    }
    if (*version < kOldestSchemaVersion || *version > kSchemaVersion) {
      return Status::Corruption(path + ": wsbridge schema version " + std::to_string(*version) +
                                ", this build knows versions " +
                                std::to_string(kOldestSchemaVersion) + " to " +
                                std::to_string(kSchemaVersion));
    }
  }
  // No whole-file check here: it reads every page, and start-up must not cost the journal's
  // size. SQLite refuses a file shorter than its header says at the first read (above); damage
  // inside is found by Verify(), which the daemon runs in the background and `wsbridge check`
  // on demand.

  if (options.read_only) {
    if (fresh) return Status::NotFound(path + ": no wsbridge database in it yet");
  } else {
    // Before anything is written: the page size is fixed from the first page on (WAL mode
    // cannot change it later). A commit writes every page it changed into the WAL, whole: at
    // low rates (one message per commit) one journal page per message.
    if (fresh) {
      s = db.Exec(("PRAGMA page_size = " + std::to_string(options.page_size)).c_str(), path);
      if (!s.ok()) return s;
    }
    StatusOr<std::string> mode = db.QueryText("PRAGMA journal_mode = WAL", path);
    if (!mode.ok()) return mode.status();
    if (*mode != "wal") {
      return Status::IOError(path + ": cannot switch to WAL (journal_mode is " + *mode + ")");
    }
    std::string pragmas = std::string("PRAGMA synchronous = ") +
                          (options.durability == Durability::kPower ? "FULL" : "NORMAL") +
                          "; PRAGMA journal_size_limit = " + std::to_string(kJournalSizeLimit) +
                          ";";
    s = db.Exec(pragmas.c_str(), path);
    if (!s.ok()) return s;
    if (fresh) {
      s = CreateSchema(db);
      if (!s.ok()) return s;
    } else {
      // Files written by earlier builds carry an index on outbox(id) that nothing reads now
      // (acks find their row through outbox_ids); it only slowed every accepted message.
      s = db.Exec("DROP INDEX IF EXISTS outbox_by_id", path);
      if (!s.ok()) return s;
      // Version 1 wrote meta in every commit, which version 2 reads as it is (see the top).
      // Marked 2 now: a build that knows only version 1 must not open it after this one wrote.
      if (*version < kSchemaVersion) {
        s = db.Exec(("PRAGMA user_version = " + std::to_string(kSchemaVersion)).c_str(), path);
        if (!s.ok()) return s;
      }
    }
  }

  std::unique_ptr<SqliteStore> store(new SqliteStore(options, std::move(db)));
  s = store->PrepareStatements();
  if (!s.ok()) {
    // Ours by its application_id, but a table or column is missing: damaged by someone.
    if (s.code() == Status::Code::kIOError) {
      return Status::Corruption(path + ": schema does not match (" + s.message() + ")");
    }
    return s;
  }
  s = store->LoadState();
  if (!s.ok()) return s;
  if (!options.read_only) {
    s = store->StartCheckpointer();
    if (!s.ok()) return s;
  }
  return std::unique_ptr<Store>(std::move(store));
}

Status SqliteStore::StartCheckpointer() {
  Db ck;
  Status s = ck.Open(options_.path, SQLITE_OPEN_READWRITE, options_.vfs_name);
  if (!s.ok()) return s;
  sqlite3_busy_timeout(ck.get(), kBusyTimeoutMs);
  // A connection learns that the file is in WAL mode when it first reads it; until then a
  // checkpoint on it is a no-op.
  StatusOr<std::string> mode = ck.QueryText("PRAGMA journal_mode", options_.path);
  if (!mode.ok()) return mode.status();
  s = db_.Exec("PRAGMA wal_autocheckpoint = 0", options_.path);
  if (!s.ok()) return s;
  StatusOr<int64_t> page_size = db_.QueryInt("PRAGMA page_size", options_.path);
  if (!page_size.ok()) return page_size.status();
  checkpointer_ = std::make_unique<Checkpointer>(std::move(ck), static_cast<int>(*page_size));
  sqlite3_wal_hook(db_.get(), &WalHook, checkpointer_.get());
  return Status::OK();
}

Status SqliteStore::PrepareStatements() {
  struct {
    Stmt* stmt;
    const char* sql;
  } const statements[] = {
      {&begin_, "BEGIN IMMEDIATE"},
      {&commit_, "COMMIT"},
      {&rollback_, "ROLLBACK"},
      {&read_meta_,
       "SELECT last_upstream_seq, last_seq, epoch, last_outbox_seq, journal_bytes "
       "FROM meta WHERE id = 1"},
      {&update_meta_,
       "UPDATE meta SET last_upstream_seq = ?1, last_seq = ?2, last_outbox_seq = ?3, "
       "journal_bytes = ?4 WHERE id = 1"},
      {&count_outbox_, "SELECT count(*) FROM outbox"},
      {&newest_row_, "SELECT seq, upstream_seq FROM journal ORDER BY seq DESC LIMIT 1"},
      {&bytes_after_, "SELECT coalesce(sum(length(payload)), 0) FROM journal WHERE seq > ?1"},
      {&last_outbox_id_, "SELECT max(outbox_seq) FROM outbox_ids"},
      {&insert_journal_, kInsertJournal.c_str()},
      {&insert_journal_rows_, kInsertJournalRows.c_str()},
      // The prefix is compared as bytes (a blob), not with LIKE/GLOB and their wildcards.
      // substr() of an empty blob is NULL, hence the test for an empty prefix.
      {&read_journal_,
       "SELECT seq, upstream_seq, topic, payload, binary, received_at FROM journal "
       "WHERE seq >= ?1 AND seq <= ?2 "
       "AND (?4 = 0 OR substr(CAST(topic AS BLOB), 1, ?4) = ?3) "
       "ORDER BY seq LIMIT ?5"},
      // The state as LoadState() derives it (see the top), in one statement: one read snapshot
      // even while another connection writes.
      {&bounds_,
       "SELECT max(m.last_seq, coalesce((SELECT max(seq) FROM journal), 0)), "
       "m.journal_bytes + (SELECT coalesce(sum(length(payload)), 0) FROM journal WHERE seq > "
       "m.last_seq), "
       "(SELECT min(seq) FROM journal) FROM meta m WHERE id = 1"},
      {&trim_scan_, "SELECT seq, length(payload), received_at FROM journal ORDER BY seq LIMIT ?1"},
      {&trim_delete_, "DELETE FROM journal WHERE seq <= ?1"},
      {&find_id_, "SELECT outbox_seq FROM outbox_ids WHERE id = ?1"},
      // An id already there (UNIQUE) is ignored: Changes() == 0 tells a duplicate.
      {&insert_id_, "INSERT OR IGNORE INTO outbox_ids(outbox_seq, id) VALUES(?1, ?2)"},
      {&insert_outbox_,
       "INSERT INTO outbox(outbox_seq, id, payload, binary, accepted_at) "
       "VALUES(?1, ?2, ?3, ?4, ?5)"},
      {&trim_ids_, "DELETE FROM outbox_ids WHERE outbox_seq <= ?1"},
      {&delete_delivered_, "DELETE FROM outbox WHERE outbox_seq <= ?1"},
      // Every outbox row's id is in outbox_ids (it keeps at least outbox_max_messages ids).
      {&delete_acked_,
       "DELETE FROM outbox WHERE outbox_seq = (SELECT outbox_seq FROM outbox_ids WHERE id = ?1)"},
      {&read_outbox_,
       "SELECT outbox_seq, id, payload, binary, accepted_at FROM outbox "
       "WHERE outbox_seq > ?1 ORDER BY outbox_seq LIMIT ?2"},
      {&oldest_outbox_, "SELECT accepted_at FROM outbox ORDER BY outbox_seq LIMIT 1"},
  };
  for (const auto& st : statements) {
    Status s = db_.Prepare(st.sql, st.stmt);
    if (!s.ok()) return s;
  }
  return Status::OK();
}

Status SqliteStore::LoadState() {
  State state;
  {
    Stmt::Scope scope(read_meta_);
    int rc = read_meta_.Step();
    if (rc == SQLITE_DONE) return Status::Corruption(options_.path + ": meta row missing");
    if (rc != SQLITE_ROW) return ErrorStatus(rc, db_.get(), options_.path);
    state.meta.last_upstream_seq = FromDb(read_meta_.ColumnInt64(0));
    state.meta.last_seq = FromDb(read_meta_.ColumnInt64(1));
    state.cursor.epoch = FromDb(read_meta_.ColumnInt64(2));
    state.meta.last_outbox_seq = FromDb(read_meta_.ColumnInt64(3));
    state.meta.journal_bytes = FromDb(read_meta_.ColumnInt64(4));
  }
  if (state.cursor.epoch == 0) return Status::Corruption(options_.path + ": epoch is 0");
  // The rest of the state: meta and what commits added since it was written (see the top).
  state.cursor.last_upstream_seq = state.meta.last_upstream_seq;
  state.cursor.last_seq = state.meta.last_seq;
  state.last_outbox_seq = state.meta.last_outbox_seq;
  state.journal_bytes = state.meta.journal_bytes;
  {
    Stmt::Scope scope(newest_row_);
    int rc = newest_row_.Step();
    if (rc == SQLITE_ROW) {
      state.cursor.last_seq = std::max(state.cursor.last_seq, FromDb(newest_row_.ColumnInt64(0)));
      state.newest_row_upstream_seq = FromDb(newest_row_.ColumnInt64(1));
      state.cursor.last_upstream_seq =
          std::max(state.cursor.last_upstream_seq, state.newest_row_upstream_seq);
    } else if (rc != SQLITE_DONE) {
      return ErrorStatus(rc, db_.get(), options_.path);
    }
  }
  {
    Stmt::Scope scope(bytes_after_);
    bytes_after_.BindInt64(1, ToDb(state.meta.last_seq));
    int rc = bytes_after_.Step();
    if (rc != SQLITE_ROW) return ErrorStatus(rc, db_.get(), options_.path);
    state.journal_bytes += FromDb(bytes_after_.ColumnInt64(0));
  }
  {
    Stmt::Scope scope(last_outbox_id_);
    int rc = last_outbox_id_.Step();
    if (rc != SQLITE_ROW) return ErrorStatus(rc, db_.get(), options_.path);
    state.last_outbox_seq = std::max(state.last_outbox_seq, FromDb(last_outbox_id_.ColumnInt64(0)));
  }
  StatusOr<uint64_t> depth = CountOutbox(options_.path);
  if (!depth.ok()) return depth.status();
  state.outbox_depth = *depth;
  state_ = state;
  return Status::OK();
}

StatusOr<uint64_t> SqliteStore::CountOutbox(std::string_view what) {
  Stmt::Scope scope(count_outbox_);
  int rc = count_outbox_.Step();
  if (rc != SQLITE_ROW) return ErrorStatus(rc, db_.get(), what);
  return FromDb(count_outbox_.ColumnInt64(0));
}

Status SqliteStore::WriteMeta(State* state, std::string_view what) {
  Meta m;
  m.last_upstream_seq = state->cursor.last_upstream_seq;
  m.last_seq = state->cursor.last_seq;
  m.last_outbox_seq = state->last_outbox_seq;
  m.journal_bytes = state->journal_bytes;
  Stmt::Scope scope(update_meta_);
  update_meta_.BindInt64(1, ToDb(m.last_upstream_seq));
  update_meta_.BindInt64(2, ToDb(m.last_seq));
  update_meta_.BindInt64(3, ToDb(m.last_outbox_seq));
  update_meta_.BindInt64(4, ToDb(m.journal_bytes));
  Status s = Run(update_meta_, what);
  if (s.ok()) state->meta = m;
  return s;
}

bool SqliteStore::MetaNeeded(const State& state) {
  // last_outbox_seq is max(outbox_ids.outbox_seq) whenever it moved: never needs meta.
  return state.cursor.last_upstream_seq !=
             std::max(state.meta.last_upstream_seq, state.newest_row_upstream_seq) ||
         state.cursor.last_seq - state.meta.last_seq >= kMetaEveryRows;
}

Status SqliteStore::Run(Stmt& stmt, std::string_view what) {
  int rc = stmt.Step();
  return rc == SQLITE_DONE ? Status::OK() : ErrorStatus(rc, db_.get(), what);
}

Status SqliteStore::Begin(std::string_view what) {
  // A transaction still open means an earlier ROLLBACK failed: retry it, or no BEGIN would
  // ever succeed again.
  if (db_.InTransaction()) {
    Status s = Rollback(what);
    if (!s.ok()) return s;
  }
  Stmt::Scope scope(begin_);
  return Run(begin_, what);
}

Status SqliteStore::Finish(Status s, std::string_view what) {
  if (s.ok()) {
    Stmt::Scope scope(commit_);
    s = Run(commit_, what);
  }
  // Some errors (SQLITE_FULL, SQLITE_IOERR, ...) may have rolled the transaction back already.
  if (!s.ok() && db_.InTransaction()) (void)Rollback(what);
  return s;
}

Status SqliteStore::Rollback(std::string_view what) {
  Stmt::Scope scope(rollback_);
  return Run(rollback_, what);
}

Status SqliteStore::RequireWritable(std::string_view what) const {
  if (!options_.read_only) return Status::OK();
  return Status::InvalidArgument(std::string(what) + ": store was opened read-only");
}

Status SqliteStore::Commit(const Batch& batch, BatchResult* result) {
  Status s = RequireWritable("commit");
  if (!s.ok()) return s;
  BatchResult local;
  if (batch.empty() && batch.last_upstream_seq <= state_.cursor.last_upstream_seq) {
    if (result != nullptr) *result = std::move(local);
    return Status::OK();
  }
  s = Begin("commit");
  if (!s.ok()) return s;
  State next = state_;
  s = Finish(ApplyBatch(batch, &next, &local), "commit");
  if (!s.ok()) return s;
  state_ = next;
  if (result != nullptr) *result = std::move(local);
  return Status::OK();
}

Status SqliteStore::ApplyBatch(const Batch& batch, State* next, BatchResult* result) {
  constexpr std::string_view kWhat = "commit";
  Status s;

  // Deletions first: what was delivered makes room for what this batch brings.
  if (batch.delivered_up_to > 0) {
    Stmt::Scope scope(delete_delivered_);
    delete_delivered_.BindInt64(1, Clamp(batch.delivered_up_to));
    s = Run(delete_delivered_, kWhat);
    if (!s.ok()) return s;
    next->outbox_depth -= static_cast<uint64_t>(db_.Changes());
  }
  for (const std::string& id : batch.acked_ids) {
    Stmt::Scope scope(delete_acked_);
    delete_acked_.BindText(1, id);
    s = Run(delete_acked_, kWhat);
    if (!s.ok()) return s;
    next->outbox_depth -= static_cast<uint64_t>(db_.Changes());
  }

  // Journal: seqs continue from the cursor, never from max(seq), which trimming can lower: the
  // batch's first row gets its seq explicitly, the others NULL, which SQLite turns into
  // max(seq) + 1 (the row just before) with no B-tree search (a search per row was ~20% of a
  // row's cost). The last rowid is checked below. Full groups of kJournalRowsPerInsert go in
  // one statement (a busy writer's per-row cost is mostly per statement), the rest one by one.
  uint64_t seq = next->cursor.last_seq;
  const uint64_t first_seq = seq + 1;
  const size_t n = batch.inbound.size();
  size_t i = 0;
  auto bind_row = [&](Stmt& stmt, int first_param, const InboundMessage& m) {
    if (++seq == first_seq) {
      stmt.BindInt64(first_param, ToDb(seq));
    } else {
      stmt.BindNull(first_param);
    }
    stmt.BindInt64(first_param + 1, ToDb(m.upstream_seq));
    stmt.BindText(first_param + 2, m.topic);
    stmt.BindBlob(first_param + 3, m.payload);
    stmt.BindInt64(first_param + 4, m.binary ? 1 : 0);
    stmt.BindInt64(first_param + 5, m.received_at_unix_ns);
    next->journal_bytes += m.payload.size();
  };
  for (; i + kJournalRowsPerInsert <= n; i += kJournalRowsPerInsert) {
    Stmt::Scope scope(insert_journal_rows_);
    for (size_t k = 0; k < kJournalRowsPerInsert; ++k) {
      bind_row(insert_journal_rows_, static_cast<int>(k * kJournalColumns) + 1,
               batch.inbound[i + k]);
    }
    s = Run(insert_journal_rows_, kWhat);
    if (!s.ok()) return s;
  }
  for (; i < n; ++i) {
    Stmt::Scope scope(insert_journal_);
    bind_row(insert_journal_, 1, batch.inbound[i]);
    s = Run(insert_journal_, kWhat);
    if (!s.ok()) return s;
  }
  if (!batch.inbound.empty()) {
    // Only a row above the cursor, which no commit writes, could make SQLite's choice differ.
    if (db_.LastInsertRowid() != ToDb(seq)) {
      return Status::Corruption(options_.path + ": journal has rows past seq " +
                                std::to_string(next->cursor.last_seq) +
                                ", the last one committed (written by another program?)");
    }
    result->first_seq = first_seq;
    next->newest_row_upstream_seq = batch.inbound.back().upstream_seq;
  }
  next->cursor.last_seq = seq;
  next->cursor.last_upstream_seq =
      std::max(next->cursor.last_upstream_seq, batch.last_upstream_seq);

  // Outbox. An id seen before (in outbox_ids, including earlier in this batch) is a duplicate.
  result->outbound.reserve(batch.outbound.size());
  const uint64_t outbox_seq_before = next->last_outbox_seq;
  for (const OutboundRequest& r : batch.outbound) {
    SendOutcome outcome;
    // A new id costs one index probe: the INSERT OR IGNORE into outbox_ids is the duplicate
    // test. Only a duplicate, or a full outbox (where DUPLICATE still wins), looks the id up.
    bool look_up = next->outbox_depth >= options_.outbox_max_messages;
    if (!look_up) {
      const uint64_t outbox_seq = next->last_outbox_seq + 1;
      {
        Stmt::Scope scope(insert_id_);
        insert_id_.BindInt64(1, ToDb(outbox_seq));
        insert_id_.BindText(2, r.id);
        s = Run(insert_id_, kWhat);
        if (!s.ok()) return s;
      }
      if (db_.Changes() == 0) {
        look_up = true;  // the id is known
      } else {
        Stmt::Scope scope(insert_outbox_);
        insert_outbox_.BindInt64(1, ToDb(outbox_seq));
        insert_outbox_.BindText(2, r.id);
        insert_outbox_.BindBlob(3, r.payload);
        insert_outbox_.BindInt64(4, r.binary ? 1 : 0);
        insert_outbox_.BindInt64(5, batch.now_unix_ns);
        s = Run(insert_outbox_, kWhat);
        if (!s.ok()) return s;
        next->last_outbox_seq = outbox_seq;
        ++next->outbox_depth;
        outcome.outbox_seq = outbox_seq;
      }
    }
    if (look_up) {
      Stmt::Scope scope(find_id_);
      find_id_.BindText(1, r.id);
      int rc = find_id_.Step();
      if (rc == SQLITE_ROW) {
        outcome.kind = SendOutcome::Kind::kDuplicate;
        outcome.outbox_seq = FromDb(find_id_.ColumnInt64(0));
      } else if (rc == SQLITE_DONE) {
        outcome.kind = SendOutcome::Kind::kFull;
      } else {
        return ErrorStatus(rc, db_.get(), kWhat);
      }
    }
    result->outbound.push_back(outcome);
  }
  // Forget the ids this batch pushed beyond the newest ids_kept_: a short rowid range.
  if (next->last_outbox_seq != outbox_seq_before && next->last_outbox_seq > ids_kept_) {
    Stmt::Scope scope(trim_ids_);
    trim_ids_.BindInt64(1, ToDb(next->last_outbox_seq - ids_kept_));
    s = Run(trim_ids_, kWhat);
    if (!s.ok()) return s;
  }

  return MetaNeeded(*next) ? WriteMeta(next, kWhat) : Status::OK();
}

Status SqliteStore::ReadJournal(uint64_t from_seq, uint64_t to_seq, std::string_view topic_prefix,
                                size_t max_rows, std::vector<JournalRow>* out) {
  out->clear();
  Stmt::Scope scope(read_journal_);
  read_journal_.BindInt64(1, Clamp(from_seq));
  read_journal_.BindInt64(2, to_seq == 0 ? std::numeric_limits<int64_t>::max() : Clamp(to_seq));
  read_journal_.BindBlob(3, topic_prefix);
  read_journal_.BindInt64(4, static_cast<int64_t>(topic_prefix.size()));
  read_journal_.BindInt64(5, Clamp(max_rows));
  int rc;
  while ((rc = read_journal_.Step()) == SQLITE_ROW) {
    JournalRow& row = out->emplace_back();
    row.seq = FromDb(read_journal_.ColumnInt64(0));
    row.msg.upstream_seq = FromDb(read_journal_.ColumnInt64(1));
    row.msg.topic = read_journal_.ColumnBytes(2);
    row.msg.payload = read_journal_.ColumnBytes(3);
    row.msg.binary = read_journal_.ColumnInt64(4) != 0;
    row.msg.received_at_unix_ns = read_journal_.ColumnInt64(5);
  }
  if (rc != SQLITE_DONE) {
    out->clear();
    return ErrorStatus(rc, db_.get(), "read journal");
  }
  return Status::OK();
}

StatusOr<JournalBounds> SqliteStore::Bounds() {
  // One statement, so one read snapshot even while another connection writes.
  Stmt::Scope scope(bounds_);
  int rc = bounds_.Step();
  if (rc != SQLITE_ROW) return ErrorStatus(rc, db_.get(), "journal bounds");
  JournalBounds b;
  b.last_seq = FromDb(bounds_.ColumnInt64(0));
  b.bytes = FromDb(bounds_.ColumnInt64(1));
  if (!bounds_.ColumnIsNull(2)) {
    b.first_seq = FromDb(bounds_.ColumnInt64(2));
    b.rows = b.last_seq - b.first_seq + 1;  // seqs are contiguous from first to last
  }
  return b;
}

Status SqliteStore::ReadOutbox(uint64_t after, size_t max_rows, std::vector<OutboxRow>* out) {
  out->clear();
  Stmt::Scope scope(read_outbox_);
  read_outbox_.BindInt64(1, Clamp(after));
  read_outbox_.BindInt64(2, Clamp(max_rows));
  int rc;
  while ((rc = read_outbox_.Step()) == SQLITE_ROW) {
    OutboxRow& row = out->emplace_back();
    row.outbox_seq = FromDb(read_outbox_.ColumnInt64(0));
    row.id = read_outbox_.ColumnBytes(1);
    row.payload = read_outbox_.ColumnBytes(2);
    row.binary = read_outbox_.ColumnInt64(3) != 0;
    row.accepted_at_unix_ns = read_outbox_.ColumnInt64(4);
  }
  if (rc != SQLITE_DONE) {
    out->clear();
    return ErrorStatus(rc, db_.get(), "read outbox");
  }
  return Status::OK();
}

StatusOr<OutboxStats> SqliteStore::Outbox() {
  OutboxStats stats;
  if (options_.read_only) {
    // Another connection writes: count now (the writer keeps its count in memory).
    StatusOr<uint64_t> depth = CountOutbox("outbox stats");
    if (!depth.ok()) return depth.status();
    stats.depth = *depth;
  } else {
    stats.depth = state_.outbox_depth;
  }
  Stmt::Scope scope(oldest_outbox_);
  int rc = oldest_outbox_.Step();
  if (rc == SQLITE_ROW) {
    stats.oldest_accepted_unix_ns = oldest_outbox_.ColumnInt64(0);
  } else if (rc != SQLITE_DONE) {
    return ErrorStatus(rc, db_.get(), "outbox stats");
  }
  return stats;
}

StatusOr<uint64_t> SqliteStore::TrimJournal(int64_t now_unix_ns, uint64_t max_delete,
                                            uint64_t age_hold_seq) {
  Status s = RequireWritable("trim journal");
  if (!s.ok()) return s;
  if (max_delete == 0) return uint64_t{0};
  // A limit of 0 means "no limit".
  const uint64_t max_rows = options_.journal_max_rows;
  const uint64_t max_bytes = options_.journal_max_bytes;
  const bool by_age = options_.journal_max_age_s > 0 &&
                      options_.journal_max_age_s < std::numeric_limits<int64_t>::max() / 1000000000;
  const int64_t cutoff = by_age ? now_unix_ns - options_.journal_max_age_s * 1000000000 : 0;

  s = Begin("trim journal");
  if (!s.ok()) return s;

  // Walk from the oldest row while it breaks a limit; everything up to `cut` goes.
  State next = state_;
  uint64_t& bytes = next.journal_bytes;
  uint64_t deleted = 0;
  uint64_t cut = 0;
  {
    Stmt::Scope scope(trim_scan_);
    trim_scan_.BindInt64(1, Clamp(max_delete));
    uint64_t rows = 0;  // rows kept if the scan stopped here
    int rc;
    while ((rc = trim_scan_.Step()) == SQLITE_ROW) {
      const uint64_t seq = FromDb(trim_scan_.ColumnInt64(0));
      const uint64_t len = FromDb(trim_scan_.ColumnInt64(1));
      const int64_t received_at = trim_scan_.ColumnInt64(2);
      if (deleted == 0) rows = state_.cursor.last_seq - seq + 1;  // the oldest row: all of them
      const bool over = (max_rows > 0 && rows > max_rows) || (max_bytes > 0 && bytes > max_bytes) ||
                        (by_age && received_at < cutoff && (age_hold_seq == 0 || seq < age_hold_seq));
      if (!over) break;
      cut = seq;
      --rows;
      bytes -= std::min(bytes, len);
      ++deleted;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) s = ErrorStatus(rc, db_.get(), "trim journal");
  }
  if (s.ok() && deleted > 0) {
    {
      Stmt::Scope scope(trim_delete_);
      trim_delete_.BindInt64(1, ToDb(cut));
      s = Run(trim_delete_, "trim journal");
    }
    // Always: the rows past meta.last_seq may be gone, and journal_bytes moved.
    if (s.ok() && cut >= next.cursor.last_seq) next.newest_row_upstream_seq = 0;
    if (s.ok()) s = WriteMeta(&next, "trim journal");
  }
  s = Finish(std::move(s), "trim journal");
  if (!s.ok()) return s;
  state_ = next;
  return deleted;
}

StatusOr<std::vector<std::string>> SqliteStore::Verify(size_t max_problems,
                                                       const std::atomic<bool>* stop) {
  if (db_.InTransaction()) return Status::InvalidArgument("verify: a transaction is open");
  // Every ~100 000 virtual machine steps, a look at *stop: a non-zero answer interrupts.
  if (stop != nullptr) {
    sqlite3_progress_handler(
        db_.get(), 100000,
        [](void* arg) { return static_cast<const std::atomic<bool>*>(arg)->load() ? 1 : 0; },
        const_cast<std::atomic<bool>*>(stop));
  }
  std::vector<std::string> problems;
  Status s = db_.Exec("BEGIN", "verify");  // deferred: the snapshot is taken at the first read
  if (s.ok()) s = VerifyInSnapshot(std::max<size_t>(max_problems, 1), &problems);
  if (db_.InTransaction()) (void)db_.Exec("ROLLBACK", "verify");  // it wrote nothing
  if (stop != nullptr) {
    sqlite3_progress_handler(db_.get(), 0, nullptr, nullptr);
    if (stop->load()) return Status::Unavailable("verify: stopped");
  }
  if (!s.ok()) return s;
  if (problems.size() > max_problems) problems.resize(max_problems);
  return problems;
}

Status SqliteStore::VerifyInSnapshot(size_t max_problems, std::vector<std::string>* problems) {
  // A read that meets damage is a finding, not a failure of the check.
  auto step_or_note = [&](Stmt& stmt, std::string_view what, int* rc) {
    *rc = stmt.Step();
    if (*rc == SQLITE_ROW || *rc == SQLITE_DONE) return Status::OK();
    Status e = ErrorStatus(*rc, db_.get(), what);
    if (e.code() != Status::Code::kCorruption) return e;
    problems->push_back(e.message());
    return Status::OK();
  };
  Stmt check;
  Status s = db_.Prepare("PRAGMA integrity_check(" + std::to_string(max_problems) + ")", &check);
  if (!s.ok()) return s;
  for (;;) {
    int rc = 0;
    s = step_or_note(check, "integrity_check", &rc);
    if (!s.ok()) return s;
    if (rc != SQLITE_ROW) break;
    // One row per problem, or several problems in one row, a line each.
    std::string_view text = check.ColumnBytes(0);
    while (!text.empty()) {
      const std::string_view line = text.substr(0, text.find('\n'));
      text.remove_prefix(std::min(text.size(), line.size() + 1));
      // "*** in database main ***" heads the list: noise, one database is checked.
      if (line.empty() || line == "ok" || line.substr(0, 4) == "*** ") continue;
      problems->push_back("integrity_check: " + std::string(line));
    }
  }
  if (!problems->empty()) return Status::OK();  // the invariants below need sound tables

  Meta meta;
  {
    Stmt::Scope scope(read_meta_);
    int rc = 0;
    s = step_or_note(read_meta_, "meta", &rc);
    if (!s.ok() || rc != SQLITE_ROW) {
      if (s.ok()) problems->push_back("meta: the row is missing");
      return s;
    }
    meta.last_seq = FromDb(read_meta_.ColumnInt64(1));
    meta.journal_bytes = FromDb(read_meta_.ColumnInt64(4));
  }
  Stmt journal;
  s = db_.Prepare(
      "SELECT count(*), min(seq), max(seq), "
      "(SELECT coalesce(sum(length(payload)), 0) FROM journal WHERE seq <= ?1) FROM journal",
      &journal);
  if (!s.ok()) return s;
  journal.BindInt64(1, ToDb(meta.last_seq));
  int rc = 0;
  s = step_or_note(journal, "journal", &rc);
  if (!s.ok() || rc != SQLITE_ROW) return s;
  const uint64_t rows = FromDb(journal.ColumnInt64(0));
  if (rows > 0) {
    const uint64_t first = FromDb(journal.ColumnInt64(1)), last = FromDb(journal.ColumnInt64(2));
    if (last - first + 1 != rows) {
      problems->push_back("journal: " + std::to_string(rows) + " rows from seq " +
                          std::to_string(first) + " to " + std::to_string(last) +
                          ", rows are missing in between");
    }
  }
  const uint64_t bytes = FromDb(journal.ColumnInt64(3));
  if (bytes != meta.journal_bytes) {
    problems->push_back("meta: journal_bytes is " + std::to_string(meta.journal_bytes) +
                        ", the rows up to seq " + std::to_string(meta.last_seq) + " hold " +
                        std::to_string(bytes));
  }
  Stmt outbox;
  s = db_.Prepare(
      "SELECT count(*) FROM outbox o WHERE NOT EXISTS "
      "(SELECT 1 FROM outbox_ids i WHERE i.outbox_seq = o.outbox_seq AND i.id = o.id)",
      &outbox);
  if (!s.ok()) return s;
  s = step_or_note(outbox, "outbox", &rc);
  if (!s.ok() || rc != SQLITE_ROW) return s;
  if (const int64_t orphans = outbox.ColumnInt64(0); orphans != 0) {
    problems->push_back("outbox: " + std::to_string(orphans) +
                        " row(s) without their id in outbox_ids (a duplicate would be accepted)");
  }
  return Status::OK();
}

StatusOr<int64_t> SqliteStore::SetMaxPageCount(int64_t max_pages) {
  std::string sql = "PRAGMA max_page_count = " + std::to_string(max_pages);
  return db_.QueryInt(sql.c_str(), "max_page_count");
}

}  // namespace

StatusOr<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  return SqliteStore::Open(options);
}

StatusOr<uint64_t> WriterCheckpointsForTesting(Store& store) {
  auto* sqlite_store = dynamic_cast<SqliteStore*>(&store);
  if (sqlite_store == nullptr) return Status::InvalidArgument("not an SQLite store");
  return sqlite_store->WriterCheckpoints();
}

StatusOr<int64_t> SetMaxPageCountForTesting(Store& store, int64_t max_pages) {
  auto* sqlite_store = dynamic_cast<SqliteStore*>(&store);
  if (sqlite_store == nullptr) return Status::InvalidArgument("not an SQLite store");
  return sqlite_store->SetMaxPageCount(max_pages);
}

}  // namespace wsbridge
