#include "bridge/protocol/json_fields.h"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <vector>

namespace wsbridge {
namespace {

// A scalar as text for comparison: strings unquoted, integers and booleans as written; false
// for other types (objects, arrays, floats, null). Integers are written into `buf`.
bool ScalarView(simdjson::dom::element el, char (&buf)[24], std::string_view* out) {
  switch (el.type()) {
    case simdjson::dom::element_type::STRING:
      return el.get_string().get(*out) == simdjson::SUCCESS;
    case simdjson::dom::element_type::INT64: {
      int64_t v = 0;
      if (el.get_int64().get(v) != simdjson::SUCCESS) return false;
      *out = std::string_view(buf, std::to_chars(buf, buf + sizeof(buf), v).ptr - buf);
      return true;
    }
    case simdjson::dom::element_type::UINT64: {
      uint64_t v = 0;
      if (el.get_uint64().get(v) != simdjson::SUCCESS) return false;
      *out = std::string_view(buf, std::to_chars(buf, buf + sizeof(buf), v).ptr - buf);
      return true;
    }
    case simdjson::dom::element_type::BOOL: {
      bool v = false;
      if (el.get_bool().get(v) != simdjson::SUCCESS) return false;
      *out = v ? "true" : "false";
      return true;
    }
    default:
      return false;
  }
}

// The value at `path` rendered as text (ScalarView), copied.
std::optional<std::string> ScalarText(simdjson::dom::element root, const FieldPath& path) {
  simdjson::dom::element el;
  char buf[24];
  std::string_view text;
  if (!path.Find(root, &el) || !ScalarView(el, buf, &text)) return std::nullopt;
  return std::string(text);
}

// A sequence number: a non-negative integer that fits uint64, or a string of digits.
std::optional<uint64_t> SeqValue(simdjson::dom::element root, const FieldPath& path) {
  simdjson::dom::element el;
  if (!path.Find(root, &el)) return std::nullopt;
  uint64_t v = 0;
  if (el.get_uint64().get(v) == simdjson::SUCCESS) return v;
  if (el.is_int64()) return std::nullopt;  // negative
  std::string_view s;
  if (el.get_string().get(s) == simdjson::SUCCESS && !s.empty()) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && end == s.data() + s.size()) return v;
  }
  return std::nullopt;
}

bool Matches(const Matcher& m, const FieldPath& path, std::string_view text,
             const simdjson::dom::element* root) {
  if (m.empty()) return false;
  if (m.is_exact_text()) return text == m.value();
  return root != nullptr && ScalarEquals(*root, path, m.value());
}

// Where a JSON text's first significant character is ('{' for an object), or npos.
size_t FirstNonSpace(std::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return i;
  }
  return std::string_view::npos;
}

}  // namespace

std::string DottedToPointer(std::string_view dotted) {
  if (dotted.empty()) return "";
  std::string out = "/";
  for (char c : dotted) {
    if (c == '.') out += '/';
    else if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
  return out;
}

FieldPath::FieldPath(std::string_view pointer) {
  while (!pointer.empty() && pointer.front() == '/') {
    pointer.remove_prefix(1);
    const size_t end = std::min(pointer.find('/'), pointer.size());
    std::string token;
    for (size_t i = 0; i < end; ++i) {
      if (pointer[i] == '~' && i + 1 < end && (pointer[i + 1] == '0' || pointer[i + 1] == '1')) {
        token += pointer[++i] == '0' ? '~' : '/';
      } else {
        token += pointer[i];
      }
    }
    tokens_.push_back(std::move(token));
    pointer.remove_prefix(end);
  }
}

bool FieldPath::Find(simdjson::dom::element root, simdjson::dom::element* out) const {
  simdjson::dom::element el = root;
  for (const std::string& token : tokens_) {
    simdjson::dom::object obj;
    simdjson::dom::array arr;
    if (el.get_object().get(obj) == simdjson::SUCCESS) {
      if (obj.at_key(token).get(el) != simdjson::SUCCESS) return false;
    } else if (el.get_array().get(arr) == simdjson::SUCCESS) {
      size_t index = 0;
      if (token.empty() || (token.size() > 1 && token[0] == '0')) return false;
      auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), index);
      if (ec != std::errc() || end != token.data() + token.size()) return false;
      if (arr.at(index).get(el) != simdjson::SUCCESS) return false;
    } else {
      return false;
    }
  }
  *out = el;
  return true;
}

bool ScalarEquals(simdjson::dom::element root, const FieldPath& path, std::string_view value) {
  simdjson::dom::element el;
  char buf[24];
  std::string_view text;
  return path.Find(root, &el) && ScalarView(el, buf, &text) && text == value;
}

StatusOr<Matcher> Matcher::Parse(const std::string& spec, bool allow_exact_text) {
  Matcher m;
  if (spec.empty()) return m;
  auto eq = spec.find('=');
  if (eq == std::string::npos || eq == 0) {
    if (!allow_exact_text) {
      return Status::InvalidArgument("must be field=value (got \"" + spec + "\")");
    }
    m.kind_ = Kind::kExactText;
    m.value_ = spec;
    return m;
  }
  m.kind_ = Kind::kField;
  m.pointer_ = DottedToPointer(std::string_view(spec).substr(0, eq));
  m.value_ = spec.substr(eq + 1);
  return m;
}

struct FrameInspector::Impl {
  simdjson::dom::parser parser;
  FieldPath seq;
  FieldPath topic;
  FieldPath ack_id;
  Matcher app_pong;
  FieldPath app_pong_field;
  Matcher ack;
  FieldPath ack_field;
};

FrameInspector::FrameInspector() : impl_(std::make_unique<Impl>()) {}
FrameInspector::~FrameInspector() = default;

StatusOr<std::unique_ptr<FrameInspector>> FrameInspector::Create(const InspectorOptions& o) {
  std::unique_ptr<FrameInspector> fi(new FrameInspector());
  fi->impl_->seq = FieldPath(DottedToPointer(o.seq_field));
  fi->impl_->topic = FieldPath(DottedToPointer(o.topic_field));
  fi->impl_->ack_id = FieldPath(DottedToPointer(o.ack_id_field));
  auto pong = Matcher::Parse(o.app_pong, /*allow_exact_text=*/true);
  if (!pong.ok()) return Status::InvalidArgument("heartbeat.app_pong: " + pong.status().message());
  auto ack = Matcher::Parse(o.ack_match, /*allow_exact_text=*/false);
  if (!ack.ok()) return Status::InvalidArgument("protocol.ack_match: " + ack.status().message());
  fi->impl_->app_pong = *pong;
  fi->impl_->app_pong_field = FieldPath(pong->pointer());
  fi->impl_->ack = *ack;
  fi->impl_->ack_field = FieldPath(ack->pointer());
  return fi;
}

bool FrameInspector::active() const {
  return !impl_->seq.empty() || !impl_->topic.empty() ||
         !impl_->app_pong.empty() || !impl_->ack.empty();
}

FrameInfo FrameInspector::Inspect(std::string_view text) {
  simdjson::dom::element root;
  const bool parsed = Parse(text, /*arrays=*/false, &root);
  return Inspect(text, parsed ? &root : nullptr);
}

bool FrameInspector::Parse(std::string_view text, bool arrays, simdjson::dom::element* root) {
  // Cheap pre-check: only objects (and arrays when asked) can carry fields; leading whitespace
  // allowed.
  const size_t i = FirstNonSpace(text);
  if (i == std::string_view::npos || !(text[i] == '{' || (arrays && text[i] == '['))) return false;
  return impl_->parser.parse(text.data(), text.size()).get(*root) == simdjson::SUCCESS;
}

FrameInfo FrameInspector::Inspect(std::string_view text,
                                  const simdjson::dom::element* root) const {
  FrameInfo info;
  info.valid_json = root != nullptr;
  if (Matches(impl_->app_pong, impl_->app_pong_field, text, root)) {
    info.kind = FrameInfo::Kind::kAppPong;
    return info;
  }
  if (root != nullptr && Matches(impl_->ack, impl_->ack_field, text, root)) {
    auto id = ScalarText(*root, impl_->ack_id);
    if (id) {
      info.kind = FrameInfo::Kind::kAck;
      info.ack_id = std::move(*id);
      return info;
    }
  }
  if (root == nullptr) return info;
  if (!impl_->seq.empty()) info.upstream_seq = SeqValue(*root, impl_->seq);
  if (!impl_->topic.empty()) {
    if (auto t = ScalarText(*root, impl_->topic)) {
      info.topic = std::move(*t);
      info.has_topic = true;
    }
  }
  return info;
}

std::optional<std::string> ExtractStringField(std::string_view json, const std::string& pointer) {
  thread_local simdjson::dom::parser parser;
  size_t i = FirstNonSpace(json);
  if (i == std::string_view::npos || json[i] != '{') return std::nullopt;
  simdjson::dom::element root;
  if (parser.parse(json.data(), json.size()).get(root) != simdjson::SUCCESS) return std::nullopt;
  return ScalarText(root, FieldPath(pointer));
}

}  // namespace wsbridge
