// Inbound frame inspection: which JSON fields an upstream frame carries, and whether it is an
// application pong or an upstream ack rather than data (SPEC §4 protocol.*, heartbeat.app_pong).
//
// FrameInspector owns a simdjson DOM parser (reused across frames, no allocation per frame once
// warm). Not thread-safe: one instance per thread; the upstream I/O thread owns the daemon's.
// FieldPath and the free functions are values / pure functions: any thread.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/text.h"  // IsDottedPath

namespace wsbridge {

// A `field=value` test on a JSON object (dotted field path), or an exact text when no '=' is
// given and exact text is allowed. Empty spec: matches nothing.
class Matcher {
 public:
  Matcher() = default;
  // allow_exact_text: app_pong accepts "pong"; ack_match requires field=value.
  static StatusOr<Matcher> Parse(const std::string& spec, bool allow_exact_text);
  bool empty() const { return kind_ == Kind::kNone; }
  bool is_exact_text() const { return kind_ == Kind::kExactText; }
  const std::string& pointer() const { return pointer_; }  // JSON pointer of the field
  const std::string& value() const { return value_; }

 private:
  enum class Kind { kNone, kField, kExactText };
  Kind kind_ = Kind::kNone;
  std::string pointer_;
  std::string value_;
};

// "a.b.c" -> "/a/b/c" (with ~ and / escaped); "" -> "".
std::string DottedToPointer(std::string_view dotted);

// A JSON pointer split into its reference tokens once ("/a/b~1c" -> "a", "b/c"), so that each
// frame's lookup is a walk of at_key() calls: at_pointer() parses the pointer text again on
// every call, ~5 % of the I/O thread's time under load. Same semantics: object members by exact
// key, array elements by a decimal index without leading zeros. An immutable value.
class FieldPath {
 public:
  FieldPath() = default;
  explicit FieldPath(std::string_view pointer);
  bool empty() const { return tokens_.empty(); }
  // The element at this path under `root`; false when absent.
  bool Find(simdjson::dom::element root, simdjson::dom::element* out) const;

 private:
  std::vector<std::string> tokens_;
};

// Whether the value at `path` under `root`, as text, equals `value`: strings unquoted, integers
// and booleans as written (Matcher's field=value). Other types and absent values: false. No
// allocation.
bool ScalarEquals(simdjson::dom::element root, const FieldPath& path, std::string_view value);

struct FrameInfo {
  enum class Kind { kData, kAppPong, kAck };
  Kind kind = Kind::kData;
  bool valid_json = false;
  std::optional<uint64_t> upstream_seq;  // seq_field present and a non-negative integer
  std::string topic;                     // "" when topic_field absent or not a string/number
  bool has_topic = false;
  std::string ack_id;                    // for kAck
};

struct InspectorOptions {
  std::string seq_field = "seq";
  std::string topic_field = "topic";
  std::string app_pong;
  std::string ack_match;
  std::string ack_id_field = "id";
};

class FrameInspector {
 public:
  static StatusOr<std::unique_ptr<FrameInspector>> Create(const InspectorOptions& options);
  ~FrameInspector();

  // Inspects a text frame. Never fails: a frame that is not JSON is data without fields.
  // Only JSON objects are parsed (Parse(text, false, ...) then Inspect(text, root)).
  FrameInfo Inspect(std::string_view text);

  // Inspect() in two steps, for a caller that reads the document too (FrameProtocol): Parse()
  // parses `text` when it is a JSON object (or, with `arrays`, a JSON array) with the
  // inspector's parser; *root stays valid until the next Parse() or Inspect(). False when the
  // text is not such JSON. Inspect(text, root) then matches and reads the fields in that
  // document (root nullptr: the text is not JSON, only an exact-text app_pong can match).
  bool Parse(std::string_view text, bool arrays, simdjson::dom::element* root);
  FrameInfo Inspect(std::string_view text, const simdjson::dom::element* root) const;

  // True when the inspector needs to look at frames at all (some field or matcher is set).
  bool active() const;

 private:
  FrameInspector();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Returns the value of `field` (a dotted path) in a JSON object text, as a string; used for the
// outbound ack id. std::nullopt when not a JSON object or the field is absent.
std::optional<std::string> ExtractStringField(std::string_view json, const std::string& pointer);

}  // namespace wsbridge
