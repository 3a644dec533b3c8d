// CURVE on the bridge's tcp endpoints with real processes (SPEC §10, issue 18): the daemon with
// zmq.curve.secret_key_file and zmq.curve.authorized_keys_file, keys made by the real
// `wsbridge keygen --out`, and two kinds of clients: pyzmq (curve_client.py beside this file,
// Debian's python3-zmq, sharing no code with the bridge) and our own wsbridge-tail,
// wsbridge-send and wsbridge-replay --endpoint.
//
//   SubscribeKeyReceivesAndReplaysButCannotSend   role `subscribe`: PUB and replay, not send
//   SendKeySendsButReceivesNothing                role `send`: ACCEPTED, nothing on PUB/replay
//   UnknownKeyAndPlainClientsGetNothing           and the unknown key is counted and logged
//   PlainClientsAreCounted                        wsbridge_auth_failures_total{endpoint}, each
//   KeyAddedToTheFileIsAcceptedAfterSighup        no restart (clients started after the SIGHUP:
//                                                 libzmq never retries a refused handshake)
//   MalformedLineOnReloadKeepsTheOldList          a log line says why; the old keys still work
//   WrongServerKeyIsReported                      the tools say so instead of waiting forever
//   ClientKeyFlagsChecked                         one flag alone, a group-readable key file
//   GroupReadableSecretKeyFileRefused             start-up refusals, each one line naming the
//   MalformedAuthorizedKeysLineRefused              key (and the line number)
//   NonLoopbackTcpWithoutCurveRefused
//   HandlerStoppedTheDaemonExits                  SIGUSR2 stops the ZAP handler: exit 4
//
// Ports from the OS, waits with deadlines (WaitFor, Child::Wait), never a sleep. The test's main
// thread only.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "common/text.h"
#include "integration/harness.h"

namespace wsbridge::testing {
namespace {

using namespace std::chrono_literals;

std::string Url(int port) { return "ws://127.0.0.1:" + std::to_string(port) + "/feed"; }




// What a finished client run left: its exit status, stdout and stderr.
struct Ran {
  int status = -1;
  std::string out, err;
};

class CurveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    upstream_ = StartUpstream(dir_.path(), {"--rate=200"}, &port_);
    ASSERT_NE(port_, 0) << upstream_.Stderr();
    for (const char* name : {"server", "reader", "writer", "stranger", "late"}) {
      Ran r = Run({Bin("wsbridge"), "keygen", "--out", dir_.File(name)});
      ASSERT_TRUE(ExitedWith(r.status, 0)) << name << ": " << r.err;
    }
    const std::string keys = "# the test's clients\nsubscribe " + PublicKey("reader") +
                             " reader\nsend " + PublicKey("writer") + " writer\n";
    ASSERT_TRUE(WriteAuthorizedKeys(keys));
  }

  std::string PublicKey(const std::string& name) const {
    return Trim(ReadFileOrEmpty(dir_.File(name + ".pub")));
  }
  std::string KeysFile() const { return dir_.File("authorized_keys"); }
  bool WriteAuthorizedKeys(const std::string& text) const {
    return WriteFileBytes(KeysFile(), text);
  }
  std::vector<std::string> CurveFlags() const {
    return {"--set=zmq.curve.secret_key_file=" + dir_.File("server.key"),
            "--set=zmq.curve.authorized_keys_file=" + KeysFile()};
  }

  // The daemon with CURVE on its three OS-chosen tcp endpoints; the test fails unless it comes
  // up. replay_ is its replay endpoint.
  OsPortBridge StartCurveBridge(const std::string& tag = "bridge") {
    const size_t before = ReadFileOrEmpty(dir_.File(tag + ".err")).size();
    OsPortBridge b =
        StartOsPortBridge(dir_.path(), Url(port_), dir_.File("journal.db"), CurveFlags(), tag);
    replay_ = b.child.WaitForOutputAfter(before, R"(zmq: replay on (tcp://[0-9.]+:\d+))", "err")
                  .value_or("");
    EXPECT_FALSE(b.pub.empty() || b.send.empty() || replay_.empty() || b.http_port == 0)
        << b.child.Stderr();
    // Running: the upstream session is opened by a thread that Daemon::Run() starts once it
    // has blocked SIGHUP and SIGUSR2 for its sigwait. Before that (bridge/main.cc blocks only
    // SIGTERM and SIGINT during start-up) either signal would end the daemon.
    EXPECT_TRUE(b.child.WaitForOutputAfter(before, "upstream: session open", "err", 10s))
        << b.child.Stderr();
    return b;
  }

  // Runs argv to its end (at most `timeout`): what it left. Each run gets files of its own.
  Ran Run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = 15s) {
    const std::string tag = "run" + std::to_string(++runs_);
    Child c = Child::Start(argv, dir_.path(), tag);
    Ran r;
    r.status = c.Wait(timeout);
    r.out = c.Stdout();
    r.err = c.Stderr();
    return r;
  }

  // --server-key and --client-key-file for the client key `name` ("": a plain client).
  std::vector<std::string> KeyFlags(const std::string& name) const {
    if (name.empty()) return {};
    return {"--server-key=@" + dir_.File("server.pub"),
            "--client-key-file=" + dir_.File(name + ".key")};
  }
  static std::vector<std::string> Cat(std::vector<std::string> a,
                                      const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  }

  // pyzmq: `mode` on `endpoint` with the key `name`, then the mode's arguments.
  Ran Py(const std::string& name, const std::string& mode, const std::string& endpoint,
         const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"/usr/bin/python3",
                                     WSB_SOURCE_DIR "/tests/integration/curve_client.py"};
    argv = Cat(Cat(argv, KeyFlags(name)), {mode, endpoint});
    return Run(Cat(argv, args));
  }
  Ran PySub(const std::string& name, const std::string& pub, int count, int timeout_ms = 5000) {
    return Py(name, "sub", pub, {std::to_string(count), std::to_string(timeout_ms)});
  }
  Ran PySend(const std::string& name, const std::string& send, const std::string& payload) {
    return Py(name, "send", send, {payload, "5000"});
  }
  Ran PyReplay(const std::string& name) { return Py(name, "replay", replay_, {"1", "3", "5000"}); }

  // Our tools, with the key `name`.
  Ran Tail(const std::string& name, const std::string& pub, int count,
           const std::vector<std::string>& more = {}) {
    return Run(
        Cat(Cat({Bin("wsbridge-tail"), "--endpoint=" + pub, "--count=" + std::to_string(count)},
                KeyFlags(name)),
            more));
  }
  Ran Send(const std::string& name, const std::string& send, const std::string& id) {
    return Run(Cat({Bin("wsbridge-send"), "--endpoint=" + send, "--timeout-ms=5000", "--id=" + id,
                    "{\"id\":\"" + id + "\"}"},
                   KeyFlags(name)));
  }
  Ran Replay(const std::string& name) {
    return Run(Cat({Bin("wsbridge-replay"), "--endpoint=" + replay_, "--from=1", "--to=3",
                    "--timeout-ms=5000"},
                   KeyFlags(name)));
  }

  // wsbridge_auth_failures_total{endpoint="<endpoint>"} on /metrics; -1 when not there.
  static int64_t AuthFailures(int http_port, const std::string& endpoint) {
    std::smatch m;
    const std::string metrics = HttpGet(http_port, "/metrics");
    const std::regex rx("wsbridge_auth_failures_total\\{endpoint=\"" + endpoint + "\"\\} (\\d+)");
    return std::regex_search(metrics, m, rx) ? std::stoll(m[1]) : -1;
  }
  // Waits until the counter reaches `at_least`; its value then (or at the deadline).
  static int64_t WaitAuthFailures(int http_port, const std::string& endpoint, int64_t at_least,
                                  std::chrono::milliseconds timeout = 10s) {
    int64_t n = -1;
    WaitFor([&] { return (n = AuthFailures(http_port, endpoint)) >= at_least; }, timeout);
    return n;
  }

  // The daemon's argv: the upstream, `db`, PUB on `pub`, the others on OS-chosen loopback
  // ports, no HTTP, then `flags`.
  std::vector<std::string> DaemonArgv(const std::string& pub, const std::string& db,
                                      const std::vector<std::string>& flags) const {
    return Cat({Bin("wsbridge"), "--upstream=" + Url(port_), "--db=" + dir_.File(db),
                "--pub=" + pub, "--send=tcp://127.0.0.1:*", "--replay=tcp://127.0.0.1:*",
                "--set=http.listen=", "--log-level=debug"},
               flags);
  }

  // The daemon started with `flags`, which it must refuse: it exits non-zero at once, never
  // publishing. Its stderr.
  std::string StartRefused(const std::vector<std::string>& flags,
                           const std::string& pub = "tcp://127.0.0.1:*") {
    Ran r = Run(DaemonArgv(pub, "refused.db", flags), 10s);
    EXPECT_TRUE(ExitedNonZero(r.status)) << r.status << "\n" << r.err;
    EXPECT_EQ(r.err.find("publishing on"), std::string::npos) << r.err;
    return r.err;
  }

  TempDir dir_;
  int port_ = 0;
  Child upstream_;
  std::string replay_;
  int runs_ = 0;
};

constexpr const char* kRefusedKey = "the bridge refused this client's key (CURVE handshake failed";

TEST_F(CurveTest, SubscribeKeyReceivesAndReplaysButCannotSend) {
  OsPortBridge b = StartCurveBridge();
  ASSERT_FALSE(replay_.empty());

  // pyzmq.
  Ran r = PySub("reader", b.pub, 5);
  EXPECT_TRUE(ExitedWith(r.status, 0)) << r.out << r.err;
  EXPECT_EQ(LinesWith(r.out, "seq ").size(), 5u) << r.out;
  r = PyReplay("reader");
  EXPECT_TRUE(ExitedWith(r.status, 0)) << r.out << r.err;
  EXPECT_NE(r.out.find("envelopes 3"), std::string::npos) << r.out;
  r = PySend("reader", b.send, "{\"id\":\"py-reader\"}");
  EXPECT_TRUE(ExitedWith(r.status, 1)) << r.out << r.err;
  EXPECT_NE(r.out.find("handshake refused auth 400"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no reply"), std::string::npos) << r.out;

  // Our tools.
  r = Tail("reader", b.pub, 5);
  EXPECT_TRUE(ExitedWith(r.status, 0)) << r.err;
  EXPECT_EQ(LineCount(r.out), 5u) << r.out;
  r = Tail("reader", b.pub, 5, {"--fill-gaps", "--replay=" + replay_, "--from-seq=1"});
  EXPECT_TRUE(ExitedWith(r.status, 0)) << r.err;
  EXPECT_EQ(LineCount(r.out), 5u) << r.out;
  EXPECT_NE(r.out.find("\"seq\":1,"), std::string::npos) << r.out;
  r = Replay("reader");
  EXPECT_TRUE(ExitedWith(r.status, 0)) << r.err;
  EXPECT_EQ(LineCount(r.out), 3u) << r.out;
  r = Send("reader", b.send, "tool-reader");
  EXPECT_TRUE(ExitedWith(r.status, 2)) << r.out << r.err;
  EXPECT_EQ(r.out, "");
  ASSERT_EQ(LineCount(r.err), 1u) << r.err;
  EXPECT_EQ(r.err.rfind(std::string("wsbridge-send: ") + kRefusedKey + " on " + b.send, 0), 0u)
      << r.err;

  // Both refusals counted against the send endpoint, none against the others.
  EXPECT_EQ(WaitAuthFailures(b.http_port, "send", 2), 2);
  EXPECT_EQ(AuthFailures(b.http_port, "pub"), 0);
  EXPECT_EQ(AuthFailures(b.http_port, "replay"), 0);
  EXPECT_FALSE(LinesWith(b.child.Stderr(), "zmq.send: refused client key " + PublicKey("reader") +
                                               " (not authorized for send)")
                   .empty())
      << b.child.Stderr();
}

TEST_F(CurveTest, SendKeySendsButReceivesNothing) {
  OsPortBridge b = StartCurveBridge();
  ASSERT_FALSE(replay_.empty());

  Ran r = PySend("writer", b.send, "{\"id\":\"py-writer\"}");
  EXPECT_TRUE(ExitedWith(r.status, 0)) << r.out << r.err;
  EXPECT_NE(r.out.find("status ACCEPTED"), std::string::npos) << r.out;
  r = Send("writer", b.send, "tool-writer");
  EXPECT_TRUE(ExitedWith(r.status, 0)) << r.out << r.err;
  EXPECT_NE(r.out.find("\"status\":\"ACCEPTED\""), std::string::npos) << r.out;

  // Nothing from PUB nor replay, though the upstream publishes all along.
  r = PySub("writer", b.pub, 1);
  EXPECT_TRUE(ExitedWith(r.status, 1)) << r.out << r.err;
  EXPECT_NE(r.out.find("handshake refused auth 400"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("received 0"), std::string::npos) << r.out;
  r = PyReplay("writer");
  EXPECT_NE(r.out.find("handshake refused auth 400"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no reply"), std::string::npos) << r.out;

  r = Tail("writer", b.pub, 1);
  EXPECT_TRUE(ExitedNonZero(r.status)) << r.status;
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find(std::string("wsbridge-tail: ") + kRefusedKey), std::string::npos) << r.err;
  EXPECT_EQ(WaitAuthFailures(b.http_port, "pub", 2), 2);  // pyzmq's and the tail's SUB sockets

  // The gap-filling tail stops at its first refusal, its SUB's or its DEALER's.
  r = Tail("writer", b.pub, 1, {"--fill-gaps", "--replay=" + replay_});
  EXPECT_TRUE(ExitedNonZero(r.status)) << r.status;
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find(kRefusedKey), std::string::npos) << r.err;
  r = Replay("writer");
  EXPECT_TRUE(ExitedWith(r.status, 2)) << r.status;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err.rfind(std::string("wsbridge-replay: ") + kRefusedKey + " on " + replay_, 0), 0u)
      << r.err;

  // pyzmq's and wsbridge-replay's DEALER sockets at least (and the gap-filling tail's, when its
  // handshake came before the tail stopped).
  EXPECT_GE(WaitAuthFailures(b.http_port, "replay", 2), 2);
  EXPECT_EQ(AuthFailures(b.http_port, "send"), 0);
}

// A plain client meets a CURVE server: the mechanisms do not match (ZMTP 0x11000002). It sees
// that in the greeting or, when the bridge hangs up before its greeting went out, as a closed
// connection (libzmq then tries again, and is refused again).
const std::regex kPyPlainRefused(
    "handshake refused protocol 0x11000002|handshake closed\nhandshake closed\nhandshake closed");
const std::regex kToolPlainRefused(
    "^wsbridge-(tail|send|replay): the bridge (refused this client \\(handshake failed on .*: the "
    "endpoint requires CURVE; give --server-key and --client-key-file\\)|closed the connection "
    "during the handshake 3 times in a row on .* \\(does it require CURVE\\? then give "
    "--server-key and --client-key-file\\))\n$");

TEST_F(CurveTest, UnknownKeyAndPlainClientsGetNothing) {
  OsPortBridge b = StartCurveBridge();
  ASSERT_FALSE(replay_.empty());

  Ran r = PySub("stranger", b.pub, 1);
  EXPECT_NE(r.out.find("handshake refused auth 400"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("received 0"), std::string::npos) << r.out;
  r = PySub("", b.pub, 1);
  EXPECT_TRUE(std::regex_search(r.out, kPyPlainRefused)) << r.out;
  EXPECT_NE(r.out.find("received 0"), std::string::npos) << r.out;
  r = PySend("", b.send, "{\"id\":\"py-plain\"}");
  EXPECT_TRUE(std::regex_search(r.out, kPyPlainRefused)) << r.out;
  EXPECT_NE(r.out.find("no reply"), std::string::npos) << r.out;

  r = Tail("stranger", b.pub, 1);
  EXPECT_TRUE(ExitedNonZero(r.status));
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find(kRefusedKey), std::string::npos) << r.err;
  r = Tail("", b.pub, 1);
  EXPECT_TRUE(ExitedNonZero(r.status));
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(std::regex_search(r.err, kToolPlainRefused)) << r.err;
  r = Send("", b.send, "tool-plain");
  EXPECT_TRUE(ExitedWith(r.status, 2));
  EXPECT_TRUE(std::regex_search(r.err, kToolPlainRefused)) << r.err;
  r = Send("stranger", b.send, "tool-stranger");
  EXPECT_TRUE(ExitedWith(r.status, 2));
  EXPECT_NE(r.err.find(kRefusedKey), std::string::npos) << r.err;

  // The unknown key twice on pub and once on send, plain clients once or more (see
  // PlainClientsAreCounted); the unknown key logged by its public key.
  EXPECT_GE(WaitAuthFailures(b.http_port, "pub", 2), 2);
  EXPECT_GE(WaitAuthFailures(b.http_port, "send", 1), 1);
  EXPECT_FALSE(LinesWith(b.child.Stderr(), "zmq.pub: refused client key " + PublicKey("stranger") +
                                               " (not in zmq.curve.authorized_keys_file)")
                   .empty())
      << b.child.Stderr();
}

TEST_F(CurveTest, PlainClientsAreCounted) {
  OsPortBridge b = StartCurveBridge();
  ASSERT_FALSE(replay_.empty());
  // Each plain client, run alone, must raise its endpoint's counter. Whichever side reads the
  // other's whole greeting first sees the mechanism mismatch and hangs up: when that is the
  // client (libzmq's often is), the bridge sees only a handshake closed midway
  // (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL), and must count that too.
  auto counted = [&](const std::string& endpoint, const std::string& who, auto run) {
    const int64_t before = AuthFailures(b.http_port, endpoint);
    Ran r = run();
    EXPECT_GT(WaitAuthFailures(b.http_port, endpoint, before + 1, 3s), before)
        << who << " was not counted in wsbridge_auth_failures_total{endpoint=\"" << endpoint
        << "\"}";
    return r;
  };
  Ran r = counted("pub", "a plain pyzmq SUB", [&] { return PySub("", b.pub, 1); });
  EXPECT_TRUE(std::regex_search(r.out, kPyPlainRefused)) << r.out;
  r = counted("pub", "a plain wsbridge-tail", [&] { return Tail("", b.pub, 1); });
  EXPECT_TRUE(std::regex_search(r.err, kToolPlainRefused)) << r.err;
  r = counted("send", "a plain wsbridge-send", [&] { return Send("", b.send, "tool-plain"); });
  EXPECT_TRUE(std::regex_search(r.err, kToolPlainRefused)) << r.err;
  r = counted("replay", "a plain wsbridge-replay", [&] { return Replay(""); });
  EXPECT_TRUE(std::regex_search(r.err, kToolPlainRefused)) << r.err;
  EXPECT_FALSE(LinesWith(b.child.Stderr(), "refused a client in the CURVE handshake").empty())
      << b.child.Stderr();
}

TEST_F(CurveTest, KeyAddedToTheFileIsAcceptedAfterSighup) {
  OsPortBridge b = StartCurveBridge();
  ASSERT_FALSE(replay_.empty());
  Ran r = PySub("late", b.pub, 1);
  EXPECT_NE(r.out.find("handshake refused auth 400"), std::string::npos) << r.out;

  ASSERT_TRUE(WriteAuthorizedKeys(ReadFileOrEmpty(KeysFile()) + "all " + PublicKey("late") +
                                  " added later\n"));
  const size_t before = b.child.Stderr().size();
  ASSERT_EQ(::kill(b.child.pid(), SIGHUP), 0);
  ASSERT_TRUE(b.child.WaitForOutputAfter(
      before, "SIGHUP: 3 authorized keys loaded from " + KeysFile(), "err", 10s))
      << b.child.Stderr().substr(before);

  // New connections (libzmq never retries the refused one): every endpoint, same process.
  r = PySub("late", b.pub, 3);
  EXPECT_TRUE(ExitedWith(r.status, 0)) << r.out << r.err;
  r = Tail("late", b.pub, 3);
  EXPECT_TRUE(ExitedWith(r.status, 0)) << r.err;
  EXPECT_EQ(LineCount(r.out), 3u) << r.out;
  r = Send("late", b.send, "tool-late");
  EXPECT_TRUE(ExitedWith(r.status, 0)) << r.out << r.err;
  r = Replay("late");
  EXPECT_TRUE(ExitedWith(r.status, 0)) << r.err;
  EXPECT_FALSE(b.child.Exited()) << b.child.Stderr();
  EXPECT_EQ(LinesWith(b.child.Stderr(), "zmq: publishing on").size(), 1u) << "restarted?";
}

TEST_F(CurveTest, MalformedLineOnReloadKeepsTheOldList) {
  OsPortBridge b = StartCurveBridge();
  ASSERT_FALSE(replay_.empty());
  // The new file would let `late` in and drop `reader`, but its line 3 is not a key.
  ASSERT_TRUE(WriteAuthorizedKeys("subscribe " + PublicKey("late") + "\nsend " +
                                  PublicKey("writer") + "\nsubscribe not-a-key\n"));
  const size_t before = b.child.Stderr().size();
  ASSERT_EQ(::kill(b.child.pid(), SIGHUP), 0);
  auto line = b.child.WaitForOutputAfter(before,
                                         "(SIGHUP: keeping the previous authorized keys: "
                                         ".*)",
                                         "err", 10s);
  ASSERT_TRUE(line) << b.child.Stderr().substr(before);
  EXPECT_NE(line->find("zmq.curve.authorized_keys_file: " + KeysFile() + ": line 3: "),
            std::string::npos)
      << *line;

  Ran r = PySub("reader", b.pub, 3);
  EXPECT_TRUE(ExitedWith(r.status, 0)) << r.out << r.err;
  r = Tail("reader", b.pub, 3);
  EXPECT_TRUE(ExitedWith(r.status, 0)) << r.err;
  r = PySub("late", b.pub, 1);
  EXPECT_NE(r.out.find("handshake refused auth 400"), std::string::npos) << r.out;
  EXPECT_FALSE(b.child.Exited()) << b.child.Stderr();
}

TEST_F(CurveTest, WrongServerKeyIsReported) {
  OsPortBridge b = StartCurveBridge();
  ASSERT_FALSE(replay_.empty());
  // The reader's own public key as the server's: the bridge cannot read the client's hello and
  // hangs up, without a word, on every attempt.
  const std::vector<std::string> wrong = {"--server-key=" + PublicKey("reader"),
                                          "--client-key-file=" + dir_.File("reader.key")};
  Ran r =
      Run(Cat({Bin("wsbridge-send"), "--endpoint=" + b.send, "--timeout-ms=10000", "x"}, wrong));
  EXPECT_TRUE(ExitedWith(r.status, 2)) << r.status;
  EXPECT_NE(r.err.find("wsbridge-send: the bridge closed the connection during the CURVE "
                       "handshake 3 times in a row on " +
                       b.send + " (is --server-key the bridge's public key?)"),
            std::string::npos)
      << r.err;
  r = Run(Cat({Bin("wsbridge-tail"), "--endpoint=" + b.pub}, wrong));
  EXPECT_TRUE(ExitedNonZero(r.status)) << r.status;
  EXPECT_NE(r.err.find("is --server-key the bridge's public key?"), std::string::npos) << r.err;
  EXPECT_GE(WaitAuthFailures(b.http_port, "send", 3), 3);
}

TEST_F(CurveTest, ClientKeyFlagsChecked) {
  // No bridge needed: each is refused before connecting, in one line, exit 2.
  const std::string server = "--server-key=@" + dir_.File("server.pub");
  const std::string client = "--client-key-file=" + dir_.File("reader.key");
  struct Case {
    std::vector<std::string> argv;
    std::string error;
  };
  ASSERT_EQ(::chmod(dir_.File("late.key").c_str(), 0640), 0);
  const std::vector<Case> cases = {
      {{Bin("wsbridge-send"), server, "x"},
       "wsbridge-send: --server-key needs --client-key-file (this client's secret key file): "
       "CURVE takes both"},
      {{Bin("wsbridge-tail"), client},
       "wsbridge-tail: --client-key-file needs --server-key (the bridge's public key): CURVE "
       "takes both"},
      {{Bin("wsbridge-tail"), "--fill-gaps", "--replay=tcp://127.0.0.1:1", server},
       "wsbridge-tail: --server-key needs --client-key-file"},
      {{Bin("wsbridge-replay"), "--endpoint=tcp://127.0.0.1:1", client},
       "wsbridge-replay: --client-key-file needs --server-key"},
      {{Bin("wsbridge-replay"), "--db=" + dir_.File("x.db"), server, client},
       "wsbridge-replay: --server-key requires --endpoint"},
      {{Bin("wsbridge-send"), "--server-key=not-a-key", client, "x"},
       "wsbridge-send: --server-key: not a CURVE public key (40 Z85 characters, or @FILE)"},
      {{Bin("wsbridge-send"), server, "--client-key-file=" + dir_.File("late.key"), "x"},
       "wsbridge-send: --client-key-file: " + dir_.File("late.key") +
           " is readable by group or others (mode 0640); chmod 600 it"},
  };
  for (const Case& c : cases) {
    Ran r = Run(c.argv);
    EXPECT_TRUE(ExitedWith(r.status, 2)) << c.error << ": " << r.status;
    EXPECT_EQ(LineCount(r.err), 1u) << r.err;
    EXPECT_EQ(r.err.rfind(c.error, 0), 0u) << r.err;
  }
  for (const char* tool : {"wsbridge-tail", "wsbridge-send", "wsbridge-replay"}) {
    Ran r = Run({Bin(tool), "--help"});
    EXPECT_TRUE(ExitedWith(r.status, 0)) << tool;
    EXPECT_NE(r.out.find("--server-key KEY"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("--client-key-file FILE"), std::string::npos) << r.out;
  }
}

TEST_F(CurveTest, GroupReadableSecretKeyFileRefused) {
  ASSERT_EQ(::chmod(dir_.File("server.key").c_str(), 0640), 0);
  const std::string err = StartRefused(CurveFlags());
  auto lines = LinesWith(err, "zmq.curve.secret_key_file");
  ASSERT_EQ(lines.size(), 1u) << err;
  EXPECT_NE(lines[0].find("zmq.curve.secret_key_file: " + dir_.File("server.key") +
                          " is readable by group or others (mode 0640); chmod 600 it"),
            std::string::npos)
      << err;
}

TEST_F(CurveTest, MalformedAuthorizedKeysLineRefused) {
  // Line 2 is blank, line 3 has a role that does not exist.
  ASSERT_TRUE(WriteAuthorizedKeys("subscribe " + PublicKey("reader") + "\n\nadmin " +
                                  PublicKey("writer") + "\n"));
  const std::string err = StartRefused(CurveFlags());
  auto lines = LinesWith(err, "zmq.curve.authorized_keys_file");
  ASSERT_EQ(lines.size(), 1u) << err;
  EXPECT_NE(lines[0].find("zmq.curve.authorized_keys_file: " + KeysFile() +
                          ": line 3: unknown role \"admin\""),
            std::string::npos)
      << err;
}

TEST_F(CurveTest, NonLoopbackTcpWithoutCurveRefused) {
  const std::string err = StartRefused({}, "tcp://0.0.0.0:*");
  auto lines = LinesWith(err, "is not a loopback address and has no CURVE");
  ASSERT_EQ(lines.size(), 1u) << err;
  EXPECT_NE(lines[0].find("zmq.pub: tcp://0.0.0.0:* is not a loopback address and has no CURVE"),
            std::string::npos)
      << err;

  // The same address with CURVE is served.
  Child exposed = Child::Start(DaemonArgv("tcp://0.0.0.0:*", "journal.db", CurveFlags()),
                               dir_.path(), "exposed");
  EXPECT_TRUE(
      exposed.WaitForOutputAfter(0, R"(zmq: publishing on tcp://0\.0\.0\.0:\d+)", "err", 10s))
      << exposed.Stderr();
}

TEST_F(CurveTest, HandlerStoppedTheDaemonExits) {
  OsPortBridge b = StartCurveBridge();
  ASSERT_FALSE(replay_.empty());
  Ran r = Tail("reader", b.pub, 2);
  EXPECT_TRUE(ExitedWith(r.status, 0)) << r.err;

  ASSERT_EQ(::kill(b.child.pid(), SIGUSR2), 0);
  const int status = b.child.Wait(15s);
  EXPECT_TRUE(ExitedWith(status, 4)) << status << "\n" << b.child.Stderr();
  std::string err = b.child.Stderr();
  while (!err.empty() && err.back() == '\n') err.pop_back();
  const std::string last = err.substr(err.rfind('\n') + 1);
  EXPECT_NE(last.find("stopped (exit 4): the CURVE authentication handler stopped"),
            std::string::npos)
      << err;
}

}  // namespace
}  // namespace wsbridge::testing
