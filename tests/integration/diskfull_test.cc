// Disk full for real (G1, G4): the daemon's database on a 2 MiB tmpfs that the test mounts, fed
// by wsbridge-upstream with 8 KiB messages as fast as the bridge reads them. The disk fills
// within a few hundred messages; then:
//   - commits fail, the daemon says so ("storage: commit failed ... disk is full"), keeps
//     running, publishes nothing it could not journal, stops reading from the upstream
//     (wsbridge_reads_paused_total), answers /readyz 503 and a SendRequest REJECTED_STORAGE;
//   - the test gives space back (remount with 256 MiB): the daemon resumes by itself, and in the
//     end the journal holds every upstream seq exactly once, contiguous, and the subscriber
//     received exactly the journal, in order, byte for byte.
//
// Mounting needs root (CAP_SYS_ADMIN). Without it the test is skipped and says why: the daemon
// has no switch to bound its own database, and the in-process equivalent (SQLite refusing pages
// with SQLITE_FULL) is covered by tests/unit/store_fault_test.cc and store_test.cc.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <regex>

#include "integration/harness.h"
#include "storage/store.h"

namespace wsbridge::testing {
namespace {

using namespace std::chrono_literals;

constexpr int kCount = 6000;            // messages the upstream produces
constexpr int kPayloadBytes = 8 << 10;  // per message: the inbound queue's bound (the reader's
                                        // pause point, a few MiB) is reached long before kCount

// The value of a Prometheus sample without labels, or -1.
double Metric(const std::string& metrics, const std::string& name) {
  std::regex rx("(^|\n)" + name + " ([0-9.e+-]+)");
  std::smatch m;
  return std::regex_search(metrics, m, rx) ? std::stod(m[2]) : -1;
}

struct Journal {
  Cursor cursor;
  std::vector<JournalRow> rows;
};

// The cursor and every row, read from one Store; nullopt when either cannot be read.
std::optional<Journal> ReadJournal(const std::string& db) {
  auto s = OpenStoreReadOnly(db);
  if (!s.ok()) return std::nullopt;
  Journal j;
  j.cursor = (*s)->cursor();
  if (!(*s)->ReadJournal(1, 0, "", 100000000, &j.rows).ok()) return std::nullopt;
  return j;
}

// Sends one SendRequest on the send endpoint and returns the reply (nullopt: none in time).
std::optional<v1::SendReply> Send(zmq::context_t& ctx, const std::string& endpoint,
                                  const std::string& id, std::chrono::milliseconds timeout) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, static_cast<int>(timeout.count()));
  s.connect(endpoint);
  v1::SendRequest req;
  req.set_id(id);
  req.set_payload("{\"id\":\"" + id + "\"}");
  std::string bytes = req.SerializeAsString();
  s.send(zmq::buffer(bytes), zmq::send_flags::none);
  zmq::message_t reply;
  if (!s.recv(reply)) return std::nullopt;
  v1::SendReply r;
  if (!r.ParseFromArray(reply.data(), static_cast<int>(reply.size()))) return std::nullopt;
  return r;
}

TEST(DiskFull, DaemonPausesOnFullDiskAndResumesWithNothingLostOrDuplicated) {
  TempDir dir;
  TmpfsMount tmpfs(dir.File("mnt"));
  if (geteuid() != 0) {
    GTEST_SKIP() << "disk-full test needs root to mount a tmpfs (running as uid " << geteuid()
                 << "); the Store's SQLITE_FULL handling is covered in store_fault_test";
  }
  if (std::string why = tmpfs.Mount("2m"); !why.empty()) {
    GTEST_SKIP() << "disk-full test cannot mount a tmpfs (" << why
                 << "; a container without CAP_SYS_ADMIN?); the Store's SQLITE_FULL handling is "
                    "covered in store_fault_test";
  }
  std::printf("disk-full method: tmpfs of 2 MiB mounted at %s, then remounted with 256 MiB\n",
              dir.File("mnt").c_str());
  const std::string db = dir.File("mnt/bridge.db");

  int port = FreePort();
  const int http = FreePort();
  const std::string send_ep = "tcp://127.0.0.1:" + std::to_string(FreePort());
  BridgeEndpoints ep;
  Child bridge = StartBridge(dir.path(), "ws://127.0.0.1:" + std::to_string(port) + "/feed", db,
                             {"--set=http.listen=127.0.0.1:" + std::to_string(http),
                              "--set=zmq.send=" + send_ep,
                              // the upstream's acks of our sends are consumed, not journaled
                              "--set=protocol.ack_match=type=ack"},
                             &ep);
  ASSERT_FALSE(ep.pub.empty()) << bridge.Stderr();
  zmq::context_t ctx;
  Subscriber sub(ctx, ep.pub);
  ASSERT_TRUE(bridge.WaitForOutput("subscription to topic prefix", "err")) << bridge.Stderr();
  Child upstream = StartUpstream(
      dir.path(),
      {"--count=" + std::to_string(kCount), "--rate=0", "--history=1000000",
       "--payload-bytes=" + std::to_string(kPayloadBytes), "--quiet"},
      &port);
  ASSERT_NE(port, 0) << upstream.Stderr();

  // What the subscriber got, checked against the journal as it goes (G1).
  std::map<uint64_t, std::string> published;
  uint64_t next_seq = 1;
  auto drain = [&](std::chrono::milliseconds wait) {
    while (auto m = sub.Next(wait)) {
      EXPECT_EQ(m->second.seq(), next_seq) << "published out of order or with a gap";
      next_seq = m->second.seq() + 1;
      published[m->second.seq()] = m->second.payload();
      wait = 0ms;
    }
  };
  auto expect_published_were_journaled = [&](const Journal& j) {
    for (const auto& [seq, payload] : published) {
      ASSERT_LE(seq, j.rows.size()) << "seq " << seq << " was published but is not journaled";
      ASSERT_EQ(j.rows[seq - 1].seq, seq);
      ASSERT_EQ(j.rows[seq - 1].msg.payload, payload) << "seq " << seq;
    }
  };

  // 1. The disk fills: commits fail, the daemon says so and keeps running.
  auto failed = bridge.WaitForOutput("storage: commit failed[^\n]*", "err", 120s);
  ASSERT_TRUE(failed) << bridge.Stderr();
  EXPECT_NE(failed->find("disk is full"), std::string::npos) << *failed;
  std::printf("daemon: %s (free on the tmpfs: %llu bytes)\n", failed->c_str(),
              static_cast<unsigned long long>(tmpfs.FreeBytes()));

  // 2. It stops reading from the upstream (the inbound queue reaches its bound and the reader
  //    pauses), is not ready, and rejects a send with the storage error.
  std::string metrics;
  EXPECT_TRUE(WaitFor(
      [&] {
        drain(0ms);
        metrics = HttpGet(http, "/metrics");
        return Metric(metrics, "wsbridge_reads_paused_total") >= 1;
      },
      120s))
      << "the reader never paused\n" << metrics;
  EXPECT_EQ(Metric(metrics, "wsbridge_storage_ok"), 0) << metrics;
  std::string ready = HttpGet(http, "/readyz");
  EXPECT_EQ(ready.substr(0, 3), "503") << ready;
  EXPECT_NE(ready.find("storage"), std::string::npos) << ready;
  auto reply = Send(ctx, send_ep, "during-full", 30s);
  ASSERT_TRUE(reply) << "no SendReply while the disk is full\n" << bridge.Stderr();
  EXPECT_EQ(reply->status(), v1::REJECTED_STORAGE) << reply->DebugString();
  EXPECT_NE(reply->error().find("disk is full"), std::string::npos) << reply->error();

  // While full the journal does not move, and everything published is in it.
  auto before = ReadJournal(db);
  ASSERT_TRUE(before) << "cannot read the journal on the full disk";
  metrics = HttpGet(http, "/metrics");
  const double in_before = Metric(metrics, "wsbridge_messages_in_total");
  const double connects_before = Metric(metrics, "wsbridge_upstream_connects_total");
  std::this_thread::sleep_for(2s);  // observing that nothing happens takes some time
  drain(0ms);
  auto still = ReadJournal(db);
  ASSERT_TRUE(still);
  EXPECT_EQ(still->cursor.last_seq, before->cursor.last_seq);
  // Paused: no frame read, except the one that pauses a new connection again should the
  // heartbeat have replaced the paused one meanwhile (its pongs are not read either).
  metrics = HttpGet(http, "/metrics");
  EXPECT_LE(Metric(metrics, "wsbridge_messages_in_total") - in_before,
            Metric(metrics, "wsbridge_upstream_connects_total") - connects_before)
      << "the daemon went on reading from the upstream while its disk was full\n" << metrics;
  expect_published_were_journaled(*still);
  EXPECT_EQ(published.size(), still->rows.size()) << "journaled but not published while full";
  EXPECT_FALSE(bridge.Exited()) << bridge.Stderr();
  std::printf("while full: %zu messages journaled and published, %.0f received, reader paused\n",
              still->rows.size(), in_before);

  // 3. Space returns: the daemon resumes by itself and takes in the rest.
  ASSERT_TRUE(tmpfs.Resize("256m")) << std::strerror(errno);
  ASSERT_TRUE(bridge.WaitForOutput("storage: commits work again", "err", 60s)) << bridge.Stderr();
  std::optional<Cursor> c;
  ASSERT_TRUE(WaitFor(
      [&] {
        drain(0ms);
        c = ReadCursor(db);
        return c && c->last_upstream_seq == static_cast<uint64_t>(kCount);
      },
      300s))
      << "journal stopped at upstream seq " << (c ? c->last_upstream_seq : 0) << "\n"
      << bridge.Stderr();
  std::optional<Journal> j = ReadJournal(db);
  ASSERT_TRUE(j);
  reply = Send(ctx, send_ep, "after-full", 30s);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->status(), v1::ACCEPTED) << reply->DebugString();

  // Every upstream seq exactly once, contiguous; the subscriber got exactly the journal.
  ASSERT_EQ(j->rows.size(), static_cast<size_t>(kCount));
  for (size_t i = 0; i < j->rows.size(); ++i) {
    ASSERT_EQ(j->rows[i].seq, i + 1);
    ASSERT_EQ(j->rows[i].msg.upstream_seq, i + 1) << "journal row " << i + 1;
  }
  ASSERT_TRUE(WaitFor([&] {
    drain(100ms);
    return published.size() >= static_cast<size_t>(kCount);
  }, 60s)) << "published " << published.size();
  expect_published_were_journaled(*j);
  EXPECT_EQ(published.size(), static_cast<size_t>(kCount));
  std::printf("after space returned: journal = upstream seqs 1..%d, each once; subscriber got "
              "all %zu in order\n", kCount, published.size());

  EXPECT_EQ(bridge.Kill(SIGTERM), 0) << bridge.Stderr();
}

}  // namespace
}  // namespace wsbridge::testing
