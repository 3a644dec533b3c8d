#include "bridge/link/permessage_deflate.h"

#include <cstdlib>
#include <set>
#include <vector>

#include "common/text.h"

namespace wsbridge {

std::atomic<bool> StrictPermessageDeflate::offered_{true};

namespace {

// Splits `s` at `sep` outside double quotes.
std::vector<std::string> SplitOutsideQuotes(const std::string& s, char sep) {
  std::vector<std::string> parts(1);
  bool quoted = false;
  for (char c : s) {
    if (c == '"') quoted = !quoted;
    if (c == sep && !quoted) {
      parts.emplace_back();
    } else {
      parts.back() += c;
    }
  }
  return parts;
}

// "10" or "\"10\"" -> 10 when within 8..15; 0 otherwise.
int WindowBits(std::string v) {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  if (v.empty() || v.size() > 2 || v.find_first_not_of("0123456789") != std::string::npos) return 0;
  int bits = std::atoi(v.c_str());
  return bits >= 8 && bits <= 15 ? bits : 0;
}

}  // namespace

std::string DeflateParams::ToString() const {
  std::string out;
  auto add = [&out](const std::string& s) { out += (out.empty() ? "" : ", ") + s; };
  if (server_max_window_bits != 15) add("server_max_window_bits=" + std::to_string(server_max_window_bits));
  if (server_no_context_takeover) add("server_no_context_takeover");
  if (client_max_window_bits != 15) add("client_max_window_bits=" + std::to_string(client_max_window_bits));
  if (client_no_context_takeover) add("client_no_context_takeover");
  return out.empty() ? "defaults" : out;
}

const char* DeflateOffer() { return "permessage-deflate; client_max_window_bits"; }

StatusOr<std::optional<DeflateParams>> CheckDeflateResponse(const std::string& header,
                                                           bool offered) {
  auto bad = [](const std::string& why) {
    return Status::InvalidArgument("permessage-deflate: " + why);
  };
  std::optional<DeflateParams> result;
  if (Trim(header).empty()) return result;
  for (const std::string& ext : SplitOutsideQuotes(header, ',')) {
    std::vector<std::string> params = SplitOutsideQuotes(ext, ';');
    const std::string name = Lower(Trim(params[0]));
    if (name.empty()) return bad("the server's Sec-WebSocket-Extensions is malformed");
    if (name != "permessage-deflate") {
      return bad("the server accepted extension \"" + name + "\", which was not offered");
    }
    if (!offered) {
      return bad("the server enabled it, but it was not offered (upstream.permessage_deflate = "
                 "false)");
    }
    if (result) return bad("the server accepted it twice");
    DeflateParams p;
    std::set<std::string> seen;
    for (size_t i = 1; i < params.size(); ++i) {
      const std::string param = Trim(params[i]);
      const size_t eq = param.find('=');
      const std::string key = Lower(Trim(param.substr(0, eq)));
      const bool has_value = eq != std::string::npos;
      const std::string value = has_value ? Trim(param.substr(eq + 1)) : "";
      if (!seen.insert(key).second) return bad("parameter " + key + " given twice");
      if (key == "server_no_context_takeover" || key == "client_no_context_takeover") {
        if (has_value) return bad(key + " takes no value (got \"" + value + "\")");
        (key[0] == 's' ? p.server_no_context_takeover : p.client_no_context_takeover) = true;
      } else if (key == "server_max_window_bits" || key == "client_max_window_bits") {
        int bits = has_value ? WindowBits(value) : 0;
        if (bits == 0) return bad(key + "=" + value + " is outside 8..15");
        (key[0] == 's' ? p.server_max_window_bits : p.client_max_window_bits) = bits;
      } else {
        return bad("unknown parameter \"" + key + "\" in the server's response");
      }
    }
    result = p;
  }
  return result;
}

StrictPermessageDeflate::err_str_pair StrictPermessageDeflate::negotiate(
    const websocketpp::http::attribute_list& attributes) {
  params_ = DeflateParams();
  params_.server_no_context_takeover = attributes.count("server_no_context_takeover") != 0;
  params_.client_no_context_takeover = attributes.count("client_no_context_takeover") != 0;
  stream_ = std::make_unique<DeflateStream>();
  enabled_ = true;
  return {};
}

websocketpp::lib::error_code StrictPermessageDeflate::compress(const std::string&, std::string&) {
  return websocketpp::processor::error::make_error_code(websocketpp::processor::error::general);
}

websocketpp::lib::error_code StrictPermessageDeflate::Map(InflateResult r) {
  namespace pe = websocketpp::processor::error;
  switch (r) {
    case InflateResult::kOk:
    case InflateResult::kNotCompressed:
      return {};
    case InflateResult::kTooBig:
      return pe::make_error_code(pe::message_too_big);
    case InflateResult::kCorrupt:
      break;
  }
  return pe::make_error_code(pe::invalid_payload);
}

websocketpp::lib::error_code StrictPermessageDeflate::decompress(const uint8_t* data, size_t len,
                                                                 std::string& out,
                                                                 size_t max_bytes) {
  std::string error;
  return Map(stream_->Append(data, len, max_bytes, &out, &error));
}

websocketpp::lib::error_code StrictPermessageDeflate::finish(std::string& out, size_t max_bytes) {
  std::string error;
  return Map(stream_->Finish(params_.server_no_context_takeover, max_bytes, &out, &error));
}

}  // namespace wsbridge
