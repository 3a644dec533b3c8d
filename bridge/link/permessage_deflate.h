// permessage-deflate (RFC 7692) for the upstream link, strict where websocketpp 0.8.2's own
// extension is not (SPEC §9 upstream.permessage_deflate):
//
// - The offer is "permessage-deflate; client_max_window_bits" (any server window, 8..15, is
//   read by a 15-bit inflater; the bridge never compresses what it sends, RFC 7692 §6 lets a
//   sender choose per message, so client_no_context_takeover and client_max_window_bits are
//   honoured by construction).
// - CheckDeflateResponse() reads the server's Sec-WebSocket-Extensions against that offer and
//   refuses what the bridge cannot honour (an extension or parameter not offered, a window
//   outside 8..15, a parameter twice, a value where none belongs). websocketpp terminates a
//   connection whose negotiation failed but calls the open handler anyway; the link calls this
//   in its open handler, before anything is sent or read, and fails the attempt with the reason.
// - Inflation (DeflateStream) keeps the window between messages unless the server said
//   server_no_context_takeover, survives a final deflate block inside a message, and is bounded
//   by upstream.max_message_bytes on the INFLATED size (websocketpp bounds the wire size only):
//   past it the connection closes with 1009.
//
// StrictPermessageDeflate is the `permessage_deflate_type` of the link's websocketpp configs
// (ws_config.h); the processor owns one per connection and calls it on the I/O thread only.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <websocketpp/common/system_error.hpp>
#include <websocketpp/http/constants.hpp>
#include <websocketpp/processors/base.hpp>

#include "bridge/protocol/inflate.h"
#include "common/status.h"

namespace wsbridge {

// What a server's response settled (RFC 7692 §7.1).
struct DeflateParams {
  bool server_no_context_takeover = false;
  bool client_no_context_takeover = false;
  int server_max_window_bits = 15;
  int client_max_window_bits = 15;

  // "server_max_window_bits=10, server_no_context_takeover", or "defaults".
  std::string ToString() const;
};

// The Sec-WebSocket-Extensions value the bridge offers.
const char* DeflateOffer();

// Reads the server's Sec-WebSocket-Extensions response (`header`, "" when absent) against the
// bridge's offer (`offered`: upstream.permessage_deflate). nullopt: no compression (the server
// declined, or nothing was offered and nothing accepted). An error names what cannot be
// honoured, e.g. "permessage-deflate: server_max_window_bits=7 is outside 8..15".
StatusOr<std::optional<DeflateParams>> CheckDeflateResponse(const std::string& header,
                                                           bool offered);

// The websocketpp extension type. Whether the handshake offers it is process-wide
// (SetOffered, from upstream.permessage_deflate at start-up): websocketpp builds the offer
// from a default-constructed extension with no way to pass it a setting.
class StrictPermessageDeflate {
 public:
  using err_str_pair = std::pair<websocketpp::lib::error_code, std::string>;

  static void SetOffered(bool offered) { offered_.store(offered); }
  static bool offered() { return offered_.load(); }

  bool is_implemented() const { return offered(); }
  bool is_enabled() const { return enabled_; }
  std::string generate_offer() const { return offered() ? DeflateOffer() : ""; }

  // The server's accepted parameters (already checked by CheckDeflateResponse in the link's
  // open handler: unreadable values here fall back to the defaults, never to an error, so that
  // websocketpp and the link never disagree about whether negotiation succeeded).
  err_str_pair negotiate(const websocketpp::http::attribute_list& attributes);
  websocketpp::lib::error_code init(bool /*is_server*/) { return {}; }

  // Never used: the link sends every message uncompressed (see above). An error, should a
  // compressed send ever be asked for.
  websocketpp::lib::error_code compress(const std::string&, std::string&);

  // The next bytes of a compressed message, appended to `out` with `out` bounded by
  // `max_bytes` (message_too_big past it: 1009), and the end of that message.
  websocketpp::lib::error_code decompress(const uint8_t* data, size_t len, std::string& out,
                                          size_t max_bytes);
  websocketpp::lib::error_code finish(std::string& out, size_t max_bytes);

 private:
  websocketpp::lib::error_code Map(InflateResult r);

  static std::atomic<bool> offered_;
  bool enabled_ = false;
  DeflateParams params_;
  std::unique_ptr<DeflateStream> stream_;  // created on negotiation
};

}  // namespace wsbridge
