// One JSON line per Envelope: the output format shared by wsbridge-tail and wsbridge-replay.
//
//   {"seq":1,"upstream_seq":1,"topic":"t","payload":"...","encoding":"utf8",
//    "binary":false,"received_at_unix_ns":...,"epoch":"0123456789abcdef"}
//
// The payload is printed as text when it is valid UTF-8, else base64 ("encoding":"base64").
// The epoch is 16 hex digits (a string: it does not fit in a JSON number exactly).
// Pure functions; any thread. Needs simdjson (UTF-8 validation) and the generated wsbridge.pb.h.
#pragma once

#include <simdjson.h>

#include <cstdio>
#include <string>

#include "common/json_text.h"
#include "wsbridge.pb.h"

namespace wsbridge {

// Appends the line, newline included, to *out.
inline void AppendEnvelopeJson(std::string* out, const v1::Envelope& e) {
  *out += "{\"seq\":";
  *out += std::to_string(e.seq());
  *out += ",\"upstream_seq\":";
  *out += std::to_string(e.upstream_seq());
  *out += ",\"topic\":";
  AppendJsonString(out, e.topic());
  *out += ",\"payload\":";
  if (simdjson::validate_utf8(e.payload().data(), e.payload().size())) {
    AppendJsonString(out, e.payload());
    *out += ",\"encoding\":\"utf8\"";
  } else {
    *out += '"';
    *out += Base64(e.payload());
    *out += "\",\"encoding\":\"base64\"";
  }
  char epoch[24];
  std::snprintf(epoch, sizeof epoch, "%016llx", static_cast<unsigned long long>(e.epoch()));
  *out += e.binary() ? ",\"binary\":true" : ",\"binary\":false";
  *out += ",\"received_at_unix_ns\":";
  *out += std::to_string(e.received_at_unix_ns());
  *out += ",\"epoch\":\"";
  *out += epoch;
  *out += "\"}\n";
}

inline std::string EnvelopeJsonLine(const v1::Envelope& e) {
  std::string line;
  AppendEnvelopeJson(&line, e);
  return line;
}

// The epoch as printed in the JSON lines and in messages to the user.
inline std::string EpochHex(uint64_t epoch) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(epoch));
  return buf;
}

}  // namespace wsbridge
