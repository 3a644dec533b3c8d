// libFuzzer target: the inbound frame path (bridge/protocol/json_fields.h).
//
// The input is an upstream text frame, inspected by several FrameInspectors whose options cover
// what the configuration allows: the defaults, nested dotted paths for seq/topic/ack id, the
// app_pong matcher as field=value and as exact text, the ack matcher. Its first line is also
// used as a matcher spec and as a dotted path for ExtractStringField on the rest.
// Besides the sanitizers, it checks what Inspect() promises: a frame is a pong or an ack only
// when that matcher is configured, fields come only from valid JSON objects, an ack has its id.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/protocol/json_fields.h"

namespace {

using wsbridge::FrameInfo;
using wsbridge::FrameInspector;
using wsbridge::InspectorOptions;

struct Case {
  InspectorOptions options;
  std::unique_ptr<FrameInspector> inspector;
};

std::vector<Case>* MakeCases() {
  auto* cases = new std::vector<Case>();
  auto add = [&](InspectorOptions o) {
    auto fi = FrameInspector::Create(o);
    if (!fi.ok()) std::abort();
    cases->push_back(Case{o, std::move(fi).value()});
  };
  add(InspectorOptions{});  // seq, topic, no matchers
  {
    InspectorOptions o;
    o.app_pong = "type=pong";
    o.ack_match = "type=ack";
    add(o);
  }
  {
    InspectorOptions o;  // nested paths everywhere
    o.seq_field = "meta.seq";
    o.topic_field = "meta.route.topic";
    o.app_pong = "meta.kind=pong";
    o.ack_match = "meta.kind=ack";
    o.ack_id_field = "meta.ref.id";
    add(o);
  }
  {
    InspectorOptions o;  // exact-text pong, numeric/bool matcher values, no seq/topic
    o.seq_field = "";
    o.topic_field = "";
    o.app_pong = "pong";
    o.ack_match = "ok=true";
    o.ack_id_field = "n";
    add(o);
  }
  {
    InspectorOptions o;  // path segments that need JSON-pointer escaping
    o.seq_field = "a~b.c/d";
    o.topic_field = "0";
    o.ack_match = "x.1=7";
    add(o);
  }
  return cases;
}

void Check(bool cond) {
  if (!cond) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::vector<Case>* cases = MakeCases();
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  for (Case& c : *cases) {
    FrameInfo info = c.inspector->Inspect(text);
    switch (info.kind) {
      case FrameInfo::Kind::kAppPong:
        Check(!c.options.app_pong.empty());
        break;
      case FrameInfo::Kind::kAck:
        Check(!c.options.ack_match.empty() && info.valid_json);
        break;
      case FrameInfo::Kind::kData:
        break;
    }
    if (!info.valid_json) Check(!info.upstream_seq && !info.has_topic);
    if (!info.has_topic) Check(info.topic.empty());
    if (c.options.seq_field.empty()) Check(!info.upstream_seq);
    // Inspecting the same frame again gives the same answer (the parser is reused).
    FrameInfo again = c.inspector->Inspect(text);
    Check(again.kind == info.kind && again.upstream_seq == info.upstream_seq &&
          again.topic == info.topic && again.ack_id == info.ack_id);
  }

  // First line: a matcher spec and a dotted path; the rest: a JSON text.
  const size_t nl = text.find('\n');
  const std::string head(text.substr(0, nl == std::string_view::npos ? text.size() : nl));
  const std::string_view rest = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
  for (bool exact : {false, true}) {
    auto m = wsbridge::Matcher::Parse(head, exact);
    if (m.ok() && m->is_exact_text()) Check(exact && m->value() == head);
  }
  const std::string pointer = wsbridge::DottedToPointer(head);
  Check(head.empty() == pointer.empty());
  (void)wsbridge::ExtractStringField(rest, pointer);
  (void)wsbridge::ExtractStringField(text, "/id");
  return 0;
}
