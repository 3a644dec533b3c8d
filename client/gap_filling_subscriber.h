// GapFillingSubscriber: a wsbridge subscriber that never misses a message.
//
// ZeroMQ PUB drops messages for a subscriber that is slow, absent or just connecting; the
// bridge's journal keeps them. This subscriber reads the PUB endpoint ([topic][Envelope]),
// tracks (epoch, seq) and, whenever the next seq it sees is not the one it expects (a dropped
// message, a subscriber that joined late, messages lost while it was stalled), asks the replay
// endpoint for the missing range and hands the application every message exactly once, in seq
// order. Live messages that arrive while a gap is being filled are held (up to max_buffered;
// beyond that they are dropped and fetched from the journal too), then released in order.
//
// - Every seq counts, whatever its topic: the SUB socket subscribes to everything and the
//   topic prefix is applied here, so that a jump in seq always means a missed message and
//   costs nothing when nothing was missed. Replay requests carry the prefix.
// - After `idle_check` without any live message it probes the journal: one request for the last
//   seq it has (its epoch must still be ours) that also tells the newest seq; anything newer is
//   then fetched. Messages dropped at the end of a burst are not left waiting for the next one,
//   and a database replaced while no message came through is noticed.
// - A message whose epoch differs from the one it tracks means the bridge's database was
//   replaced: the old seq means nothing any more. It reports the change (on_epoch_change),
//   forgets what it held and starts over in the new history (from seq 1 by default).
// - Rows already trimmed by retention cannot be replayed: it reports them (on_lost) and goes on
//   from the oldest seq the journal still has.
// - The replay endpoint unreachable or silent for `replay_timeout`: it asks again on a fresh
//   socket (a restarting bridge is waited for, not an error).
// - CURVE (SPEC §10): with `server_key` and `client_key_file` both sockets are CURVE clients
//   (client/curve_client.h). A handshake the bridge refuses (a key not authorized to subscribe,
//   a plain client on a CURVE endpoint) is an error from Poll(), not a silent wait.
//
// Threading: not thread-safe. Create it, call Poll() and the accessors from one thread; the
// handlers run on that thread, inside Poll(). The zmq::context_t must outlive it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <zmq.hpp>

#include "client/curve_client.h"
#include "common/status.h"
#include "wsbridge.pb.h"

namespace wsbridge::client {

struct GapFillingOptions {
  std::string pub_endpoint = "tcp://127.0.0.1:5556";
  std::string replay_endpoint = "tcp://127.0.0.1:5558";
  std::string topic_prefix;  // deliver only topics that start with it ("": all)
  // 0: start with the first live message received. N: deliver from seq N on; what was
  // journaled before the subscriber connected is replayed first ("joined late").
  uint64_t start_seq = 0;
  // The epoch start_seq belongs to (as saved by the application with its last seq). When the
  // bridge's is different, on_epoch_change reports it and the subscriber starts over.
  // 0: take the bridge's epoch as it is.
  uint64_t start_epoch = 0;
  // After an epoch change: true, deliver the new history from its seq 1 (everything the new
  // database holds); false, carry on from the first message seen in the new epoch.
  bool new_epoch_from_start = true;
  size_t max_buffered = 100000;   // live messages held while a gap is filled
  uint32_t page_messages = 1000;  // max_messages asked per replay page
  int sub_rcvhwm = 10000;         // SUB queue (messages); beyond it the bridge drops
  int sub_rcvbuf_bytes = 0;       // SO_RCVBUF of the SUB socket; 0: the OS default
  std::chrono::milliseconds replay_timeout{3000};  // no page for this long: ask again
  std::chrono::milliseconds idle_check{1000};  // quiet for this long: check the journal (0: never)
  // CURVE, as wsbridge-tail's --server-key and --client-key-file (both or neither; see
  // CurveClientKeys::Load): the bridge's public key (40 Z85 characters, or "@FILE") and this
  // client's secret key file, whose public key the bridge lists with role `subscribe` or `all`.
  std::string server_key;
  std::string client_key_file;
};

struct GapFillingHandlers {
  // Required: one call per message, in seq order, each seq once.
  std::function<void(const v1::Envelope&)> on_message;
  // The bridge's database was replaced (old_epoch 0 never appears here).
  std::function<void(uint64_t old_epoch, uint64_t new_epoch)> on_epoch_change;
  // Messages [from_seq, to_seq] were trimmed by retention before they could be replayed.
  std::function<void(uint64_t from_seq, uint64_t to_seq)> on_lost;
  // Something worth a log line: a replay refused or unanswered (then retried).
  std::function<void(const std::string& what)> on_warning;
};

struct GapFillingStats {
  uint64_t delivered = 0;   // handed to on_message (after the topic filter)
  uint64_t live = 0;        // messages received on the SUB socket
  uint64_t replayed = 0;    // envelopes received in replay pages
  uint64_t duplicates = 0;  // received again (live after replay, or replay after live)
  uint64_t gaps = 0;        // gaps detected (each filled by one or more replay requests)
  uint64_t replay_requests = 0;
  uint64_t replay_timeouts = 0;
  uint64_t buffer_overflows = 0;  // live messages dropped because the hold buffer was full
  uint64_t lost = 0;              // seqs reported through on_lost
  uint64_t epoch_changes = 0;
};

class GapFillingSubscriber {
 public:
  // Connects the SUB and DEALER sockets (connecting succeeds whether or not the bridge runs).
  // InvalidArgument for a bad endpoint, a missing on_message or CURVE settings that cannot be
  // used (one without the other, a key file that cannot be read or is readable by others).
  static StatusOr<std::unique_ptr<GapFillingSubscriber>> Create(zmq::context_t* ctx,
                                                                GapFillingOptions options,
                                                                GapFillingHandlers handlers);
  ~GapFillingSubscriber();
  GapFillingSubscriber(const GapFillingSubscriber&) = delete;
  GapFillingSubscriber& operator=(const GapFillingSubscriber&) = delete;

  // Waits up to `timeout` for messages, replay pages or a timer, handles what is there (a
  // bounded amount per call) and returns. Call it in a loop. Errors only when the sockets fail
  // for good (e.g. the context was shut down) or the bridge refused a handshake (libzmq does
  // not try again; the message says which endpoint and why); every later call returns it too.
  Status Poll(std::chrono::milliseconds timeout);

  uint64_t epoch() const { return epoch_; }        // 0 until the first message
  uint64_t next_seq() const { return expected_; }  // next seq to deliver (0: not known yet)
  bool filling() const { return fill_.has_value(); }
  const GapFillingStats& stats() const { return stats_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Fill {
    bool probe = false;     // an idle probe: [seq, seq] without prefix, for its epoch and last_seq
    bool followup = false;  // a probe of the newest seq after the first probe found nothing
    uint64_t to = 0;        // 0: up to the newest
    Clock::time_point deadline;  // next page due (or, after a refusal, when to ask again)
    bool refused = false;
  };

  GapFillingSubscriber(zmq::context_t* ctx, GapFillingOptions options, GapFillingHandlers handlers);
  Status Connect();
  // A fresh DEALER (and its handshake watch) connected to the replay endpoint.
  Status NewDealer();
  // NewDealer() from the message handling; a failure is returned by the next Poll().
  void ReplaceDealer();

  void OnLive(v1::Envelope& env);
  void OnPage(const v1::ReplayReply& reply);
  void Deliver(const v1::Envelope& env);
  void Drain();
  void StartFill(uint64_t to);
  void StartProbe(uint64_t seq, bool followup);
  void OnProbe(const v1::ReplayReply& reply);
  void SendRequest(uint64_t from, uint64_t to, const std::string& prefix, uint32_t max);
  void OnTimers(Clock::time_point now);
  // True when the epoch is now `epoch` with tracking intact; false when it changed and tracking
  // was restarted (the caller drops what it was doing with the message).
  bool CheckEpoch(uint64_t epoch);
  void Warn(const std::string& what);

  zmq::context_t* ctx_;
  GapFillingOptions options_;
  GapFillingHandlers handlers_;
  CurveClientKeys keys_;
  zmq::socket_t sub_;
  std::optional<HandshakeWatch> sub_watch_;  // set by Connect()
  std::unique_ptr<zmq::socket_t> dealer_;
  std::optional<HandshakeWatch> dealer_watch_;  // dealer_'s
  Status failed_;  // set for good: the sockets cannot be used any more

  uint64_t epoch_ = 0;
  uint64_t expected_ = 0;
  std::deque<v1::Envelope> held_;  // live messages waiting behind a gap, in arrival order
  std::optional<Fill> fill_;
  Clock::time_point last_activity_;  // last live message or finished fill
  GapFillingStats stats_;
  std::string scratch_;
};

}  // namespace wsbridge::client
