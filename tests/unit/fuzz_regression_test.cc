// Inputs the fuzzers (fuzz/, `make fuzz`) found, kept as tests, and the in-memory configuration
// entry point the config fuzzer uses.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <zmq.hpp>

#include "bridge/config.h"
#include "bridge/endpoints/outbound.h"
#include "bridge/stats.h"
#include "testutil.h"
#include "wsbridge.pb.h"

namespace wsbridge {
namespace {

// fuzz_send_request, crash-83ef2e7a: a SendRequest whose id is not UTF-8 (proto3 strings must
// be) fails to parse, yet protobuf has already stored the id; the rejection echoed it, and the
// producer could not parse that SendReply (protobuf refuses non-UTF-8 in a string field), so
// it never learnt why it was rejected.
// Fixed: a request that did not parse is answered with an empty id.
TEST(FuzzRegression, SendRequestWithNonUtf8IdGetsAParseableRejection) {
  std::string id(300, 'i');
  id.replace(179, 4, "\x97\x96\x96\x91");
  const std::string body = std::string("\x0a\xac\x02", 3) + id + "\x12\x07long id";

  zmq::context_t ctx;
  Stats stats;
  OutboundOptions o;
  o.endpoint = "inproc://fuzz-regression-send";
  Outbound out(o, &ctx, &stats);
  ASSERT_OK(out.Bind());
  zmq::socket_t producer(ctx, zmq::socket_type::dealer);
  producer.set(zmq::sockopt::linger, 0);
  producer.set(zmq::sockopt::rcvtimeo, 5000);
  producer.connect(o.endpoint);
  ASSERT_TRUE(producer.send(zmq::buffer(body), zmq::send_flags::none));
  zmq::pollitem_t item{out.socket().handle(), 0, ZMQ_POLLIN, 0};
  ASSERT_EQ(zmq::poll(&item, 1, std::chrono::milliseconds(5000)), 1);

  Batch batch;
  out.ReadRequests(&batch, 1);
  EXPECT_TRUE(batch.outbound.empty());
  zmq::message_t reply;
  ASSERT_TRUE(producer.recv(reply));
  v1::SendReply r;
  ASSERT_TRUE(r.ParseFromArray(reply.data(), static_cast<int>(reply.size())))
      << "the producer cannot read its SendReply";
  EXPECT_EQ(r.status(), v1::REJECTED_INVALID);
  EXPECT_FALSE(r.error().empty());
}

TEST(LoadConfigFromString, FileTextThenSetValues) {
  auto c = LoadConfigFromString(
      "[storage]\ndurability = \"power\"\npath = \"/d/${NAME}.db\"\n",
      {"storage.durability=process", "upstream.headers.X-Id=abc"}, {{"NAME", "bridge"}});
  ASSERT_OK(c);
  EXPECT_EQ(c->storage.durability, "process");
  EXPECT_EQ(c->sources.at("storage.durability"), "flag");
  EXPECT_EQ(c->storage.path, "/d/bridge.db");
  EXPECT_EQ(c->sources.at("storage.path"), "file");
  EXPECT_EQ(c->upstream.headers.at("X-Id"), "abc");

  auto bad = LoadConfigFromString("[storage]\ndurability = \"disk\"\n", {}, {});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("storage.durability"), std::string::npos);
  auto syntax = LoadConfigFromString("[storage\n", {}, {});
  ASSERT_FALSE(syntax.ok());
  EXPECT_NE(syntax.status().message().find("<config> line 1"), std::string::npos)
      << syntax.status().message();
}

}  // namespace
}  // namespace wsbridge
