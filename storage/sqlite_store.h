// Internals of the SQLite Store: move-only owners of the SQLite handles, and a test hook.
//
// Only storage/ and its tests include this header. SQLite's types are forward-declared here so
// that including it does not pull in <sqlite3.h>; store.h stays free of them altogether.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "storage/store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace wsbridge {
namespace sqlite {

// Maps an SQLite result code to a Status: SQLITE_CORRUPT / SQLITE_NOTADB give kCorruption,
// anything else kIOError. The message is "<what>: <SQLite's message>", one line.
Status ErrorStatus(int rc, sqlite3* db, std::string_view what);

// A prepared statement: owns its sqlite3_stmt and finalizes it on destruction. Move-only.
// Bind*() with text or blobs does NOT copy (SQLITE_STATIC): the bytes must stay alive until
// the statement is reset, which Reset() (and the Scope guard below) do right after the step.
// A failed bind is remembered and returned by the next Step(), so that hot loops can bind
// without checking every call. Same thread rules as the connection it was prepared on.
class Stmt {
 public:
  Stmt() = default;
  explicit Stmt(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~Stmt();
  Stmt(Stmt&& other) noexcept : stmt_(other.stmt_), bind_rc_(other.bind_rc_) {
    other.stmt_ = nullptr;
  }
  Stmt& operator=(Stmt&& other) noexcept;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  // Parameters are 1-based, as in SQLite.
  void BindInt64(int index, int64_t value);
  void BindNull(int index);
  void BindText(int index, std::string_view value);
  void BindBlob(int index, std::string_view value);

  // SQLITE_ROW, SQLITE_DONE or an error code (a failed bind's code first).
  int Step();
  // Resets the statement and drops its bindings (no dangling SQLITE_STATIC pointers).
  void Reset();

  // Columns are 0-based. Views stay valid until the next Step() or Reset().
  int64_t ColumnInt64(int column) const;
  bool ColumnIsNull(int column) const;
  std::string_view ColumnBytes(int column) const;  // BLOB or TEXT bytes, exactly

  sqlite3_stmt* get() const { return stmt_; }

  // Resets the statement when leaving a scope, whichever way the scope is left.
  class Scope {
   public:
    explicit Scope(Stmt& stmt) : stmt_(stmt) {}
    ~Scope() { stmt_.Reset(); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Stmt& stmt_;
  };

 private:
  sqlite3_stmt* stmt_ = nullptr;
  int bind_rc_ = 0;  // first failed bind since the last Reset(), 0 when none
};

// A database connection: owns its sqlite3 and closes it on destruction (after the statements
// prepared on it, which the owner must destroy first). Move-only. Not thread-safe: opened with
// SQLITE_OPEN_NOMUTEX, one thread at a time.
class Db {
 public:
  Db() = default;
  ~Db();
  Db(Db&& other) noexcept : db_(other.db_) { other.db_ = nullptr; }
  Db& operator=(Db&& other) noexcept;
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // sqlite3_open_v2 with `flags` (SQLITE_OPEN_*); NOMUTEX is added. `vfs`: a registered VFS
  // name, or "" for the default one.
  Status Open(const std::string& path, int flags, const std::string& vfs = "");
  // Runs one or more statements that return no rows we need.
  Status Exec(const char* sql, std::string_view what);
  // Prepares a statement kept for the life of the connection.
  Status Prepare(std::string_view sql, Stmt* out);
  // Run a statement and return the first column of its first row (a PRAGMA, a count).
  StatusOr<int64_t> QueryInt(const char* sql, std::string_view what);
  StatusOr<std::string> QueryText(const char* sql, std::string_view what);
  // Rows changed by the last INSERT/UPDATE/DELETE.
  int64_t Changes() const;
  // Rowid of the last row inserted on this connection.
  int64_t LastInsertRowid() const;
  bool InTransaction() const;

  sqlite3* get() const { return db_; }

 private:
  // Prepares `sql` into *stmt and steps it to its first row.
  Status QueryRow(const char* sql, std::string_view what, Stmt* stmt);

  sqlite3* db_ = nullptr;
};

}  // namespace sqlite

// Tests only: sets PRAGMA max_page_count on the store's connection, so that a test can make
// Commit() fail with SQLITE_FULL ("disk full") and then give the space back. `max_pages` below
// the current size is raised to it by SQLite. Returns the limit now in force.
StatusOr<int64_t> SetMaxPageCountForTesting(Store& store, int64_t max_pages);

// Tests only: how many WAL checkpoints the committing thread ran itself (past the restart
// threshold), as opposed to the background checkpointer's passes.
StatusOr<uint64_t> WriterCheckpointsForTesting(Store& store);

}  // namespace wsbridge
