// The bridge's reading of a server's permessage-deflate answer (bridge/link/permessage_deflate.h):
// what it honours, and the one-line reason for what it refuses.
#include "bridge/link/permessage_deflate.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace wsbridge {
namespace {

std::string Accepted(const std::string& header) {
  auto r = CheckDeflateResponse(header, true);
  if (!r.ok()) return "error: " + r.status().message();
  return *r ? (*r)->ToString() : "declined";
}

TEST(PermessageDeflate, OfferAsksForTheClientWindowOnly) {
  EXPECT_STREQ(DeflateOffer(), "permessage-deflate; client_max_window_bits");
}

TEST(PermessageDeflate, WhatTheBridgeHonours) {
  EXPECT_EQ(Accepted(""), "declined");
  EXPECT_EQ(Accepted("  "), "declined");
  EXPECT_EQ(Accepted("permessage-deflate"), "defaults");
  // Node ws with serverMaxWindowBits 10 and serverNoContextTakeover.
  EXPECT_EQ(Accepted("permessage-deflate; server_no_context_takeover; server_max_window_bits=10"),
            "server_max_window_bits=10, server_no_context_takeover");
  // Python websockets' default answer to our offer.
  EXPECT_EQ(Accepted("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
            "server_max_window_bits=12, client_max_window_bits=12");
  EXPECT_EQ(Accepted("Permessage-Deflate; Client_No_Context_Takeover; server_max_window_bits=\"8\""),
            "server_max_window_bits=8, client_no_context_takeover");
  EXPECT_EQ(Accepted("permessage-deflate;server_max_window_bits=15"), "defaults");
}

TEST(PermessageDeflate, WhatItRefusesAndWhy) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"permessage-deflate; server_max_window_bits=7",
       "permessage-deflate: server_max_window_bits=7 is outside 8..15"},
      {"permessage-deflate; server_max_window_bits=16",
       "permessage-deflate: server_max_window_bits=16 is outside 8..15"},
      {"permessage-deflate; server_max_window_bits",
       "permessage-deflate: server_max_window_bits= is outside 8..15"},
      {"permessage-deflate; client_max_window_bits=010",
       "permessage-deflate: client_max_window_bits=010 is outside 8..15"},
      {"permessage-deflate; foo=1",
       "permessage-deflate: unknown parameter \"foo\" in the server's response"},
      {"permessage-deflate; server_no_context_takeover=1",
       "permessage-deflate: server_no_context_takeover takes no value (got \"1\")"},
      {"permessage-deflate; server_max_window_bits=10; server_max_window_bits=12",
       "permessage-deflate: parameter server_max_window_bits given twice"},
      {"permessage-deflate, permessage-deflate",
       "permessage-deflate: the server accepted it twice"},
      {"x-webkit-deflate-frame",
       "permessage-deflate: the server accepted extension \"x-webkit-deflate-frame\", which was "
       "not offered"},
      {"permessage-deflate, x-foo",
       "permessage-deflate: the server accepted extension \"x-foo\", which was not offered"},
      {"; server_max_window_bits=10",
       "permessage-deflate: the server's Sec-WebSocket-Extensions is malformed"},
  };
  for (const auto& [header, want] : cases) {
    EXPECT_EQ(Accepted(header), "error: " + want) << header;
  }
}

TEST(PermessageDeflate, NotOfferedMeansNothingMayBeAccepted) {
  auto none = CheckDeflateResponse("", false);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto r = CheckDeflateResponse("permessage-deflate", false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "permessage-deflate: the server enabled it, but it was not offered "
            "(upstream.permessage_deflate = false)");
}

}  // namespace
}  // namespace wsbridge
