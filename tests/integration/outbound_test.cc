// Outbound path with real processes: producers (DEALER/REQ) -> wsbridge send endpoint -> SQLite
// outbox -> wsbridge-upstream, whose --log-received file is what arrived. (G3, G4, SPEC §5)
//
//   ConcurrentProducersAcrossTwoKills  10 000 messages, 4 pipelining DEALERs, acks on, the bridge
//                                      SIGKILLed twice and restarted on the same database
//   DuplicateAfterRestart              an id accepted before a restart answers DUPLICATE after it
//   FullOutboxRejectsAndLosesNothing   storage.outbox_max_messages=50 with no upstream
//   InvalidRequestsAreAnsweredAndEndpointKeepsServing  garbage, empty payload, REQ and DEALER
//   StorageFailureOnFullDisk           the database on a tiny tmpfs (root only, else skipped)
//   WithoutAcksInOrderAndDrained       --no-ack upstream, ack_match empty
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "integration/harness.h"
#include "storage/store.h"

namespace wsbridge::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string Url(int port) { return "ws://127.0.0.1:" + std::to_string(port) + "/feed"; }

const std::string kAcks = "--set=protocol.ack_match=type=ack";

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

// The "id" of a logged payload {"id":"...",...}; "" when none.
std::string IdOf(const std::string& payload) {
  static const std::regex rx(R"re("id":"([^"]*)")re");
  std::smatch m;
  return std::regex_search(payload, m, rx) ? m[1].str() : "";
}

// The ids in the upstream's --log-received file, in arrival order.
std::vector<std::string> ReceivedIds(const std::string& log) {
  std::vector<std::string> ids;
  for (const auto& line : Lines(ReadFileOrEmpty(log))) ids.push_back(IdOf(line));
  return ids;
}

// The reference upstream as these tests use it: it produces (almost) nothing and logs every
// message it receives to `log`; `extra` flags are added (e.g. "--no-ack").
Child StartReceivingUpstream(const std::string& dir, const std::string& log, int* port,
                             std::vector<std::string> extra = {}) {
  std::vector<std::string> flags = {"--count=1", "--log-received=" + log};
  flags.insert(flags.end(), extra.begin(), extra.end());
  return StartUpstream(dir, flags, port);
}

std::string Payload(const std::string& id, const std::string& extra = "") {
  return "{\"id\":\"" + id + "\",\"data\":\"" + extra + "\"}";
}

std::string Request(const std::string& id, const std::string& payload) {
  v1::SendRequest req;
  req.set_id(id);
  req.set_payload(payload);
  return req.SerializeAsString();
}

// A producer socket (DEALER or REQ) with one request at a time helpers.
class Producer {
 public:
  Producer(zmq::context_t& ctx, const std::string& endpoint,
           zmq::socket_type type = zmq::socket_type::dealer)
      : sock_(ctx, type), req_(type == zmq::socket_type::req) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.connect(endpoint);
  }
  // Sends raw bytes as the one frame; returns the reply (nullopt: none within timeout).
  std::optional<v1::SendReply> Call(const std::string& bytes,
                                    std::chrono::milliseconds timeout = 20s) {
    sock_.send(zmq::buffer(bytes), zmq::send_flags::none);
    return Recv(timeout);
  }
  std::optional<v1::SendReply> Send(const std::string& id, const std::string& payload,
                                    std::chrono::milliseconds timeout = 20s) {
    return Call(Request(id, payload), timeout);
  }
  void Post(const std::string& bytes) { sock_.send(zmq::buffer(bytes), zmq::send_flags::none); }
  std::optional<v1::SendReply> Recv(std::chrono::milliseconds timeout = 20s) {
    sock_.set(zmq::sockopt::rcvtimeo, static_cast<int>(timeout.count()));
    zmq::message_t msg;
    if (!sock_.recv(msg)) return std::nullopt;
    v1::SendReply r;
    if (!r.ParseFromArray(msg.data(), static_cast<int>(msg.size()))) return std::nullopt;
    return r;
  }

 private:
  zmq::socket_t sock_;
  bool req_;
};

// ------------------------------------------------------------------------------------------------
// 10 000 messages from 4 concurrent pipelining DEALER producers, acks on, two SIGKILLs.

struct ProducerResult {
  std::map<std::string, uint64_t> seq_of;  // id -> outbox_seq (ACCEPTED, or DUPLICATE's original)
  std::map<std::string, int> status_of;    // id -> first decisive status
  int accepted = 0, duplicate = 0, retries = 0, other = 0;
  std::string failure;
};

void RunProducer(zmq::context_t& ctx, const std::string& endpoint, int k, int count, size_t window,
                 std::atomic<int>* accepted_total, std::atomic<bool>* abort, ProducerResult* out) {
  zmq::socket_t sock(ctx, zmq::socket_type::dealer);
  sock.set(zmq::sockopt::linger, 0);
  sock.set(zmq::sockopt::sndhwm, 0);
  sock.set(zmq::sockopt::rcvtimeo, 50);
  sock.connect(endpoint);
  auto id_of = [&](int n) { return "p" + std::to_string(k) + "-" + std::to_string(n); };
  auto send = [&](int n) {
    std::string id = id_of(n);
    std::string bytes = Request(id, Payload(id, std::string(64, 'x')));
    (void)sock.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
  };
  std::map<std::string, int> outstanding;  // id -> n, sent but not answered
  int next = 0;
  auto last_progress = Clock::now();
  const auto deadline = Clock::now() + 90s;
  while ((next < count || !outstanding.empty()) && !abort->load()) {
    if (Clock::now() > deadline) {
      out->failure = "producer " + std::to_string(k) + " timed out with " +
                     std::to_string(outstanding.size()) + " unanswered, next " +
                     std::to_string(next);
      return;
    }
    while (next < count && outstanding.size() < window) {
      outstanding[id_of(next)] = next;
      send(next++);
    }
    zmq::message_t msg;
    if (sock.recv(msg)) {
      v1::SendReply r;
      if (!r.ParseFromArray(msg.data(), static_cast<int>(msg.size()))) {
        out->failure = "unparsable reply";
        return;
      }
      last_progress = Clock::now();
      if (r.status() == v1::ACCEPTED || r.status() == v1::DUPLICATE) {
        if (r.status() == v1::ACCEPTED) {
          ++out->accepted;
          accepted_total->fetch_add(1);
        } else {
          ++out->duplicate;
        }
        if (!out->seq_of.count(r.id())) {
          out->seq_of[r.id()] = r.outbox_seq();
          out->status_of[r.id()] = r.status();
        } else if (r.status() == v1::ACCEPTED) {
          out->failure = "id " + r.id() + " ACCEPTED twice (or after DUPLICATE)";
          return;
        } else if (out->seq_of[r.id()] != r.outbox_seq()) {
          out->failure = "DUPLICATE of " + r.id() + " names another outbox_seq";
          return;
        }
        outstanding.erase(r.id());
      } else {
        ++out->other;
        out->failure = "unexpected reply " + r.ShortDebugString();
        return;
      }
      continue;
    }
    // No reply for a while (the bridge was killed): send every unanswered request again with
    // the same id, in order. A retry of a committed one answers DUPLICATE.
    if (!outstanding.empty() && Clock::now() - last_progress > 700ms) {
      std::vector<std::pair<int, std::string>> again;
      for (const auto& [id, n] : outstanding) again.emplace_back(n, id);
      std::sort(again.begin(), again.end());
      for (const auto& a : again) send(a.first);
      out->retries += static_cast<int>(again.size());
      last_progress = Clock::now();
    }
  }
}

TEST(Outbound, ConcurrentProducersAcrossTwoKills) {
  TempDir dir;
  const std::string db = dir.File("b.db");
  const std::string log = dir.File("received.log");
  int port = 0;
  Child upstream = StartReceivingUpstream(dir.path(), log, &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  // A fixed send port, so that the producers' DEALERs reconnect to the restarted bridge.
  const std::string send_ep = "tcp://127.0.0.1:" + std::to_string(FreePort());
  const std::vector<std::string> flags = {kAcks, "--set=zmq.send=" + send_ep,
                                          "--set=log.level=info"};
  std::string ep;
  Child bridge = StartSendBridge(dir.path(), Url(port), db, flags, &ep);
  ASSERT_EQ(ep, send_ep) << bridge.Stderr();

  constexpr int kProducers = 4, kPerProducer = 2500;
  zmq::context_t ctx;
  std::atomic<int> accepted{0};
  std::atomic<bool> abort{false};
  std::vector<ProducerResult> results(kProducers);
  std::vector<std::thread> threads;
  for (int k = 0; k < kProducers; ++k) {
    threads.emplace_back(RunProducer, std::ref(ctx), send_ep, k, kPerProducer, 64, &accepted,
                         &abort, &results[k]);
  }
  auto join = [&] {
    abort = true;
    for (auto& t : threads)
      if (t.joinable()) t.join();
  };
  // Two kills mid-stream, each followed by a restart on the same database.
  for (int target : {3000, 6500}) {
    if (!WaitFor([&] { return accepted.load() >= target; }, 60s)) {
      join();
      FAIL() << "only " << accepted.load() << " accepted\n" << bridge.Stderr();
    }
    bridge.Kill(SIGKILL);
    std::printf("SIGKILL at %d accepted\n", accepted.load());
    bridge = StartSendBridge(dir.path(), Url(port), db, flags, &ep);
    if (ep != send_ep) {
      join();
      FAIL() << "bridge did not restart\n" << bridge.Stderr();
    }
  }
  for (auto& t : threads) t.join();

  std::map<std::string, int> producer_of;
  int acc = 0, dup = 0, retries = 0;
  for (int k = 0; k < kProducers; ++k) {
    ASSERT_EQ(results[k].failure, "") << bridge.Stderr();
    ASSERT_EQ(results[k].seq_of.size(), static_cast<size_t>(kPerProducer));
    for (const auto& [id, seq] : results[k].seq_of) {
      ASSERT_NE(seq, 0u) << id;
      producer_of[id] = k;
    }
    acc += results[k].accepted;
    dup += results[k].duplicate;
    retries += results[k].retries;
  }
  // (An id may have only a DUPLICATE reply: its ACCEPTED reply was lost with the killed bridge.)
  EXPECT_LE(acc, kProducers * kPerProducer);

  // Every accepted message reaches the upstream and is acked: the outbox empties.
  std::optional<uint64_t> depth;
  ASSERT_TRUE(WaitFor([&] {
    depth = OutboxDepth(db);
    return depth && *depth == 0;
  }, 60s)) << "outbox depth " << (depth ? *depth : 999999) << "\n" << bridge.Stderr();
  std::vector<std::string> got = ReceivedIds(log);
  std::set<std::string> seen;
  std::vector<std::vector<std::string>> per(kProducers);
  for (const auto& id : got) {
    ASSERT_TRUE(seen.insert(id).second) << "logged twice: " << id;  // the upstream logs once
    auto it = producer_of.find(id);
    ASSERT_NE(it, producer_of.end()) << "the upstream got an id nobody had accepted: " << id;
    per[it->second].push_back(id);
  }
  EXPECT_EQ(seen.size(), producer_of.size()) << "accepted but never delivered";
  // Acceptance order per producer: outbox_seq order (monotonic for the life of the file).
  for (int k = 0; k < kProducers; ++k) {
    std::vector<std::pair<uint64_t, std::string>> by_seq;
    for (const auto& [id, seq] : results[k].seq_of) by_seq.emplace_back(seq, id);
    std::sort(by_seq.begin(), by_seq.end());
    std::vector<std::string> expected;
    for (const auto& p : by_seq) expected.push_back(p.second);
    ASSERT_EQ(per[k].size(), expected.size()) << "producer " << k;
    for (size_t i = 0; i < expected.size(); ++i) {
      ASSERT_EQ(per[k][i], expected[i]) << "producer " << k << ": arrival #" << i
                                        << " is not in acceptance order";
    }
  }
  std::printf("%d accepted, %d duplicate replies to %d retries, %zu delivered in order\n", acc,
              dup, retries, got.size());
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// ------------------------------------------------------------------------------------------------

TEST(Outbound, DuplicateAfterRestart) {
  TempDir dir;
  const std::string db = dir.File("b.db");
  const std::string log = dir.File("received.log");
  int port = FreePort();  // nobody listens yet: the first message stays in the outbox
  std::string ep;
  Child bridge = StartSendBridge(dir.path(), Url(port), db, {kAcks}, &ep);
  ASSERT_FALSE(ep.empty()) << bridge.Stderr();
  zmq::context_t ctx;
  {
    Producer p(ctx, ep);
    auto r = p.Send("", Payload("queued-1"));  // empty id: the payload's ack id is used
    ASSERT_TRUE(r) << bridge.Stderr();
    EXPECT_EQ(r->status(), v1::ACCEPTED) << r->ShortDebugString();
    EXPECT_EQ(r->id(), "queued-1");
  }
  bridge.Kill(SIGKILL);
  bridge = StartSendBridge(dir.path(), Url(port), db, {kAcks}, &ep);
  ASSERT_FALSE(ep.empty()) << bridge.Stderr();
  {
    Producer p(ctx, ep);
    auto r = p.Send("queued-1", Payload("queued-1"));
    ASSERT_TRUE(r) << bridge.Stderr();
    EXPECT_EQ(r->status(), v1::DUPLICATE) << "still in the outbox, after a SIGKILL";
    EXPECT_EQ(r->outbox_seq(), 1u);
  }
  // Delivered and acked (so deleted from the outbox), then a clean restart: still DUPLICATE.
  Child upstream = StartReceivingUpstream(dir.path(), log, &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  ASSERT_TRUE(WaitFor([&] { return OutboxDepth(db) == std::optional<uint64_t>(0); }))
      << bridge.Stderr();
  EXPECT_EQ(bridge.Kill(SIGTERM), 0);
  bridge = StartSendBridge(dir.path(), Url(port), db, {kAcks}, &ep);
  ASSERT_FALSE(ep.empty()) << bridge.Stderr();
  {
    Producer p(ctx, ep);
    auto r = p.Send("queued-1", Payload("queued-1"));
    ASSERT_TRUE(r) << bridge.Stderr();
    EXPECT_EQ(r->status(), v1::DUPLICATE) << "delivered, deleted, restarted";
    r = p.Send("queued-2", Payload("queued-2"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status(), v1::ACCEPTED);
    EXPECT_EQ(r->outbox_seq(), 2u);
  }
  ASSERT_TRUE(WaitFor([&] { return ReceivedIds(log).size() >= 2; })) << bridge.Stderr();
  EXPECT_EQ(ReceivedIds(log), (std::vector<std::string>{"queued-1", "queued-2"}));
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// ------------------------------------------------------------------------------------------------

TEST(Outbound, FullOutboxRejectsAndLosesNothing) {
  TempDir dir;
  const std::string db = dir.File("b.db");
  const std::string log = dir.File("received.log");
  int port = FreePort();  // the upstream is down: nothing drains
  std::string ep;
  Child bridge = StartSendBridge(dir.path(), Url(port), db,
                                 {kAcks, "--set=storage.outbox_max_messages=50"}, &ep);
  ASSERT_FALSE(ep.empty()) << bridge.Stderr();
  zmq::context_t ctx;
  Producer p(ctx, ep);
  // 80 pipelined requests: the first 50 fit, the other 30 are refused.
  for (int i = 0; i < 80; ++i) {
    std::string id = "f-" + std::to_string(i);
    p.Post(Request(id, Payload(id)));
  }
  std::vector<std::string> accepted;
  int full = 0;
  for (int i = 0; i < 80; ++i) {
    auto r = p.Recv();
    ASSERT_TRUE(r) << "reply " << i << " missing\n" << bridge.Stderr();
    EXPECT_EQ(r->id(), "f-" + std::to_string(i)) << "replies in request order";
    if (r->status() == v1::ACCEPTED) {
      accepted.push_back(r->id());
    } else {
      EXPECT_EQ(r->status(), v1::REJECTED_FULL) << r->ShortDebugString();
      EXPECT_NE(r->error().find("outbox full"), std::string::npos) << r->error();
      ++full;
    }
  }
  EXPECT_EQ(accepted.size(), 50u);
  EXPECT_EQ(full, 30);
  EXPECT_EQ(OutboxDepth(db), std::optional<uint64_t>(50));
  // A rejected id was not remembered: it is accepted once there is room.
  Child upstream = StartReceivingUpstream(dir.path(), log, &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  ASSERT_TRUE(WaitFor([&] { return OutboxDepth(db) == std::optional<uint64_t>(0); }))
      << bridge.Stderr();
  EXPECT_EQ(ReceivedIds(log), accepted) << "every accepted message, in order";
  auto r = p.Send("f-79", Payload("f-79"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status(), v1::ACCEPTED) << r->ShortDebugString();
  ASSERT_TRUE(WaitFor([&] { return ReceivedIds(log).size() == 51; })) << bridge.Stderr();
  EXPECT_EQ(ReceivedIds(log).back(), "f-79");
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// ------------------------------------------------------------------------------------------------

TEST(Outbound, InvalidRequestsAreAnsweredAndEndpointKeepsServing) {
  TempDir dir;
  const std::string db = dir.File("b.db");
  const std::string log = dir.File("received.log");
  int port = 0;
  Child upstream = StartReceivingUpstream(dir.path(), log, &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  std::string ep;
  Child bridge = StartSendBridge(dir.path(), Url(port), db, {kAcks}, &ep);
  ASSERT_FALSE(ep.empty()) << bridge.Stderr();
  zmq::context_t ctx;
  for (auto type : {zmq::socket_type::dealer, zmq::socket_type::req}) {
    const std::string tag = type == zmq::socket_type::req ? "req" : "dealer";
    Producer p(ctx, ep, type);
    // Not a protobuf at all ('n' = field 13 with wire type 6, which does not exist).
    auto r = p.Call(std::string("not a SendRequest \xff\xfe", 20));
    ASSERT_TRUE(r) << tag << "\n" << bridge.Stderr();
    EXPECT_EQ(r->status(), v1::REJECTED_INVALID) << tag;
    EXPECT_NE(r->error().find("not a SendRequest"), std::string::npos) << r->error();
    // A valid SendRequest without payload.
    r = p.Send(tag + "-empty", "");
    ASSERT_TRUE(r) << tag;
    EXPECT_EQ(r->status(), v1::REJECTED_INVALID) << tag;
    EXPECT_NE(r->error().find("payload is empty"), std::string::npos) << r->error();
    // With acks on, a payload without the ack id field cannot be acked: refused, with why.
    r = p.Send("", "{\"no\":\"id\"}");
    ASSERT_TRUE(r) << tag;
    EXPECT_EQ(r->status(), v1::REJECTED_INVALID) << tag;
    EXPECT_NE(r->error().find("id"), std::string::npos) << r->error();
    // Zero bytes: an empty SendRequest, i.e. no payload.
    r = p.Call("");
    ASSERT_TRUE(r) << tag;
    EXPECT_EQ(r->status(), v1::REJECTED_INVALID) << tag;
    // And the endpoint goes on serving.
    r = p.Send(tag + "-ok", Payload(tag + "-ok"));
    ASSERT_TRUE(r) << tag << "\n" << bridge.Stderr();
    EXPECT_EQ(r->status(), v1::ACCEPTED) << r->ShortDebugString();
    EXPECT_EQ(r->id(), tag + "-ok");
  }
  // An invalid request between valid pipelined ones does not overtake or disturb them.
  Producer p(ctx, ep);
  p.Post(Request("mix-1", Payload("mix-1")));
  p.Post("garbage \xff");
  p.Post(Request("mix-2", Payload("mix-2")));
  auto a = p.Recv(), b = p.Recv(), c = p.Recv();
  ASSERT_TRUE(a && b && c) << bridge.Stderr();
  EXPECT_EQ(a->status(), v1::ACCEPTED);
  EXPECT_EQ(b->status(), v1::REJECTED_INVALID);
  EXPECT_EQ(c->status(), v1::ACCEPTED);
  EXPECT_EQ(c->id(), "mix-2");
  ASSERT_TRUE(WaitFor([&] { return ReceivedIds(log).size() >= 4; })) << bridge.Stderr();
  EXPECT_EQ(ReceivedIds(log),
            (std::vector<std::string>{"dealer-ok", "req-ok", "mix-1", "mix-2"}));
  ASSERT_TRUE(WaitFor([&] { return OutboxDepth(db) == std::optional<uint64_t>(0); }));
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// ------------------------------------------------------------------------------------------------

TEST(Outbound, StorageFailureOnFullDisk) {
  TempDir dir;
  TmpfsMount tmpfs(dir.File("mnt"));
  if (geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs (uid " << geteuid() << ")";
  if (std::string why = tmpfs.Mount("1m"); !why.empty()) GTEST_SKIP() << why;
  const std::string db = dir.File("mnt/b.db");
  const std::string log = dir.File("received.log");
  int port = FreePort();  // the upstream is down while the disk fills
  std::string ep;
  Child bridge = StartSendBridge(dir.path(), Url(port), db, {kAcks}, &ep);
  ASSERT_FALSE(ep.empty()) << bridge.Stderr();
  zmq::context_t ctx;
  Producer p(ctx, ep);
  // 32 KiB messages until the 1 MiB disk is full.
  std::vector<std::string> accepted;
  std::optional<v1::SendReply> r;
  for (int i = 0; i < 200; ++i) {
    std::string id = "d-" + std::to_string(i);
    r = p.Send(id, Payload(id, std::string(32 << 10, 'x')));
    ASSERT_TRUE(r) << bridge.Stderr();
    if (r->status() != v1::ACCEPTED) break;
    accepted.push_back(id);
  }
  ASSERT_EQ(r->status(), v1::REJECTED_STORAGE) << r->ShortDebugString();
  EXPECT_NE(r->error().find("full"), std::string::npos) << r->error();
  std::printf("disk full after %zu accepted: %s\n", accepted.size(), r->error().c_str());
  ASSERT_FALSE(accepted.empty());
  // Still refused while full, with the error; the endpoint answers.
  r = p.Send("d-while-full", Payload("d-while-full", std::string(32 << 10, 'x')));
  ASSERT_TRUE(r) << bridge.Stderr();
  EXPECT_EQ(r->status(), v1::REJECTED_STORAGE) << r->ShortDebugString();
  // Space returns: accepted again, and everything accepted is delivered in order.
  ASSERT_TRUE(tmpfs.Resize("64m")) << std::strerror(errno);
  r = p.Send("d-after", Payload("d-after"));
  ASSERT_TRUE(r) << bridge.Stderr();
  EXPECT_EQ(r->status(), v1::ACCEPTED) << r->ShortDebugString();
  accepted.push_back("d-after");
  Child upstream = StartReceivingUpstream(dir.path(), log, &port);
  ASSERT_NE(port, 0) << upstream.Stderr();
  ASSERT_TRUE(WaitFor([&] { return OutboxDepth(db) == std::optional<uint64_t>(0); }))
      << bridge.Stderr();
  EXPECT_EQ(ReceivedIds(log), accepted);
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

// ------------------------------------------------------------------------------------------------

TEST(Outbound, WithoutAcksInOrderAndDrained) {
  TempDir dir;
  const std::string db = dir.File("b.db");
  const std::string log = dir.File("received.log");
  int port = 0;
  Child upstream = StartReceivingUpstream(dir.path(), log, &port, {"--no-ack"});
  ASSERT_NE(port, 0) << upstream.Stderr();
  std::string ep;
  Child bridge = StartSendBridge(dir.path(), Url(port), db, {}, &ep);
  ASSERT_FALSE(ep.empty()) << bridge.Stderr();
  zmq::context_t ctx;
  Producer p(ctx, ep);
  constexpr int kCount = 3000;
  // No id in the payload: the upstream logs every arrival, so a duplicate would show.
  std::vector<std::string> expected;
  int sent = 0, answered = 0;
  while (answered < kCount) {
    while (sent < kCount && sent - answered < 64) {
      std::string body = "{\"n\":" + std::to_string(sent) + "}";
      expected.push_back(body);
      p.Post(Request("", body));
      ++sent;
    }
    auto r = p.Recv();
    ASSERT_TRUE(r) << bridge.Stderr();
    ASSERT_EQ(r->status(), v1::ACCEPTED) << r->ShortDebugString();
    ASSERT_EQ(r->id().rfind("gen-", 0), 0u) << "generated id: " << r->id();
    ++answered;
  }
  ASSERT_TRUE(WaitFor([&] { return Lines(ReadFileOrEmpty(log)).size() >= kCount; }))
      << bridge.Stderr();
  ASSERT_TRUE(WaitFor([&] { return OutboxDepth(db) == std::optional<uint64_t>(0); }))
      << bridge.Stderr();
  EXPECT_EQ(Lines(ReadFileOrEmpty(log)), expected);
  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

}  // namespace
}  // namespace wsbridge::testing
