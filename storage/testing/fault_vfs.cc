// FaultVfs: see fault_vfs.h. The C callbacks SQLite calls are at the top; each forwards to the
// default VFS's own file object, which lives right behind our Handle in the memory SQLite
// allocates for a file (szOsFile covers both).
#include "storage/testing/fault_vfs.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <utility>

namespace wsbridge {
namespace testing {

struct FaultVfs::FileState {
  struct Undo {
    int64_t offset = 0;
    std::string old_bytes;  // what [offset, offset + old_bytes.size()) held before
    int64_t old_size = 0;   // the file's size before
  };
  std::string path;
  std::vector<Undo> undo;  // since the last successful sync, oldest first
  int64_t synced_size = 0;
  FileCounters counters;
};

struct FaultVfs::Handle {
  sqlite3_file base;  // first: SQLite sees a Handle as an sqlite3_file
  FaultVfs* vfs = nullptr;
  std::shared_ptr<FileState> state;  // null for files without a name (temporary files)
  uint64_t generation = 0;
  sqlite3_file* real = nullptr;  // the default VFS's file, right behind this struct
};

namespace {

constexpr int kHandleSize = (sizeof(FaultVfs::Handle) + 7) & ~7;

FaultVfs::Handle* H(sqlite3_file* f) { return reinterpret_cast<FaultVfs::Handle*>(f); }
sqlite3_file* R(sqlite3_file* f) { return H(f)->real; }
FaultVfs* Self(sqlite3_vfs* vfs) { return static_cast<FaultVfs*>(vfs->pAppData); }
sqlite3_vfs* Real(sqlite3_vfs* vfs) { return Self(vfs)->real(); }

// ---- sqlite3_io_methods

int FvClose(sqlite3_file* f) {
  FaultVfs::Handle* h = H(f);
  int rc = h->real->pMethods->xClose(h->real);
  h->~Handle();
  return rc;
}
int FvRead(sqlite3_file* f, void* buf, int amount, sqlite3_int64 offset) {
  return R(f)->pMethods->xRead(R(f), buf, amount, offset);
}
int FvWrite(sqlite3_file* f, const void* buf, int amount, sqlite3_int64 offset) {
  return H(f)->vfs->Write(H(f), buf, amount, offset);
}
int FvTruncate(sqlite3_file* f, sqlite3_int64 size) { return H(f)->vfs->Truncate(H(f), size); }
int FvSync(sqlite3_file* f, int flags) { return H(f)->vfs->Sync(H(f), flags); }
int FvFileSize(sqlite3_file* f, sqlite3_int64* size) {
  return R(f)->pMethods->xFileSize(R(f), size);
}
int FvLock(sqlite3_file* f, int lock) { return R(f)->pMethods->xLock(R(f), lock); }
int FvUnlock(sqlite3_file* f, int lock) { return R(f)->pMethods->xUnlock(R(f), lock); }
int FvCheckReservedLock(sqlite3_file* f, int* out) {
  return R(f)->pMethods->xCheckReservedLock(R(f), out);
}
int FvFileControl(sqlite3_file* f, int op, void* arg) {
  return R(f)->pMethods->xFileControl(R(f), op, arg);
}
int FvSectorSize(sqlite3_file* f) { return R(f)->pMethods->xSectorSize(R(f)); }
int FvDeviceCharacteristics(sqlite3_file* f) {
  return R(f)->pMethods->xDeviceCharacteristics(R(f));
}
int FvShmMap(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
  return R(f)->pMethods->xShmMap(R(f), region, size, extend, out);
}
int FvShmLock(sqlite3_file* f, int offset, int n, int flags) {
  return R(f)->pMethods->xShmLock(R(f), offset, n, flags);
}
void FvShmBarrier(sqlite3_file* f) { R(f)->pMethods->xShmBarrier(R(f)); }
int FvShmUnmap(sqlite3_file* f, int delete_flag) {
  return R(f)->pMethods->xShmUnmap(R(f), delete_flag);
}
int FvFetch(sqlite3_file* f, sqlite3_int64 offset, int amount, void** out) {
  return R(f)->pMethods->xFetch(R(f), offset, amount, out);
}
int FvUnfetch(sqlite3_file* f, sqlite3_int64 offset, void* p) {
  return R(f)->pMethods->xUnfetch(R(f), offset, p);
}

// Version 3 methods; the default unix VFS has all of them.
const sqlite3_io_methods kMethods = {
    3,          FvClose,  FvRead,           FvWrite,      FvTruncate,
    FvSync,     FvFileSize, FvLock,         FvUnlock,     FvCheckReservedLock,
    FvFileControl, FvSectorSize, FvDeviceCharacteristics, FvShmMap, FvShmLock,
    FvShmBarrier, FvShmUnmap, FvFetch,      FvUnfetch,
};

// ---- sqlite3_vfs

int FvOpen(sqlite3_vfs* vfs, sqlite3_filename name, sqlite3_file* file, int flags,
           int* out_flags) {
  auto* h = new (file) FaultVfs::Handle();
  h->vfs = Self(vfs);
  h->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) + kHandleSize);
  h->real->pMethods = nullptr;
  sqlite3_vfs* real = Real(vfs);
  int rc = real->xOpen(real, name, h->real, flags, out_flags);
  if (rc != SQLITE_OK) {
    // A file whose pMethods is set must be closed even when xOpen failed.
    if (h->real->pMethods != nullptr) h->real->pMethods->xClose(h->real);
    h->~Handle();
    file->pMethods = nullptr;
    return rc;
  }
  if (name != nullptr) {
    sqlite3_int64 size = 0;
    if (h->real->pMethods->xFileSize(h->real, &size) != SQLITE_OK) size = 0;
    h->vfs->OnOpen(name, h, size);
  }
  file->pMethods = &kMethods;
  return SQLITE_OK;
}

int FvDelete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  Self(vfs)->OnDelete(name);
  return Real(vfs)->xDelete(Real(vfs), name, sync_dir);
}
int FvAccess(sqlite3_vfs* vfs, const char* name, int flags, int* out) {
  return Real(vfs)->xAccess(Real(vfs), name, flags, out);
}
int FvFullPathname(sqlite3_vfs* vfs, const char* name, int n, char* out) {
  return Real(vfs)->xFullPathname(Real(vfs), name, n, out);
}
void* FvDlOpen(sqlite3_vfs* vfs, const char* name) {
  return Real(vfs)->xDlOpen(Real(vfs), name);
}
void FvDlError(sqlite3_vfs* vfs, int n, char* out) { Real(vfs)->xDlError(Real(vfs), n, out); }
void (*FvDlSym(sqlite3_vfs* vfs, void* handle, const char* sym))(void) {
  return Real(vfs)->xDlSym(Real(vfs), handle, sym);
}
void FvDlClose(sqlite3_vfs* vfs, void* handle) { Real(vfs)->xDlClose(Real(vfs), handle); }
int FvRandomness(sqlite3_vfs* vfs, int n, char* out) {
  return Real(vfs)->xRandomness(Real(vfs), n, out);
}
int FvSleep(sqlite3_vfs* vfs, int us) { return Real(vfs)->xSleep(Real(vfs), us); }
int FvCurrentTime(sqlite3_vfs* vfs, double* out) {
  return Real(vfs)->xCurrentTime(Real(vfs), out);
}
int FvGetLastError(sqlite3_vfs* vfs, int n, char* out) {
  return Real(vfs)->xGetLastError(Real(vfs), n, out);
}
int FvCurrentTimeInt64(sqlite3_vfs* vfs, sqlite3_int64* out) {
  return Real(vfs)->xCurrentTimeInt64(Real(vfs), out);
}

// Whole-buffer pwrite; false on error.
bool PwriteAll(int fd, const std::string& bytes, int64_t offset) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::pwrite(fd, bytes.data() + done, bytes.size() - done,
                         static_cast<off_t>(offset + static_cast<int64_t>(done)));
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "FaultVfs: %s\n", what.c_str());
  std::abort();
}

}  // namespace

FaultVfs::FaultVfs(std::string name) : name_(std::move(name)) {
  real_ = sqlite3_vfs_find(nullptr);
  if (real_ == nullptr || real_->iVersion < 2) Die("no usable default VFS");
  vfs_ = std::make_unique<sqlite3_vfs>();
  sqlite3_vfs& v = *vfs_;
  v = sqlite3_vfs{};
  v.iVersion = 2;
  v.szOsFile = kHandleSize + real_->szOsFile;
  v.mxPathname = real_->mxPathname;
  v.zName = name_.c_str();
  v.pAppData = this;
  v.xOpen = FvOpen;
  v.xDelete = FvDelete;
  v.xAccess = FvAccess;
  v.xFullPathname = FvFullPathname;
  v.xDlOpen = FvDlOpen;
  v.xDlError = FvDlError;
  v.xDlSym = FvDlSym;
  v.xDlClose = FvDlClose;
  v.xRandomness = FvRandomness;
  v.xSleep = FvSleep;
  v.xCurrentTime = FvCurrentTime;
  v.xGetLastError = FvGetLastError;
  v.xCurrentTimeInt64 = FvCurrentTimeInt64;
  if (sqlite3_vfs_register(vfs_.get(), 0) != SQLITE_OK) Die("cannot register " + name_);
}

FaultVfs::~FaultVfs() { sqlite3_vfs_unregister(vfs_.get()); }

void FaultVfs::SetWriteFault(WriteFault fault, uint64_t after_writes) {
  std::lock_guard<std::mutex> lock(mu_);
  write_fault_ = fault;
  writes_before_fault_ = after_writes;
}

void FaultVfs::SetSyncFault(bool fail) {
  std::lock_guard<std::mutex> lock(mu_);
  sync_fault_ = fail;
}

void FaultVfs::ClearFaults() {
  std::lock_guard<std::mutex> lock(mu_);
  write_fault_ = WriteFault::kNone;
  writes_before_fault_ = 0;
  sync_fault_ = false;
  cut_after_ops_ = -1;
}

FileCounters FaultVfs::Counters(const std::string& path) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(path);
  return it == files_.end() ? FileCounters() : it->second->counters;
}

void FaultVfs::OnOpen(const char* path, Handle* h, int64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<FileState>& state = files_[path];
  if (!state) {
    // First sight of the file: what it holds now counts as durable.
    state = std::make_shared<FileState>();
    state->path = path;
    state->synced_size = size;
  }
  h->state = state;
  h->generation = generation_;
}

void FaultVfs::OnDelete(const char* path) {
  // A deleted file's unsynced writes die with it. (Deletion itself is taken as durable.)
  std::lock_guard<std::mutex> lock(mu_);
  files_.erase(path);
}

int FaultVfs::LogUndo(Handle* h, int64_t offset, int64_t amount, bool truncate) {
  sqlite3_file* real = h->real;
  sqlite3_int64 size = 0;
  int rc = real->pMethods->xFileSize(real, &size);
  if (rc != SQLITE_OK) return rc;
  FileState::Undo u;
  u.old_size = size;
  u.offset = offset;
  // The bytes about to be replaced (a write) or cut off (a truncation) that the file has.
  int64_t end = truncate ? size : std::min<int64_t>(offset + amount, size);
  if (end > offset) {
    u.old_bytes.resize(static_cast<size_t>(end - offset));
    rc = real->pMethods->xRead(real, u.old_bytes.data(), static_cast<int>(end - offset), offset);
    if (rc != SQLITE_OK) return rc;
  }
  h->state->undo.push_back(std::move(u));
  return SQLITE_OK;
}

int FaultVfs::Write(Handle* h, const void* data, int amount, int64_t offset) {
  std::lock_guard<std::mutex> lock(mu_);
  if (h->generation < generation_) return SQLITE_IOERR_WRITE;  // opened before a power cut
  if (CutScheduledNowLocked()) return SQLITE_IOERR_WRITE;
  FileCounters* counters = h->state ? &h->state->counters : nullptr;
  if (write_fault_ != WriteFault::kNone) {
    if (writes_before_fault_ > 0) {
      --writes_before_fault_;
    } else if (write_fault_ == WriteFault::kIoError) {
      if (counters) ++counters->failed_writes;
      return SQLITE_IOERR_WRITE;
    } else {
      sqlite3_int64 size = 0;
      int rc = h->real->pMethods->xFileSize(h->real, &size);
      if (rc != SQLITE_OK) return rc;
      if (offset + amount > size) {
        if (counters) ++counters->failed_writes;
        return SQLITE_FULL;
      }
    }
  }
  if (h->state) {
    int rc = LogUndo(h, offset, amount, /*truncate=*/false);
    if (rc != SQLITE_OK) return rc;
  }
  int rc = h->real->pMethods->xWrite(h->real, data, amount, offset);
  if (rc == SQLITE_OK && counters) ++counters->writes;
  return rc;
}

int FaultVfs::Truncate(Handle* h, int64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  if (h->generation < generation_) return SQLITE_IOERR_TRUNCATE;
  if (CutScheduledNowLocked()) return SQLITE_IOERR_TRUNCATE;
  if (h->state) {
    int rc = LogUndo(h, size, 0, /*truncate=*/true);
    if (rc != SQLITE_OK) return rc;
  }
  int rc = h->real->pMethods->xTruncate(h->real, size);
  if (rc == SQLITE_OK && h->state) ++h->state->counters.writes;
  return rc;
}

int FaultVfs::Sync(Handle* h, int flags) {
  std::lock_guard<std::mutex> lock(mu_);
  if (h->generation < generation_) return SQLITE_IOERR_FSYNC;
  if (CutScheduledNowLocked()) return SQLITE_IOERR_FSYNC;
  FileCounters* counters = h->state ? &h->state->counters : nullptr;
  if (sync_fault_) {
    if (counters) ++counters->failed_syncs;
    return SQLITE_IOERR_FSYNC;
  }
  int rc = h->real->pMethods->xSync(h->real, flags);
  if (rc != SQLITE_OK || !h->state) return rc;
  // mu_ is held across every write and this sync: everything logged so far is on disk now.
  sqlite3_int64 size = 0;
  rc = h->real->pMethods->xFileSize(h->real, &size);
  if (rc != SQLITE_OK) return rc;
  h->state->undo.clear();
  h->state->synced_size = size;
  ++counters->syncs;
  counters->durable = counters->writes;
  return SQLITE_OK;
}

void FaultVfs::PowerCut() {
  std::lock_guard<std::mutex> lock(mu_);
  PowerCutLocked();
}

void FaultVfs::SchedulePowerCut(uint64_t after_ops) {
  std::lock_guard<std::mutex> lock(mu_);
  cut_after_ops_ = static_cast<int64_t>(after_ops);
}

uint64_t FaultVfs::power_cuts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return power_cuts_;
}

bool FaultVfs::CutScheduledNowLocked() {
  if (cut_after_ops_ < 0) return false;
  if (cut_after_ops_ > 0) {
    --cut_after_ops_;
    return false;
  }
  cut_after_ops_ = -1;
  PowerCutLocked();
  return true;
}

void FaultVfs::PowerCutLocked() {
  ++power_cuts_;
  ++generation_;  // every handle open now is dead: the process that had it is gone
  for (auto& [path, state] : files_) {
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      state->undo.clear();
      continue;  // gone (deleted behind our back): nothing to put back
    }
    for (auto it = state->undo.rbegin(); it != state->undo.rend(); ++it) {
      if (::ftruncate(fd, static_cast<off_t>(it->old_size)) != 0 ||
          !PwriteAll(fd, it->old_bytes, it->offset)) {
        Die("cannot restore " + path);
      }
    }
    if (::ftruncate(fd, static_cast<off_t>(state->synced_size)) != 0) Die("cannot truncate " + path);
    ::fsync(fd);
    ::close(fd);
    state->undo.clear();
    // The counters stay as they are: `writes` keeps the numbers of the writes just discarded
    // (all above `durable`), so a count read after the cut still names the last write before
    // it. Resetting `writes` to `durable` here made a write that was never synced look durable
    // to whoever read its count only after the cut.
  }
}

}  // namespace testing
}  // namespace wsbridge
