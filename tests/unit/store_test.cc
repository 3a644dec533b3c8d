// Store on real SQLite files in a temporary directory: durability of rows and cursor, file
// checks at open, the read-only view next to a writer, the outbox's answers, a failed commit,
// retention. No mocks, no sleeps.
#include "storage/store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "storage/sqlite_store.h"
#include "testutil.h"

namespace wsbridge {
namespace {

using testing::ReadFileBytes;
using testing::TempDir;
using testing::WriteFileBytes;
using Kind = SendOutcome::Kind;

constexpr int64_t kSecond = 1000000000;

StoreOptions Options(const std::string& path) {
  StoreOptions o;
  o.path = path;
  return o;
}

StoreOptions ReadOnly(const std::string& path) {
  StoreOptions o = Options(path);
  o.read_only = true;
  return o;
}

InboundMessage Msg(uint64_t upstream_seq, std::string topic, std::string payload,
                   int64_t received_at = 0) {
  InboundMessage m;
  m.upstream_seq = upstream_seq;
  m.topic = std::move(topic);
  m.payload = std::move(payload);
  m.received_at_unix_ns = received_at;
  return m;
}

// `n` inbound messages with upstream seqs first_upstream, first_upstream+1, ...
Batch Inbound(uint64_t first_upstream, int n, const std::string& topic = "t") {
  Batch b;
  for (int i = 0; i < n; ++i) {
    uint64_t up = first_upstream + static_cast<uint64_t>(i);
    b.inbound.push_back(Msg(up, topic, "payload-" + std::to_string(up)));
  }
  b.last_upstream_seq = first_upstream + static_cast<uint64_t>(n) - 1;
  return b;
}

OutboundRequest Out(std::string id, std::string payload = "out") {
  OutboundRequest r;
  r.id = std::move(id);
  r.payload = std::move(payload);
  return r;
}

Batch Outbound(std::vector<std::string> ids, int64_t now = 0) {
  Batch b;
  for (std::string& id : ids) b.outbound.push_back(Out(std::move(id), "p"));
  b.now_unix_ns = now;
  return b;
}

std::vector<uint64_t> Seqs(const std::vector<JournalRow>& rows) {
  std::vector<uint64_t> seqs;
  for (const JournalRow& r : rows) seqs.push_back(r.seq);
  return seqs;
}

std::vector<uint64_t> Seqs(const std::vector<OutboxRow>& rows) {
  std::vector<uint64_t> seqs;
  for (const OutboxRow& r : rows) seqs.push_back(r.outbox_seq);
  return seqs;
}

int FileMode(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 07777);
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Runs SQL on the file through SQLite directly, as a foreign program would.
void RawSql(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << (err != nullptr ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

// Opening must fail with kCorruption, with a one-line message, and leave the bytes alone.
void ExpectRefusedUntouched(const std::string& path) {
  const std::string before = ReadFileBytes(path);
  for (bool read_only : {false, true}) {
    StoreOptions o = Options(path);
    o.read_only = read_only;
    auto store = Store::Open(o);
    ASSERT_FALSE(store.ok()) << "read_only=" << read_only;
    EXPECT_EQ(store.status().code(), Status::Code::kCorruption) << store.status().ToString();
    EXPECT_EQ(store.status().message().find('\n'), std::string::npos);
    EXPECT_NE(store.status().message().find(path), std::string::npos);
    EXPECT_TRUE(ReadFileBytes(path) == before) << "read_only=" << read_only;
  }
}

// ---------------------------------------------------------------------------------------------
// Files

TEST(StoreFileTest, CreatesDatabaseAndItsWalFilesOwnerOnly) {
  for (mode_t mask : {mode_t{022}, mode_t{0}}) {
    TempDir dir;
    const std::string path = dir.File("bridge.db");
    mode_t old_mask = ::umask(mask);
    auto store = Store::Open(Options(path));
    ::umask(old_mask);
    ASSERT_OK(store);
    EXPECT_EQ(FileMode(path), 0600) << "umask " << mask;
    BatchResult r;
    ASSERT_OK((*store)->Commit(Inbound(1, 10), &r));
    // While the writer is open, WAL mode keeps its two side files next to the database.
    ASSERT_TRUE(Exists(path + "-wal"));
    ASSERT_TRUE(Exists(path + "-shm"));
    EXPECT_EQ(FileMode(path + "-wal"), 0600) << "umask " << mask;
    EXPECT_EQ(FileMode(path + "-shm"), 0600) << "umask " << mask;
  }
}

TEST(StoreFileTest, ReadOnlyRefusesMissingFileAndCreatesNothing) {
  TempDir dir;
  const std::string path = dir.File("missing.db");
  auto store = Store::Open(ReadOnly(path));
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), Status::Code::kNotFound) << store.status().ToString();
  EXPECT_FALSE(Exists(path));
}

TEST(StoreFileTest, EmptyPathIsInvalid) {
  auto store = Store::Open(Options(""));
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), Status::Code::kInvalidArgument);
}

TEST(StoreFileTest, EmptyFileBecomesNewDatabaseButNotForReaders) {
  TempDir dir;
  const std::string path = dir.File("empty.db");
  ASSERT_TRUE(WriteFileBytes(path, ""));
  auto reader = Store::Open(ReadOnly(path));
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), Status::Code::kNotFound) << reader.status().ToString();
  EXPECT_EQ(ReadFileBytes(path), "");

  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
  EXPECT_NE(store->cursor().epoch, 0u);
}

TEST(StoreFileTest, GarbageFileRefusedAndUntouched) {
  TempDir dir;
  const std::string text = dir.File("text.db");
  ASSERT_TRUE(WriteFileBytes(text, "name = \"not a database\"\n"));
  ExpectRefusedUntouched(text);

  const std::string noise = dir.File("noise.db");
  std::mt19937_64 rng(42);
  std::string bytes(64 * 1024, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  ASSERT_TRUE(WriteFileBytes(noise, bytes));
  ExpectRefusedUntouched(noise);
  EXPECT_FALSE(Exists(noise + "-wal"));
}

// Writes a database of `rows` journal rows of 200 B and closes it (the WAL checkpointed into
// the file and removed). Returns the file's bytes.
std::string WriteClosedDatabase(const std::string& path, int rows) {
  {
    auto store = Store::Open(Options(path));
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    if (!store.ok()) return {};
    Batch b = Inbound(1, rows);
    for (InboundMessage& m : b.inbound) m.payload.assign(200, 'x');
    BatchResult r;
    EXPECT_TRUE((*store)->Commit(b, &r).ok());
  }
  return ReadFileBytes(path);
}

// Open() no longer reads the whole file: a damaged page inside the journal opens (start-up
// costs the same whatever the size), and Verify() finds it, naming the page; reading the rows
// on it fails with kCorruption rather than returning something else.
TEST(StoreFileTest, DamagedPageFoundByVerifyNotAtOpen) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  std::string bytes = WriteClosedDatabase(path, 2000);
  const size_t page = 4096;  // a new database's page size
  ASSERT_GT(bytes.size(), 50 * page);
  // A page well inside the journal's b-tree, overwritten with junk.
  const size_t victim = (bytes.size() / page / 2) * page;
  for (size_t i = 0; i < page; ++i) bytes[victim + i] = static_cast<char>(0x5a);
  ASSERT_TRUE(WriteFileBytes(path, bytes));
  for (bool read_only : {true, false}) {
    SCOPED_TRACE(read_only ? "read-only" : "read-write");
    StoreOptions o = Options(path);
    o.read_only = read_only;
    ASSERT_OK_AND_ASSIGN(auto store, Store::Open(o));
    ASSERT_OK_AND_ASSIGN(std::vector<std::string> problems, store->Verify());
    ASSERT_FALSE(problems.empty());
    const std::string page_no = std::to_string(victim / page + 1);
    EXPECT_NE(problems[0].find("integrity_check"), std::string::npos) << problems[0];
    bool named = false;
    for (const std::string& p : problems) {
      named |= p.find("Page " + page_no + ":") != std::string::npos;
      EXPECT_EQ(p.find('\n'), std::string::npos) << p;
    }
    EXPECT_TRUE(named) << "no problem names page " << page_no << ": " << problems[0] << " / "
                       << problems.back();
    std::vector<JournalRow> rows;
    Status read = store->ReadJournal(1, 0, "", 10000, &rows);
    EXPECT_EQ(read.code(), Status::Code::kCorruption) << read.ToString();
  }
}

// A file shorter than its header says (a copy cut short, a truncated volume) is refused at once.
TEST(StoreFileTest, TruncatedFileRefusedAndUntouched) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  std::string bytes = WriteClosedDatabase(path, 2000);
  ASSERT_GT(bytes.size(), 100000u);
  ASSERT_TRUE(WriteFileBytes(path, bytes.substr(0, bytes.size() / 2)));
  ExpectRefusedUntouched(path);
}

TEST(StoreFileTest, SoundFileVerifiesClean) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
  BatchResult r;
  ASSERT_OK(store->Commit(Inbound(1, 3000), &r));
  ASSERT_OK_AND_ASSIGN(auto reader, Store::Open(ReadOnly(path)));
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> problems, reader->Verify());
  EXPECT_TRUE(problems.empty()) << problems[0];
  // A stop already asked for ends it at once.
  std::atomic<bool> stop{true};
  auto stopped = reader->Verify(20, &stop);
  EXPECT_EQ(stopped.status().code(), Status::Code::kUnavailable) << stopped.status().ToString();
}

// Verify() checks what integrity_check cannot see: the store's own invariants.
TEST(StoreFileTest, VerifyFindsBrokenInvariants) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  WriteClosedDatabase(path, 100);
  RawSql(path,
         "DELETE FROM journal WHERE seq = 50; UPDATE meta SET last_seq = 100, journal_bytes = 7;");
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(ReadOnly(path)));
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> problems, store->Verify());
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0], "journal: 99 rows from seq 1 to 100, rows are missing in between");
  EXPECT_EQ(problems[1], "meta: journal_bytes is 7, the rows up to seq 100 hold 19800");
}

TEST(StoreFileTest, ForeignSqliteDatabaseRefusedAndUntouched) {
  TempDir dir;
  const std::string path = dir.File("other.db");
  RawSql(path,
         "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);"
         "INSERT INTO notes(body) VALUES('mine');");
  ExpectRefusedUntouched(path);
}

TEST(StoreFileTest, WrongApplicationIdOrSchemaVersionRefused) {
  TempDir dir;
  const std::string foreign_id = dir.File("foreign-id.db");
  { ASSERT_OK(Store::Open(Options(foreign_id))); }
  RawSql(foreign_id, "PRAGMA application_id = 1234;");
  ExpectRefusedUntouched(foreign_id);

  const std::string newer = dir.File("newer.db");
  { ASSERT_OK(Store::Open(Options(newer))); }
  RawSql(newer, "PRAGMA user_version = 3;");
  ExpectRefusedUntouched(newer);

  const std::string damaged_schema = dir.File("no-outbox.db");
  { ASSERT_OK(Store::Open(Options(damaged_schema))); }
  RawSql(damaged_schema, "DROP TABLE outbox;");
  ExpectRefusedUntouched(damaged_schema);
}

// ---------------------------------------------------------------------------------------------
// Journal and cursor

TEST(StoreJournalTest, CommitAndReopenKeepRowsAndCursor) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  Cursor before;
  {
    ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
    EXPECT_EQ(store->cursor().last_seq, 0u);
    EXPECT_EQ(store->cursor().last_upstream_seq, 0u);
    Batch b;
    b.inbound.push_back(Msg(41, "quotes.eur", "{\"p\":1}", 1000));
    b.inbound.push_back(Msg(42, "quotes.usd", std::string("\0\1\2bin", 6), 2000));
    b.inbound.back().binary = true;
    b.last_upstream_seq = 42;
    BatchResult r;
    ASSERT_OK(store->Commit(b, &r));
    EXPECT_EQ(r.first_seq, 1u);
    EXPECT_TRUE(r.outbound.empty());
    before = store->cursor();
    EXPECT_EQ(before.last_seq, 2u);
    EXPECT_EQ(before.last_upstream_seq, 42u);
  }
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
  EXPECT_EQ(store->cursor().last_seq, before.last_seq);
  EXPECT_EQ(store->cursor().last_upstream_seq, before.last_upstream_seq);
  EXPECT_EQ(store->cursor().epoch, before.epoch);

  std::vector<JournalRow> rows;
  ASSERT_OK(store->ReadJournal(1, 0, "", 100, &rows));
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].seq, 1u);
  EXPECT_EQ(rows[0].msg.upstream_seq, 41u);
  EXPECT_EQ(rows[0].msg.topic, "quotes.eur");
  EXPECT_EQ(rows[0].msg.payload, "{\"p\":1}");
  EXPECT_FALSE(rows[0].msg.binary);
  EXPECT_EQ(rows[0].msg.received_at_unix_ns, 1000);
  EXPECT_EQ(rows[1].seq, 2u);
  EXPECT_EQ(rows[1].msg.payload, std::string("\0\1\2bin", 6));
  EXPECT_TRUE(rows[1].msg.binary);

  ASSERT_OK_AND_ASSIGN(JournalBounds bounds, store->Bounds());
  EXPECT_EQ(bounds.first_seq, 1u);
  EXPECT_EQ(bounds.last_seq, 2u);
  EXPECT_EQ(bounds.rows, 2u);
  EXPECT_EQ(bounds.bytes, 7u + 6u);
}

TEST(StoreJournalTest, SeqContiguousAcrossReopen) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  for (int round = 0; round < 3; ++round) {
    ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
    for (int b = 0; b < 2; ++b) {
      BatchResult r;
      uint64_t expected_first = store->cursor().last_seq + 1;
      ASSERT_OK(store->Commit(Inbound(store->cursor().last_upstream_seq + 1, 3), &r));
      EXPECT_EQ(r.first_seq, expected_first);
    }
  }
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
  std::vector<JournalRow> rows;
  ASSERT_OK(store->ReadJournal(0, 0, "", 1000, &rows));
  ASSERT_EQ(rows.size(), 18u);
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].seq, i + 1);
    EXPECT_EQ(rows[i].msg.upstream_seq, i + 1);
  }
  EXPECT_EQ(store->cursor().last_seq, 18u);
}

TEST(StoreJournalTest, UpstreamCursorOnlyMovesForward) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(dir.File("bridge.db"))));
  BatchResult r;
  ASSERT_OK(store->Commit(Inbound(100, 1), &r));
  Batch older = Inbound(7, 1);
  ASSERT_OK(store->Commit(older, &r));
  EXPECT_EQ(store->cursor().last_upstream_seq, 100u);
  EXPECT_EQ(store->cursor().last_seq, 2u);

  // A batch with nothing but a higher upstream seq still moves the cursor.
  Batch only_cursor;
  only_cursor.last_upstream_seq = 120;
  ASSERT_OK(store->Commit(only_cursor, &r));
  EXPECT_EQ(store->cursor().last_upstream_seq, 120u);
  EXPECT_EQ(r.first_seq, 0u);

  // An empty batch is a no-op.
  ASSERT_OK(store->Commit(Batch(), &r));
  EXPECT_EQ(store->cursor().last_seq, 2u);
  EXPECT_EQ(store->cursor().last_upstream_seq, 120u);

  // Upstream seqs use all 64 bits.
  Batch huge = Inbound(std::numeric_limits<uint64_t>::max(), 1);
  ASSERT_OK(store->Commit(huge, &r));
  EXPECT_EQ(store->cursor().last_upstream_seq, std::numeric_limits<uint64_t>::max());
  std::vector<JournalRow> rows;
  ASSERT_OK(store->ReadJournal(3, 3, "", 10, &rows));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].msg.upstream_seq, std::numeric_limits<uint64_t>::max());
}

TEST(StoreJournalTest, EpochNonzeroStableAndPerFile) {
  TempDir dir;
  uint64_t first = 0;
  {
    ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(dir.File("a.db"))));
    first = store->cursor().epoch;
    EXPECT_NE(first, 0u);
  }
  {
    ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(dir.File("a.db"))));
    EXPECT_EQ(store->cursor().epoch, first);
  }
  {
    ASSERT_OK_AND_ASSIGN(auto reader, Store::Open(ReadOnly(dir.File("a.db"))));
    EXPECT_EQ(reader->cursor().epoch, first);
  }
  ASSERT_OK_AND_ASSIGN(auto other, Store::Open(Options(dir.File("b.db"))));
  EXPECT_NE(other->cursor().epoch, 0u);
  EXPECT_NE(other->cursor().epoch, first);
}

TEST(StoreJournalTest, ReadJournalRangesAndTopicPrefix) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(dir.File("bridge.db"))));
  Batch b;
  const char* topics[] = {"a.x", "a.y", "b.x", "ab", "a%", "a_z", "", "a.x.deep"};
  uint64_t up = 0;
  for (const char* t : topics) b.inbound.push_back(Msg(++up, t, t));
  BatchResult r;
  ASSERT_OK(store->Commit(b, &r));  // seqs 1..8 in that order

  std::vector<JournalRow> rows;
  ASSERT_OK(store->ReadJournal(1, 0, "", 100, &rows));
  EXPECT_EQ(Seqs(rows), (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  ASSERT_OK(store->ReadJournal(0, 0, "a.", 100, &rows));
  EXPECT_EQ(Seqs(rows), (std::vector<uint64_t>{1, 2, 8}));
  ASSERT_OK(store->ReadJournal(0, 0, "a", 100, &rows));
  EXPECT_EQ(Seqs(rows), (std::vector<uint64_t>{1, 2, 4, 5, 6, 8}));
  // Wildcards of LIKE and GLOB are plain bytes here.
  ASSERT_OK(store->ReadJournal(0, 0, "a%", 100, &rows));
  EXPECT_EQ(Seqs(rows), (std::vector<uint64_t>{5}));
  ASSERT_OK(store->ReadJournal(0, 0, "a_", 100, &rows));
  EXPECT_EQ(Seqs(rows), (std::vector<uint64_t>{6}));
  ASSERT_OK(store->ReadJournal(0, 0, "A.", 100, &rows));  // case matters
  EXPECT_TRUE(rows.empty());
  ASSERT_OK(store->ReadJournal(0, 0, "a.x.deeper", 100, &rows));
  EXPECT_TRUE(rows.empty());

  ASSERT_OK(store->ReadJournal(2, 4, "", 100, &rows));
  EXPECT_EQ(Seqs(rows), (std::vector<uint64_t>{2, 3, 4}));
  ASSERT_OK(store->ReadJournal(2, 8, "a", 2, &rows));
  EXPECT_EQ(Seqs(rows), (std::vector<uint64_t>{2, 4}));
  ASSERT_OK(store->ReadJournal(8, 8, "", 100, &rows));
  EXPECT_EQ(Seqs(rows), (std::vector<uint64_t>{8}));
  ASSERT_OK(store->ReadJournal(9, 0, "", 100, &rows));
  EXPECT_TRUE(rows.empty());
  ASSERT_OK(store->ReadJournal(5, 3, "", 100, &rows));
  EXPECT_TRUE(rows.empty());
  ASSERT_OK(store->ReadJournal(std::numeric_limits<uint64_t>::max(), 0, "", 100, &rows));
  EXPECT_TRUE(rows.empty());
  ASSERT_OK(store->ReadJournal(7, 7, "", 100, &rows));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].msg.topic, "");
  EXPECT_EQ(rows[0].msg.payload, "");
}

TEST(StoreJournalTest, ReadOnlyStoreSeesWriterCommitsWhileWriterWorks) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  ASSERT_OK_AND_ASSIGN(auto writer, Store::Open(Options(path)));
  BatchResult r;
  ASSERT_OK(writer->Commit(Inbound(1, 10), &r));

  ASSERT_OK_AND_ASSIGN(auto reader, Store::Open(ReadOnly(path)));
  EXPECT_EQ(reader->cursor().last_seq, 10u);
  EXPECT_EQ(reader->cursor().epoch, writer->cursor().epoch);
  std::vector<JournalRow> rows;
  ASSERT_OK(reader->ReadJournal(1, 0, "", 1000, &rows));
  EXPECT_EQ(rows.size(), 10u);

  for (int i = 0; i < 5; ++i) {
    ASSERT_OK(writer->Commit(Inbound(writer->cursor().last_upstream_seq + 1, 10), &r));
    ASSERT_OK(reader->ReadJournal(1, 0, "", 1000, &rows));
    EXPECT_EQ(rows.size(), 20u + 10u * static_cast<size_t>(i));
    ASSERT_OK_AND_ASSIGN(JournalBounds bounds, reader->Bounds());
    EXPECT_EQ(bounds.last_seq, writer->cursor().last_seq);
    EXPECT_EQ(bounds.rows, bounds.last_seq);
  }
  ASSERT_OK(writer->Commit(Outbound({"m1", "m2"}, 5), &r));
  ASSERT_OK_AND_ASSIGN(OutboxStats stats, reader->Outbox());
  EXPECT_EQ(stats.depth, 2u);
  EXPECT_EQ(stats.oldest_accepted_unix_ns, 5);
  std::vector<OutboxRow> outbox;
  ASSERT_OK(reader->ReadOutbox(0, 10, &outbox));
  EXPECT_EQ(Seqs(outbox), (std::vector<uint64_t>{1, 2}));

  // The reader does not write.
  Status s = reader->Commit(Inbound(100, 1), &r);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.ToString();
  EXPECT_EQ(reader->TrimJournal(0, 10).status().code(), Status::Code::kInvalidArgument);
  ASSERT_OK(writer->Commit(Inbound(100, 1), &r));
  EXPECT_EQ(r.first_seq, 61u);

  // And it keeps working after the writer went away.
  writer.reset();
  ASSERT_OK(reader->ReadJournal(61, 0, "", 10, &rows));
  EXPECT_EQ(Seqs(rows), (std::vector<uint64_t>{61}));
  ASSERT_OK_AND_ASSIGN(auto late_reader, Store::Open(ReadOnly(path)));
  EXPECT_EQ(late_reader->cursor().last_seq, 61u);
}

// A forked child process and the pipes to talk to it. Kills and reaps the child if the test
// leaves early, so that a failed assertion never leaves it blocked on a pipe.
class Child {
 public:
  Child() {
    if (::pipe(to_child_) != 0 || ::pipe(to_parent_) != 0) std::abort();
    pid_ = ::fork();
    if (pid_ < 0) std::abort();
    if (pid_ == 0) {
      ::close(to_child_[1]);
      ::close(to_parent_[0]);
    } else {
      ::close(to_child_[0]);
      ::close(to_parent_[1]);
    }
  }
  ~Child() {
    if (pid_ > 0) {
      ::close(to_child_[1]);
      ::close(to_parent_[0]);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  bool in_child() const { return pid_ == 0; }
  // One byte each way; false when the other side is gone.
  bool Signal(int fd) {
    char c = '.';
    return ::write(fd, &c, 1) == 1;
  }
  bool Wait(int fd) {
    char c;
    return ::read(fd, &c, 1) == 1;
  }
  bool TellChild() { return Signal(to_child_[1]); }
  bool WaitForChild() { return Wait(to_parent_[0]); }
  bool TellParent() { return Signal(to_parent_[1]); }
  bool WaitForParent() { return Wait(to_child_[0]); }
  // The child's exit status once it has exited on its own, -1 if it did not exit normally.
  int Join() {
    int status = 0;
    pid_t pid = pid_;
    pid_ = -1;
    ::close(to_child_[1]);
    ::close(to_parent_[0]);
    if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
  }

 private:
  pid_t pid_ = -1;
  int to_child_[2] = {-1, -1};
  int to_parent_[2] = {-1, -1};
};

TEST(StoreJournalTest, ReadOnlyStoreInAnotherProcessThanTheWriter) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  // No SQLite connection may be open across fork(): the parent opens its reader afterwards.
  Child child;
  if (child.in_child()) {
    // The writer: three batches, each followed by a pause until the parent has looked; then it
    // dies without closing anything, as under kill -9.
    auto writer = Store::Open(Options(path));
    if (!writer.ok()) ::_exit(2);
    for (uint64_t round = 0; round < 3; ++round) {
      BatchResult r;
      if (!(*writer)->Commit(Inbound(round * 10 + 1, 10), &r).ok()) ::_exit(3);
      if (!child.TellParent() || !child.WaitForParent()) ::_exit(4);
    }
    ::_exit(0);
  }
  std::unique_ptr<Store> reader;
  std::vector<JournalRow> rows;
  for (size_t round = 0; round < 3; ++round) {
    ASSERT_TRUE(child.WaitForChild());
    if (reader == nullptr) {
      ASSERT_OK_AND_ASSIGN(reader, Store::Open(ReadOnly(path)));
    }
    ASSERT_OK(reader->ReadJournal(1, 0, "", 1000, &rows));
    EXPECT_EQ(rows.size(), 10 * (round + 1));
    ASSERT_OK_AND_ASSIGN(JournalBounds bounds, reader->Bounds());
    EXPECT_EQ(bounds.last_seq, 10 * (round + 1));
    ASSERT_TRUE(child.TellChild());
  }
  ASSERT_EQ(child.Join(), 0);
  ASSERT_OK(reader->ReadJournal(1, 0, "", 1000, &rows));
  EXPECT_EQ(rows.size(), 30u);
  // The next writer finds everything the dead one committed.
  reader.reset();
  ASSERT_OK_AND_ASSIGN(auto writer, Store::Open(Options(path)));
  EXPECT_EQ(writer->cursor().last_seq, 30u);
  EXPECT_EQ(writer->cursor().last_upstream_seq, 30u);
}

// ---------------------------------------------------------------------------------------------
// Outbox

TEST(StoreOutboxTest, AcceptsInOrderAndReadsBack) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(dir.File("bridge.db"))));
  ASSERT_OK_AND_ASSIGN(OutboxStats empty, store->Outbox());
  EXPECT_EQ(empty.depth, 0u);
  EXPECT_EQ(empty.oldest_accepted_unix_ns, 0);

  Batch b;
  b.outbound.push_back(Out("a", "alpha"));
  b.outbound.push_back(Out("b", std::string("\0bin", 4)));
  b.outbound.back().binary = true;
  b.outbound.push_back(Out("c", ""));
  b.now_unix_ns = 777;
  b.inbound.push_back(Msg(1, "t", "in"));  // one transaction may carry both directions
  BatchResult r;
  ASSERT_OK(store->Commit(b, &r));
  EXPECT_EQ(r.first_seq, 1u);
  ASSERT_EQ(r.outbound.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(r.outbound[i].kind, Kind::kAccepted);
    EXPECT_EQ(r.outbound[i].outbox_seq, i + 1);
  }

  std::vector<OutboxRow> rows;
  ASSERT_OK(store->ReadOutbox(0, 100, &rows));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].id, "a");
  EXPECT_EQ(rows[0].payload, "alpha");
  EXPECT_FALSE(rows[0].binary);
  EXPECT_EQ(rows[0].accepted_at_unix_ns, 777);
  EXPECT_EQ(rows[1].payload, std::string("\0bin", 4));
  EXPECT_TRUE(rows[1].binary);
  EXPECT_EQ(rows[2].payload, "");
  ASSERT_OK(store->ReadOutbox(1, 1, &rows));
  EXPECT_EQ(Seqs(rows), (std::vector<uint64_t>{2}));
  ASSERT_OK(store->ReadOutbox(3, 100, &rows));
  EXPECT_TRUE(rows.empty());

  ASSERT_OK_AND_ASSIGN(OutboxStats stats, store->Outbox());
  EXPECT_EQ(stats.depth, 3u);
  EXPECT_EQ(stats.oldest_accepted_unix_ns, 777);
}

TEST(StoreOutboxTest, DuplicateIdsAnsweredWithOriginalSeq) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  {
    ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
    BatchResult r;
    // Twice in the same batch.
    ASSERT_OK(store->Commit(Outbound({"a", "b", "a"}), &r));
    ASSERT_EQ(r.outbound.size(), 3u);
    EXPECT_EQ(r.outbound[0].kind, Kind::kAccepted);
    EXPECT_EQ(r.outbound[1].kind, Kind::kAccepted);
    EXPECT_EQ(r.outbound[2].kind, Kind::kDuplicate);
    EXPECT_EQ(r.outbound[2].outbox_seq, 1u);

    // In a later batch.
    ASSERT_OK(store->Commit(Outbound({"b", "c"}), &r));
    EXPECT_EQ(r.outbound[0].kind, Kind::kDuplicate);
    EXPECT_EQ(r.outbound[0].outbox_seq, 2u);
    EXPECT_EQ(r.outbound[1].kind, Kind::kAccepted);
    EXPECT_EQ(r.outbound[1].outbox_seq, 3u);

    // After delivery deleted them.
    Batch delivered;
    delivered.delivered_up_to = 3;
    ASSERT_OK(store->Commit(delivered, &r));
    ASSERT_OK_AND_ASSIGN(OutboxStats stats, store->Outbox());
    EXPECT_EQ(stats.depth, 0u);
    ASSERT_OK(store->Commit(Outbound({"a", "c"}), &r));
    EXPECT_EQ(r.outbound[0].kind, Kind::kDuplicate);
    EXPECT_EQ(r.outbound[0].outbox_seq, 1u);
    EXPECT_EQ(r.outbound[1].kind, Kind::kDuplicate);
    EXPECT_EQ(r.outbound[1].outbox_seq, 3u);
    std::vector<OutboxRow> rows;
    ASSERT_OK(store->ReadOutbox(0, 100, &rows));
    EXPECT_TRUE(rows.empty());
  }
  // After a restart, with the outbox empty: still duplicates, and seqs are not reused.
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
  BatchResult r;
  ASSERT_OK(store->Commit(Outbound({"b", "d"}), &r));
  EXPECT_EQ(r.outbound[0].kind, Kind::kDuplicate);
  EXPECT_EQ(r.outbound[0].outbox_seq, 2u);
  EXPECT_EQ(r.outbound[1].kind, Kind::kAccepted);
  EXPECT_EQ(r.outbound[1].outbox_seq, 4u);
}

TEST(StoreOutboxTest, FullAtTheLimitUntilDeliveryMakesRoom) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  StoreOptions o = Options(path);
  o.outbox_max_messages = 2;
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(o));
  BatchResult r;
  ASSERT_OK(store->Commit(Outbound({"a", "b", "c"}), &r));
  EXPECT_EQ(r.outbound[0].kind, Kind::kAccepted);
  EXPECT_EQ(r.outbound[1].kind, Kind::kAccepted);
  EXPECT_EQ(r.outbound[2].kind, Kind::kFull);
  EXPECT_EQ(r.outbound[2].outbox_seq, 0u);

  ASSERT_OK(store->Commit(Outbound({"c"}), &r));
  EXPECT_EQ(r.outbound[0].kind, Kind::kFull);
  // A retry of an accepted id is DUPLICATE even when the outbox is full.
  ASSERT_OK(store->Commit(Outbound({"b"}), &r));
  EXPECT_EQ(r.outbound[0].kind, Kind::kDuplicate);
  EXPECT_EQ(r.outbound[0].outbox_seq, 2u);

  // A rejected id was not recorded; what a batch delivers makes room in the same batch.
  Batch b = Outbound({"c", "d"});
  b.delivered_up_to = 1;
  ASSERT_OK(store->Commit(b, &r));
  EXPECT_EQ(r.outbound[0].kind, Kind::kAccepted);
  EXPECT_EQ(r.outbound[0].outbox_seq, 3u);
  EXPECT_EQ(r.outbound[1].kind, Kind::kFull);

  // The depth is counted again at open.
  store.reset();
  ASSERT_OK_AND_ASSIGN(store, Store::Open(o));
  ASSERT_OK_AND_ASSIGN(OutboxStats stats, store->Outbox());
  EXPECT_EQ(stats.depth, 2u);
  ASSERT_OK(store->Commit(Outbound({"d"}), &r));
  EXPECT_EQ(r.outbound[0].kind, Kind::kFull);
}

TEST(StoreOutboxTest, DeliveredUpToAndAckedIdsDelete) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(dir.File("bridge.db"))));
  BatchResult r;
  for (int i = 1; i <= 6; ++i) {
    ASSERT_OK(store->Commit(Outbound({"m" + std::to_string(i)}, i * kSecond), &r));
  }
  Batch b;
  b.delivered_up_to = 2;
  b.acked_ids = {"m4", "m6", "unknown", "m1"};
  ASSERT_OK(store->Commit(b, &r));
  std::vector<OutboxRow> rows;
  ASSERT_OK(store->ReadOutbox(0, 100, &rows));
  EXPECT_EQ(Seqs(rows), (std::vector<uint64_t>{3, 5}));
  ASSERT_OK_AND_ASSIGN(OutboxStats stats, store->Outbox());
  EXPECT_EQ(stats.depth, 2u);
  EXPECT_EQ(stats.oldest_accepted_unix_ns, 3 * kSecond);

  Batch rest;
  rest.delivered_up_to = std::numeric_limits<uint64_t>::max();
  ASSERT_OK(store->Commit(rest, &r));
  ASSERT_OK_AND_ASSIGN(stats, store->Outbox());
  EXPECT_EQ(stats.depth, 0u);
  EXPECT_EQ(stats.oldest_accepted_unix_ns, 0);
}

TEST(StoreOutboxTest, FileOfAnEarlierBuildLosesItsUnusedIndexAndKeepsWorking) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  {
    ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
    BatchResult r;
    ASSERT_OK(store->Commit(Outbound({"m1", "m2"}), &r));
  }
  RawSql(path, "CREATE INDEX outbox_by_id ON outbox(id)");  // as earlier builds created it
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
  Batch b;
  b.acked_ids = {"m1"};
  BatchResult r;
  ASSERT_OK(store->Commit(b, &r));
  std::vector<OutboxRow> rows;
  ASSERT_OK(store->ReadOutbox(0, 100, &rows));
  EXPECT_EQ(Seqs(rows), (std::vector<uint64_t>{2}));
  store.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'outbox_by_id'",
                               -1, &st, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

// A file of schema version 1 (meta written by every commit, 4 KiB pages) is read as it is, and
// marked version 2 by the first read-write open, so that a build of version 1 refuses it after
// this one wrote meta the new way.
TEST(StoreJournalTest, SchemaVersion1FileReadAndMarked2) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  RawSql(path,
         "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;"
         "CREATE TABLE journal(seq INTEGER PRIMARY KEY, upstream_seq INTEGER NOT NULL,"
         "  topic TEXT NOT NULL, payload BLOB NOT NULL, binary INTEGER NOT NULL,"
         "  received_at INTEGER NOT NULL);"
         "CREATE TABLE meta(id INTEGER PRIMARY KEY CHECK (id = 1), last_upstream_seq INTEGER NOT"
         "  NULL, last_seq INTEGER NOT NULL, epoch INTEGER NOT NULL, last_outbox_seq INTEGER NOT"
         "  NULL, journal_bytes INTEGER NOT NULL);"
         "CREATE TABLE outbox(outbox_seq INTEGER PRIMARY KEY, id TEXT NOT NULL, payload BLOB NOT"
         "  NULL, binary INTEGER NOT NULL, accepted_at INTEGER NOT NULL);"
         "CREATE TABLE outbox_ids(outbox_seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE);"
         "INSERT INTO journal VALUES(1, 7, 't', x'0102', 1, 0), (2, 8, 't', x'03', 1, 0);"
         "INSERT INTO meta VALUES(1, 9, 2, 1234, 0, 3);"
         "PRAGMA application_id = 1465074225; PRAGMA user_version = 1;");
  auto user_version = [&] {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr), SQLITE_OK);
    EXPECT_EQ(sqlite3_step(st), SQLITE_ROW);
    const int v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
  };
  {
    ASSERT_OK_AND_ASSIGN(auto reader, Store::Open(ReadOnly(path)));
    EXPECT_EQ(reader->cursor().last_upstream_seq, 9u);
    EXPECT_EQ(reader->cursor().epoch, 1234u);
  }
  EXPECT_EQ(user_version(), 1);
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
  EXPECT_EQ(user_version(), 2);
  EXPECT_EQ(store->cursor().last_seq, 2u);
  EXPECT_EQ(store->cursor().last_upstream_seq, 9u);
  ASSERT_OK_AND_ASSIGN(JournalBounds bounds, store->Bounds());
  EXPECT_EQ(bounds.bytes, 3u);
  BatchResult r;
  ASSERT_OK(store->Commit(Inbound(10, 1), &r));
  EXPECT_EQ(r.first_seq, 3u);
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> problems, store->Verify());
  EXPECT_TRUE(problems.empty()) << problems[0];
}

TEST(StoreJournalTest, WalStartsOverUnderABusyWriter) {
  // A writer that never pauses: without the writer finishing the checkpoint now and then, the
  // WAL would hold every frame written (~145 MB here). It must start over and stay bounded.
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
  const std::string payload(4000, 'x');
  uint64_t up = 0;
  for (int c = 0; c < 4000; ++c) {
    Batch b;
    for (int i = 0; i < 8; ++i) b.inbound.push_back(Msg(++up, "t", payload));
    b.last_upstream_seq = up;
    ASSERT_OK(store->Commit(b, nullptr));
  }
  struct stat st;
  ASSERT_EQ(::stat((path + "-wal").c_str(), &st), 0);
  // Each row needs a page of its own, a WAL frame of 4096 + 24 bytes: a WAL that never started
  // over holds at least all of them. How soon it starts over depends on the background
  // checkpointer's progress, i.e. on the machine's load, so that is all the size can tell.
  const double written = 4000.0 * 8 * 4096;
  EXPECT_LT(static_cast<double>(st.st_size), 4000.0 * 8 * (4096 + 24))
      << "WAL " << st.st_size << " bytes: it never started over";
  // Each checkpoint the committing thread runs itself fsyncs twice inside a commit: about one
  // per 16 000 frames written (a restart), not one per commit until a restart gets through.
  ASSERT_OK_AND_ASSIGN(uint64_t writer_checkpoints, WriterCheckpointsForTesting(*store));
  EXPECT_LE(writer_checkpoints, static_cast<uint64_t>(2 * written / 4096 / 16000) + 2);
}

// The cursor has no write of its own per commit (it was a page of its own: 4 KiB per message at
// low rates): it is the meta row combined with the journal's newest row. Every way the two can
// part must still give back the cursor, the byte count and the outbox seq after a reopen.
TEST(StoreJournalTest, CursorAndSizesSurviveReopenWithoutAMetaWritePerCommit) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  auto reopen_and_expect = [&](std::unique_ptr<Store>& store, const char* step) {
    SCOPED_TRACE(step);
    const Cursor before = store->cursor();
    ASSERT_OK_AND_ASSIGN(JournalBounds bounds_before, store->Bounds());
    ASSERT_OK_AND_ASSIGN(auto reader, Store::Open(ReadOnly(path)));
    ASSERT_OK_AND_ASSIGN(JournalBounds read_bounds, reader->Bounds());
    EXPECT_EQ(read_bounds.last_seq, bounds_before.last_seq);
    EXPECT_EQ(read_bounds.bytes, bounds_before.bytes);
    EXPECT_EQ(reader->cursor().last_upstream_seq, before.last_upstream_seq);
    store.reset();
    ASSERT_OK_AND_ASSIGN(store, Store::Open(Options(path)));
    EXPECT_EQ(store->cursor().last_seq, before.last_seq);
    EXPECT_EQ(store->cursor().last_upstream_seq, before.last_upstream_seq);
    EXPECT_EQ(store->cursor().epoch, before.epoch);
    ASSERT_OK_AND_ASSIGN(JournalBounds bounds, store->Bounds());
    EXPECT_EQ(bounds.first_seq, bounds_before.first_seq);
    EXPECT_EQ(bounds.rows, bounds_before.rows);
    EXPECT_EQ(bounds.bytes, bounds_before.bytes);
    ASSERT_OK_AND_ASSIGN(std::vector<std::string> problems, reader->Verify());
    EXPECT_TRUE(problems.empty()) << problems[0];
  };
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
  BatchResult r;
  // Rows with upstream seqs: the newest row carries the cursor.
  for (int i = 0; i < 5; ++i) ASSERT_OK(store->Commit(Inbound(1 + 10 * i, 10), &r));
  reopen_and_expect(store, "rows with seqs");
  EXPECT_EQ(store->cursor().last_upstream_seq, 50u);
  EXPECT_EQ(store->cursor().last_seq, 50u);
  // Newest rows without an upstream seq: the cursor's upstream seq stays 50.
  Batch no_seq;
  no_seq.inbound.push_back(Msg(0, "t", "plain text"));
  ASSERT_OK(store->Commit(no_seq, &r));
  reopen_and_expect(store, "a newest row without a seq");
  EXPECT_EQ(store->cursor().last_upstream_seq, 50u);
  // An upstream seq without a row.
  Batch only_seq;
  only_seq.last_upstream_seq = 70;
  ASSERT_OK(store->Commit(only_seq, &r));
  reopen_and_expect(store, "a seq without a row");
  EXPECT_EQ(store->cursor().last_upstream_seq, 70u);
  // Many rows since meta was last written: the byte count is the sum of their sizes.
  for (int i = 0; i < 30; ++i) ASSERT_OK(store->Commit(Inbound(71 + 100 * i, 100), &r));
  reopen_and_expect(store, "3 000 rows");
  EXPECT_EQ(store->cursor().last_seq, 3051u);
  // Outbound only: the outbox seq goes on after a reopen.
  Batch out;
  out.outbound.push_back({"a", "x", false});
  ASSERT_OK(store->Commit(out, &r));
  ASSERT_EQ(r.outbound[0].outbox_seq, 1u);
  reopen_and_expect(store, "outbound");
  out.outbound[0].id = "b";
  ASSERT_OK(store->Commit(out, &r));
  EXPECT_EQ(r.outbound[0].outbox_seq, 2u);
  // Trimmed to empty: seqs never go back.
  StoreOptions trim = Options(path);
  trim.journal_max_rows = 0;
  trim.journal_max_bytes = 0;
  trim.journal_max_age_s = 1;
  store.reset();
  ASSERT_OK_AND_ASSIGN(store, Store::Open(trim));
  ASSERT_OK_AND_ASSIGN(uint64_t trimmed,
                       store->TrimJournal(std::numeric_limits<int64_t>::max() / 2, 1000000));
  EXPECT_EQ(trimmed, 3051u);
  reopen_and_expect(store, "trimmed to empty");
  EXPECT_EQ(store->cursor().last_seq, 3051u);
  EXPECT_EQ(store->cursor().last_upstream_seq, 3070u);
  ASSERT_OK(store->Commit(Inbound(3071, 1), &r));
  EXPECT_EQ(r.first_seq, 3052u);
}

// What that buys: a commit of one message writes one page into the WAL (a frame: the page and
// its header), not two (the cursor's page as well), except when a leaf splits. With the default
// 4 KiB pages and with 1 KiB pages (storage.page_size), which the new file takes.
void OneMessageCommits(int page_size) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  StoreOptions o = Options(path);
  o.page_size = page_size;
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(o));
  BatchResult r;
  ASSERT_OK(store->Commit(Inbound(1, 1), &r));
  struct stat before, after;
  ASSERT_EQ(::stat((path + "-wal").c_str(), &before), 0);
  constexpr int kCommits = 200;  // ~800 KiB of WAL at most: no checkpoint starts it over
  for (int i = 0; i < kCommits; ++i) {
    Batch b = Inbound(2 + i, 1);
    b.inbound[0].payload.assign(100, 'p');
    ASSERT_OK(store->Commit(b, &r));
  }
  ASSERT_EQ(::stat((path + "-wal").c_str(), &after), 0);
  const double frames = static_cast<double>(after.st_size - before.st_size) / (page_size + 24);
  // One frame per commit, and about three more per leaf split (1 KiB: every ~7 rows of 100 B).
  EXPECT_LT(frames, 1.6 * kCommits) << frames << " frames for " << kCommits << " commits";
  EXPECT_GE(frames, kCommits);
}

TEST(StoreJournalTest, OneMessageCommitWritesAboutOnePage) {
  for (int page_size : {4096, 1024}) {
    SCOPED_TRACE(page_size);
    OneMessageCommits(page_size);
  }
}

// ---------------------------------------------------------------------------------------------
// A failed commit

TEST(StoreFailureTest, FailedCommitChangesNothingAndRetrySucceeds) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
  BatchResult r;
  ASSERT_OK(store->Commit(Inbound(1, 10), &r));
  ASSERT_OK(store->Commit(Outbound({"early"}), &r));
  const Cursor before = store->cursor();
  ASSERT_OK_AND_ASSIGN(JournalBounds bounds_before, store->Bounds());

  // "Disk full": the database may not grow beyond its current size.
  ASSERT_OK(SetMaxPageCountForTesting(*store, 1));
  Batch big = Inbound(11, 2000);
  for (InboundMessage& m : big.inbound) m.payload.assign(500, 'x');
  big.outbound.push_back(Out("late"));
  big.acked_ids.push_back("early");
  r.first_seq = 12345;
  Status s = store->Commit(big, &r);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kIOError);
  EXPECT_NE(s.message().find("disk is full"), std::string::npos) << s.ToString();
  EXPECT_EQ(r.first_seq, 12345u) << "result untouched on failure";

  EXPECT_EQ(store->cursor().last_seq, before.last_seq);
  EXPECT_EQ(store->cursor().last_upstream_seq, before.last_upstream_seq);
  ASSERT_OK_AND_ASSIGN(JournalBounds bounds, store->Bounds());
  EXPECT_EQ(bounds.last_seq, bounds_before.last_seq);
  EXPECT_EQ(bounds.rows, bounds_before.rows);
  EXPECT_EQ(bounds.bytes, bounds_before.bytes);
  ASSERT_OK_AND_ASSIGN(OutboxStats stats, store->Outbox());
  EXPECT_EQ(stats.depth, 1u);
  std::vector<OutboxRow> outbox;
  ASSERT_OK(store->ReadOutbox(0, 10, &outbox));
  EXPECT_EQ(Seqs(outbox), (std::vector<uint64_t>{1}));

  // Space is back: the same batch goes through as if the failure had never happened.
  ASSERT_OK(SetMaxPageCountForTesting(*store, 1 << 30));
  ASSERT_OK(store->Commit(big, &r));
  EXPECT_EQ(r.first_seq, 11u);
  ASSERT_EQ(r.outbound.size(), 1u);
  EXPECT_EQ(r.outbound[0].kind, Kind::kAccepted);
  EXPECT_EQ(r.outbound[0].outbox_seq, 2u);
  EXPECT_EQ(store->cursor().last_seq, 2010u);
  EXPECT_EQ(store->cursor().last_upstream_seq, 2010u);
  ASSERT_OK_AND_ASSIGN(stats, store->Outbox());
  EXPECT_EQ(stats.depth, 1u);

  store.reset();
  ASSERT_OK_AND_ASSIGN(store, Store::Open(Options(path)));
  EXPECT_EQ(store->cursor().last_seq, 2010u);
  ASSERT_OK_AND_ASSIGN(bounds, store->Bounds());
  EXPECT_EQ(bounds.rows, 2010u);
  EXPECT_EQ(bounds.bytes, bounds_before.bytes + 2000u * 500u);
}

// Seqs after a commit's first row are SQLite's next rowid: a row past the cursor, which only
// another program can have written, would shift them. The commit fails instead.
TEST(StoreFailureTest, RowPastTheCursorFailsTheCommitAndChangesNothing) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(path)));
  BatchResult r;
  ASSERT_OK(store->Commit(Inbound(1, 10), &r));
  // While the store is open (at open, the newest row is the cursor: see below).
  RawSql(path, "INSERT INTO journal VALUES (50, 0, 't', x'00', 1, 0)");
  Status s = store->Commit(Inbound(11, 20), &r);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kCorruption);
  EXPECT_NE(s.message().find("rows past seq 10"), std::string::npos) << s.ToString();
  EXPECT_EQ(store->cursor().last_seq, 10u);
  std::vector<JournalRow> rows;
  ASSERT_OK(store->ReadJournal(11, 49, "", 100, &rows));
  EXPECT_TRUE(rows.empty()) << rows.size() << " row(s) of the failed commit kept";
  // Opened again, the newest row is the cursor, and the gap it left is damage Verify() names.
  store.reset();
  ASSERT_OK_AND_ASSIGN(store, Store::Open(Options(path)));
  EXPECT_EQ(store->cursor().last_seq, 50u);
  ASSERT_OK_AND_ASSIGN(std::vector<std::string> problems, store->Verify());
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0], "journal: 11 rows from seq 1 to 50, rows are missing in between");
}

// ---------------------------------------------------------------------------------------------
// Retention

// Options with every retention limit off but the ones a test sets.
StoreOptions NoRetention(const std::string& path) {
  StoreOptions o = Options(path);
  o.journal_max_rows = 0;
  o.journal_max_bytes = 0;
  o.journal_max_age_s = 0;
  return o;
}

// Ten rows of ten bytes each, received at 1 s, 2 s, ..., 10 s.
void CommitTenRows(Store& store) {
  Batch b;
  for (int i = 1; i <= 10; ++i) b.inbound.push_back(Msg(i, "t", "0123456789", i * kSecond));
  b.last_upstream_seq = 10;
  BatchResult r;
  ASSERT_OK(store.Commit(b, &r));
}

void ExpectBounds(Store& store, uint64_t first, uint64_t last, uint64_t rows, uint64_t bytes) {
  auto bounds = store.Bounds();
  ASSERT_OK(bounds);
  EXPECT_EQ(bounds->first_seq, first);
  EXPECT_EQ(bounds->last_seq, last);
  EXPECT_EQ(bounds->rows, rows);
  EXPECT_EQ(bounds->bytes, bytes);
}

TEST(StoreRetentionTest, TrimsByRowsInSteps) {
  TempDir dir;
  StoreOptions o = NoRetention(dir.File("bridge.db"));
  o.journal_max_rows = 3;
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(o));
  CommitTenRows(*store);
  ExpectBounds(*store, 1, 10, 10, 100);
  EXPECT_EQ(store->TrimJournal(0, 0).value(), 0u);
  EXPECT_EQ(store->TrimJournal(0, 4).value(), 4u);
  ExpectBounds(*store, 5, 10, 6, 60);
  EXPECT_EQ(store->TrimJournal(0, 100).value(), 3u);
  ExpectBounds(*store, 8, 10, 3, 30);
  EXPECT_EQ(store->TrimJournal(0, 100).value(), 0u);
  EXPECT_EQ(store->cursor().last_seq, 10u);
  std::vector<JournalRow> rows;
  ASSERT_OK(store->ReadJournal(0, 0, "", 100, &rows));
  EXPECT_EQ(Seqs(rows), (std::vector<uint64_t>{8, 9, 10}));
}

TEST(StoreRetentionTest, TrimsByBytes) {
  TempDir dir;
  StoreOptions o = NoRetention(dir.File("bridge.db"));
  o.journal_max_bytes = 35;
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(o));
  CommitTenRows(*store);
  EXPECT_EQ(store->TrimJournal(0, 100).value(), 7u);
  ExpectBounds(*store, 8, 10, 3, 30);
  EXPECT_EQ(store->cursor().last_seq, 10u);
}

// The JetStream sink holds rows it has not delivered against age (SPEC §11), not against the
// row and byte bounds, which keep the disk bounded.
TEST(StoreRetentionTest, AgeHoldKeepsUndeliveredRowsButNotPastTheRowBound) {
  TempDir dir;
  StoreOptions o = NoRetention(dir.File("bridge.db"));
  o.journal_max_age_s = 5;
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(o));
  CommitTenRows(*store);
  // All ten are too old at 1000 s; the sink delivered up to seq 3, so 4.. are held.
  EXPECT_EQ(store->TrimJournal(1000 * kSecond, 100, 4).value(), 3u);
  ExpectBounds(*store, 4, 10, 7, 70);
  EXPECT_EQ(store->TrimJournal(1000 * kSecond, 100, 4).value(), 0u);
  // A row bound still trims held rows.
  store.reset();
  o.journal_max_rows = 5;
  ASSERT_OK_AND_ASSIGN(store, Store::Open(o));
  EXPECT_EQ(store->TrimJournal(1000 * kSecond, 100, 4).value(), 2u);
  ExpectBounds(*store, 6, 10, 5, 50);
}

TEST(StoreRetentionTest, TrimsByAgeThenToEmptyAndSeqGoesOn) {
  TempDir dir;
  const std::string path = dir.File("bridge.db");
  StoreOptions o = NoRetention(path);
  o.journal_max_age_s = 5;
  {
    ASSERT_OK_AND_ASSIGN(auto store, Store::Open(o));
    CommitTenRows(*store);
    // Now 10 s: rows received before 5 s (1 s .. 4 s) are too old.
    EXPECT_EQ(store->TrimJournal(10 * kSecond, 100).value(), 4u);
    ExpectBounds(*store, 5, 10, 6, 60);
    // Much later: everything goes, the cursor stays.
    EXPECT_EQ(store->TrimJournal(1000 * kSecond, 100).value(), 6u);
    ExpectBounds(*store, 0, 10, 0, 0);
    EXPECT_EQ(store->cursor().last_seq, 10u);
  }
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(o));
  ExpectBounds(*store, 0, 10, 0, 0);
  BatchResult r;
  ASSERT_OK(store->Commit(Inbound(11, 2), &r));
  EXPECT_EQ(r.first_seq, 11u);
  ExpectBounds(*store, 11, 12, 2, 20);
}

// ---------------------------------------------------------------------------------------------
// Throughput: printed, not asserted.

TEST(StorePerfTest, CommitThroughputBatchesOf1000) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto store, Store::Open(Options(dir.File("bridge.db"))));
  constexpr int kBatches = 200;
  constexpr int kPerBatch = 1000;
  Batch b;
  for (int i = 0; i < kPerBatch; ++i)
    b.inbound.push_back(Msg(0, "quotes.eur", std::string(100, 'x')));
  BatchResult r;
  auto start = std::chrono::steady_clock::now();
  for (int n = 0; n < kBatches; ++n) {
    for (int i = 0; i < kPerBatch; ++i) b.inbound[i].upstream_seq = n * kPerBatch + i + 1;
    b.last_upstream_seq = (n + 1) * kPerBatch;
    ASSERT_OK(store->Commit(b, &r));
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double total = double{kBatches} * kPerBatch;
  std::printf("[ perf     ] Commit: %.0f msg/s (%d batches of %d x 100 B, %.1f ms/batch)\n",
              total / secs, kBatches, kPerBatch, secs * 1000 / kBatches);

  start = std::chrono::steady_clock::now();
  ASSERT_OK_AND_ASSIGN(JournalBounds bounds, store->Bounds());
  secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(bounds.rows, static_cast<uint64_t>(total));
  std::printf("[ perf     ] Bounds on %.0f rows: %.1f us\n", total, secs * 1e6);
}

}  // namespace
}  // namespace wsbridge
