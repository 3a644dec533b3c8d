// The JetStream sink's naming (SPEC §11): subjects from topics, message ids. What the sink does
// against a real nats-server is in tests/integration/jetstream_test.cc.
#include "bridge/sink/jetstream_sink.h"

#include <gtest/gtest.h>

namespace wsbridge {
namespace {

TEST(SinkSubjectTest, TopicBytesOutsideTheSafeSetBecomeUnderscores) {
  EXPECT_EQ(SinkSubject("wsbridge", "ticks"), "wsbridge.ticks");
  EXPECT_EQ(SinkSubject("feeds.eu", "BTC-USD_perp"), "feeds.eu.BTC-USD_perp");
  // '.', wildcards, blanks and non-ASCII would change the subject's meaning or break it.
  EXPECT_EQ(SinkSubject("wsbridge", "a.b"), "wsbridge.a_b");
  EXPECT_EQ(SinkSubject("wsbridge", "a*>"), "wsbridge.a__");
  EXPECT_EQ(SinkSubject("wsbridge", "a b\r\n"), "wsbridge.a_b__");
  EXPECT_EQ(SinkSubject("wsbridge", "\xc3\xa9t\xc3\xa9"), "wsbridge.__t__");
  EXPECT_EQ(SinkSubject("wsbridge", ""), "wsbridge._");
}

TEST(SinkMsgIdTest, EpochInSixteenHexDigitsThenSeq) {
  EXPECT_EQ(SinkMsgId(0x1a2b, 7), "0000000000001a2b-7");
  EXPECT_EQ(SinkMsgId(0xffffffffffffffffull, 18446744073709551615ull),
            "ffffffffffffffff-18446744073709551615");
}

}  // namespace
}  // namespace wsbridge
