#include "bridge/upstream.h"

#include <spdlog/spdlog.h>

#include <asio/ssl/host_name_verification.hpp>
#include <asio/steady_timer.hpp>
#include <websocketpp/client.hpp>
#include <websocketpp/uri.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "bridge/clock.h"
#include "bridge/connection_policy.h"
#include "bridge/json_fields.h"
#include "bridge/logging.h"
#include "bridge/writer.h"
#include "bridge/ws_config.h"
#include "common/thread_name.h"

namespace wsbridge {
namespace {

// A socket read at most this big is offered to try_commit_inline (a low rate); a bigger one is
// a busy feed, whose commits should overlap the reading of what follows.
constexpr size_t kInlineMaxFrames = 32;
constexpr size_t kInlineMaxBytes = 16 * 1024;

std::string ReplaceLastSeq(std::string text, uint64_t last_seq) {
  static const std::string kToken = "{last_seq}";
  const std::string value = std::to_string(last_seq);
  for (size_t pos = text.find(kToken); pos != std::string::npos;
       pos = text.find(kToken, pos + value.size())) {
    text.replace(pos, kToken.size(), value);
  }
  return text;
}

// Classifies a failed attempt's transport error for the policy (DNS, TCP, TLS, timeout).
Failure::Kind ClassifyTransportError(const std::error_code& ec) {
  if (ec.category() == asio::error::get_ssl_category()) return Failure::Kind::kTls;
  if (ec == asio::error::host_not_found || ec == asio::error::host_not_found_try_again ||
      ec.category() == asio::error::get_netdb_category() ||
      ec.category() == asio::error::get_addrinfo_category()) {
    return Failure::Kind::kDns;
  }
  if (ec == websocketpp::transport::error::make_error_code(websocketpp::transport::error::timeout)) {
    return Failure::Kind::kTimeout;
  }
  if (ec.category() == asio::error::get_system_category()) return Failure::Kind::kTcp;
  return Failure::Kind::kOther;
}

// ---- HTTP CONNECT proxy (upstream.proxy, else HTTPS_PROXY / HTTP_PROXY / NO_PROXY) ------------

// Where and how to tunnel. The credentials are kept apart from the URL handed to websocketpp,
// whose URI parser does not understand user:pass@, and never appear in a message.
struct ProxySettings {
  std::string url;      // "http://host:port", for connection::set_proxy
  std::string display;  // "host:port", for logs and failure reasons
  std::string user;     // percent-decoded; "": no Proxy-Authorization
  std::string pass;
  std::string source;  // "upstream.proxy" or the environment variable it came from
};

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string PercentDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Splits "host:port", "[v6]:port" or "host" (port "" then). False when malformed.
bool SplitHostPort(const std::string& v, std::string* host, std::string* port) {
  port->clear();
  if (!v.empty() && v[0] == '[') {
    size_t close = v.find(']');
    if (close == std::string::npos) return false;
    *host = v.substr(0, close + 1);
    std::string rest = v.substr(close + 1);
    if (rest.empty()) return true;
    if (rest[0] != ':') return false;
    *port = rest.substr(1);
    return true;
  }
  size_t colon = v.rfind(':');
  if (colon == std::string::npos) {
    *host = v;
    return true;
  }
  *host = v.substr(0, colon);
  *port = v.substr(colon + 1);
  return true;
}

// "http://[user:pass@]host[:port][/]"; the scheme may be left out (as in many HTTP_PROXY
// values). Messages name `source`, never the credentials.
StatusOr<ProxySettings> ParseProxy(const std::string& value, const std::string& source) {
  std::string v = Trim(value);
  size_t scheme_end = v.find("://");
  if (scheme_end != std::string::npos) {
    std::string scheme = Lower(v.substr(0, scheme_end));
    if (scheme != "http") {
      return Status::InvalidArgument(source + ": only http:// (HTTP CONNECT) proxies are "
                                     "supported, got " + scheme + "://");
    }
    v = v.substr(scheme_end + 3);
  }
  size_t slash = v.find_first_of("/?#");
  if (slash != std::string::npos) v.resize(slash);
  ProxySettings p;
  p.source = source;
  size_t at = v.rfind('@');
  if (at != std::string::npos) {
    std::string info = v.substr(0, at);
    v = v.substr(at + 1);
    size_t colon = info.find(':');
    p.user = PercentDecode(info.substr(0, colon));
    if (colon != std::string::npos) p.pass = PercentDecode(info.substr(colon + 1));
  }
  std::string host, port;
  if (v.empty() || !SplitHostPort(v, &host, &port) || host.empty() || host == "[]") {
    return Status::InvalidArgument(source + ": expected http://[user:pass@]host:port");
  }
  if (port.empty()) port = "80";
  char* end = nullptr;
  long n = std::strtol(port.c_str(), &end, 10);
  if (*end != '\0' || n < 1 || n > 65535) {
    return Status::InvalidArgument(source + ": bad proxy port \"" + port + "\"");
  }
  p.display = host + ":" + port;
  p.url = "http://" + p.display;
  return p;
}

bool ParseIpv4(const std::string& s, uint32_t* out) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  *out = ntohl(a.s_addr);
  return true;
}

// NO_PROXY as curl and Go read it: comma-separated entries; "*" matches everything; a name
// matches itself and its subdomains (a leading "." or "*." is optional); an entry may carry
// ":port"; IPv4 entries may be CIDR blocks ("10.0.0.0/8").
bool NoProxyMatches(const std::string& no_proxy, const std::string& raw_host,
                    const std::string& port) {
  std::string host = Lower(raw_host);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::stringstream in(no_proxy);
  std::string entry;
  while (std::getline(in, entry, ',')) {
    entry = Lower(Trim(entry));
    if (entry.empty()) continue;
    if (entry == "*") return true;
    std::string name = entry, eport;
    if (std::count(entry.begin(), entry.end(), ':') == 1 || entry[0] == '[') {
      if (!SplitHostPort(entry, &name, &eport)) continue;
    }
    if (name.size() > 2 && name.front() == '[' && name.back() == ']') {
      name = name.substr(1, name.size() - 2);
    }
    if (!eport.empty() && eport != port) continue;
    size_t slash = name.find('/');
    if (slash != std::string::npos) {
      uint32_t net = 0, ip = 0;
      int bits = std::atoi(name.c_str() + slash + 1);
      if (ParseIpv4(name.substr(0, slash), &net) && ParseIpv4(host, &ip) && bits >= 0 &&
          bits <= 32) {
        uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
        if ((net & mask) == (ip & mask)) return true;
      }
      continue;
    }
    if (name.rfind("*.", 0) == 0) name = name.substr(1);
    if (!name.empty() && name[0] == '.') name = name.substr(1);
    if (name.empty()) continue;
    if (host == name) return true;
    if (host.size() > name.size() && host.compare(host.size() - name.size(), name.size(), name) == 0 &&
        host[host.size() - name.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

std::string GetEnv(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// upstream.proxy when set; when it is unset (not explicitly set to ""), the conventional
// variables: https_proxy / HTTPS_PROXY for wss://, http_proxy / HTTP_PROXY for ws://, then
// all_proxy / ALL_PROXY (lower case first, as curl), minus NO_PROXY / no_proxy.
StatusOr<std::optional<ProxySettings>> ResolveProxy(const Config& config,
                                                    const websocketpp::uri& upstream) {
  if (!config.upstream.proxy.empty()) {
    auto p = ParseProxy(config.upstream.proxy, "upstream.proxy");
    if (!p.ok()) return p.status();
    return std::optional<ProxySettings>(*p);
  }
  auto src = config.sources.find("upstream.proxy");
  if (src != config.sources.end() && src->second != "default") {
    return std::optional<ProxySettings>();  // upstream.proxy = "" given on purpose: direct
  }
  std::vector<const char*> vars;
  if (upstream.get_secure()) {
    vars = {"https_proxy", "HTTPS_PROXY"};
  } else {
    vars = {"http_proxy", "HTTP_PROXY"};
  }
  vars.push_back("all_proxy");
  vars.push_back("ALL_PROXY");
  for (const char* var : vars) {
    std::string value = GetEnv(var);
    if (value.empty()) continue;
    std::string no_proxy = GetEnv("no_proxy");
    if (no_proxy.empty()) no_proxy = GetEnv("NO_PROXY");
    if (NoProxyMatches(no_proxy, upstream.get_host(), upstream.get_port_str())) {
      spdlog::info("upstream: {} is set, but NO_PROXY covers {}: connecting directly", var,
                   upstream.get_host());
      return std::optional<ProxySettings>();
    }
    auto p = ParseProxy(value, var);
    if (!p.ok()) return p.status();
    return std::optional<ProxySettings>(*p);
  }
  return std::optional<ProxySettings>();
}

// "Proxy connection error: 407 (Proxy Authentication Required)": websocketpp reports a refused
// CONNECT only as transport error proxy_failed; the status is in the line it writes to the
// error log (elevel::info), which the link captures for this.
bool ParseProxyRefusal(const std::string& elog, int* status, std::string* reason) {
  static const std::regex rx(R"(Proxy connection error: (\d+) \(([^)\n]*)\))");
  std::smatch m;
  std::string::const_iterator begin = elog.begin();
  bool found = false;
  while (std::regex_search(begin, elog.end(), m, rx)) {  // the last one
    *status = std::stoi(m[1]);
    *reason = m[2];
    found = true;
    begin = m[0].second;
  }
  return found;
}

// "asio handle_proxy_read error: End of file" and the like: why the tunnel could not be set up.
std::string ProxyIoError(const std::string& elog) {
  static const std::regex rx(R"(handle_proxy_\w+ error: ([^\n]*))");
  std::smatch m;
  if (std::regex_search(elog, m, rx)) return m[1];
  return "";
}

// ---- upstream.auth_command ---------------------------------------------------------------------

struct AuthResult {
  bool ok = false;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string error;  // one line: the command's last stderr line, or what went wrong
};

std::string LastNonEmptyLine(const std::string& text) {
  std::stringstream in(text);
  std::string line, last;
  while (std::getline(in, line)) {
    line = Trim(line);
    if (!line.empty()) last = line;
  }
  if (last.size() > 300) last = last.substr(0, 300) + "...";
  return last;
}

bool IsHeaderToken(const std::string& s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (std::isalnum(c)) continue;
    if (std::strchr("!#$%&'*+-.^_`|~", c) == nullptr || c == 0) return false;
  }
  return true;
}

// Runs `command` with /bin/sh -c (stdin /dev/null, its own process group, no inherited
// descriptors) and collects stdout and stderr until it exits; after `timeout`, or when `cancel`
// becomes true, its whole process group is killed. Blocks the calling thread.
AuthResult RunAuthCommand(const std::string& command, std::chrono::milliseconds timeout,
                          const std::atomic<bool>& cancel) {
  constexpr size_t kMaxOutput = 64 * 1024;
  AuthResult r;
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    r.error = std::string("cannot create a pipe: ") + std::strerror(errno);
    for (int fd : {out[0], out[1], err[0], err[1]}) {
      if (fd >= 0) close(fd);
    }
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, defaults;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);  // the daemon blocks signals in its threads
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};
  pid_t pid = -1;
  int rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, const_cast<char* const*>(argv), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    close(out[0]);
    close(err[0]);
    r.error = std::string("cannot run /bin/sh: ") + std::strerror(rc);
    return r;
  }

  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  std::string text[2];
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  bool timed_out = false, cancelled = false;
  auto expired = [&] {
    if (cancel.load()) cancelled = true;
    else if (Clock::now() >= deadline) timed_out = true;
    return cancelled || timed_out;
  };
  while ((fds[0].fd >= 0 || fds[1].fd >= 0) && !expired()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    int wait_ms = static_cast<int>(std::clamp<int64_t>(left.count(), 1, 50));
    if (poll(fds, 2, wait_ms) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        if (text[i].size() < kMaxOutput) text[i].append(buf, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(fds[i].fd);
        fds[i].fd = -1;
      }
    }
  }
  int status = 0;
  // Both pipes closed: the command is done or about to be; it still gets until the deadline.
  while (!timed_out && !cancelled && waitpid(pid, &status, WNOHANG) == 0) {
    if (expired()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (timed_out || cancelled) {
    kill(-pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  for (auto& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  std::string last_err = LastNonEmptyLine(text[1]);
  if (cancelled) {
    r.error = "cancelled";
    return r;
  }
  if (timed_out) {
    r.error = "timed out after " + std::to_string(timeout.count()) + " ms" +
              (last_err.empty() ? "" : ": " + last_err);
    return r;
  }
  if (WIFSIGNALED(status)) {
    r.error = last_err.empty() ? "killed by signal " + std::to_string(WTERMSIG(status)) : last_err;
    return r;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    r.error = last_err.empty() ? "exit status " + std::to_string(WEXITSTATUS(status)) : last_err;
    return r;
  }
  std::stringstream lines(text[0]);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (Trim(line).empty()) continue;
    size_t colon = line.find(':');
    std::string name = colon == std::string::npos ? "" : Trim(line.substr(0, colon));
    if (!IsHeaderToken(name)) {
      // The line itself may hold a secret: only its number is reported.
      r.error = "stdout line " + std::to_string(n) + " is not \"Name: value\"";
      r.headers.clear();
      return r;
    }
    r.headers.emplace_back(name, Trim(line.substr(colon + 1)));
  }
  r.ok = true;
  return r;
}

// ---- start-up checks ---------------------------------------------------------------------------

// user:pass@ in upstream.url: websocketpp's URI parser takes it for part of the host, and the
// credentials would end up in error messages. Refused, without repeating the URL.
bool UrlHasUserInfo(const std::string& url) {
  size_t scheme = url.find("://");
  if (scheme == std::string::npos) return false;
  size_t start = scheme + 3;
  size_t end = url.find_first_of("/?#", start);
  if (end == std::string::npos) end = url.size();
  return url.find('@', start) < end;
}

// upstream.tls.cert_file / key_file: both or neither, readable PEM, and the key must belong to
// the certificate; loaded once into a throwaway context so that a mistake stops the start-up
// instead of failing every connection attempt.
Status CheckClientCertificate(const TlsConfig& tls) {
  if (tls.cert_file.empty() && tls.key_file.empty()) return Status::OK();
  if (tls.cert_file.empty()) {
    return Status::InvalidArgument("upstream.tls.cert_file: must be set with upstream.tls.key_file");
  }
  if (tls.key_file.empty()) {
    return Status::InvalidArgument("upstream.tls.key_file: must be set with upstream.tls.cert_file");
  }
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  asio::error_code ec;
  ctx.use_certificate_chain_file(tls.cert_file, ec);
  if (ec) {
    return Status::InvalidArgument("upstream.tls.cert_file: cannot load " + tls.cert_file + ": " +
                                   ec.message());
  }
  ctx.use_private_key_file(tls.key_file, asio::ssl::context::pem, ec);
  if (ec) {
    // OpenSSL checks the pair on loading: a key of another certificate fails here too.
    std::string why = ec.message();
    if (ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == X509_R_KEY_VALUES_MISMATCH) {
      why = "does not match the certificate in upstream.tls.cert_file";
    }
    return Status::InvalidArgument("upstream.tls.key_file: cannot use " + tls.key_file + ": " +
                                   why);
  }
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1) {
    return Status::InvalidArgument("upstream.tls.key_file: " + tls.key_file +
                                   " does not match the certificate in upstream.tls.cert_file");
  }
  return Status::OK();
}

// Everything the two transports share lives in this template; the TLS difference is the
// tls_init_handler, set only for WssClientConfig.
//
// All members are used on the I/O thread only (inside io_.run()), except that Stop() and
// ResumeReading() post to it.
template <typename WsConfig>
class Link final : public Upstream {
 public:
  using Client = websocketpp::client<WsConfig>;
  using ConnectionPtr = typename Client::connection_ptr;
  using MessagePtr = typename Client::message_ptr;

  Link(const Config& config, UpstreamHooks hooks, std::unique_ptr<FrameInspector> inspector,
       PolicyOptions policy_options, std::optional<ProxySettings> proxy)
      : config_(config),
        hooks_(std::move(hooks)),
        inspector_(std::move(inspector)),
        policy_(policy_options, &rng_),
        timer_(io_),
        written_timer_(io_),
        proxy_(std::move(proxy)) {
    client_.clear_access_channels(websocketpp::log::alevel::all);
    client_.clear_error_channels(websocketpp::log::elevel::all);
    // websocketpp tells why a proxy refused the tunnel only in its error log: keep the info
    // channel, in memory, cleared on every attempt (ParseProxyRefusal reads it on failure).
    client_.set_error_channels(websocketpp::log::elevel::info);
    client_.get_elog().set_ostream(&elog_);
    client_.init_asio(&io_);
    InitTls();
    // Small frames must not wait for Nagle + delayed ACK (a 40 ms stall on Linux). Set once
    // the socket is connected: websocketpp's socket_init handler runs before the socket is
    // opened, where the option fails silently.
    client_.set_tcp_pre_init_handler([this](websocketpp::connection_hdl h) {
      websocketpp::lib::error_code wec;
      auto con = client_.get_con_from_hdl(h, wec);
      if (wec) return;
      asio::error_code ec;
      con->get_raw_socket().set_option(asio::ip::tcp::no_delay(true), ec);
      if (ec) spdlog::debug("upstream: TCP_NODELAY not set: {}", ec.message());
    });
  }

  ~Link() override {
    auth_cancel_ = true;
    if (auth_thread_.joinable()) auth_thread_.join();
  }

  int Run() override {
    asio::post(io_, [this] { Apply(policy_.Start(Now())); });
    io_.run();
    return exit_code_;
  }

  void Stop() override {
    asio::post(io_, [this] {
      if (stopping_) return;
      stopping_ = true;
      policy_.Stop(Now());
      timer_.cancel();
      auth_cancel_ = true;  // a running auth_command is killed; its thread posts and ends
      if (!con_) return;
      auto state = con_->get_state();
      websocketpp::lib::error_code ec;
      if (state == websocketpp::session::state::open) {
        con_->set_close_handshake_timeout(2000);
        con_->close(websocketpp::close::status::normal, "bridge shutting down", ec);
      } else if (state == websocketpp::session::state::connecting) {
        con_->terminate(websocketpp::lib::error_code());
      }
    });
  }

  void Deliver(uint64_t conn, std::vector<OutboxRow> rows) override {
    asio::post(io_, [this, conn, rows = std::move(rows)]() mutable {
      if (!con_ || conn != con_id_ || con_->get_state() != websocketpp::session::state::open) {
        return;
      }
      for (OutboxRow& r : rows) {
        auto ec = con_->send(r.payload, r.binary ? websocketpp::frame::opcode::binary
                                                 : websocketpp::frame::opcode::text);
        if (ec) {
          spdlog::warn("upstream: outbound send failed: {}", ec.message());
          return;  // the connection is going away; the next open resends from the outbox
        }
        if (!acks_) {
          enqueued_bytes_ += r.payload.size();
          unwritten_.push_back({r.outbox_seq, enqueued_bytes_});
        }
      }
      CheckWritten();
    });
  }

  void ResumeReading() override {
    asio::post(io_, [this] {
      if (!paused_ || !con_) return;
      paused_ = false;
      con_->resume_reading();
    });
  }

 private:
  static TimePoint Now() { return SteadyClock::Default().Now(); }

  void InitTls();

  // Carries out what the policy asked for, then re-arms the one timer at its next deadline.
  void Apply(const Actions& actions) {
    for (const Action& a : actions) {
      switch (a.kind) {
        case Action::Kind::kConnect:
          Connect(a.conn);
          break;
        case Action::Kind::kSendPing:
          if (con_ && a.conn == con_id_ &&
              con_->get_state() == websocketpp::session::state::open) {
            websocketpp::lib::error_code ec;
            con_->ping("", ec);
            if (!config_.heartbeat.app_ping.empty()) SendText(config_.heartbeat.app_ping);
          }
          break;
        case Action::Kind::kCloseDead:
          if (con_ && a.conn == con_id_) {
            spdlog::warn("upstream: {}: dropping the connection", a.reason);
            hooks_.stats->CountReconnectReason(ReasonClass(a.reason));
            // No close handshake with a dead peer: end the connection now.
            con_->terminate(websocketpp::lib::error_code());
          }
          break;
        case Action::Kind::kExit:
          spdlog::critical("upstream: {}", a.reason);
          hooks_.stats->SetUpstreamReason(a.reason);
          exit_code_ = 3;
          stopping_ = true;
          if (con_) con_->terminate(websocketpp::lib::error_code());
          break;
      }
    }
    PublishStatus();
    ArmTimer();
  }

  void ArmTimer() {
    auto deadline = policy_.NextDeadline();
    if (!deadline || stopping_) {
      timer_.cancel();
      return;
    }
    timer_.expires_at(std::chrono::time_point_cast<std::chrono::steady_clock::duration>(*deadline));
    timer_.async_wait([this](const asio::error_code& e) {
      if (!e && !stopping_) Apply(policy_.OnTimer(Now()));
    });
  }

  void PublishStatus() {
    PolicyStatus st = policy_.status();
    hooks_.stats->connected = st.state == PolicyState::kOpen ? 1 : 0;
    hooks_.stats->SetUpstreamState(ToString(st.state), st.reason);
  }

  // A short label for the reconnects-by-reason metric.
  static std::string ReasonClass(const std::string& reason) {
    if (reason.rfind("heartbeat", 0) == 0) return "heartbeat_timeout";
    if (reason.rfind("connect timeout", 0) == 0) return "connect_timeout";
    return "other";
  }

  // A new attempt: first upstream.auth_command, when set, on a helper thread (it may take up to
  // its timeout; the I/O thread keeps serving timers meanwhile), then StartConnection.
  void Connect(ConnId id) {
    if (stopping_) return;
    if (config_.upstream.auth_command.empty()) {
      StartConnection(id, {});
      return;
    }
    if (auth_thread_.joinable()) {
      // Only a command of an attempt the policy already gave up on can still be running.
      auth_cancel_ = true;
      auth_thread_.join();
    }
    auth_cancel_ = false;
    auto guard = asio::make_work_guard(io_);  // Run() must not return before the result is in
    auth_thread_ = std::thread([this, id, guard = std::move(guard)]() mutable {
      NameThisThread("wsb-auth");
      AuthResult r = RunAuthCommand(config_.upstream.auth_command, AuthTimeout(), auth_cancel_);
      asio::post(io_, [this, id, r = std::move(r)]() mutable { AfterAuth(id, std::move(r)); });
      guard.reset();
    });
  }

  // upstream.auth_command gets 3/4 of upstream.connect_timeout_ms (10 s without one), so that
  // its own timeout, with its stderr, is the reason rather than the policy's connect timeout.
  std::chrono::milliseconds AuthTimeout() const {
    int64_t ms = config_.upstream.connect_timeout_ms;
    return std::chrono::milliseconds(ms > 0 ? std::max<int64_t>(ms * 3 / 4, 1) : 10000);
  }

  void AfterAuth(ConnId id, AuthResult r) {
    if (stopping_ || id != policy_.conn() || policy_.state() != PolicyState::kConnecting) return;
    if (!r.ok) {
      Fail(id, {Failure::Kind::kAuthCommand, 0, std::nullopt, r.error});
      return;
    }
    for (const auto& h : r.headers) RegisterLogSecret(h.second);
    StartConnection(id, r.headers);
  }

  void StartConnection(ConnId id,
                       const std::vector<std::pair<std::string, std::string>>& auth_headers) {
    websocketpp::lib::error_code ec;
    ConnectionPtr con = client_.get_connection(config_.upstream.url, ec);
    if (ec) {
      Fail(id, {Failure::Kind::kOther, 0, std::nullopt, ec.message()});
      return;
    }
    for (const auto& [name, raw] : config_.upstream.headers) {
      auto value = ExpandFileRefs(raw);
      if (!value.ok()) {
        Fail(id, {Failure::Kind::kOther, 0, std::nullopt,
                  "upstream.headers." + name + ": " + value.status().message()});
        return;
      }
      // Rotated values must be redacted too: register what was read this time.
      if (raw.find("${file:") != std::string::npos) RegisterLogSecret(*value);
      con->append_header(name, *value);
    }
    for (const auto& [name, value] : auth_headers) con->replace_header(name, value);
    if (proxy_) {
      // CONNECT host:port of the upstream for ws:// and wss:// alike; TLS then runs inside the
      // tunnel, with SNI and host name verification against the upstream's host (InitTls).
      con->set_proxy(proxy_->url, ec);
      if (!ec && !proxy_->user.empty()) con->set_proxy_basic_auth(proxy_->user, proxy_->pass, ec);
      if (ec) {
        Fail(id, {Failure::Kind::kProxy, 0, std::nullopt, proxy_->display + ": " + ec.message()});
        return;
      }
    }
    for (const auto& p : config_.upstream.subprotocols) con->add_subprotocol(p, ec);
    con->set_max_message_size(config_.upstream.max_message_bytes);
    con->set_open_handshake_timeout(0);  // the policy's connect timeout bounds the attempt
    con->set_open_handler([this, id](websocketpp::connection_hdl) { OnOpen(id); });
    con->set_fail_handler([this, id](websocketpp::connection_hdl) { OnFail(id); });
    con->set_close_handler([this, id](websocketpp::connection_hdl) { OnClose(id); });
    con->set_message_handler([this, id](websocketpp::connection_hdl, MessagePtr msg) {
      OnMessage(id, std::move(msg));
    });
    con->set_pong_handler([this, id](websocketpp::connection_hdl, std::string) { OnPong(id); });
    con->set_ping_handler([this, id](websocketpp::connection_hdl, std::string) {
      policy_.OnActivity(Now(), id);
      return true;  // answer it
    });
    con_ = con;
    con_id_ = id;
    tls_error_.clear();
    client_cert_requested_ = false;
    elog_.str("");
    paused_ = false;
    client_.connect(con);
  }

  // Without acks an outbox row is done once websocketpp has handed its frame to the socket:
  // its buffered amount counts the payload bytes not yet taken for writing.
  void CheckWritten() {
    if (unwritten_.empty() || !con_) return;
    uint64_t taken = enqueued_bytes_ - con_->get_buffered_amount();
    uint64_t up_to = 0, count = 0;
    while (!unwritten_.empty() && unwritten_.front().end_bytes <= taken) {
      up_to = unwritten_.front().outbox_seq;
      ++count;
      unwritten_.pop_front();
    }
    if (count > 0) {
      LinkEvent e;
      e.kind = LinkEvent::Kind::kWritten;
      e.conn = con_id_;
      e.up_to = up_to;
      e.count = count;
      hooks_.events->Push(std::move(e));
    }
    if (!unwritten_.empty()) {
      written_timer_.expires_after(std::chrono::milliseconds(1));
      written_timer_.async_wait([this](const asio::error_code& e) {
        if (!e) CheckWritten();
      });
    }
  }

  void PushLinkEvent(LinkEvent::Kind kind, ConnId id) {
    LinkEvent e;
    e.kind = kind;
    e.conn = id;
    hooks_.events->Push(std::move(e));
  }

  void OnOpen(ConnId id) {
    if (id != con_id_) return;
    uint64_t resume = hooks_.resume_seq();
    spdlog::info("upstream: connected to {}, resuming after upstream seq {}", RedactedUrl(),
                 resume);
    hooks_.stats->connects.fetch_add(1, std::memory_order_relaxed);
    if (!config_.protocol.resume.empty()) {
      SendText(ReplaceLastSeq(config_.protocol.resume, resume));
    }
    for (const auto& text : config_.protocol.on_open) SendText(ReplaceLastSeq(text, resume));
    // Only now may the outbox flow: after the resume and on_open texts.
    enqueued_bytes_ = 0;
    unwritten_.clear();
    PushLinkEvent(LinkEvent::Kind::kOpen, id);
    Apply(policy_.OnOpen(Now(), id));
  }

  void OnMessage(ConnId id, MessagePtr msg) {
    if (id != con_id_) return;
    // websocketpp delivers every message of one socket read before it returns to the event
    // loop: they are handed on together, after the last one, and the first one reads the
    // clocks for all of them.
    if (!hand_off_posted_) {
      hand_off_posted_ = true;
      read_at_unix_ns_ = WallNowNs();
      policy_.OnActivity(Now(), id);
      asio::post(io_, [this] { HandOff(); });
    }
    InboundFrame f;
    f.received_at_unix_ns = read_at_unix_ns_;
    f.binary = msg->get_opcode() == websocketpp::frame::opcode::binary;
    std::string& payload = msg->get_raw_payload();
    if (!f.binary && inspector_->active()) {
      FrameInfo info = inspector_->Inspect(payload);
      if (info.kind == FrameInfo::Kind::kAppPong) {
        hooks_.stats->app_pongs.fetch_add(1, std::memory_order_relaxed);
        OnPong(id);
        return;
      }
      if (info.kind == FrameInfo::Kind::kAck) {
        LinkEvent e;
        e.kind = LinkEvent::Kind::kAck;
        e.conn = id;
        e.id = std::move(info.ack_id);
        hooks_.events->Push(std::move(e));
        return;
      }
      f.upstream_seq = info.upstream_seq;
      f.topic = std::move(info.topic);
    }
    if (!f.upstream_seq) hooks_.stats->frames_no_seq.fetch_add(1, std::memory_order_relaxed);
    f.payload = std::move(payload);
    read_bytes_ += f.payload.size();
    read_cost_ += InboundQueue::Cost(f);
    read_frames_.push_back(std::move(f));
    if (!paused_ && hooks_.queue->WouldReachHighWater(read_cost_)) {
      // Paused here, inside websocketpp's read handler, and not through pause_reading(): that
      // one is posted, so it lands after the handler has already started the next socket read,
      // and a resume_reading() overtaking that read starts a second read into the same buffer
      // (a lost or garbled stream: websocketpp issue #1050). Set now, the flag stops the
      // handler's next read; while paused no read is in flight, and resume starts the only one.
      paused_ = true;
      hooks_.stats->reads_paused.fetch_add(1, std::memory_order_relaxed);
      con_->handle_pause_reading();
    }
  }

  // A small read (a low rate: a few messages) is committed right here when the writer is idle,
  // saving every message a thread hand-off. A large one goes to the writer through the queue,
  // so that its commit overlaps reading the next one.
  void HandOff() {
    hand_off_posted_ = false;
    if (read_frames_.empty()) return;  // only pongs and acks in this read
    hooks_.stats->frames_in.fetch_add(read_frames_.size(), std::memory_order_relaxed);
    hooks_.stats->bytes_in.fetch_add(read_bytes_, std::memory_order_relaxed);
    const bool small = read_frames_.size() <= kInlineMaxFrames && read_bytes_ <= kInlineMaxBytes;
    read_bytes_ = 0;
    read_cost_ = 0;
    // Paused (by this read: none follows while paused), the frames go to the queue: the
    // writer's PopAll() of them is what resumes reading.
    if (!paused_ && small && hooks_.try_commit_inline &&
        hooks_.try_commit_inline(&read_frames_)) {
      return;
    }
    hooks_.queue->PushAll(&read_frames_, paused_);
  }

  void OnPong(ConnId id) {
    policy_.OnPong(Now(), id);
    auto rtt = policy_.status().last_rtt;
    if (rtt && rtt->count() != hooks_.stats->last_rtt_ns) {
      hooks_.stats->last_rtt_ns = rtt->count();
      hooks_.stats->rtt_seconds.Observe(rtt->count());
    }
  }

  void OnFail(ConnId id) {
    if (id != con_id_ || !con_) return;
    Failure f;
    int status = static_cast<int>(con_->get_response_code());
    if (status != 0 && status != 101) {
      f.kind = Failure::Kind::kHandshakeStatus;
      f.http_status = status;
      f.message = con_->get_response_msg();
      const std::string& ra = con_->get_response_header("Retry-After");
      if (!ra.empty()) f.retry_after = ParseRetryAfter(ra, std::chrono::system_clock::now());
    } else if (!tls_error_.empty()) {
      f.kind = Failure::Kind::kTls;
      f.message = tls_error_;
    } else {
      std::error_code tec = con_->get_transport_ec();
      f.kind = ClassifyTransportError(tec ? tec : con_->get_ec());
      f.message = tec ? tec.message() : con_->get_ec().message();
      if (proxy_) ClassifyProxyFailure(tec ? tec : con_->get_ec(), &f);
    }
    if (client_cert_requested_ && f.kind != Failure::Kind::kHandshakeStatus) {
      f.message += " (the upstream asked for a client certificate; none is configured: "
                   "upstream.tls.cert_file / key_file)";
    }
    Fail(id, f);
  }

  // With a proxy, DNS and TCP failures are about the proxy (the only host the bridge dials),
  // and websocketpp's proxy errors carry the proxy's HTTP status only in its error log.
  void ClassifyProxyFailure(const std::error_code& tec, Failure* f) {
    namespace te = websocketpp::transport::asio::error;
    const std::string log = elog_.str();
    int status = 0;
    std::string reason;
    if (tec == te::make_error_code(te::proxy_failed) && ParseProxyRefusal(log, &status, &reason)) {
      f->kind = Failure::Kind::kProxy;
      f->http_status = status;
      f->message = reason + " (proxy " + proxy_->display + ")";
      return;
    }
    std::string io = ProxyIoError(log);
    if (!io.empty()) {
      f->kind = Failure::Kind::kProxy;
      f->message = proxy_->display + ": " + io;
    } else if (f->kind == Failure::Kind::kDns || f->kind == Failure::Kind::kTcp ||
               tec == te::make_error_code(te::proxy_failed) ||
               tec == te::make_error_code(te::proxy_invalid)) {
      f->kind = Failure::Kind::kProxy;
      f->message = proxy_->display + ": " + f->message;
    }
  }

  void Fail(ConnId id, const Failure& f) {
    hooks_.stats->connect_failures.fetch_add(1, std::memory_order_relaxed);
    hooks_.stats->CountReconnectReason(ToString(f.kind));
    Actions actions = policy_.OnConnectFailed(Now(), id, f);
    if (!stopping_) {
      std::string what = f.ToString();
      if (f.retry_after) what += " (Retry-After " + FormatDuration(*f.retry_after) + ")";
      LogRetry(what);
    }
    Apply(actions);
  }

  void OnClose(ConnId id) {
    if (id != con_id_ || !con_) return;
    CloseInfo info;
    auto local = con_->get_local_close_code();
    info.code = con_->get_remote_close_code();
    info.reason = con_->get_remote_close_reason();
    std::string what;
    if (local == websocketpp::close::status::message_too_big) {
      info.local = true;
      info.code = local;
      hooks_.stats->oversized_closes.fetch_add(1, std::memory_order_relaxed);
      what = "closed with 1009: an inbound frame exceeded upstream.max_message_bytes (" +
             std::to_string(config_.upstream.max_message_bytes) + ")";
    } else {
      what = "connection closed (code " + std::to_string(info.code) +
             (info.reason.empty() ? "" : ", \"" + info.reason + "\"") + ")";
    }
    CheckWritten();  // rows fully taken before the close still count as written
    unwritten_.clear();
    PushLinkEvent(LinkEvent::Kind::kClosed, id);
    con_.reset();
    if (stopping_) {
      spdlog::info("upstream: closed");
      return;
    }
    hooks_.stats->CountReconnectReason(info.local ? "message_too_big" : "closed");
    Actions actions = policy_.OnClosed(Now(), id, info);
    LogRetry(what);
    Apply(actions);
  }

  void LogRetry(const std::string& what) {
    PolicyStatus st = policy_.status();
    if (st.state == PolicyState::kBackingOff && st.last_delay) {
      if (st.fatal) {
        // The policy keeps the fatal reason while it retries at the cap: name it only when
        // this failure is a different one.
        if (st.reason.rfind(what, 0) == 0) {
          spdlog::warn("upstream: {}; retrying in {} (fatal)", what,
                       FormatDuration(*st.last_delay));
        } else {
          spdlog::warn("upstream: {}; retrying in {} (still fatal: {})", what,
                       FormatDuration(*st.last_delay), st.reason);
        }
      } else {
        spdlog::warn("upstream: {}; retrying in {}", what, FormatDuration(*st.last_delay));
      }
    } else {
      spdlog::warn("upstream: {}", what);
    }
  }

  void SendText(const std::string& text) {
    auto ec = con_->send(text, websocketpp::frame::opcode::text);
    if (ec) spdlog::warn("upstream: send failed: {}", ec.message());
  }

  std::string RedactedUrl() const {
    websocketpp::uri u(config_.upstream.url);
    if (!u.get_valid()) return "<invalid url>";
    return u.str();
  }

  const Config& config_;
  UpstreamHooks hooks_;
  std::unique_ptr<FrameInspector> inspector_;
  SystemRandom rng_;
  ConnectionPolicy policy_;
  asio::io_context io_;
  std::ostringstream elog_;  // websocketpp's error log of the current attempt (info level)
  Client client_;
  asio::steady_timer timer_;
  asio::steady_timer written_timer_;
  const bool acks_ = !config_.protocol.ack_match.empty();
  struct Unwritten {
    uint64_t outbox_seq;
    uint64_t end_bytes;  // enqueued_bytes_ after this row
  };
  std::deque<Unwritten> unwritten_;  // sent rows not yet taken by the socket writer
  uint64_t enqueued_bytes_ = 0;
  ConnectionPtr con_;
  ConnId con_id_ = 0;
  bool stopping_ = false;
  bool paused_ = false;  // reading paused for backpressure; no socket read in flight meanwhile
  std::vector<InboundFrame> read_frames_;  // this socket read's frames, not yet handed on
  size_t read_bytes_ = 0;
  size_t read_cost_ = 0;  // the same frames as InboundQueue counts them
  int64_t read_at_unix_ns_ = 0;  // when this socket read's first message was delivered
  bool hand_off_posted_ = false;
  int exit_code_ = 0;
  std::string tls_error_;
  bool client_cert_requested_ = false;  // the TLS server asked for one and none is configured
  const std::optional<ProxySettings> proxy_;
  std::thread auth_thread_;  // runs upstream.auth_command for the current attempt
  std::atomic<bool> auth_cancel_{false};
};

template <>
void Link<WsClientConfig>::InitTls() {}

template <>
void Link<WssClientConfig>::InitTls() {
  client_.set_tls_init_handler([this](websocketpp::connection_hdl) {
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                     asio::ssl::context::no_tlsv1_1);
    const TlsConfig& tls = config_.upstream.tls;
    asio::error_code ec;
    if (!tls.cert_file.empty()) {
      ctx->use_certificate_chain_file(tls.cert_file, ec);
      if (!ec) ctx->use_private_key_file(tls.key_file, asio::ssl::context::pem, ec);
      if (ec) tls_error_ = "client certificate: " + ec.message();
    } else {
      // Without one configured, note when the server asks for a client certificate: its
      // refusal that follows says only "handshake failure".
      static const int kFlagIndex = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
      SSL_CTX_set_ex_data(ctx->native_handle(), kFlagIndex, &client_cert_requested_);
      SSL_CTX_set_client_cert_cb(ctx->native_handle(), [](SSL* ssl, X509**, EVP_PKEY**) -> int {
        auto* flag = static_cast<bool*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), kFlagIndex));
        if (flag) *flag = true;
        return 0;  // no certificate
      });
    }
    if (!tls.verify) {
      ctx->set_verify_mode(asio::ssl::verify_none);
      return ctx;
    }
    ctx->set_default_verify_paths(ec);
    if (!tls.ca_file.empty()) ctx->load_verify_file(tls.ca_file, ec);
    ctx->set_verify_mode(asio::ssl::verify_peer);
    std::string host = websocketpp::uri(config_.upstream.url).get_host();
    ctx->set_verify_callback([this, host](bool preverified, asio::ssl::verify_context& vc) {
      bool ok = asio::ssl::host_name_verification(host)(preverified, vc);
      if (!ok && tls_error_.empty()) {
        // The TLS shutdown that follows hides why; remember it for the failure reason.
        int err = X509_STORE_CTX_get_error(vc.native_handle());
        tls_error_ = preverified ? "certificate does not match host name " + host
                                 : std::string("certificate verify failed: ") +
                                       X509_verify_cert_error_string(err);
      }
      return ok;
    });
    return ctx;
  });
}

}  // namespace

StatusOr<std::unique_ptr<Upstream>> Upstream::Create(const Config& config, UpstreamHooks hooks) {
  if (UrlHasUserInfo(config.upstream.url)) {
    return Status::InvalidArgument(
        "upstream.url: credentials in the URL (user:pass@) are not supported; send them as a "
        "header instead, e.g. upstream.headers.Authorization = \"Basic ...\" (or "
        "${file:/path}), or produce them with upstream.auth_command");
  }
  websocketpp::uri uri(config.upstream.url);
  if (!uri.get_valid()) {
    return Status::InvalidArgument("upstream.url: not a valid URL: " + config.upstream.url);
  }
  InspectorOptions io;
  io.seq_field = config.protocol.seq_field;
  io.topic_field = config.protocol.topic_field;
  io.app_pong = config.heartbeat.app_pong;
  io.ack_match = config.protocol.ack_match;
  io.ack_id_field = config.protocol.ack_id_field;
  auto inspector = FrameInspector::Create(io);
  if (!inspector.ok()) return inspector.status();
  auto policy = PolicyOptions::FromConfig(config);
  if (!policy.ok()) return policy.status();
  if (Status st = CheckClientCertificate(config.upstream.tls); !st.ok()) return st;
  if (!uri.get_secure() && !config.upstream.tls.cert_file.empty()) {
    spdlog::warn("upstream.tls.cert_file is set but upstream.url is ws://: no TLS, not used");
  }
  auto proxy = ResolveProxy(config, uri);
  if (!proxy.ok()) return proxy.status();
  if (*proxy) {
    const ProxySettings& p = **proxy;
    RegisterLogSecret(p.pass, SecretKind::kConfig);
    if (!p.user.empty()) RegisterLogSecret(p.user + ":" + p.pass, SecretKind::kConfig);
    spdlog::info("upstream: through HTTP CONNECT proxy {} (from {}{})", p.display, p.source,
                 p.user.empty() ? "" : ", with basic auth");
  }
  if (uri.get_secure()) {
    if (!config.upstream.tls.verify) {
      spdlog::warn("upstream.tls.verify=false: the upstream's certificate and host name are NOT "
                   "checked");
    }
    return std::unique_ptr<Upstream>(new Link<WssClientConfig>(
        config, std::move(hooks), std::move(inspector).value(), *policy, std::move(proxy).value()));
  }
  return std::unique_ptr<Upstream>(new Link<WsClientConfig>(
      config, std::move(hooks), std::move(inspector).value(), *policy, std::move(proxy).value()));
}

}  // namespace wsbridge
