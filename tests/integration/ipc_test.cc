// ipc endpoints with real processes and real OS users (SPEC §10, issue 18): the daemon's three
// endpoints as socket files in a directory of the test's, and clients run as `nobody` through
// setpriv(1), with or without a group of the socket files.
//
//   Mode0600OnlyTheOwnerReadsAndSends   another uid gets EACCES from connect(2), nothing from
//                                       wsbridge-tail, no reply from wsbridge-send; root gets both
//   Mode0660AndGroupLetTheGroupIn       zmq.ipc_group's members may, others may not
//   SecondDaemonOnTheSamePathsRefused   exits non-zero with one line naming the key; the first
//                                       keeps serving
//   WorldWritableDirectoryRefused       the daemon does not start
//   StaleSocketsOfAKilledDaemonReplaced the next start after SIGKILL serves on the same paths
//   RoleDirectoriesSplitReadersFromSenders
//                                       deploy/'s layout: PUB and replay in one setgid directory
//                                       of a readers' group, send in one of a senders' group,
//                                       zmq.ipc_group unset: each socket file takes its
//                                       directory's group, so readers cannot send nor senders read
//
// Needs root (to become nobody); skipped otherwise. The test's main thread only.
#include <grp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

#include "common/text.h"
#include "integration/harness.h"

namespace wsbridge::testing {
namespace {

using namespace std::chrono_literals;

std::string Url(int port) { return "ws://127.0.0.1:" + std::to_string(port) + "/feed"; }

// Connects a plain unix stream socket to `path` (what a ZeroMQ ipc peer does first); prints
// "connected" or the errno's name (EACCES, ECONNREFUSED, ...).
const char* kConnectScript = R"(
import errno, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
    print("connected")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
)";

// The socket files' names in the test's socket directory: PUB, send and replay.
struct Names {
  std::string pub = "pub.sock", send = "send.sock", replay = "replay.sock";
};

class IpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: clients run as nobody through setpriv";
    struct group* g = ::getgrnam("daemon");
    ASSERT_NE(g, nullptr) << "no group \"daemon\"";
    daemon_gid_ = g->gr_gid;
    // nobody may traverse the test's directory (not list it) and the socket directory: what
    // keeps it out is the socket files' mode alone.
    ASSERT_EQ(::chmod(dir_.path().c_str(), 0711), 0);
    sock_dir_ = dir_.File("run");
    ASSERT_EQ(::mkdir(sock_dir_.c_str(), 0755), 0);
    ASSERT_EQ(::chmod(sock_dir_.c_str(), 0755), 0);
    upstream_ = StartUpstream(dir_.path(), {"--rate=200"}, &port_);
    ASSERT_NE(port_, 0) << upstream_.Stderr();
  }

  std::string Path(const std::string& name) const { return sock_dir_ + "/" + name; }
  std::string Ipc(const std::string& name) const { return "ipc://" + Path(name); }

  // A daemon started, once it is up (its replay endpoint bound, the last of the three) or has
  // exited (with that status; the harness's waits reap a process without keeping it).
  struct Daemon {
    Child child;
    bool up = false;
    int exit_status = -1;
  };

  // The daemon on the three ipc endpoints.
  Daemon StartDaemon(const std::string& tag, const std::vector<std::string>& flags,
                     const std::string& db = "journal.db", const Names& names = {}) {
    std::vector<std::string> argv = {Bin("wsbridge"),
                                     "--upstream=" + Url(port_),
                                     "--db=" + dir_.File(db),
                                     "--pub=" + Ipc(names.pub),
                                     "--send=" + Ipc(names.send),
                                     "--replay=" + Ipc(names.replay),
                                     "--set=http.listen=",
                                     "--log-level=debug"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    const size_t before = ReadFileOrEmpty(dir_.File(tag + ".err")).size();
    Daemon d;
    d.child = Child::Start(argv, dir_.path(), tag);
    WaitFor([&] {
      d.up = d.child.Stderr().find("zmq: replay on ipc://", before) != std::string::npos;
      return d.up || d.child.Exited(&d.exit_status);
    });
    return d;
  }

  // argv run as nobody:nogroup, with `groups` as its supplementary groups ("": none).
  static std::vector<std::string> AsNobody(std::vector<std::string> argv,
                                           const std::string& groups = "") {
    std::vector<std::string> out = {"/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup",
                                    groups.empty() ? "--clear-groups" : "--groups=" + groups};
    out.insert(out.end(), argv.begin(), argv.end());
    return out;
  }

  // connect(2) on the socket file: prints "connected" or the errno's name.
  static std::vector<std::string> Connect(const std::string& path) {
    return {"/usr/bin/python3", "-c", kConnectScript, path};
  }
  // What a Connect (as root, or AsNobody) answers.
  std::string Answer(const std::vector<std::string>& argv) {
    std::string out;
    Run(argv, "connect", &out);
    return Trim(out);
  }

  std::vector<std::string> Tail(uint64_t count, const std::string& name = "pub.sock") const {
    return {Bin("wsbridge-tail"), "--endpoint=" + Ipc(name), "--count=" + std::to_string(count)};
  }
  std::vector<std::string> Send(const std::string& id,
                                const std::string& name = "send.sock") const {
    return {Bin("wsbridge-send"), "--endpoint=" + Ipc(name), "--timeout-ms=3000",
            "--id=" + id, "{\"id\":\"" + id + "\"}"};
  }

  // Runs argv to its end (at most `timeout`); its exit status, and in *out what it wrote to
  // stdout (this run's: runs under one tag append to one file).
  int Run(const std::vector<std::string>& argv, const std::string& tag, std::string* out,
          std::chrono::milliseconds timeout = 30s) {
    const size_t before = ReadFileOrEmpty(dir_.File(tag + ".out")).size();
    Child c = Child::Start(argv, dir_.path(), tag);
    int status = c.Wait(timeout);
    *out = c.Stdout().substr(before);
    return status;
  }

  TempDir dir_;
  std::string sock_dir_;
  gid_t daemon_gid_ = 0;
  int port_ = 0;
  Child upstream_;
};

TEST_F(IpcTest, Mode0600OnlyTheOwnerReadsAndSends) {
  Daemon bridge = StartDaemon("bridge", {"--set=zmq.ipc_mode=0600"});
  ASSERT_TRUE(bridge.up) << bridge.child.Stderr();
  for (const char* name : {"pub.sock", "send.sock", "replay.sock"}) {
    SCOPED_TRACE(name);
    struct stat st {};
    ASSERT_EQ(::lstat(Path(name).c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(st.st_uid, 0u);
    EXPECT_EQ(Answer(AsNobody(Connect(Path(name)))), "EACCES");
    EXPECT_EQ(Answer(Connect(Path(name))), "connected");
  }

  // nobody's tail subscribes, and its send waits for a reply until it gives up (exit 2).
  Child nobody_tail = Child::Start(AsNobody(Tail(1)), dir_.path(), "nobody-tail");
  std::string out;
  int status = Run(AsNobody(Send("from-nobody")), "nobody-send", &out);
  EXPECT_TRUE(ExitedNonZero(status)) << status << " " << out;
  EXPECT_EQ(out.find("ACCEPTED"), std::string::npos) << out;

  // Meanwhile (nobody's tail has been trying for as long), the owner receives and sends.
  status = Run(Tail(20), "root-tail", &out);
  EXPECT_TRUE(ExitedZero(status)) << status;
  EXPECT_EQ(LineCount(out), 20u) << out;
  status = Run(Send("from-root"), "root-send", &out);
  EXPECT_TRUE(ExitedZero(status)) << status << " " << out;
  EXPECT_NE(out.find("ACCEPTED"), std::string::npos) << out;

  EXPECT_FALSE(nobody_tail.Exited()) << "nobody's tail ended: " << nobody_tail.Stderr();
  EXPECT_EQ(nobody_tail.Stdout(), "");
}

TEST_F(IpcTest, Mode0660AndGroupLetTheGroupIn) {
  Daemon bridge =
      StartDaemon("bridge", {"--set=zmq.ipc_mode=0660", "--set=zmq.ipc_group=daemon"});
  ASSERT_TRUE(bridge.up) << bridge.child.Stderr();
  const std::string group = std::to_string(daemon_gid_);
  for (const char* name : {"pub.sock", "send.sock", "replay.sock"}) {
    SCOPED_TRACE(name);
    struct stat st {};
    ASSERT_EQ(::lstat(Path(name).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0660u);
    EXPECT_EQ(st.st_gid, daemon_gid_);
    EXPECT_EQ(Answer(AsNobody(Connect(Path(name)), group)), "connected");
    EXPECT_EQ(Answer(AsNobody(Connect(Path(name)))), "EACCES");
  }
  std::string out;
  int status = Run(AsNobody(Tail(5), group), "member-tail", &out);
  EXPECT_TRUE(ExitedZero(status)) << status;
  EXPECT_EQ(LineCount(out), 5u) << out;
  status = Run(AsNobody(Send("from-member"), group), "member-send", &out);
  EXPECT_TRUE(ExitedZero(status)) << status << " " << out;
  EXPECT_NE(out.find("ACCEPTED"), std::string::npos) << out;
}

TEST_F(IpcTest, SecondDaemonOnTheSamePathsRefused) {
  Daemon first = StartDaemon("first", {"--set=zmq.ipc_mode=0600"});
  ASSERT_TRUE(first.up) << first.child.Stderr();
  struct stat before {};
  ASSERT_EQ(::lstat(Path("pub.sock").c_str(), &before), 0);

  Daemon second = StartDaemon("second", {"--set=zmq.ipc_mode=0600"}, "second.db");
  EXPECT_FALSE(second.up);
  EXPECT_TRUE(ExitedNonZero(second.exit_status)) << second.exit_status;
  const std::string err = second.child.Stderr();
  const std::string why = "zmq.pub: " + Ipc("pub.sock") +
                          " is in use by another running wsbridge (lock " + Path("pub.sock") +
                          ".lock held); refusing to take it over";
  auto lines = LinesWith(err, "in use by another running wsbridge");
  ASSERT_EQ(lines.size(), 1u) << err;
  EXPECT_NE(lines[0].find(why), std::string::npos) << err;
  EXPECT_NE(::access(dir_.File("second.db").c_str(), F_OK), 0) << "refused after opening files";

  // The first keeps its socket files and serves.
  struct stat after {};
  ASSERT_EQ(::lstat(Path("pub.sock").c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  std::string out;
  int status = Run(Tail(3), "tail", &out);
  EXPECT_TRUE(ExitedZero(status)) << status;
  EXPECT_EQ(LineCount(out), 3u) << out;
  EXPECT_FALSE(first.child.Exited()) << first.child.Stderr();
}

TEST_F(IpcTest, WorldWritableDirectoryRefused) {
  ASSERT_EQ(::chmod(sock_dir_.c_str(), 01777), 0);  // even with the sticky bit, as /tmp
  Daemon bridge = StartDaemon("bridge", {});
  EXPECT_FALSE(bridge.up);
  EXPECT_TRUE(ExitedNonZero(bridge.exit_status)) << bridge.exit_status;
  const std::string err = bridge.child.Stderr();
  auto lines = LinesWith(err, "world-writable");
  ASSERT_EQ(lines.size(), 1u) << err;
  EXPECT_NE(lines[0].find("zmq.pub: " + Ipc("pub.sock") + ": its directory " + sock_dir_ +
                               " is world-writable"),
            std::string::npos)
      << err;
  EXPECT_NE(::access(Path("pub.sock").c_str(), F_OK), 0);
}

TEST_F(IpcTest, StaleSocketsOfAKilledDaemonReplaced) {
  Daemon first = StartDaemon("bridge", {});
  ASSERT_TRUE(first.up) << first.child.Stderr();
  first.child.Kill(SIGKILL);
  for (const char* name : {"pub.sock", "send.sock", "replay.sock"}) {
    struct stat st {};
    ASSERT_EQ(::lstat(Path(name).c_str(), &st), 0) << name;
    EXPECT_EQ(Answer(Connect(Path(name))), "ECONNREFUSED") << name;
  }

  const size_t before = first.child.Stderr().size();
  Daemon second = StartDaemon("bridge", {});
  ASSERT_TRUE(second.up) << second.child.Stderr();
  const std::string log = second.child.Stderr().substr(before);
  EXPECT_EQ(LinesWith(log, "replaced the stale socket file").size(), 3u) << log;
  std::string out;
  int status = Run(Tail(3), "tail", &out);
  EXPECT_TRUE(ExitedZero(status)) << status;
  EXPECT_EQ(LineCount(out), 3u) << out;
  status = Run(Send("after-restart"), "send", &out);
  EXPECT_TRUE(ExitedZero(status)) << status << " " << out;
}

TEST_F(IpcTest, RoleDirectoriesSplitReadersFromSenders) {
  // What deploy/systemd/wsbridge.service sets up: a directory per role, setgid, of that role's
  // group, mode 2750. Here "daemon" stands for the readers' group and "bin" for the senders'.
  struct group* bin = ::getgrnam("bin");
  ASSERT_NE(bin, nullptr) << "no group \"bin\"";
  const gid_t readers = daemon_gid_, senders = bin->gr_gid;
  for (const auto& [name, gid] : {std::pair<std::string, gid_t>{"subscribe", readers},
                                  std::pair<std::string, gid_t>{"send", senders}}) {
    ASSERT_EQ(::mkdir(Path(name).c_str(), 0700), 0);
    ASSERT_EQ(::chown(Path(name).c_str(), 0, gid), 0);
    ASSERT_EQ(::chmod(Path(name).c_str(), 02750), 0);
  }
  Names names{"subscribe/pub.sock", "send/send.sock", "subscribe/replay.sock"};
  Daemon bridge = StartDaemon("bridge", {"--set=zmq.ipc_mode=0660"}, "journal.db", names);
  ASSERT_TRUE(bridge.up) << bridge.child.Stderr();
  for (const auto& [name, gid] : {std::pair{names.pub, readers}, std::pair{names.send, senders},
                                  std::pair{names.replay, readers}}) {
    SCOPED_TRACE(name);
    struct stat st {};
    ASSERT_EQ(::lstat(Path(name).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0660u);
    EXPECT_EQ(st.st_gid, gid);
  }
  const std::string reader = std::to_string(readers), sender = std::to_string(senders);
  EXPECT_EQ(Answer(AsNobody(Connect(Path(names.pub)), reader)), "connected");
  EXPECT_EQ(Answer(AsNobody(Connect(Path(names.replay)), reader)), "connected");
  EXPECT_EQ(Answer(AsNobody(Connect(Path(names.send)), reader)), "EACCES");
  EXPECT_EQ(Answer(AsNobody(Connect(Path(names.send)), sender)), "connected");
  EXPECT_EQ(Answer(AsNobody(Connect(Path(names.pub)), sender)), "EACCES");
  EXPECT_EQ(Answer(AsNobody(Connect(Path(names.pub)))), "EACCES");

  std::string out;
  int status = Run(AsNobody(Tail(5, names.pub), reader), "reader-tail", &out);
  EXPECT_TRUE(ExitedZero(status)) << status;
  EXPECT_EQ(LineCount(out), 5u) << out;
  status = Run(AsNobody(Send("from-sender", names.send), sender), "sender-send", &out);
  EXPECT_TRUE(ExitedZero(status)) << status << " " << out;
  EXPECT_NE(out.find("ACCEPTED"), std::string::npos) << out;
  status = Run(AsNobody(Send("from-reader", names.send), reader), "reader-send", &out);
  EXPECT_TRUE(ExitedNonZero(status)) << status << " " << out;
  EXPECT_EQ(out.find("ACCEPTED"), std::string::npos) << out;
}

}  // namespace
}  // namespace wsbridge::testing
