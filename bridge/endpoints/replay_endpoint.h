// Replay: journaled messages by seq range, page by page (SPEC §5 ReplayRequest / ReplayReply).
//
// ReplayPager    turns one ReplayRequest into ReplayReply pages read from a Store. Used by the
//                endpoint below and by `wsbridge-replay --db`. Memory is one page at a time
//                (at most max_messages envelopes and about max_page_bytes of payload), however
//                long the range.
// ReplayEndpoint the daemon's zmq.replay ROUTER socket, on a thread of its own, with its own
//                read-only Store on the daemon's database file (WAL: its reads never block the
//                writer, and the writer never blocks them).
//
// Semantics of one request, shared by both:
//   - from_seq 0 means 1; to_seq 0 means "the newest seq when the request was accepted".
//     to_seq > 0 and from_seq > to_seq is an error; a range entirely above the newest seq is
//     answered with one empty page (done).
//   - Every page carries last_seq: the newest journal seq when the request was accepted, the same
//     on every page of one request. What the request covered, once done, is therefore
//     [from, min(to_seq or last_seq, last_seq)], whether or not rows of it matched the prefix.
//   - first_available_seq is set (non-zero) on a page when rows the request still had to deliver
//     had been trimmed by retention before they could be read: everything from
//     first_available_seq on is complete, everything before it is gone.
//   - done is true on the last page; error (with done) is a refusal, never a crash.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "bridge/endpoints/endpoint_security.h"
#include "common/status.h"
#include "storage/store.h"
#include "wsbridge.pb.h"

namespace wsbridge {

struct ReplayLimits {
  uint32_t default_page_messages = 1000;  // when the request's max_messages is 0
  uint32_t max_page_messages = 10000;     // hard cap on a request's max_messages
  size_t max_page_bytes = 2u << 20;       // a page closes once its payloads reach this
};

// One request's progress through the journal. Not thread-safe; the Store must outlive it and be
// used by one thread at a time (the pager's caller).
class ReplayPager {
 public:
  // Validates the request and fixes its range (reads the journal's bounds once). An invalid
  // request is InvalidArgument with a one-line reason; a storage failure is its Status.
  static StatusOr<ReplayPager> Start(Store* store, const v1::ReplayRequest& request,
                                     const ReplayLimits& limits = ReplayLimits());

  // Replaces *reply with the next page. Call until a page has done() set. A storage error is
  // returned as a Status (the caller turns it into an error reply).
  Status NextPage(v1::ReplayReply* reply);

  bool done() const { return done_; }
  uint64_t from() const { return from_; }
  uint64_t to() const { return to_; }  // resolved end of the range (may be < from: empty)
  uint64_t last_seq() const { return last_seq_; }
  uint64_t next() const { return next_; }  // first seq not yet covered

 private:
  ReplayPager() = default;

  Store* store_ = nullptr;
  ReplayLimits limits_;
  std::string prefix_;
  uint64_t from_ = 1, to_ = 0, next_ = 1, last_seq_ = 0, epoch_ = 0;
  uint32_t page_messages_ = 1000;
  size_t chunk_rows_ = 16;  // rows per read; adapted to the payload size seen
  bool done_ = false;
  std::vector<JournalRow> rows_;
};

struct ReplayEndpointOptions {
  std::string endpoint = "tcp://127.0.0.1:5558";
  std::string db_path;  // the daemon's database, opened read-only
  ReplayLimits limits;
  // Memory: at most max_active_requests x (1 + pages_in_flight) pages of ~max_page_bytes.
  size_t max_active_requests = 16;  // beyond: an error reply ("busy")
  int pages_in_flight = 2;          // ROUTER send high-water mark per client, in pages
  int poll_ms_when_blocked = 2;     // retry interval while every client's queue is full
  // Replay is background work: under CPU contention it slows down, not the inbound path.
  int nice = 10;  // niceness of the replay thread (0: as the daemon)
  EndpointSecurity security;  // ipc mode and group, CURVE (SPEC §10)
};

// The zmq.replay ROUTER. A client (DEALER or REQ) sends [ReplayRequest] and gets [ReplayReply]
// pages:
//   DEALER  all pages of the request, one after another, streamed as the client reads them
//           (at most pages_in_flight queued per client: a slow client slows only itself).
//   REQ     one page per request (a REQ socket takes one reply); when it is not done, the
//           client asks again from the seq after the last envelope it got.
// A new request from a client replaces the one it had in progress. Requests from different
// clients are served page by page in turn.
//
// Threading: construct and Bind() on one thread, then Run() on the replay thread; Stop() from
// any thread. The ROUTER socket and the read-only Store belong to the replay thread.
class ReplayEndpoint {
 public:
  ReplayEndpoint(ReplayEndpointOptions options, zmq::context_t* ctx);
  ~ReplayEndpoint();
  ReplayEndpoint(const ReplayEndpoint&) = delete;
  ReplayEndpoint& operator=(const ReplayEndpoint&) = delete;

  // Opens the read-only Store and binds the ROUTER. Errors name "zmq.replay" or the file.
  Status Bind();
  // The endpoint actually bound (with the OS-chosen port for tcp://...:*).
  std::string endpoint() const { return bound_endpoint_; }

  // Thread body: serves until Stop().
  void Run();
  void Stop();

 private:
  struct Client {
    std::string identity;
    bool req = false;  // REQ envelope: one page per request, then forget it
    std::unique_ptr<ReplayPager> pager;
    std::string pending;  // serialized page waiting for room in the client's queue
    bool has_pending = false;
    bool pending_last = false;  // the pending page ends the request
    uint64_t messages = 0, pages = 0;
  };
  enum class SendResult { kSent, kFull, kGone };

  void ReceiveRequests();
  void HandleRequest(std::vector<zmq::message_t>& frames);
  void SendError(const std::string& identity, bool req, const std::string& error);
  // Sends one serialized reply; never blocks.
  SendResult SendTo(const std::string& identity, bool req, const std::string& body);
  // Produces (if needed) and sends the next page of every active request once. Returns true
  // when at least one page went out (more may follow at once).
  bool ServeRound();

  ReplayEndpointOptions options_;
  zmq::socket_t router_;
  std::unique_ptr<EndpointGuard> guard_;  // while bound (an ipc endpoint's lock)
  std::unique_ptr<Store> store_;
  std::string bound_endpoint_;
  int stop_fd_ = -1;  // eventfd: Stop() wakes the poll
  std::atomic<bool> stop_{false};

  // Replay-thread state.
  std::unordered_map<std::string, Client> clients_;
  // Error replies that met a full client queue: sent again each turn, never dropped unless the
  // client is gone or too many pile up.
  struct PendingError {
    std::string identity;
    bool req;
    std::string body;
  };
  std::deque<PendingError> pending_errors_;
  void FlushPendingErrors();
  v1::ReplayReply reply_;
};

}  // namespace wsbridge
