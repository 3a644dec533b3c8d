// Upstream connectivity with real processes (issue 8): an HTTP CONNECT proxy with basic auth
// (ws:// and wss:// through it, a proxy restart, refusals with their status), rotating
// credentials (${file:} headers, upstream.auth_command), protocol.on_open after every open,
// client certificates (mutual TLS).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "integration/harness.h"
#include "storage/store.h"

namespace wsbridge::testing {
namespace {

using namespace std::chrono_literals;

std::string Url(int port, const std::string& scheme = "ws", const std::string& host = "127.0.0.1") {
  return scheme + "://" + host + ":" + std::to_string(port) + "/feed";
}

uint64_t RowCount(const std::string& db) {
  auto b = ReadBounds(db);
  return b ? b->rows : 0;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

void WriteFile(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << content;
  }
  ASSERT_EQ(std::rename(tmp.c_str(), path.c_str()), 0);
}

// Runs a shell command (openssl); true on exit 0.
bool Sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

// A self-signed certificate for "localhost" (P-256): `name`.pem and `name`.key in dir.
bool SelfSigned(const TempDir& dir, const std::string& name, const std::string& cn) {
  return Sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=" +
            cn + " -addext subjectAltName=DNS:localhost -keyout '" + dir.File(name + ".key") +
            "' -out '" + dir.File(name + ".pem") + "'");
}

// The bridge with `env` ("NAME=value") added to its environment.
Child StartBridgeEnv(const std::string& dir, const std::string& url, const std::string& db,
                     std::vector<std::string> flags, const std::vector<std::string>& env,
                     const std::string& tag) {
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
  for (const auto& kv : env) {
    std::string name = kv.substr(0, kv.find('='));
    const char* old = std::getenv(name.c_str());
    saved.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
    setenv(name.c_str(), kv.substr(kv.find('=') + 1).c_str(), 1);
  }
  Child c = StartBridge(dir, url, db, std::move(flags), nullptr, tag);
  for (const auto& [name, old] : saved) {
    if (old) setenv(name.c_str(), old->c_str(), 1);
    else unsetenv(name.c_str());
  }
  return c;
}

// ---- HTTP CONNECT proxy ----------------------------------------------------------------------

class Proxy : public ::testing::Test {
 protected:
  void SetUp() override {
    proxy_ = StartConnectProxy(dir_.path(), {"--user=alice", "--pass=pr0xy-s3cret", "--log=" + dir_.File("tunnels.log")},
                               &proxy_port_);
    ASSERT_NE(proxy_port_, 0) << proxy_.Stderr();
  }
  std::string ProxyUrl(const std::string& pass = "pr0xy-s3cret") const {
    return "http://alice:" + pass + "@127.0.0.1:" + std::to_string(proxy_port_);
  }
  TempDir dir_;
  int proxy_port_ = 0;
  Child proxy_;
};

// ws:// through the proxy from upstream.proxy; wss:// through it from HTTPS_PROXY, with the
// certificate verified against the upstream's name (localhost), not the proxy's (127.0.0.1).
TEST_F(Proxy, WsAndWssThroughAuthenticatingProxy) {
  ASSERT_TRUE(SelfSigned(dir_, "srv", "localhost"));
  int ws_port = 0, wss_port = 0;
  Child ws_up = StartUpstream(dir_.path(), {"--rate=200"}, &ws_port, "ws-upstream");
  Child wss_up = StartUpstream(dir_.path(),
                               {"--rate=200", "--tls-cert=" + dir_.File("srv.pem"),
                                "--tls-key=" + dir_.File("srv.key")},
                               &wss_port, "wss-upstream");
  ASSERT_NE(ws_port, 0);
  ASSERT_NE(wss_port, 0);
  Child ws_bridge = StartBridge(dir_.path(), Url(ws_port), dir_.File("ws.db"),
                                {"--set=upstream.proxy=" + ProxyUrl()}, nullptr, "ws-bridge");
  Child wss_bridge = StartBridgeEnv(
      dir_.path(), Url(wss_port, "wss", "localhost"), dir_.File("wss.db"),
      {"--set=upstream.tls.ca_file=" + dir_.File("srv.pem")},
      {"HTTPS_PROXY=" + ProxyUrl(), "NO_PROXY=example.com,.internal"}, "wss-bridge");
  ASSERT_TRUE(WaitFor([&] { return RowCount(dir_.File("ws.db")) >= 10; }, 20s)) << ws_bridge.Stderr();
  ASSERT_TRUE(WaitFor([&] { return RowCount(dir_.File("wss.db")) >= 10; }, 20s)) << wss_bridge.Stderr();
  std::string tunnels = ReadFileOrEmpty(dir_.File("tunnels.log"));
  EXPECT_NE(tunnels.find("tunnel 127.0.0.1:" + std::to_string(ws_port) + " user=alice"),
            std::string::npos) << tunnels;
  EXPECT_NE(tunnels.find("tunnel localhost:" + std::to_string(wss_port) + " user=alice"),
            std::string::npos) << tunnels;
  EXPECT_NE(wss_bridge.Stderr().find("from HTTPS_PROXY"), std::string::npos) << wss_bridge.Stderr();
  EXPECT_EQ(ws_bridge.Kill(SIGTERM), 0);
  EXPECT_EQ(wss_bridge.Kill(SIGTERM), 0);
  for (const Child* b : {&ws_bridge, &wss_bridge}) {
    EXPECT_EQ(b->Stderr().find("pr0xy-s3cret"), std::string::npos) << b->Stderr();
  }

  // NO_PROXY covering the upstream: direct, the proxy sees nothing new.
  size_t before = Count(ReadFileOrEmpty(dir_.File("tunnels.log")), "tunnel");
  Child direct = StartBridgeEnv(dir_.path(), Url(ws_port), dir_.File("direct.db"), {},
                                {"HTTP_PROXY=" + ProxyUrl(), "NO_PROXY=localhost,127.0.0.0/8"},
                                "direct-bridge");
  ASSERT_TRUE(WaitFor([&] { return RowCount(dir_.File("direct.db")) >= 5; }, 20s)) << direct.Stderr();
  EXPECT_NE(direct.Stderr().find("NO_PROXY covers 127.0.0.1"), std::string::npos) << direct.Stderr();
  EXPECT_EQ(Count(ReadFileOrEmpty(dir_.File("tunnels.log")), "tunnel"), before);
}

// The proxy dies and comes back on the same port: the bridge resumes through it with every
// upstream seq journaled exactly once.
TEST_F(Proxy, SurvivesProxyRestartWithoutGapOrDuplicate) {
  int port = 0;
  Child up = StartUpstream(dir_.path(), {"--rate=300"}, &port);
  ASSERT_NE(port, 0);
  Child bridge = StartBridge(dir_.path(), Url(port), dir_.File("r.db"),
                             {"--set=upstream.proxy=" + ProxyUrl()}, nullptr);
  ASSERT_TRUE(WaitFor([&] { return RowCount(dir_.File("r.db")) >= 50; }, 20s)) << bridge.Stderr();
  proxy_.Kill(SIGKILL);
  ASSERT_TRUE(bridge.WaitForOutput("proxy failed: 127.0.0.1:\\d+: [^\\n]*retrying", "err", 10s))
      << bridge.Stderr();
  uint64_t during = RowCount(dir_.File("r.db"));
  int again = proxy_port_;
  proxy_ = StartConnectProxy(dir_.path(), {"--user=alice", "--pass=pr0xy-s3cret", "--log=" + dir_.File("tunnels.log")},
                             &again);
  ASSERT_EQ(again, proxy_port_) << proxy_.Stderr();
  ASSERT_TRUE(WaitFor([&] { return RowCount(dir_.File("r.db")) >= during + 200; }, 20s))
      << bridge.Stderr();
  EXPECT_EQ(bridge.Kill(SIGTERM), 0);
  auto rows = ReadJournalRows(dir_.File("r.db"));
  ASSERT_GE(rows.size(), during + 200);
  for (size_t i = 0; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i].msg.upstream_seq, i + 1) << "gap or duplicate at row " << i;
  }
  EXPECT_GE(Count(ReadFileOrEmpty(dir_.File("tunnels.log")), "tunnel 127.0.0.1"), 2u);
}

// 407 (bad credentials) is fatal and is the not-ready reason; 403 and 502 are reported with
// their status and retried; no password shows in the log.
TEST_F(Proxy, RefusalsAreReportedWithTheirStatus) {
  int port = 0;
  Child up = StartUpstream(dir_.path(), {"--rate=100"}, &port);
  ASSERT_NE(port, 0);
  int http = FreePort();
  Child bad_auth = StartBridge(dir_.path(), Url(port), dir_.File("a.db"),
                               {"--set=upstream.proxy=" + ProxyUrl("wrong-passw0rd"),
                                "--set=http.listen=127.0.0.1:" + std::to_string(http)},
                               nullptr, "bridge-407");
  int p403 = 0, p502 = 0;
  Child proxy403 = StartConnectProxy(dir_.path(), {"--status=403"}, &p403, "proxy403");
  Child proxy502 = StartConnectProxy(dir_.path(), {"--status=502"}, &p502, "proxy502");
  Child b403 = StartBridge(dir_.path(), Url(port), dir_.File("b.db"),
                           {"--set=upstream.proxy=http://127.0.0.1:" + std::to_string(p403)},
                           nullptr, "bridge-403");
  Child b502 = StartBridge(dir_.path(), Url(port), dir_.File("c.db"),
                           {"--set=upstream.proxy=http://127.0.0.1:" + std::to_string(p502)},
                           nullptr, "bridge-502");
  ASSERT_TRUE(bad_auth.WaitForOutput(
      "proxy refused: HTTP 407 Proxy Authentication Required[^\\n]*retrying in [^\\n]*\\(fatal\\)",
      "err", 10s))
      << bad_auth.Stderr();
  ASSERT_TRUE(b403.WaitForOutput("proxy refused: HTTP 403 Forbidden", "err", 10s)) << b403.Stderr();
  ASSERT_TRUE(b502.WaitForOutput("proxy refused: HTTP 502 Bad Gateway", "err", 10s)) << b502.Stderr();
  EXPECT_EQ(b502.Stderr().find("(fatal)"), std::string::npos);

  // /readyz names the 407 as the reason.
  std::string ready;
  WaitFor([&] {
    ready = HttpGet(http, "/readyz");
    return ready.find("407") != std::string::npos;
  }, 10s);
  EXPECT_EQ(ready.rfind("503", 0), 0u) << ready;
  EXPECT_NE(ready.find("proxy refused: HTTP 407"), std::string::npos) << ready;

  bad_auth.Kill(SIGTERM);
  EXPECT_EQ(bad_auth.Stderr().find("wrong-passw0rd"), std::string::npos) << bad_auth.Stderr();
  EXPECT_EQ(RowCount(dir_.File("a.db")), 0u);
  EXPECT_NE(ReadFileOrEmpty(dir_.File("tunnels.log")).find("refused 127.0.0.1:" + std::to_string(port) + " 407"),
            std::string::npos);
}

// ---- Rotating credentials ----------------------------------------------------------------------

// A ${file:} header is re-read on every attempt: after the file is rewritten, the next
// connection carries the new value; neither value ever shows in the bridge's log.
TEST(Credentials, HeaderFileIsReReadOnEveryConnection) {
  TempDir dir;
  WriteFile(dir.File("token"), "tok-ONE-1111\n");
  int port = 0;
  Child up = StartUpstream(dir.path(),
                           {"--rate=200", "--close-after=20", "--log-headers=" + dir.File("headers.log")},
                           &port);
  ASSERT_NE(port, 0);
  Child bridge = StartBridge(dir.path(), Url(port), dir.File("h.db"),
                             {"--set=upstream.headers.X-Token=${file:" + dir.File("token") + "}",
                              "--set=reconnect.min_uptime_ms=10"},
                             nullptr);
  ASSERT_TRUE(WaitFor([&] { return ReadFileOrEmpty(dir.File("headers.log")).find("tok-ONE-1111") != std::string::npos; }, 10s))
      << bridge.Stderr();
  WriteFile(dir.File("token"), "tok-TWO-2222\n");
  ASSERT_TRUE(WaitFor([&] { return Count(ReadFileOrEmpty(dir.File("headers.log")), "tok-TWO-2222") >= 2; }, 10s))
      << bridge.Stderr();
  EXPECT_EQ(bridge.Kill(SIGTERM), 0);
  // Once the new value is in use, the old one never comes back.
  auto lines = Lines(ReadFileOrEmpty(dir.File("headers.log")));
  bool seen_two = false;
  for (const auto& l : lines) {
    if (l.find("tok-TWO-2222") != std::string::npos) seen_two = true;
    if (seen_two) EXPECT_EQ(l.find("tok-ONE-1111"), std::string::npos) << l;
  }
  std::string log = bridge.Stderr();
  EXPECT_EQ(log.find("tok-ONE-1111"), std::string::npos);
  EXPECT_EQ(log.find("tok-TWO-2222"), std::string::npos);
  EXPECT_GE(Count(log, "connected to"), 3u);
}

// upstream.auth_command runs once per attempt and its headers arrive with that attempt.
TEST(Credentials, AuthCommandRunsOncePerAttempt) {
  TempDir dir;
  {
    std::ofstream s(dir.File("sign.sh"));
    s << "n=$(( $(cat '" << dir.File("runs") << "' 2>/dev/null || echo 0) + 1 ))\n"
      << "echo $n > '" << dir.File("runs") << "'\n"
      << "echo \"X-Nonce: nonce-$n\"\n"
      << "echo \"X-Signature: sig-$n-abcdef\"\n";
  }
  int port = 0;
  Child up = StartUpstream(dir.path(),
                           {"--rate=200", "--close-after=10", "--log-headers=" + dir.File("headers.log")},
                           &port);
  ASSERT_NE(port, 0);
  Child bridge = StartBridge(dir.path(), Url(port), dir.File("c.db"),
                             {"--set=upstream.auth_command=sh " + dir.File("sign.sh"),
                              "--set=reconnect.min_uptime_ms=10"},
                             nullptr);
  ASSERT_TRUE(WaitFor([&] { return Lines(ReadFileOrEmpty(dir.File("headers.log"))).size() >= 4; }, 15s))
      << bridge.Stderr();
  EXPECT_EQ(bridge.Kill(SIGTERM), 0);
  int runs = std::stoi(ReadFileOrEmpty(dir.File("runs")));
  auto lines = Lines(ReadFileOrEmpty(dir.File("headers.log")));
  // Every handshake carried the nonce of its own run, in order; at most the last run (cut short
  // by the shutdown) has no handshake.
  ASSERT_TRUE(static_cast<int>(lines.size()) == runs || static_cast<int>(lines.size()) == runs - 1)
      << runs << " runs, " << lines.size() << " handshakes";
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string n = std::to_string(i + 1);
    EXPECT_NE(lines[i].find("\"nonce-" + n + "\""), std::string::npos) << lines[i];
    EXPECT_NE(lines[i].find("\"sig-" + n + "-abcdef\""), std::string::npos) << lines[i];
  }
  EXPECT_EQ(bridge.Stderr().find("sig-1-abcdef"), std::string::npos);
}

// A failing, hanging or garbling auth command is a failed attempt with the reason.
TEST(Credentials, AuthCommandFailuresAreConnectionFailures) {
  TempDir dir;
  int port = 0;
  Child up = StartUpstream(dir.path(), {"--rate=100"}, &port);
  ASSERT_NE(port, 0);
  Child fails = StartBridge(dir.path(), Url(port), dir.File("f.db"),
                            {"--set=upstream.auth_command=echo starting >&2; echo 'vault: permission denied' >&2; exit 3"},
                            nullptr, "bridge-fail");
  Child hangs = StartBridge(dir.path(), Url(port), dir.File("h.db"),
                            {"--set=upstream.auth_command=sleep 30",
                             "--set=upstream.connect_timeout_ms=400"},
                            nullptr, "bridge-hang");
  Child garbles = StartBridge(dir.path(), Url(port), dir.File("g.db"),
                              {"--set=upstream.auth_command=echo 'X-Ok: 1'; echo 'not a header line'"},
                              nullptr, "bridge-garble");
  EXPECT_TRUE(fails.WaitForOutput("auth command failed: vault: permission denied; retrying", "err", 10s))
      << fails.Stderr();
  EXPECT_TRUE(hangs.WaitForOutput("auth command failed: timed out after 300 ms", "err", 10s))
      << hangs.Stderr();
  EXPECT_TRUE(garbles.WaitForOutput("auth command failed: stdout line 2 is not", "err", 10s))
      << garbles.Stderr();
  // A hanging command does not hold up shutdown.
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(hangs.Kill(SIGTERM), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  EXPECT_EQ(garbles.Stderr().find("not a header line"), std::string::npos);
  for (const char* db : {"f.db", "h.db", "g.db"}) EXPECT_EQ(RowCount(dir.File(db)), 0u) << db;
}

// ---- Subscribe-on-open -------------------------------------------------------------------------

TEST(OnOpen, SentInOrderAfterEveryReconnect) {
  TempDir dir;
  int port = 0;
  // --history=1: each connection goes live at once. With the whole history kept, a bridge that
  // took longer than 75 ms to start (a sanitizer build on a busy machine) found 15 messages
  // waiting at every resume, and the upstream closed each connection before it read the texts.
  Child up = StartUpstream(dir.path(),
                           {"--rate=200", "--close-after=15", "--history=1",
                            "--log-received=" + dir.File("received.log")},
                           &port);
  ASSERT_NE(port, 0);
  Child bridge = StartBridge(dir.path(), Url(port), dir.File("o.db"),
                             {R"(--set=protocol.on_open=["sub alpha {last_seq}", "sub beta", "sub gamma {last_seq}"])",
                              "--set=reconnect.min_uptime_ms=10"},
                             nullptr);
  ASSERT_TRUE(WaitFor([&] { return Lines(ReadFileOrEmpty(dir.File("received.log"))).size() >= 12; }, 15s))
      << bridge.Stderr();
  EXPECT_EQ(bridge.Kill(SIGTERM), 0);
  auto lines = Lines(ReadFileOrEmpty(dir.File("received.log")));
  lines.resize(lines.size() / 3 * 3);
  ASSERT_GE(lines.size(), 12u);
  std::regex alpha(R"(^sub alpha (\d+)$)"), gamma(R"(^sub gamma (\d+)$)");
  uint64_t prev = 0;
  for (size_t i = 0; i < lines.size(); i += 3) {
    std::smatch a, g;
    ASSERT_TRUE(std::regex_match(lines[i], a, alpha)) << i << ": " << lines[i];
    ASSERT_EQ(lines[i + 1], "sub beta") << i;
    ASSERT_TRUE(std::regex_match(lines[i + 2], g, gamma)) << i << ": " << lines[i + 2];
    EXPECT_EQ(a[1], g[1]);
    uint64_t seq = std::stoull(a[1]);
    EXPECT_GE(seq, prev);  // the resume point only moves forward
    if (i > 0) EXPECT_GT(seq, 0u);
    prev = seq;
  }
}

// ---- Client certificates ----------------------------------------------------------------------

class MutualTls : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(SelfSigned(dir_, "srv", "localhost"));
    ASSERT_TRUE(SelfSigned(dir_, "client", "wsbridge-client"));
    ASSERT_TRUE(Sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out '" +
                   dir_.File("other.key") + "'"));
    upstream_ = StartUpstream(dir_.path(),
                              {"--rate=200", "--tls-cert=" + dir_.File("srv.pem"),
                               "--tls-key=" + dir_.File("srv.key"),
                               "--tls-client-ca=" + dir_.File("client.pem")},
                              &port_);
    ASSERT_NE(port_, 0) << upstream_.Stderr();
  }
  std::vector<std::string> Flags(const std::string& cert, const std::string& key) const {
    std::vector<std::string> f = {"--set=upstream.tls.ca_file=" + dir_.File("srv.pem")};
    if (!cert.empty()) f.push_back("--set=upstream.tls.cert_file=" + cert);
    if (!key.empty()) f.push_back("--set=upstream.tls.key_file=" + key);
    return f;
  }
  TempDir dir_;
  int port_ = 0;
  Child upstream_;
};

TEST_F(MutualTls, RefusedWithoutAndAcceptedWithClientCertificate) {
  std::string url = Url(port_, "wss", "localhost");
  Child without = StartBridge(dir_.path(), url, dir_.File("n.db"), Flags("", ""), nullptr, "bridge-nocert");
  Child with = StartBridge(dir_.path(), url, dir_.File("y.db"),
                           Flags(dir_.File("client.pem"), dir_.File("client.key")), nullptr,
                           "bridge-cert");
  ASSERT_TRUE(WaitFor([&] { return RowCount(dir_.File("y.db")) >= 10; }, 20s)) << with.Stderr();
  ASSERT_TRUE(without.WaitForOutput("asked for a client certificate[^\\n]*retrying", "err", 10s))
      << without.Stderr();
  EXPECT_EQ(RowCount(dir_.File("n.db")), 0u);
  EXPECT_EQ(with.Kill(SIGTERM), 0);
}

TEST_F(MutualTls, MismatchedOrMissingKeyIsAStartUpError) {
  std::string url = Url(port_, "wss", "localhost");
  Child mismatched = StartBridge(dir_.path(), url, dir_.File("m.db"),
                                 Flags(dir_.File("client.pem"), dir_.File("other.key")), nullptr,
                                 "bridge-mismatch");
  int status = mismatched.Wait(10s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status;
  EXPECT_NE(mismatched.Stderr().find("upstream.tls.key_file"), std::string::npos) << mismatched.Stderr();
  EXPECT_NE(mismatched.Stderr().find("does not match"), std::string::npos) << mismatched.Stderr();

  Child missing = StartBridge(dir_.path(), url, dir_.File("x.db"),
                              Flags(dir_.File("nope.pem"), dir_.File("client.key")), nullptr,
                              "bridge-missing");
  status = missing.Wait(10s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status;
  EXPECT_NE(missing.Stderr().find("upstream.tls.cert_file"), std::string::npos) << missing.Stderr();

  Child half = StartBridge(dir_.path(), url, dir_.File("z.db"), Flags(dir_.File("client.pem"), ""),
                           nullptr, "bridge-half");
  status = half.Wait(10s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status;
  EXPECT_NE(half.Stderr().find("upstream.tls.key_file"), std::string::npos) << half.Stderr();

  // Reported before anything else happens: no database file, no port bound.
  for (const char* db : {"m.db", "x.db", "z.db"}) {
    EXPECT_FALSE(std::filesystem::exists(dir_.File(db))) << db;
  }
  EXPECT_EQ(missing.Stderr().find("zmq: publishing"), std::string::npos) << missing.Stderr();
}

// ---- upstream.url with credentials --------------------------------------------------------------

TEST(UrlCredentials, RefusedWithoutRepeatingThem) {
  TempDir dir;
  Child bridge = StartBridge(dir.path(), "ws://bob:hunter2-secret@127.0.0.1:1/feed", dir.File("u.db"),
                             {}, nullptr);
  int status = bridge.Wait(10s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status;
  EXPECT_NE(bridge.Stderr().find("upstream.url: credentials in the URL"), std::string::npos)
      << bridge.Stderr();
  EXPECT_EQ(bridge.Stderr().find("hunter2-secret"), std::string::npos) << bridge.Stderr();
}

}  // namespace
}  // namespace wsbridge::testing
