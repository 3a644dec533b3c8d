// FaultVfs: an SQLite VFS for tests that forwards to the default one ("unix") and can inject
// the faults a disk really produces (in the spirit of leveldb's fault_injection_test and
// SQLite's own crash VFS):
//
//   no space   a write that would make a file larger fails with SQLITE_FULL, as ENOSPC does in
//              the unix VFS; overwriting bytes the file already has still works (a full disk
//              does not take back blocks a file owns)
//   I/O error  every write fails with SQLITE_IOERR_WRITE (EIO)
//   fsync      every xSync fails with SQLITE_IOERR_FSYNC
//   power cut  PowerCut() puts every database file (main file, WAL) back to what it held at
//              its last successful xSync: every write not synced since is dropped, as if the
//              machine lost power. The files opened before the cut stop doing I/O (writes,
//              syncs and truncations fail), so that closing them changes nothing on disk.
//              The counters (FileCounters) keep counting across a cut.
//
// How the power cut is kept: per file path, an undo log of every write and truncation since
// the file's last sync (the bytes and size it replaced), cleared by a successful xSync; the
// cut applies the log backwards. So the files after a cut are exactly what they were after
// their last sync: a prefix of the write history, never a torn mix.
//
// Usage: construct (registers the VFS under name()), point StoreOptions::vfs_name at it, run.
// After PowerCut(), destroy every Store opened before it and only then open again: SQLite
// rebuilds its shared-memory WAL index only when no connection of this process still has it.
// The -shm file is not tracked: SQLite rebuilds it from the WAL after a cut.
//
// Files not opened through this VFS (and temporary files without a name) are not tracked.
//
// Thread-safety: every method may be called from any thread, and SQLite may call the VFS from
// several connections at once (the Store's writer and checkpointer): one mutex guards the
// state and is held across each forwarded write, truncate and sync, so a cut never interleaves
// with one. The FaultVfs must outlive every connection that uses it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

struct sqlite3_vfs;

namespace wsbridge {
namespace testing {

enum class WriteFault {
  kNone,
  kNoSpace,  // writes that grow a file fail with SQLITE_FULL ("database or disk is full")
  kIoError,  // all writes fail with SQLITE_IOERR_WRITE ("disk I/O error")
};

// What happened to one file (by path) through the VFS. Counts include writes and truncations.
//
// The counts are a history that a power cut never rewinds: the writes that succeeded are
// numbered 1, 2, 3, ... in the order they happened, and `writes` read at any moment is the
// number of the last one so far, also when a cut struck in between (say on another thread,
// between an operation and the reading of its count). A cut discards exactly the writes
// numbered above `durable` as it stands at the cut: a write that succeeded after the previous
// cut survives this one exactly when its number is <= `durable` read after it. (A deleted
// file's counters go with it: the next file at that path starts again from zero.)
struct FileCounters {
  uint64_t writes = 0;         // writes and truncations that succeeded (also those cut away)
  uint64_t durable = 0;        // number of the last write that a successful xSync made durable
  uint64_t syncs = 0;          // successful xSync calls
  uint64_t failed_writes = 0;  // writes refused by an injected fault
  uint64_t failed_syncs = 0;
};

class FaultVfs {
 public:
  // Registers the VFS (not as the default). `name` must be unique among registered VFSes.
  explicit FaultVfs(std::string name = "wsb-fault");
  // Unregisters. Every connection opened through it must be closed before.
  ~FaultVfs();
  FaultVfs(const FaultVfs&) = delete;
  FaultVfs& operator=(const FaultVfs&) = delete;

  const std::string& name() const { return name_; }

  // The fault engages after `after_writes` more writes succeeded (0: on the next write), and
  // stays until SetWriteFault(kNone).
  void SetWriteFault(WriteFault fault, uint64_t after_writes = 0);
  void SetSyncFault(bool fail);
  void ClearFaults();  // write and sync faults, and a scheduled power cut

  // Drops every unsynced write of every tracked file; see the header comment.
  void PowerCut();
  // Cuts the power instead of performing the I/O operation (write, truncate or sync, on any
  // file, from any connection) that comes after `after_ops` more: a crash at a chosen point
  // inside a commit or a checkpoint. The operation it replaces fails with an I/O error.
  void SchedulePowerCut(uint64_t after_ops);
  // How many power cuts happened (by PowerCut() or a schedule).
  uint64_t power_cuts() const;

  // Counters of the file at `path` (a path as SQLite opened it: the database path, or the
  // database path + "-wal"). All zero when the file was never opened through the VFS.
  FileCounters Counters(const std::string& path) const;

  // Implementation (public so that the C callbacks can reach it).
  struct FileState;
  struct Handle;
  sqlite3_vfs* real() const { return real_; }
  void OnOpen(const char* path, Handle* handle, int64_t size);
  int Write(Handle* h, const void* data, int amount, int64_t offset);
  int Truncate(Handle* h, int64_t size);
  int Sync(Handle* h, int flags);
  void OnDelete(const char* path);

 private:
  // Logs the bytes and size that a write of [offset, offset+amount) or a truncation to `size`
  // will replace. Called with mu_ held.
  int LogUndo(Handle* h, int64_t offset, int64_t amount, bool truncate);
  // With mu_ held: the power cut itself; and the schedule's check before each operation
  // (true: the power was cut instead of this operation).
  void PowerCutLocked();
  bool CutScheduledNowLocked();

  std::string name_;
  sqlite3_vfs* real_ = nullptr;  // the default VFS, which does the I/O
  std::unique_ptr<sqlite3_vfs> vfs_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<FileState>> files_;
  uint64_t generation_ = 1;  // a handle opened before the last PowerCut() is dead
  WriteFault write_fault_ = WriteFault::kNone;
  uint64_t writes_before_fault_ = 0;
  bool sync_fault_ = false;
  int64_t cut_after_ops_ = -1;  // -1: none scheduled
  uint64_t power_cuts_ = 0;
};

}  // namespace testing
}  // namespace wsbridge
