// libFuzzer target: the inbound message path of FrameProtocol (bridge/protocol/frame_protocol.h):
// protocol.decompress (bounded inflation), json and engineio framing, protocol.replies with
// {{path}} templates, app_pong / ack matching, seq and topic.
//
// Input layout:
//   byte 0: options. bit 0: engineio framing; bits 1-3: decompress (none, auto, gzip, zlib,
//           deflate); bit 4: reply rules; bit 5: app_pong (and ack_match in json); bit 6: the
//           socket.io namespace "/chat" with an auth object.
//   byte 1: max_message_bytes = 16 + 8 * byte (16 .. 2056): small, so that the bound is hit.
//   then messages, each: a header byte (bit 0: a binary WebSocket message; bits 1-2: the
//   harness compresses the content first: none, gzip, zlib, raw deflate), a length byte, and
//   that many content bytes (fewer at the end of the input).
// Besides the sanitizers, it checks what OnMessage() promises: an inflated payload is within
// max_message_bytes, each outcome kind only where its options allow it, a journaled engineio
// event passes CheckOutbound(), warnings and reasons are one line.
#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "bridge/protocol/frame_protocol.h"

namespace {

using wsbridge::Compression;
using wsbridge::FrameOutcome;
using wsbridge::FrameProtocol;
using wsbridge::FrameProtocolOptions;
using wsbridge::Framing;
using wsbridge::ReplyRule;
using Kind = FrameOutcome::Kind;

void Check(bool cond) {
  if (!cond) std::abort();
}

ReplyRule Rule(std::string field, std::string equals, std::string text, std::string reply,
               bool consume) {
  ReplyRule r;
  r.field = std::move(field);
  if (!equals.empty()) r.equals = std::move(equals);
  r.text = std::move(text);
  r.reply = std::move(reply);
  r.consume = consume;
  return r;
}

FrameProtocolOptions Options(uint8_t flags, uint8_t max) {
  FrameProtocolOptions o;
  const bool engineio = (flags & 1) != 0;
  o.framing = engineio ? Framing::kEngineIo : Framing::kJson;
  static constexpr Compression kModes[] = {Compression::kNone, Compression::kAuto,
                                           Compression::kGzip, Compression::kZlib,
                                           Compression::kDeflate};
  o.decompress = kModes[((flags >> 1) & 7) % 5];
  o.max_message_bytes = 16 + 8 * size_t{max};
  if (flags & 16) {
    if (engineio) {
      o.replies.push_back(Rule("0", "ping", "", R"(["pong",{{1}}])", true));
      o.replies.push_back(Rule("1.hb", "", "", R"(["hb",{{1.hb}},{{ 1.id }}])", false));
      o.replies.push_back(Rule("", "", R"(["ping"])", R"(["pong"])", true));
    } else {
      o.replies.push_back(Rule("ping", "", "", R"({"pong":{{ping}}})", true));
      o.replies.push_back(Rule("op", "hb", "", R"({"id":{{id}},"ts":{{ d.ts }}})", false));
      o.replies.push_back(Rule("", "", "ping", "pong", true));
    }
  }
  if (flags & 32) {
    o.inspector.app_pong = engineio ? "0=pong" : "type=pong";
    if (!engineio) o.inspector.ack_match = "type=ack";
  }
  if (flags & 64) {
    o.socketio_namespace = "/chat";
    o.socketio_auth = R"({"token":"t"})";
  }
  if (engineio) o.inspector.seq_field = "1.seq";
  return o;
}

// `data` compressed: window_bits 31 gzip, 15 zlib, -15 raw deflate.
std::string Compress(std::string_view data, int window_bits) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    std::abort();
  }
  std::string out(deflateBound(&zs, data.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  Check(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

bool OneLine(const std::string& s) { return s.find('\n') == std::string::npos; }

void CheckOutcome(const FrameProtocol& fp, const FrameOutcome& out, bool binary,
                  const std::string& in, const std::string& payload) {
  const FrameProtocolOptions& o = fp.options();
  const bool engineio = o.framing == Framing::kEngineIo;
  const bool may_inflate = binary && o.decompress != Compression::kNone;
  Check(OneLine(out.warning) && OneLine(out.reason));
  Check(out.replies <= out.send.size());
  if (out.kind == Kind::kTooBig) Check(may_inflate && !out.reason.empty());
  if (out.inflate_failed) Check(may_inflate);
  if (out.reply_failed) Check(!o.replies.empty());
  if (out.kind == Kind::kAppPong) Check(!o.inspector.app_pong.empty());
  if (out.kind == Kind::kAck) Check(!o.inspector.ack_match.empty() && !engineio);
  if (!engineio) {
    Check(!out.malformed_packet && !out.silence_bound);
    Check(out.kind != Kind::kSessionOpen && out.kind != Kind::kLost && out.kind != Kind::kFatal);
  }
  if (out.kind == Kind::kLost || out.kind == Kind::kFatal) Check(!out.reason.empty());
  if (out.kind != Kind::kData) return;
  // What is journaled: the message as received, or what it inflated to (within the bound), or
  // (engineio) the event's array, a part of either.
  if (!engineio && payload != in) Check(may_inflate && payload.size() <= o.max_message_bytes);
  if (engineio) Check(payload.size() <= std::max(o.max_message_bytes, in.size()));
  if (engineio && !may_inflate) {  // the event's array is the end of the packet
    Check(in.size() >= payload.size() &&
          in.compare(in.size() - payload.size(), payload.size(), payload) == 0);
  }
  if (engineio && !out.malformed_packet) {
    Check(!out.binary);
    Check(fp.CheckOutbound(payload, false).ok());  // ["name", ...]
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  auto created = FrameProtocol::Create(Options(data[0], data[1]));
  Check(created.ok());
  std::unique_ptr<FrameProtocol> fp = std::move(created).value();
  const bool json_opens = fp->OnConnectionOpen();
  Check(json_opens == (fp->options().framing == Framing::kJson));

  size_t pos = 2;
  while (pos + 2 <= size) {
    const uint8_t header = data[pos];
    const size_t len = std::min<size_t>(data[pos + 1], size - pos - 2);
    std::string in(reinterpret_cast<const char*>(data + pos + 2), len);
    pos += 2 + len;
    static constexpr int kWindowBits[] = {0, 31, 15, -15};
    if (const int bits = kWindowBits[(header >> 1) & 3]; bits != 0) in = Compress(in, bits);
    const bool binary = (header & 1) != 0;
    std::string payload = in;
    FrameOutcome out = fp->OnMessage(binary, &payload);
    CheckOutcome(*fp, out, binary, in, payload);
    if (!fp->active()) Check(out.kind == Kind::kData && payload == in && out.send.empty());
    if (header & 8) (void)fp->OnConnectionOpen();
  }
  // Outbound framing: whatever CheckOutbound accepts is framed around the payload unchanged.
  const std::string_view tail(reinterpret_cast<const char*>(data) + 2, size - 2);
  if (fp->CheckOutbound(tail, false).ok()) {
    const std::string framed = fp->Frame(tail);
    Check(framed.size() >= tail.size() &&
          framed.compare(framed.size() - tail.size(), tail.size(), tail) == 0);
  }
  return 0;
}
