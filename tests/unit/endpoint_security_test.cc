// Unit tests of bridge/endpoints/endpoint_security (SPEC §10) with real ZeroMQ sockets and real
// files in a temporary directory: ipc mode, group and lock, stale and foreign files, directories
// that are refused, the loopback rule for tcp, CURVE and size options. Runs as root in CI (the
// group tests need a group the process may give files; they skip when there is none).
// Single-threaded, like BindEndpoint's callers.
#include "bridge/endpoints/endpoint_security.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <thread>
#include <string>
#include <vector>

#include "testutil.h"

namespace wsbridge {
namespace {

using testing::TempDir;

// For EXPECT_PRED2(Contains, text, part): both are printed when it fails.
bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

const EndpointRole& kPub = kPubEndpoint;
const EndpointRole kSend{"zmq.send", "send", 4096};

// A group this process may give its files other than its own: as root "nogroup" or "daemon",
// otherwise a supplementary group.
std::optional<gid_t> OtherGroup() {
  if (::geteuid() == 0) {
    for (const char* name : {"nogroup", "daemon"}) {
      if (struct group* g = ::getgrnam(name)) return g->gr_gid;
    }
    return std::nullopt;
  }
  std::vector<gid_t> groups(static_cast<size_t>(::getgroups(0, nullptr)));
  groups.resize(static_cast<size_t>(::getgroups(static_cast<int>(groups.size()), groups.data())));
  for (gid_t g : groups) {
    if (g != ::getegid()) return g;
  }
  return std::nullopt;
}

struct stat Lstat(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st;
}

mode_t CurrentUmask() {
  mode_t m = ::umask(0);
  ::umask(m);
  return m;
}

// A unix socket file nobody listens on, as a SIGKILLed daemon leaves one.
void MakeStaleSocketFile(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof addr.sun_path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << strerror(errno);
  ::close(fd);
}

class EndpointSecurityTest : public ::testing::Test {
 protected:
  std::string Ipc(const std::string& name) const { return "ipc://" + dir_.File(name); }

  // A DEALER connected to `endpoint` sends one frame; true when `router` receives it.
  bool Reaches(zmq::socket_t& router, const std::string& endpoint) {
    zmq::socket_t dealer(ctx_, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.set(zmq::sockopt::ipv6, true);  // for tcp://[::1]
    dealer.connect(endpoint);
    dealer.send(zmq::str_buffer("hello"), zmq::send_flags::none);
    router.set(zmq::sockopt::rcvtimeo, 5000);
    zmq::message_t id, body;
    if (!router.recv(id) || !router.recv(body)) return false;
    return body.to_string() == "hello";
  }

  zmq::socket_t Router() {
    zmq::socket_t s(ctx_, zmq::socket_type::router);
    s.set(zmq::sockopt::linger, 0);
    return s;
  }

  TempDir dir_;
  zmq::context_t ctx_;
  EndpointSecurity security_;
};

// ---- ipc -----------------------------------------------------------------------------------

TEST_F(EndpointSecurityTest, IpcModeAndGroupApplied) {
  std::optional<gid_t> gid = OtherGroup();
  if (!gid) GTEST_SKIP() << "no group to give the socket file";
  security_.ipc_mode = 0660;
  security_.ipc_gid = *gid;
  const mode_t umask_before = CurrentUmask();
  zmq::socket_t router = Router();
  auto guard = BindEndpoint(router, Ipc("pub.sock"), kPub, security_);
  ASSERT_OK(guard);
  EXPECT_EQ(CurrentUmask(), umask_before);
  struct stat st = Lstat(dir_.File("pub.sock"));
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_gid, *gid);
  EXPECT_EQ(st.st_uid, ::geteuid());
  struct stat lock = Lstat(dir_.File("pub.sock.lock"));
  EXPECT_TRUE(S_ISREG(lock.st_mode));
  EXPECT_EQ(lock.st_mode & 0077, 0u) << "lock file readable by others";
  EXPECT_TRUE(Reaches(router, Ipc("pub.sock")));
}

TEST_F(EndpointSecurityTest, IpcDefaultGroupIsTheProcesssAndModeNoWiderThanAsked) {
  for (mode_t mode : {0600, 0640, 0400}) {
    SCOPED_TRACE(mode);
    security_.ipc_mode = mode;
    zmq::socket_t router = Router();
    const std::string name = "s" + std::to_string(mode) + ".sock";
    ASSERT_OK(BindEndpoint(router, Ipc(name), kPub, security_));
    struct stat st = Lstat(dir_.File(name));
    EXPECT_EQ(st.st_mode & 07777, mode);
    EXPECT_EQ(st.st_gid, ::getegid());
  }
}

// The window between the socket file's creation and its chmod, watched from another thread
// that lstat()s the path as fast as it can while binds follow each other: whatever it sees is
// never wider than asked (with the process umask alone, the file would be 0755 for a moment).
TEST_F(EndpointSecurityTest, SocketFileNeverSeenWiderThanAsked) {
  security_.ipc_mode = 0640;
  constexpr int kBinds = 200;
  std::atomic<int> current{-1};
  std::atomic<bool> done{false};
  std::atomic<int> seen{0};
  std::atomic<unsigned> wider{0};
  std::thread watcher([&] {
    while (!done) {
      int i = current;
      struct stat st {};
      if (i < 0 || ::lstat(dir_.File(std::to_string(i)).c_str(), &st) != 0) continue;
      ++seen;
      wider |= st.st_mode & 0777 & ~security_.ipc_mode;
    }
  });
  std::vector<zmq::socket_t> sockets;
  std::vector<std::unique_ptr<EndpointGuard>> guards;
  for (int i = 0; i < kBinds; ++i) {
    current = i;
    sockets.push_back(Router());
    auto guard = BindEndpoint(sockets.back(), Ipc(std::to_string(i)), kPub, security_);
    ASSERT_OK(guard);
    guards.push_back(std::move(guard).value());
  }
  done = true;
  watcher.join();
  EXPECT_GT(seen, 0);
  EXPECT_EQ(wider, 0u) << "mode bits seen beyond 0640: " << std::oct << wider;
}

TEST_F(EndpointSecurityTest, UmaskRestoredWhenTheBindFails) {
  const mode_t umask_before = CurrentUmask();
  zmq::socket_t router = Router();
  // Longer than a unix socket address can be: libzmq's bind throws.
  auto guard = BindEndpoint(router, Ipc(std::string(200, 'x')), kPub, security_);
  EXPECT_FALSE(guard.ok());
  EXPECT_PRED2(Contains, guard.status().message(), "zmq.pub: cannot bind");
  EXPECT_EQ(CurrentUmask(), umask_before);
}

TEST_F(EndpointSecurityTest, PathHeldByALiveSocketIsRefused) {
  zmq::socket_t first = Router();
  auto first_guard = BindEndpoint(first, Ipc("send.sock"), kSend, security_);
  ASSERT_OK(first_guard);

  // flock locks an open file description: a second open() in this same process conflicts.
  const std::string lock_path = dir_.File("send.sock.lock");
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_NE(::flock(fd, LOCK_EX | LOCK_NB), 0);
  EXPECT_EQ(errno, EWOULDBLOCK);
  ::close(fd);

  const std::string expected = "zmq.send: " + Ipc("send.sock") +
                               " is in use by another running wsbridge (lock " + lock_path +
                               " held); refusing to take it over";
  zmq::socket_t second = Router();
  auto second_guard = BindEndpoint(second, Ipc("send.sock"), kSend, security_);
  ASSERT_FALSE(second_guard.ok());
  EXPECT_EQ(second_guard.status().message(), expected);
  Status check = CheckEndpoint(Ipc("send.sock"), kSend, security_);
  EXPECT_EQ(check.message(), expected);
  // The first socket's file was not taken over.
  EXPECT_TRUE(Reaches(first, Ipc("send.sock")));

  // Once the first is gone (guard released), its file is stale and the next bind replaces it.
  first.close();
  first_guard = Status::Unavailable("released");
  EXPECT_OK(BindEndpoint(second, Ipc("send.sock"), kSend, security_));
  EXPECT_TRUE(Reaches(second, Ipc("send.sock")));
}

TEST_F(EndpointSecurityTest, StaleSocketFileIsReplaced) {
  MakeStaleSocketFile(dir_.File("pub.sock"));
  security_.ipc_mode = 0600;
  zmq::socket_t router = Router();
  ASSERT_OK(CheckEndpoint(Ipc("pub.sock"), kPub, security_));
  ASSERT_OK(BindEndpoint(router, Ipc("pub.sock"), kPub, security_));
  struct stat st = Lstat(dir_.File("pub.sock"));
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_TRUE(Reaches(router, Ipc("pub.sock"))) << "still the stale file, which nobody serves";
}

TEST_F(EndpointSecurityTest, WorldWritableDirectoryIsRefused) {
  for (mode_t mode : {0777, 01777}) {
    SCOPED_TRACE(mode);
    const std::string dir = dir_.File("open" + std::to_string(mode));
    ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
    ASSERT_EQ(::chmod(dir.c_str(), mode), 0);
    const std::string endpoint = "ipc://" + dir + "/pub.sock";
    zmq::socket_t router = Router();
    auto guard = BindEndpoint(router, endpoint, kPub, security_);
    ASSERT_FALSE(guard.ok());
    EXPECT_PRED2(Contains, guard.status().message(), "zmq.pub: " + endpoint);
    EXPECT_PRED2(Contains, guard.status().message(), dir + " is world-writable");
    EXPECT_EQ(CheckEndpoint(endpoint, kPub, security_).message(), guard.status().message());
    EXPECT_NE(::access((dir + "/pub.sock").c_str(), F_OK), 0);
    EXPECT_NE(::access((dir + "/pub.sock.lock").c_str(), F_OK), 0);
  }
}

TEST_F(EndpointSecurityTest, MissingDirectoryIsRefused) {
  const std::string endpoint = "ipc://" + dir_.File("nope") + "/pub.sock";
  Status s = CheckEndpoint(endpoint, kPub, security_);
  EXPECT_PRED2(Contains, s.message(), "zmq.pub: " + endpoint);
  EXPECT_PRED2(Contains, s.message(), "No such file or directory");
  zmq::socket_t router = Router();
  EXPECT_FALSE(BindEndpoint(router, endpoint, kPub, security_).ok());
}

TEST_F(EndpointSecurityTest, SomethingElseThanASocketAtThePathIsRefused) {
  ASSERT_TRUE(testing::WriteFileBytes(dir_.File("target"), "precious"));
  ASSERT_TRUE(testing::WriteFileBytes(dir_.File("file.sock"), "data"));
  ASSERT_EQ(::symlink(dir_.File("target").c_str(), dir_.File("link.sock").c_str()), 0);
  for (const char* name : {"file.sock", "link.sock"}) {
    SCOPED_TRACE(name);
    zmq::socket_t router = Router();
    auto guard = BindEndpoint(router, Ipc(name), kPub, security_);
    ASSERT_FALSE(guard.ok());
    EXPECT_EQ(guard.status().message(), "zmq.pub: " + Ipc(name) + ": " + dir_.File(name) +
                                            " exists and is not a socket; refusing to replace it");
    EXPECT_FALSE(CheckEndpoint(Ipc(name), kPub, security_).ok());
  }
  EXPECT_EQ(testing::ReadFileBytes(dir_.File("file.sock")), "data");
  EXPECT_EQ(testing::ReadFileBytes(dir_.File("target")), "precious");
  EXPECT_TRUE(S_ISLNK(Lstat(dir_.File("link.sock")).st_mode));
}

TEST_F(EndpointSecurityTest, SymlinkAsTheLockFileIsRefused) {
  ASSERT_EQ(::symlink(dir_.File("elsewhere").c_str(), dir_.File("pub.sock.lock").c_str()), 0);
  zmq::socket_t router = Router();
  auto guard = BindEndpoint(router, Ipc("pub.sock"), kPub, security_);
  ASSERT_FALSE(guard.ok());
  EXPECT_PRED2(Contains, guard.status().message(), "cannot open the lock file");
  EXPECT_NE(::access(dir_.File("elsewhere").c_str(), F_OK), 0) << "the symlink was followed";
  EXPECT_NE(::access(dir_.File("pub.sock").c_str(), F_OK), 0);
}

TEST_F(EndpointSecurityTest, IpcWithoutAFileOfItsOwnIsRefused) {
  for (const std::string endpoint : {"ipc://relative.sock", "ipc://@abstract", "ipc://*"}) {
    SCOPED_TRACE(endpoint);
    Status s = CheckEndpoint(endpoint, kPub, security_);
    EXPECT_PRED2(Contains, s.message(), "zmq.pub: " + endpoint + ": an ipc endpoint must be an "
                                       "absolute path");
    zmq::socket_t router = Router();
    EXPECT_FALSE(BindEndpoint(router, endpoint, kPub, security_).ok());
  }
}

TEST_F(EndpointSecurityTest, IpcHasNoCurveButHasTheSizeLimit) {
  security_.curve_secret_key = std::string(32, 'k');
  zmq::socket_t router = Router();
  ASSERT_OK(BindEndpoint(router, Ipc("send.sock"), kSend, security_));
  EXPECT_EQ(router.get(zmq::sockopt::mechanism), ZMQ_NULL);
  EXPECT_EQ(router.get(zmq::sockopt::zap_domain), "");
  EXPECT_EQ(router.get(zmq::sockopt::maxmsgsize), 4096);
}

// ---- tcp -----------------------------------------------------------------------------------

TEST_F(EndpointSecurityTest, NonLoopbackTcpWithoutCurveIsRefused) {
  EXPECT_EQ(CheckEndpoint("tcp://0.0.0.0:5557", kSend, security_).message(),
            "zmq.send: tcp://0.0.0.0:5557 is not a loopback address and has no CURVE: set "
            "zmq.curve.secret_key_file (see docs/security.md) or zmq.allow_insecure = true");
  for (const std::string endpoint :
       {"tcp://*:*", "tcp://0.0.0.0:*", "tcp://lo:*", "tcp://eth0:*", "tcp://10.1.2.3:5557",
        "tcp://127.1:*", "tcp://[::]:*", "tcp://example.com:5557", "tcp://[::ffff:10.0.0.1]:*"}) {
    SCOPED_TRACE(endpoint);
    EXPECT_PRED2(Contains, CheckEndpoint(endpoint, kSend, security_).message(),
                 "zmq.send: " + endpoint + " is not a loopback address and has no CURVE");
    zmq::socket_t router = Router();
    auto guard = BindEndpoint(router, endpoint, kSend, security_);
    EXPECT_FALSE(guard.ok());
    EXPECT_EQ(router.get(zmq::sockopt::last_endpoint), "") << "bound anyway";
  }
}

TEST_F(EndpointSecurityTest, NonLoopbackTcpWithAllowInsecureBinds) {
  security_.allow_insecure = true;
  ASSERT_OK(CheckEndpoint("tcp://0.0.0.0:*", kSend, security_));
  zmq::socket_t router = Router();
  ASSERT_OK(BindEndpoint(router, "tcp://0.0.0.0:*", kSend, security_));
  EXPECT_PRED2(Contains, router.get(zmq::sockopt::last_endpoint), "tcp://0.0.0.0:");
  EXPECT_EQ(router.get(zmq::sockopt::mechanism), ZMQ_NULL);
}

TEST_F(EndpointSecurityTest, LoopbackFormsAreAccepted) {
  struct Case {
    std::string endpoint;
    std::string bound_prefix;
  };
  for (const Case& c : {Case{"tcp://127.0.0.1:*", "tcp://127.0.0.1:"},
                        Case{"tcp://127.0.0.2:*", "tcp://127.0.0.2:"},
                        Case{"tcp://localhost:*", "tcp://127.0.0.1:"},
                        Case{"tcp://[::1]:*", "tcp://[::1]:"}, Case{"tcp://::1:*", "tcp://[::1]:"},
                        Case{"tcp://[::ffff:127.0.0.1]:*", "tcp://[::ffff:127.0.0.1]:"}}) {
    SCOPED_TRACE(c.endpoint);
    EXPECT_OK(CheckEndpoint(c.endpoint, kSend, security_));
    zmq::socket_t router = Router();
    ASSERT_OK(BindEndpoint(router, c.endpoint, kSend, security_));
    const std::string bound = router.get(zmq::sockopt::last_endpoint);
    EXPECT_EQ(bound.rfind(c.bound_prefix, 0), 0u) << bound;
    EXPECT_EQ(router.get(zmq::sockopt::mechanism), ZMQ_NULL);
    EXPECT_EQ(router.get(zmq::sockopt::zap_domain), "") << "NULL peers must not go to ZAP";
    EXPECT_TRUE(Reaches(router, bound));
  }
}

TEST_F(EndpointSecurityTest, CurveOptionsSetOnTcp) {
  char public_z85[41], secret_z85[41];  // the public key: not needed by a server
  ASSERT_EQ(zmq_curve_keypair(public_z85, secret_z85), 0);
  security_.curve_secret_key.resize(32);
  ASSERT_NE(zmq_z85_decode(reinterpret_cast<uint8_t*>(security_.curve_secret_key.data()),
                           secret_z85),
            nullptr);
  // Non-loopback is fine with CURVE, without allow_insecure.
  for (const std::string endpoint : {"tcp://127.0.0.1:*", "tcp://0.0.0.0:*"}) {
    SCOPED_TRACE(endpoint);
    ASSERT_OK(CheckEndpoint(endpoint, kSend, security_));
    zmq::socket_t router = Router();
    ASSERT_OK(BindEndpoint(router, endpoint, kSend, security_));
    EXPECT_EQ(router.get(zmq::sockopt::curve_server), true);
    EXPECT_EQ(router.get(zmq::sockopt::mechanism), ZMQ_CURVE);
    EXPECT_EQ(router.get(zmq::sockopt::zap_domain), "send");
    EXPECT_EQ(router.get(zmq::sockopt::maxmsgsize), 4096);
    EXPECT_EQ(router.get(zmq::sockopt::curve_secretkey), secret_z85);
  }
}

TEST_F(EndpointSecurityTest, CurveKeyOfTheWrongSizeIsRefused) {
  security_.curve_secret_key = "short";
  EXPECT_PRED2(Contains, CheckEndpoint("tcp://127.0.0.1:*", kSend, security_).message(),
               "zmq.send: the CURVE secret key has 5 bytes, not 32");
  zmq::socket_t router = Router();
  EXPECT_FALSE(BindEndpoint(router, "tcp://127.0.0.1:*", kSend, security_).ok());
}

TEST_F(EndpointSecurityTest, NoSizeLimitWhenTheRoleHasNone) {
  zmq::socket_t pub(ctx_, zmq::socket_type::xpub);
  ASSERT_OK(BindEndpoint(pub, "tcp://127.0.0.1:*", kPub, security_));
  EXPECT_EQ(pub.get(zmq::sockopt::maxmsgsize), -1);
}

// ---- other transports ------------------------------------------------------------------------

TEST_F(EndpointSecurityTest, InprocBindsAsIsAndNetworkTransportsNeedAllowInsecure) {
  zmq::socket_t router = Router();
  ASSERT_OK(BindEndpoint(router, "inproc://send", kSend, security_));
  EXPECT_EQ(router.get(zmq::sockopt::maxmsgsize), 4096);
  EXPECT_TRUE(Reaches(router, "inproc://send"));

  Status s = CheckEndpoint("epgm://eth0;239.192.1.1:5555", kPub, security_);
  EXPECT_PRED2(Contains, s.message(), "zmq.pub: epgm://eth0;239.192.1.1:5555: only tcp, ipc and "
                                     "inproc endpoints can be protected");
  security_.allow_insecure = true;
  EXPECT_OK(CheckEndpoint("epgm://eth0;239.192.1.1:5555", kPub, security_));
}

}  // namespace
}  // namespace wsbridge
