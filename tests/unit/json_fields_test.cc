// Tests for FrameInspector: JSON field extraction and the pong/ack matchers.
#include "bridge/protocol/json_fields.h"

#include <gtest/gtest.h>

namespace wsbridge {
namespace {

std::unique_ptr<FrameInspector> Make(InspectorOptions o = {}) {
  auto fi = FrameInspector::Create(o);
  EXPECT_TRUE(fi.ok()) << fi.status().ToString();
  return std::move(fi).value();
}

TEST(JsonFields, TopLevelSeqAndTopic) {
  auto fi = Make();
  auto info = fi->Inspect(R"({"seq":42,"topic":"btc","data":{"p":1}})");
  EXPECT_TRUE(info.valid_json);
  EXPECT_EQ(info.kind, FrameInfo::Kind::kData);
  ASSERT_TRUE(info.upstream_seq);
  EXPECT_EQ(*info.upstream_seq, 42u);
  EXPECT_EQ(info.topic, "btc");
}

TEST(JsonFields, NestedDottedPaths) {
  InspectorOptions o;
  o.seq_field = "meta.sequence";
  o.topic_field = "meta.channel.name";
  auto fi = Make(o);
  auto info = fi->Inspect(R"({"meta":{"sequence":7,"channel":{"name":"eth"}},"x":1})");
  ASSERT_TRUE(info.upstream_seq);
  EXPECT_EQ(*info.upstream_seq, 7u);
  EXPECT_EQ(info.topic, "eth");
}

// A dotted path walks objects by exact key and arrays by decimal index, as the JSON pointer it
// stands for would: "a.1.b" is /a/1/b; "01" is not an index; a key may hold '/' or '~'.
TEST(JsonFields, PathsThroughArraysAndOddKeys) {
  InspectorOptions o;
  o.seq_field = "batch.1.seq";
  o.topic_field = "a/b.~c";
  auto fi = Make(o);
  auto info = fi->Inspect(R"({"batch":[{"seq":1},{"seq":2}],"a/b":{"~c":"t"}})");
  ASSERT_TRUE(info.upstream_seq);
  EXPECT_EQ(*info.upstream_seq, 2u);
  EXPECT_EQ(info.topic, "t");
  EXPECT_FALSE(fi->Inspect(R"({"batch":[{"seq":1}]})").upstream_seq);  // index past the end
  EXPECT_TRUE(fi->Inspect(R"({"batch":{"1":{"seq":3}}})").upstream_seq);  // a key "1"
  o.seq_field = "batch.01.seq";
  EXPECT_FALSE(Make(o)->Inspect(R"({"batch":[{"seq":1},{"seq":2}]})").upstream_seq);
  o.seq_field = "x..y";  // an empty key in the middle
  auto empty_key = Make(o)->Inspect(R"({"x":{"":{"y":9}}})");
  ASSERT_TRUE(empty_key.upstream_seq);
  EXPECT_EQ(*empty_key.upstream_seq, 9u);
}

TEST(JsonFields, MissingFieldsAreDataWithoutSeq) {
  auto fi = Make();
  auto info = fi->Inspect(R"({"data":1})");
  EXPECT_TRUE(info.valid_json);
  EXPECT_FALSE(info.upstream_seq);
  EXPECT_FALSE(info.has_topic);
  EXPECT_EQ(info.topic, "");
}

TEST(JsonFields, InvalidJsonIsStillData) {
  auto fi = Make();
  for (const char* text : {"not json", "{\"seq\":5,", "", "[1,2,3]", "{\"seq\":5}}"}) {
    auto info = fi->Inspect(text);
    EXPECT_EQ(info.kind, FrameInfo::Kind::kData) << text;
    EXPECT_FALSE(info.upstream_seq) << text;
  }
}

TEST(JsonFields, HugeAndNegativeNumbers) {
  auto fi = Make();
  auto max = fi->Inspect(R"({"seq":18446744073709551615})");
  ASSERT_TRUE(max.upstream_seq);
  EXPECT_EQ(*max.upstream_seq, UINT64_MAX);
  EXPECT_FALSE(fi->Inspect(R"({"seq":18446744073709551616})").upstream_seq);  // overflows uint64
  EXPECT_FALSE(fi->Inspect(R"({"seq":-1})").upstream_seq);
  EXPECT_FALSE(fi->Inspect(R"({"seq":1.5})").upstream_seq);
  EXPECT_FALSE(fi->Inspect(R"({"seq":1e400})").upstream_seq);
  auto str = fi->Inspect(R"({"seq":"123"})");
  ASSERT_TRUE(str.upstream_seq);
  EXPECT_EQ(*str.upstream_seq, 123u);
  EXPECT_FALSE(fi->Inspect(R"({"seq":"12a"})").upstream_seq);
}

TEST(JsonFields, NumericTopicIsText) {
  auto fi = Make();
  EXPECT_EQ(fi->Inspect(R"({"topic":17})").topic, "17");
}

TEST(JsonFields, AppPongFieldAndExactText) {
  InspectorOptions o;
  o.app_pong = "type=pong";
  auto fi = Make(o);
  EXPECT_EQ(fi->Inspect(R"({"type":"pong"})").kind, FrameInfo::Kind::kAppPong);
  EXPECT_EQ(fi->Inspect(R"({"type":"pongs"})").kind, FrameInfo::Kind::kData);
  o.app_pong = "pong";
  fi = Make(o);
  EXPECT_EQ(fi->Inspect("pong").kind, FrameInfo::Kind::kAppPong);
  EXPECT_EQ(fi->Inspect("pong ").kind, FrameInfo::Kind::kData);
}

TEST(JsonFields, AckMatchExtractsId) {
  InspectorOptions o;
  o.ack_match = "type=ack";
  auto fi = Make(o);
  auto info = fi->Inspect(R"({"type":"ack","id":"m-1"})");
  EXPECT_EQ(info.kind, FrameInfo::Kind::kAck);
  EXPECT_EQ(info.ack_id, "m-1");
  // An ack without an id is not an ack we can use: delivered as data.
  EXPECT_EQ(fi->Inspect(R"({"type":"ack"})").kind, FrameInfo::Kind::kData);
}

TEST(JsonFields, AckMatchRequiresFieldEqualsValue) {
  InspectorOptions o;
  o.ack_match = "ack";
  auto fi = FrameInspector::Create(o);
  ASSERT_FALSE(fi.ok());
  EXPECT_NE(fi.status().message().find("protocol.ack_match"), std::string::npos);
}

TEST(JsonFields, ExtractStringField) {
  EXPECT_EQ(ExtractStringField(R"({"id":"a1","x":2})", "/id").value_or(""), "a1");
  EXPECT_FALSE(ExtractStringField("plain", "/id"));
  EXPECT_FALSE(ExtractStringField(R"({"x":2})", "/id"));
}

TEST(JsonFields, DottedToPointerEscapes) {
  EXPECT_EQ(DottedToPointer("a.b"), "/a/b");
  EXPECT_EQ(DottedToPointer("a/b~"), "/a~1b~0");
  EXPECT_EQ(DottedToPointer(""), "");
}

}  // namespace
}  // namespace wsbridge
