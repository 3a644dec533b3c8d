#include "bridge/protocol/frame_protocol.h"

#include <simdjson.h>

#include <cstdint>
#include <utility>

#include "common/text.h"

namespace wsbridge {
namespace {

constexpr const char* kEngineIoPayloadError =
    "with protocol.framing = \"engineio\" a payload must be a JSON array [\"event\", ...]";

// A compiled `reply` template: literal text and {{path}} placeholders, alternating. The last
// part has no path.
struct TemplatePart {
  std::string literal;  // sent as is, before the placeholder
  std::string path;     // the dotted path as written (trimmed); "" for the last part
  std::string pointer;  // its JSON pointer, for the on-demand lookup
};

// One protocol.replies rule, checked and compiled by Create().
struct CompiledRule {
  bool by_text = false;
  std::string text;
  FieldPath field;
  std::optional<std::string> equals;
  std::vector<TemplatePart> reply;
  bool consume = true;
  bool warned_missing = false;  // "{{x}} is missing" said once per rule for the object's life
};

// Splits `reply` into parts; the error names `key` (e.g. "protocol.replies[0].reply").
Status CompileTemplate(const std::string& reply, const std::string& key,
                       std::vector<TemplatePart>* parts) {
  size_t pos = 0;
  for (;;) {
    const size_t open = reply.find("{{", pos);
    if (open == std::string::npos) break;
    const size_t close = reply.find("}}", open + 2);
    if (close == std::string::npos) return Status::InvalidArgument(key + ": unterminated {{");
    std::string path = Trim(reply.substr(open + 2, close - open - 2));
    if (!IsDottedPath(path)) {
      return Status::InvalidArgument(key + ": {{" + path +
                                     "}} is not a dotted field path (e.g. {{ping}} or {{params.id}})");
    }
    TemplatePart part;
    part.literal = reply.substr(pos, open - pos);
    part.pointer = DottedToPointer(path);
    part.path = std::move(path);
    parts->push_back(std::move(part));
    pos = close + 2;
  }
  TemplatePart last;
  last.literal = reply.substr(pos);
  parts->push_back(std::move(last));
  return Status::OK();
}

// Whether `root` is a JSON array whose first element is a string (a socket.io event); that
// string in *name (valid while the parser's document is).
bool EventName(simdjson::dom::element root, std::string_view* name) {
  simdjson::dom::array array;
  simdjson::dom::element first;
  return root.get_array().get(array) == simdjson::SUCCESS &&
         array.at(0).get(first) == simdjson::SUCCESS &&
         first.get_string().get(*name) == simdjson::SUCCESS;
}

}  // namespace

// Everything FrameProtocol owns; only the upstream I/O thread touches the mutable members.
struct FrameProtocol::Impl {
  // The problems said once per connection (then counted only).
  enum Warning : uint32_t {
    kInflateFailed = 1u << 0,
    kBinaryMessage = 1u << 1,
    kBinaryAttachments = 1u << 2,
    kUnreadablePacket = 1u << 3,
    kBadEvent = 1u << 4,
  };

  FrameProtocolOptions options;
  std::unique_ptr<FrameInspector> inspector;
  std::vector<CompiledRule> rules;
  bool need_json = false;  // some field rule or the inspector reads the JSON document
  std::string ns_prefix;   // engineio: "" for "/", else "/chat,"
  std::string connect;     // engineio: the namespace connect packet "40..."

  Inflater inflater;
  std::string inflated;  // Inflate()'s output, then swapped into the payload
  simdjson::ondemand::parser raw_parser;  // {{path}} raw JSON lookups (matched frames only)
  std::string padded;                     // the matched text plus SIMDJSON_PADDING
  uint32_t warned = 0;                    // Warning bits said on this connection

  // True the first time `kind` comes up on this connection: say it then.
  bool FirstTime(Warning kind) {
    if ((warned & kind) != 0) return false;
    warned |= kind;
    return true;
  }

  // Bad input kept: data as received, counted.
  void Malformed(Warning kind, const char* text, FrameOutcome* out) {
    out->kind = FrameOutcome::Kind::kData;
    out->malformed_packet = true;
    if (FirstTime(kind)) out->warning = text;
  }

  // Step 1: protocol.decompress on a binary message. False when the outcome is final (kTooBig).
  bool Inflate(std::string* payload, FrameOutcome* out) {
    std::string error;
    switch (inflater.Inflate(options.decompress, *payload, options.max_message_bytes, &inflated,
                             &error)) {
      case InflateResult::kOk:
        payload->swap(inflated);
        out->binary = !simdjson::validate_utf8(payload->data(), payload->size());
        return true;
      case InflateResult::kNotCompressed:
        return true;
      case InflateResult::kCorrupt:
        out->inflate_failed = true;
        if (FirstTime(kInflateFailed)) {
          out->warning =
              "protocol.decompress: a binary frame failed to inflate (" + OneLine(error) +
              "); it is journaled as received (counted in wsbridge_inflate_failures_total)";
        }
        return true;
      case InflateResult::kTooBig:
        out->kind = FrameOutcome::Kind::kTooBig;
        out->reason = "a frame inflated past upstream.max_message_bytes (" +
                      std::to_string(options.max_message_bytes) + ")";
        return false;
    }
    return true;
  }

  // A json-framing text: steps 3 to 5, parsing the text once when anything reads it.
  void OnJsonText(std::string_view text, FrameOutcome* out) {
    if (!need_json && rules.empty()) return;
    simdjson::dom::element root;
    const bool parsed = need_json && inspector->Parse(text, /*arrays=*/false, &root);
    Classify(text, parsed ? &root : nullptr, out);
  }

  // Steps 3 to 5 on the text that would be journaled; `root` is its parsed document (nullptr:
  // not JSON, or nothing needed it).
  void Classify(std::string_view text, const simdjson::dom::element* root, FrameOutcome* out) {
    if (!rules.empty() && AnswerRules(text, root, out)) return;
    if (!inspector->active()) return;
    FrameInfo info = inspector->Inspect(text, root);
    switch (info.kind) {
      case FrameInfo::Kind::kAppPong:
        out->kind = FrameOutcome::Kind::kAppPong;
        return;
      case FrameInfo::Kind::kAck:
        out->kind = FrameOutcome::Kind::kAck;
        out->ack_id = std::move(info.ack_id);
        return;
      case FrameInfo::Kind::kData:
        out->upstream_seq = info.upstream_seq;
        out->topic = std::move(info.topic);
        return;
    }
  }

  // protocol.replies: the first matching rule answers. True when it consumed the frame.
  bool AnswerRules(std::string_view text, const simdjson::dom::element* root, FrameOutcome* out) {
    for (size_t i = 0; i < rules.size(); ++i) {
      CompiledRule& rule = rules[i];
      simdjson::dom::element found;
      const bool match = rule.by_text ? text == rule.text
                         : root == nullptr ? false
                         : rule.equals     ? ScalarEquals(*root, rule.field, *rule.equals)
                                           : rule.field.Find(*root, &found);
      if (!match) continue;
      std::string reply;
      const TemplatePart* missing = Render(rule, text, &reply);
      if (missing == nullptr) {
        out->send.push_back(options.framing == Framing::kEngineIo ? FrameEvent(reply)
                                                                   : std::move(reply));
        ++out->replies;
      } else {
        out->reply_failed = true;
        if (!rule.warned_missing) {
          rule.warned_missing = true;
          out->warning = "protocol.replies[" + std::to_string(i) + "]: {{" + missing->path +
                         "}} is missing from a matched frame; no reply sent";
        }
      }
      if (!rule.consume) return false;
      out->kind = FrameOutcome::Kind::kConsumed;
      return true;
    }
    return false;
  }

  // The reply of `rule` to `text` in *reply, each {{path}} replaced by the raw JSON text of that
  // value (byte-exact, as the frame has it). Returns the first placeholder whose value is
  // missing (nullptr: none).
  const TemplatePart* Render(const CompiledRule& rule, std::string_view text, std::string* reply) {
    if (rule.reply.size() == 1) {  // no placeholder
      *reply = rule.reply[0].literal;
      return nullptr;
    }
    padded.assign(text);
    padded.append(simdjson::SIMDJSON_PADDING, ' ');
    simdjson::ondemand::document doc;
    const bool parsed =
        raw_parser.iterate(padded.data(), text.size(), padded.size()).get(doc) == simdjson::SUCCESS;
    for (const TemplatePart& part : rule.reply) {
      reply->append(part.literal);
      if (part.path.empty()) continue;
      simdjson::ondemand::value value;
      std::string_view raw;
      if (!parsed || doc.at_pointer(part.pointer).get(value) != simdjson::SUCCESS ||
          simdjson::to_json_string(value).get(raw) != simdjson::SUCCESS) {
        return &part;
      }
      reply->append(raw);
    }
    return nullptr;
  }

  std::string FrameEvent(std::string_view payload) const {
    std::string out;
    out.reserve(2 + ns_prefix.size() + payload.size());
    out.append("42").append(ns_prefix).append(payload);
    return out;
  }

  // Step 2, engineio: one Engine.IO packet.
  void OnEngineIo(std::string* payload, FrameOutcome* out) {
    if (out->binary) {
      return Malformed(kBinaryMessage,
                       "engine.io: a binary message (a socket.io binary attachment?) is not "
                       "supported; it is journaled as received",
                       out);
    }
    const std::string_view text = *payload;
    if (text.empty()) {
      return Malformed(kUnreadablePacket,
                       "engine.io: an empty message is not a packet; it is journaled as received",
                       out);
    }
    switch (text[0]) {
      case '0':
        return OnOpen(text.substr(1), out);
      case '1':
        out->kind = FrameOutcome::Kind::kLost;
        out->reason = "engine.io: the server closed the session";
        return;
      case '2':  // ping, answered with a pong carrying the same data
        out->kind = FrameOutcome::Kind::kConsumed;
        out->send.push_back("3" + std::string(text.substr(1)));
        out->replies = 1;
        return;
      case '3':  // pong
      case '6':  // noop
        out->kind = FrameOutcome::Kind::kConsumed;
        return;
      case '4':
        return OnSocketIo(payload, out);
      default:
        return Malformed(kUnreadablePacket,
                         "engine.io: a packet of an unknown type is journaled as received", out);
    }
  }

  // `0{"sid":...,"pingInterval":25000,"pingTimeout":20000,...}`: connect the namespace.
  void OnOpen(std::string_view json, FrameOutcome* out) {
    constexpr uint64_t kMaxMs = INT32_MAX;
    simdjson::dom::element root;
    uint64_t interval = 0;
    uint64_t timeout = 0;
    if (!inspector->Parse(json, /*arrays=*/false, &root) ||
        root.at_key("pingInterval").get_uint64().get(interval) != simdjson::SUCCESS ||
        root.at_key("pingTimeout").get_uint64().get(timeout) != simdjson::SUCCESS ||
        interval == 0 || timeout == 0 || interval > kMaxMs || timeout > kMaxMs) {
      out->kind = FrameOutcome::Kind::kLost;
      out->reason =
          "engine.io: malformed open packet (needs a JSON object with pingInterval and "
          "pingTimeout in milliseconds): is protocol.framing = \"engineio\" right for this "
          "upstream?";
      return;
    }
    out->kind = FrameOutcome::Kind::kConsumed;
    out->send.push_back(connect);
    out->silence_bound = std::chrono::milliseconds(interval + timeout);
  }

  // `4` + a socket.io packet: type, optional "/ns," and ack id, then JSON.
  void OnSocketIo(std::string* payload, FrameOutcome* out) {
    const std::string_view text = *payload;
    if (text.size() < 2) {
      return Malformed(kUnreadablePacket,
                       "socket.io: an empty packet is journaled as received", out);
    }
    const char type = text[1];
    if (type == '5' || type == '6') {
      return Malformed(kBinaryAttachments,
                       "socket.io binary attachments are not supported; the packet is journaled "
                       "as received",
                       out);
    }
    if (type < '0' || type > '4') {
      return Malformed(kUnreadablePacket,
                       "socket.io: a packet of an unknown type is journaled as received", out);
    }
    size_t pos = 2;
    std::string_view ns = "/";
    if (pos < text.size() && text[pos] == '/') {
      const size_t comma = text.find(',', pos);
      const size_t end = comma == std::string_view::npos ? text.size() : comma;
      ns = text.substr(pos, end - pos);
      pos = comma == std::string_view::npos ? text.size() : comma + 1;
    }
    if (ns != options.socketio_namespace) {  // another namespace's packet: not ours
      out->kind = FrameOutcome::Kind::kConsumed;
      return;
    }
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') ++pos;  // ack id
    const std::string_view data = text.substr(pos);
    switch (type) {
      case '0':
        out->kind = FrameOutcome::Kind::kSessionOpen;
        return;
      case '1':
        out->kind = FrameOutcome::Kind::kLost;
        out->reason = "socket.io: the server disconnected the namespace";
        return;
      case '2':
        return OnEvent(payload, pos, out);
      case '3':  // an ack of an event we sent with an ack id (we never do)
        out->kind = FrameOutcome::Kind::kConsumed;
        return;
      default: {  // '4': CONNECT_ERROR, {"message":"..."} (v4) or a bare text (older servers)
        simdjson::dom::element root;
        std::string_view message = data;
        if (inspector->Parse(data, /*arrays=*/false, &root)) {
          if (root.at_key("message").get_string().get(message) != simdjson::SUCCESS) {
            message = data;
          }
        }
        out->kind = FrameOutcome::Kind::kFatal;
        out->reason = "socket.io connect error: " + OneLine(message);
        return;
      }
    }
  }

  // `42...["name", args...]`: the array (from `pos`) is the payload, its name the topic.
  void OnEvent(std::string* payload, size_t pos, FrameOutcome* out) {
    const std::string_view array_text = std::string_view(*payload).substr(pos);
    simdjson::dom::element root;
    std::string_view name;
    if (!inspector->Parse(array_text, /*arrays=*/true, &root) || !EventName(root, &name)) {
      return Malformed(kBadEvent,
                       "socket.io: an event that is not a JSON array [\"name\", ...] is "
                       "journaled as received",
                       out);
    }
    // The parser holds its own copy of the text: root and name outlive this erase.
    payload->erase(0, pos);
    Classify(*payload, &root, out);
    if (out->kind == FrameOutcome::Kind::kData) out->topic.assign(name.data(), name.size());
  }
};

FrameProtocol::FrameProtocol() : impl_(std::make_unique<Impl>()) {}
FrameProtocol::~FrameProtocol() = default;

StatusOr<std::unique_ptr<FrameProtocol>> FrameProtocol::Create(FrameProtocolOptions options) {
  std::unique_ptr<FrameProtocol> fp(new FrameProtocol());
  Impl& impl = *fp->impl_;
  auto inspector = FrameInspector::Create(options.inspector);
  if (!inspector.ok()) return inspector.status();
  impl.inspector = std::move(inspector).value();
  const bool engineio = options.framing == Framing::kEngineIo;

  for (size_t i = 0; i < options.replies.size(); ++i) {
    const ReplyRule& r = options.replies[i];
    const std::string at = "protocol.replies[" + std::to_string(i) + "]";
    if (Status st = CheckReplyRule(r, at); !st.ok()) return st;
    if (engineio && Trim(r.reply).rfind('[', 0) != 0) {
      return Status::InvalidArgument(at + ".reply: " + kEngineIoPayloadError);
    }
    CompiledRule rule;
    rule.by_text = !r.text.empty();
    rule.text = r.text;
    rule.field = FieldPath(DottedToPointer(r.field));
    rule.equals = r.equals;
    rule.consume = r.consume;
    if (Status st = CompileTemplate(r.reply, at + ".reply", &rule.reply); !st.ok()) return st;
    impl.need_json = impl.need_json || !rule.by_text;
    impl.rules.push_back(std::move(rule));
  }
  impl.need_json = impl.need_json || impl.inspector->active();

  const std::string& ns = options.socketio_namespace;
  if (!IsSocketIoNamespace(ns)) {
    return Status::InvalidArgument(
        "protocol.socketio_namespace: must be a socket.io namespace such as / or /chat");
  }
  if (!options.socketio_auth.empty()) {
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    if (parser.parse(options.socketio_auth).get(root) != simdjson::SUCCESS || !root.is_object()) {
      return Status::InvalidArgument("protocol.socketio_auth: must be a JSON object");
    }
  }
  impl.ns_prefix = ns == "/" ? "" : ns + ",";
  impl.connect = "40" + impl.ns_prefix + options.socketio_auth;
  impl.options = std::move(options);
  return fp;
}

bool FrameProtocol::OnConnectionOpen() {
  impl_->warned = 0;
  return impl_->options.framing == Framing::kJson;
}

FrameOutcome FrameProtocol::OnMessage(bool binary, std::string* payload) {
  FrameOutcome out;
  out.binary = binary;
  if (binary && impl_->options.decompress != Compression::kNone &&
      !impl_->Inflate(payload, &out)) {
    return out;
  }
  if (impl_->options.framing == Framing::kEngineIo) {
    impl_->OnEngineIo(payload, &out);
  } else if (!out.binary) {
    impl_->OnJsonText(*payload, &out);
  }
  return out;
}

std::string FrameProtocol::Frame(std::string_view payload) const {
  if (impl_->options.framing == Framing::kJson) return std::string(payload);
  return impl_->FrameEvent(payload);
}

Status FrameProtocol::CheckOutbound(std::string_view payload, bool binary) const {
  if (impl_->options.framing == Framing::kJson) return Status::OK();
  // Any thread may call this (const): a parser per thread, not the I/O thread's.
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element root;
  std::string_view name;
  if (binary || parser.parse(payload.data(), payload.size()).get(root) != simdjson::SUCCESS ||
      !EventName(root, &name)) {
    return Status::InvalidArgument(kEngineIoPayloadError);
  }
  return Status::OK();
}

bool FrameProtocol::active() const {
  const Impl& impl = *impl_;
  return impl.options.framing == Framing::kEngineIo || !impl.rules.empty() ||
         impl.options.decompress != Compression::kNone || impl.inspector->active();
}

const FrameProtocolOptions& FrameProtocol::options() const { return impl_->options; }

}  // namespace wsbridge
