// FrameProtocol: how the upstream's frames are read and answered (SPEC §6, §9): a pure
// "message in -> outcome out" layer with no sockets, no clock and no threads, like
// ConnectionPolicy. The link (bridge/link/upstream.cc) hands it each complete WebSocket message
// and carries out what it returns: sends the replies at once, journals data, closes.
//
// What it does, in order, with one inbound message:
//   1. protocol.decompress: a binary message is inflated (Inflater, bounded by
//      max_message_bytes); `binary` becomes false when the result is valid UTF-8. A message
//      that fails to inflate is data as received (counted, never dropped); one that inflates
//      past the bound is kTooBig (the link closes with 1009).
//   2. protocol.framing: `json` takes the text as it is. `engineio` reads Engine.IO v4 /
//      socket.io v4 packets: `0{...}` (open: answered with the namespace connect `40...`, and its
//      pingInterval + pingTimeout becomes the silence bound), `2` (answered `3`), `40...`
//      (namespace connected: kSessionOpen), `41` (kLost), `44{...}` (kFatal with the message),
//      `42[...]` (an event: the JSON array is the payload, its first element the topic), `1`
//      (kLost), `6` and `3` (consumed). A packet it cannot read is data as received (counted).
//   3. protocol.replies: the first rule that matches answers at once ({{path}} replaced by the
//      raw JSON of that value); a consumed match is not journaled.
//   4. heartbeat.app_pong, protocol.ack_match: consumed, reported (kAppPong, kAck).
//   5. Everything else is data: upstream seq and topic read with protocol.seq_field /
//      topic_field in a JSON object (engineio: seq in the event's array, e.g. "1.seq"; the topic
//      is the event name).
//
// Threading: not thread-safe; one instance per connection owner (the upstream I/O thread).
// Frame(), CheckOutbound(), active() and options() only read what Create() set: any thread may
// call them at the same time as the owner calls OnMessage().
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/config.h"  // ReplyRule
#include "bridge/protocol/inflate.h"
#include "bridge/protocol/json_fields.h"
#include "common/status.h"

namespace wsbridge {

enum class Framing { kJson, kEngineIo };


struct FrameProtocolOptions {
  Framing framing = Framing::kJson;
  std::vector<ReplyRule> replies;  // protocol.replies (struct ReplyRule: bridge/config.h)
  Compression decompress = Compression::kNone;
  size_t max_message_bytes = 1048576;  // the inflation bound
  std::string socketio_namespace = "/";
  std::string socketio_auth;  // "" or a JSON object text, sent with the namespace connect
  InspectorOptions inspector;  // seq_field, topic_field, app_pong, ack_match, ack_id_field
};

struct FrameOutcome {
  enum class Kind {
    kData,         // journal the (possibly rewritten) payload with binary/upstream_seq/topic
    kConsumed,     // nothing to journal (a consumed reply match, an Engine.IO control packet)
    kAppPong,      // heartbeat.app_pong matched: a pong for the heartbeat
    kAck,          // protocol.ack_match matched: the upstream acked outbound id `ack_id`
    kSessionOpen,  // engineio: the namespace is connected: send resume and on_open now
    kLost,         // engineio: the server ended the session (`1`, `41`): close, reconnect
    kFatal,        // engineio: connect error (`44{...}`): fatal, `reason` holds the message
    kTooBig,       // inflated past max_message_bytes: close with 1009
  };
  Kind kind = Kind::kData;
  // Texts to send on the connection at once, in order, already framed (replies, `3`, `40`).
  std::vector<std::string> send;
  uint32_t replies = 0;  // how many of `send` answer the server (replies_sent_total)

  // kData
  bool binary = false;
  std::optional<uint64_t> upstream_seq;
  std::string topic;
  // kAck
  std::string ack_id;
  // kLost, kFatal, kTooBig: one line
  std::string reason;
  // engineio open packet: the connection is dead after this much silence
  std::optional<std::chrono::milliseconds> silence_bound;

  // Bad input that was kept (the frame is still journaled or the connection kept); each is
  // counted by the link.
  bool inflate_failed = false;   // wsbridge_inflate_failures_total
  bool malformed_packet = false; // wsbridge_malformed_packets_total (engineio)
  bool reply_failed = false;     // a matched rule's {{path}} was missing: no reply sent
  // A line for the log at warning level ("" when none). The protocol says each kind of problem
  // once: a rule's missing {{path}} once per rule for the object's life, a failed inflation or
  // a malformed packet once per kind per connection; the link's log sink limits repeats further.
  std::string warning;
};

class FrameProtocol {
 public:
  // Checks the options (rules, templates, auth text); errors name the key, e.g.
  // "protocol.replies[2].reply: unterminated {{".
  static StatusOr<std::unique_ptr<FrameProtocol>> Create(FrameProtocolOptions options);
  ~FrameProtocol();

  // A new WebSocket connection is open: per-connection state (which warnings were said) starts
  // over. True when the session is open at once (json), false when it opens later with
  // kSessionOpen (engineio).
  bool OnConnectionOpen();

  // One complete inbound WebSocket message. *payload may be rewritten in place (inflated, or
  // the event's JSON array); it is what a kData outcome journals.
  FrameOutcome OnMessage(bool binary, std::string* payload);

  // An outbound text as it goes on the wire (outbox rows, resume, on_open): json: unchanged;
  // engineio: "42" + ("/ns," unless the namespace is "/") + payload.
  std::string Frame(std::string_view payload) const;

  // Whether a producer's payload can be sent with this framing (engineio: a JSON array whose
  // first element is a string, and text). The error is one line for SendReply.error.
  Status CheckOutbound(std::string_view payload, bool binary) const;

  // True when OnMessage must see every message (else the link may skip it for speed).
  bool active() const;

  const FrameProtocolOptions& options() const;

 private:
  FrameProtocol();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace wsbridge
