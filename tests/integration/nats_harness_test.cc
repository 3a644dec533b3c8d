// Self-test of the NATS JetStream harness (nats_harness.h): real nats-server processes, one alone
// and three in a cluster; what is published comes back whole, in order, across SIGKILL and
// restarts of servers.
#include "integration/nats_harness.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace wsbridge::testing {
namespace {

// The i-th test message (1-based): a subject of three, bytes that are not text, the sink's
// headers.
struct TestMessage {
  std::string subject;
  std::string data;
  NatsHeaders headers;
};
TestMessage MakeMessage(const std::string& prefix, int i) {
  TestMessage m;
  m.subject = prefix + ".topic" + std::to_string(i % 3);
  m.data = "payload " + std::to_string(i) + std::string("\0\xff", 2);
  m.headers = {{"Nats-Msg-Id", "00000000000000aa-" + std::to_string(i)},
               {"Wsbridge-Seq", std::to_string(i)},
               {"Wsbridge-Topic", "topic/" + std::to_string(i % 3)}};
  return m;
}

// Publishes messages first..last (MakeMessage) through `client`, each retried until stored.
void PublishRange(NatsClient& client, const std::string& prefix, int first, int last) {
  for (int i = first; i <= last; ++i) {
    TestMessage m = MakeMessage(prefix, i);
    ASSERT_OK(client.PublishRetrying(m.subject, m.data, m.headers)) << "message " << i;
  }
}

// `got` is messages 1..count (MakeMessage) at stream seqs 1..count, each once, in order.
void ExpectMessages(const std::vector<StreamMessage>& got, const std::string& prefix, int count) {
  ASSERT_EQ(got.size(), static_cast<size_t>(count));
  for (int i = 1; i <= count; ++i) {
    const StreamMessage& sm = got[static_cast<size_t>(i - 1)];
    TestMessage want = MakeMessage(prefix, i);
    ASSERT_EQ(sm.seq, static_cast<uint64_t>(i));
    ASSERT_EQ(sm.subject, want.subject) << "seq " << i;
    ASSERT_EQ(sm.data, want.data) << "seq " << i;
    ASSERT_EQ(sm.headers, want.headers) << "seq " << i;
  }
}

TEST(NatsHarness, OneServerKeepsMessagesAcrossSigkill) {
  TempDir dir;
  NatsServerOptions options;
  options.auth.user = "bridge";
  options.auth.password = "s3cret";
  NatsServer server(dir.path(), options);
  ASSERT_OK(server.Start());
  EXPECT_FALSE(NatsClient::Connect(server.url()).ok()) << "a client without the password";

  ASSERT_OK(CreateStream(server.url(), "T", {"t.>"}, 1, -1, options.auth));
  {
    ASSERT_OK_AND_ASSIGN(NatsClient client, NatsClient::Connect(server.url(), options.auth));
    PublishRange(client, "t", 1, 1000);
    // The same Nats-Msg-Id again is a duplicate: acked with the first seq, not stored.
    TestMessage again = MakeMessage("t", 7);
    ASSERT_OK_AND_ASSIGN(uint64_t seq, client.Publish(again.subject, again.data, again.headers));
    EXPECT_EQ(seq, 7u);
  }
  ASSERT_OK_AND_ASSIGN(StreamState st, GetStreamState(server.url(), "T", options.auth));
  EXPECT_EQ(st.subjects, std::vector<std::string>{"t.>"});
  EXPECT_EQ(st.messages, 1000u);
  EXPECT_EQ(st.last_seq, 1000u);
  EXPECT_EQ(st.messages_by_subject.size(), 3u);
  ASSERT_OK_AND_ASSIGN(auto got, ReadStream(server.url(), "T", options.auth));
  ExpectMessages(got, "t", 1000);

  server.Kill(SIGKILL);
  ASSERT_OK(server.Restart());
  ASSERT_OK_AND_ASSIGN(got, ReadStream(server.url(), "T", options.auth));
  ExpectMessages(got, "t", 1000);

  ASSERT_OK(PurgeStream(server.url(), "T", options.auth));
  ASSERT_OK_AND_ASSIGN(st, GetStreamState(server.url(), "T", options.auth));
  EXPECT_EQ(st.messages, 0u);
  EXPECT_EQ(st.last_seq, 1000u);
}

TEST(NatsHarness, StoreLimitAndTokenAuth) {
  TempDir dir;
  NatsServerOptions options;
  options.auth.token = "t0ken";
  options.max_store_bytes = 1 << 20;
  NatsServer server(dir.path(), options);
  ASSERT_OK(server.Start());
  ASSERT_OK_AND_ASSIGN(NatsClient client, NatsClient::Connect(server.url(), options.auth));
  // A stream that is full refuses (discard new) rather than dropping old messages.
  StreamSpec spec;
  spec.name = "FULL";
  spec.subjects = {"full.>"};
  spec.max_bytes = 64 * 1024;
  spec.discard_new = true;
  ASSERT_OK(client.CreateStream(spec));
  const std::string kb(1024, 'x');
  int stored = 0;
  while (stored < 1000 && client.Publish("full.a", kb).ok()) ++stored;
  EXPECT_GT(stored, 10);
  EXPECT_LT(stored, 64);
  // Beyond the server's store limit, a stream cannot even be made that large.
  StreamSpec big;
  big.name = "BIG";
  big.subjects = {"big.>"};
  big.max_bytes = 4 << 20;
  EXPECT_FALSE(client.CreateStream(big).ok());
}

TEST(NatsHarness, ClusterKeepsEveryMessageOnceAcrossSigkillOfTheLeader) {
  TempDir dir;
  NatsCluster cluster(dir.path());
  ASSERT_OK(cluster.Start());
  ASSERT_OK(CreateStream(cluster.urls(), "C", {"c.>"}, NatsCluster::kSize));
  ASSERT_OK_AND_ASSIGN(StreamState st, GetStreamState(cluster.urls(), "C"));
  EXPECT_EQ(st.replicas, 3);
  {
    ASSERT_OK_AND_ASSIGN(NatsClient client, NatsClient::Connect(cluster.urls()));
    PublishRange(client, "c", 1, 200);
  }

  // Kill the stream's leader; the other two elect another and take more messages.
  const int leader = cluster.IndexOf(st.leader);
  ASSERT_GE(leader, 0) << "leader " << st.leader;
  cluster.Kill(leader, SIGKILL);
  {
    ASSERT_OK_AND_ASSIGN(NatsClient client, NatsClient::Connect(cluster.UrlsExcept(leader)));
    PublishRange(client, "c", 201, 400);
  }

  ASSERT_OK(cluster.Restart(leader));
  for (const std::string& url : cluster.url_list()) {
    ASSERT_OK_AND_ASSIGN(auto got, ReadStream(url, "C"));
    ExpectMessages(got, "c", 400);
  }
}

}  // namespace
}  // namespace wsbridge::testing
