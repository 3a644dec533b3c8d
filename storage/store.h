// Store: the bridge's durable state, behind an interface that exposes no SQLite type.
//
// Three parts live in one database file (SQLite, WAL):
//   journal  every inbound message with its bridge `seq` (1, 2, 3, ... for the life of the file)
//   cursor   last committed upstream seq, last journal seq, and the database's random `epoch`
//            (kept without a write of its own per commit: see sqlite_store.cc)
//   outbox   outbound messages accepted from local producers, in acceptance order
//
// Everything a Batch carries is committed in ONE transaction: journal rows, the cursor, new
// outbox rows and outbox deletions. That is what makes G1 (commit before publish), G2 (cursor
// moves with the rows) and G3 (ACCEPTED only after commit) hold across a crash.
//
// Threading: a Store is not thread-safe. The writer thread owns the read-write Store; readers
// (replay endpoint, wsbridge-replay) open their own read-only Store on the same file, which
// never blocks the writer (WAL).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace wsbridge {

enum class Durability {
  kProcess,  // WAL + synchronous=NORMAL: survives a crash of the process
  kPower,    // WAL + synchronous=FULL: survives power loss
};

struct StoreOptions {
  std::string path;
  Durability durability = Durability::kProcess;
  bool read_only = false;               // open an existing file for reading only
  // SQLite page size of a new database (a power of two, 512..65536); an existing file keeps its
  // own. Each commit writes whole pages: small pages write less per message at low rates, and
  // cost throughput at high ones.
  int page_size = 4096;
  uint64_t outbox_max_messages = 100000;  // Commit() answers kFull beyond this
  // Journal retention, enforced by TrimJournal().
  uint64_t journal_max_rows = 1000000;
  uint64_t journal_max_bytes = 1ull << 30;
  int64_t journal_max_age_s = 604800;
  // tests only: SQLite VFS name; empty: default
  std::string vfs_name;
};

struct Cursor {
  uint64_t last_upstream_seq = 0;  // highest upstream seq committed (0: none)
  uint64_t last_seq = 0;           // highest journal seq ever assigned (0: none)
  uint64_t epoch = 0;              // random, drawn when the file was created, never 0
};

// An inbound frame, ready to be journaled.
struct InboundMessage {
  uint64_t upstream_seq = 0;  // 0 when the frame carried none
  std::string topic;
  std::string payload;
  bool binary = false;
  int64_t received_at_unix_ns = 0;
};

struct JournalRow {
  uint64_t seq = 0;
  InboundMessage msg;
};

struct OutboundRequest {
  std::string id;  // never empty here: the caller generates one for an empty request id
  std::string payload;
  bool binary = false;
};

struct OutboxRow {
  uint64_t outbox_seq = 0;
  std::string id;
  std::string payload;
  bool binary = false;
  int64_t accepted_at_unix_ns = 0;
};

// The outcome of one OutboundRequest in a committed batch.
struct SendOutcome {
  enum class Kind { kAccepted, kDuplicate, kFull };
  Kind kind = Kind::kAccepted;
  uint64_t outbox_seq = 0;  // for kAccepted, and for kDuplicate the original's seq when known
};

// One transaction's worth of work.
struct Batch {
  std::vector<InboundMessage> inbound;  // journaled in order; seqs are cursor.last_seq+1, ...
  uint64_t last_upstream_seq = 0;       // new cursor value; ignored when not greater
  std::vector<OutboundRequest> outbound;  // appended to the outbox (duplicates/full: see outcome)
  uint64_t delivered_up_to = 0;         // delete outbox rows with outbox_seq <= this (0: none)
  std::vector<std::string> acked_ids;   // delete these outbox rows by id
  int64_t now_unix_ns = 0;              // accepted_at for new outbox rows

  bool empty() const {
    return inbound.empty() && outbound.empty() && delivered_up_to == 0 && acked_ids.empty();
  }
  // Back to empty, keeping the vectors' capacity: a busy writer fills one batch after another
  // (growing a fresh vector each time was ~1 % of its time).
  void clear() {
    inbound.clear();
    last_upstream_seq = 0;
    outbound.clear();
    delivered_up_to = 0;
    acked_ids.clear();
    now_unix_ns = 0;
  }
};

struct BatchResult {
  uint64_t first_seq = 0;             // journal seq of batch.inbound[0] (0 if none)
  std::vector<SendOutcome> outbound;  // one per batch.outbound, same order
};

struct JournalBounds {
  uint64_t first_seq = 0;  // oldest row still kept (0: journal empty)
  uint64_t last_seq = 0;   // newest row (cursor.last_seq)
  uint64_t rows = 0;
  uint64_t bytes = 0;      // sum of payload sizes
};

struct OutboxStats {
  uint64_t depth = 0;                 // rows waiting for delivery
  int64_t oldest_accepted_unix_ns = 0;  // 0 when empty
};

class Store {
 public:
  // Opens (creating 0600 when absent and not read_only). A foreign file, one of a newer schema,
  // one shorter than its header says or whose schema is damaged is refused with kCorruption and
  // left untouched. Costs the same whatever the journal's size: damage inside the file is for
  // Verify() to find.
  static StatusOr<std::unique_ptr<Store>> Open(const StoreOptions& options);

  virtual ~Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // The cursor as of the last successful Commit (or as read at Open).
  virtual Cursor cursor() const = 0;

  // Commits the batch in one transaction. On failure nothing of it is applied and the
  // in-memory cursor is unchanged, so the same batch may be retried.
  virtual Status Commit(const Batch& batch, BatchResult* result) = 0;

  // Journal rows with from_seq <= seq <= to_seq (to_seq 0: newest) whose topic starts with
  // topic_prefix, at most max_rows, in seq order.
  virtual Status ReadJournal(uint64_t from_seq, uint64_t to_seq, std::string_view topic_prefix,
                             size_t max_rows, std::vector<JournalRow>* out) = 0;
  virtual StatusOr<JournalBounds> Bounds() = 0;

  // The whole-file check that Open() leaves out because it reads every page: SQLite's
  // integrity_check (every b-tree page, every index entry), then the store's own invariants
  // (journal seqs contiguous, the payload byte count, every outbox row's id on record), all on
  // one read snapshot; a writer on another connection goes on meanwhile. Returns the problems
  // found, one line each, at most max_problems; none: the file is sound. An error only when the
  // check itself could not run (I/O), or kUnavailable once *stop (read now and then from this
  // thread) turned true. Costs a read of the whole file: run it off the start path, on a store
  // of its own (the daemon's background pass, `wsbridge check`).
  virtual StatusOr<std::vector<std::string>> Verify(size_t max_problems = 20,
                                                    const std::atomic<bool>* stop = nullptr) = 0;

  // Outbox rows with outbox_seq > after, at most max_rows, in acceptance order.
  virtual Status ReadOutbox(uint64_t after, size_t max_rows, std::vector<OutboxRow>* out) = 0;
  virtual StatusOr<OutboxStats> Outbox() = 0;

  // Deletes at most max_delete of the oldest journal rows that exceed the retention limits
  // (rows, bytes, age relative to now_unix_ns). Returns how many were deleted. Call it in
  // small steps between batches so that it never stalls the inbound path.
  // age_hold_seq: rows with seq >= it are not deleted for their age alone (a reader that must
  // see them first, the JetStream sink, holds them); 0 holds nothing. Rows and bytes still trim.
  virtual StatusOr<uint64_t> TrimJournal(int64_t now_unix_ns, uint64_t max_delete,
                                         uint64_t age_hold_seq = 0) = 0;

 protected:
  Store() = default;
};

}  // namespace wsbridge
