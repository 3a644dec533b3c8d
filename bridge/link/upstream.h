// Upstream: the one resilient WebSocket connection to the remote feed.
//
// It owns an Asio io_context and a websocketpp client endpoint (ws:// or wss://, chosen by the
// URL), and makes a new websocketpp connection per attempt. On every open it sends the resume
// text with the last committed upstream seq, then protocol.on_open. Received data frames go to
// the InboundQueue, one socket read at a time (or, when small, to try_commit_inline);
// application pongs and upstream acks are consumed here. Outbox rows arrive
// through Deliver() and are written in order after the resume and on_open texts. TLS verifies
// the certificate chain and the host name (SNI is sent) unless upstream.tls.verify=false.
//
// Threading: Create() and Run() on the I/O thread's owner; Run() blocks on the I/O thread and
// does all websocketpp work there. Stop() and ResumeReading() may be called from any thread;
// they post to the I/O thread. Nothing here touches SQLite or ZeroMQ (try_commit_inline does,
// through the writer).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bridge/config.h"
#include "bridge/endpoints/outbound.h"
#include "bridge/pipeline/inbound_queue.h"
#include "bridge/stats.h"
#include "common/status.h"

namespace wsbridge {

class FrameProtocol;

// The frame protocol (SPEC §6, §9) that Upstream::Create gives its link, from protocol.*,
// heartbeat.app_pong and upstream.max_message_bytes; errors name the key. Also used by the
// daemon to check producers' payloads against the framing (a second instance, its own thread).
StatusOr<std::unique_ptr<FrameProtocol>> CreateFrameProtocol(const Config& config);

struct UpstreamHooks {
  InboundQueue* queue = nullptr;
  // Offered the frames of each small socket read: commits them on the I/O thread and returns
  // true (frames taken), or returns false: they go to the queue. Optional.
  std::function<bool(std::vector<InboundFrame>*)> try_commit_inline;
  Stats* stats = nullptr;
  // The last upstream seq committed to the journal: the resume point. Any-thread safe.
  std::function<uint64_t()> resume_seq;
  // Where opens, closes, written outbox rows and acks are reported (to the writer thread).
  LinkEvents* events = nullptr;
};

class Upstream {
 public:
  // Validates what can be validated before connecting (URL, TLS files, matchers).
  static StatusOr<std::unique_ptr<Upstream>> Create(const Config& config, UpstreamHooks hooks);
  virtual ~Upstream() = default;

  // Connects, and reconnects, until Stop(). Returns the process exit code it suggests:
  // 0 after Stop(), non-zero when reconnect.max_attempts was exhausted.
  virtual int Run() = 0;
  // Closes the connection with 1000 and makes Run() return. Any thread; idempotent.
  virtual void Stop() = 0;
  // The writer drained the queue: read from the socket again. Any thread.
  virtual void ResumeReading() = 0;
  // Sends outbox rows on connection `conn` if it is still the open one (else drops them: the
  // next open starts again from the oldest row). Any thread; posts to the I/O thread.
  virtual void Deliver(uint64_t conn, std::vector<OutboxRow> rows) = 0;
};

}  // namespace wsbridge
