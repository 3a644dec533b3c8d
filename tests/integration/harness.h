// Integration-test harness: real child processes, real sockets, real files.
//
// Child         a started binary whose stdout and stderr go to files in the test's directory
//               (read them with Child::Output(); nothing can block on a full pipe)
// (WaitFor, which polls a condition until it holds or a deadline passes, is in testutil.h)
// FreePort      a TCP port chosen by the OS (bind port 0, read it, close)
// Subscriber    a ZeroMQ SUB socket that decodes [topic][Envelope] (a CURVE client if given keys)
// ReceiveUntilSeq  a subscriber's run up to a seq: when its first and last message arrived
// ThreadsOf     the threads of a running process (id, name)
// ExitedWith, ExitedNonZero, ExitedZero, LinesWith, LineCount  small checks on results
//
// Everything here is used from the test's main thread only.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <cstring>
#include <sys/statvfs.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include "client/curve_client.h"  // CurveClientKeys only (a struct; nothing to link)
#include "testutil.h"
#include "wsbridge.pb.h"

namespace wsbridge::testing {

// The build's bridge/ folder; WSB_BIN_DIR in the environment points the load tools at another
// build's (an A/B of two builds with the same tool).
inline std::string BinDir() {
  const char* dir = std::getenv("WSB_BIN_DIR");
  return dir != nullptr && *dir != '\0' ? dir : WSB_BIN_DIR;
}
inline std::string Bin(const std::string& name) {
  std::string dir = BinDir();  // .../bridge; the tools live in ../tools
  if (name == "wsbridge") return dir + "/wsbridge";
  return dir + "/../tools/" + name;
}

// A waitpid() status: exited with `code`; exited with any code but 0; exited with 0.
inline bool ExitedWith(int status, int code) {
  return WIFEXITED(status) && WEXITSTATUS(status) == code;
}
inline bool ExitedNonZero(int status) { return WIFEXITED(status) && WEXITSTATUS(status) != 0; }
inline bool ExitedZero(int status) { return ExitedWith(status, 0); }

// The lines of `text` that contain `part`, and how many lines `text` has.
inline std::vector<std::string> LinesWith(const std::string& text, const std::string& part) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.find(part) != std::string::npos) out.push_back(line);
  }
  return out;
}
inline size_t LineCount(const std::string& text) {
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

inline std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The threads of a running process, from /proc/<pid>/task: id and name (comm).
struct ThreadInfo {
  int tid = 0;
  std::string name;
};
inline std::vector<ThreadInfo> ThreadsOf(pid_t pid) {
  std::vector<ThreadInfo> out;
  std::error_code ec;
  for (const auto& t :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::string name = ReadFileOrEmpty(t.path().string() + "/comm");
    if (!name.empty() && name.back() == '\n') name.pop_back();
    out.push_back({std::stoi(t.path().filename().string()), std::move(name)});
  }
  return out;
}

// CPU seconds (user + system) used so far, from a stat file of /proc (/proc/<pid>/stat, or a
// thread's /proc/<pid>/task/<tid>/stat); 0 when it cannot be read.
inline double StatCpuSeconds(const std::string& stat_path) {
  std::ifstream in(stat_path);
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t p = stat.rfind(')');  // the command name may hold spaces
  if (p == std::string::npos) return 0;
  std::istringstream fields(stat.substr(p + 2));
  std::string f;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {  // fields 14 and 15: utime, stime
    if (i == 14) utime = std::stoull(f);
    if (i == 15) stime = std::stoull(f);
  }
  return double(utime + stime) / double(sysconf(_SC_CLK_TCK));
}
inline double ProcessCpuSeconds(pid_t pid) {
  return StatCpuSeconds("/proc/" + std::to_string(pid) + "/stat");
}

inline int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  Child(Child&& o) noexcept { *this = std::move(o); }
  Child& operator=(Child&& o) noexcept {
    std::swap(pid_, o.pid_);
    std::swap(out_, o.out_);
    std::swap(err_, o.err_);
    return *this;
  }
  ~Child() { Kill(SIGKILL); }

  // Starts argv[0] with the given arguments; output goes to <dir>/<tag>.out and .err (appended,
  // so restarts of the same tag keep one log).
  static Child Start(const std::vector<std::string>& argv, const std::string& dir,
                     const std::string& tag, const std::vector<std::string>& env = {}) {
    Child c;
    c.out_ = dir + "/" + tag + ".out";
    c.err_ = dir + "/" + tag + ".err";
    pid_t pid = fork();
    if (pid == 0) {
      int out = open(c.out_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      int err = open(c.err_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(out, 1);
      dup2(err, 2);
      int devnull = open("/dev/null", O_RDONLY);
      dup2(devnull, 0);
      for (const auto& kv : env) putenv(strdup(kv.c_str()));
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    c.pid_ = pid;
    return c;
  }

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  std::string Stdout() const { return ReadFileOrEmpty(out_); }
  std::string Stderr() const { return ReadFileOrEmpty(err_); }

  // Sends `sig` and reaps the process (SIGKILL: at once; others: waits up to `timeout`, then
  // kills). Returns the exit status as from waitpid, or -1 when not running.
  int Kill(int sig, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    return Wait(timeout);
  }

  // Waits for the process to exit by itself; kills it after `timeout`.
  int Wait(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    if (pid_ <= 0) return -1;
    int status = 0;
    bool done = WaitFor([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, timeout);
    if (!done) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    pid_ = -1;
    return status;
  }

  // True when the process has exited (and reaps it).
  bool Exited(int* status = nullptr) {
    if (pid_ <= 0) return true;
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) != pid_) return false;
    pid_ = -1;
    if (status) *status = st;
    return true;
  }

  // Waits until `re` matches in stdout (stream="out") or stderr; returns the first group.
  std::optional<std::string> WaitForOutput(const std::string& re, const std::string& stream,
                                           std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    return WaitForMatch(re, stream, 0, /*give_up_when_not_running=*/false, timeout);
  }

  // As WaitForOutput, but looks only past the first `offset` bytes of the stream (this run's
  // lines, when restarts under the same tag append to one log), and gives up as soon as the
  // process is not running, also when it had exited before the call.
  std::optional<std::string> WaitForOutputAfter(
      size_t offset, const std::string& re, const std::string& stream,
      std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    return WaitForMatch(re, stream, offset, /*give_up_when_not_running=*/true, timeout);
  }

 private:
  // Polls the stream past `offset` for `re` until it matches, the process exits or `timeout`
  // passes; returns the first group (the whole match when there is none).
  std::optional<std::string> WaitForMatch(const std::string& re, const std::string& stream,
                                          size_t offset, bool give_up_when_not_running,
                                          std::chrono::milliseconds timeout) {
    std::regex rx(re);
    std::smatch m;
    std::optional<std::string> found;
    WaitFor(
        [&] {
          std::string text = stream == "out" ? Stdout() : Stderr();
          text = text.size() > offset ? text.substr(offset) : "";
          if (std::regex_search(text, m, rx)) {
            found = m.size() > 1 ? m[1].str() : m[0].str();
            return true;
          }
          if (!running()) return give_up_when_not_running;
          return Exited();
        },
        timeout);
    return found;
  }

  pid_t pid_ = -1;
  std::string out_, err_;
};

// A reference upstream on an OS-chosen port. Extra flags as given.
inline Child StartUpstream(const std::string& dir, std::vector<std::string> flags, int* port,
                           const std::string& tag = "upstream") {
  std::vector<std::string> argv = {Bin("wsbridge-upstream")};
  if (*port == 0) argv.push_back("--port=0");
  else argv.push_back("--port=" + std::to_string(*port));
  argv.insert(argv.end(), flags.begin(), flags.end());
  Child c = Child::Start(argv, dir, tag);
  auto p = c.WaitForOutput(R"(listening on (\d+))", "out");
  *port = p ? std::stoi(*p) : 0;
  return c;
}

// The bridge with OS-chosen ZeroMQ ports; flags are appended (e.g. "--set=x.y=z"; a
// "--set=zmq.pub=ipc:///dir/pub.sock" puts the PUB endpoint there instead).
struct BridgeEndpoints {
  std::string pub;
};

inline Child StartBridge(const std::string& dir, const std::string& upstream_url,
                         const std::string& db, std::vector<std::string> flags,
                         BridgeEndpoints* endpoints, const std::string& tag = "bridge") {
  std::vector<std::string> argv = {Bin("wsbridge"),
                                   "--upstream=" + upstream_url,
                                   "--db=" + db,
                                   "--pub=tcp://127.0.0.1:*",
                                   "--send=tcp://127.0.0.1:*",
                                   "--replay=tcp://127.0.0.1:*",
                                   "--set=http.listen=",
                                   "--log-level=debug",
                                   "--set=reconnect.base_delay_ms=20",
                                   "--set=reconnect.max_delay_ms=200"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  // Skip the "publishing on" lines already in the (appended) log, to find this run's.
  const size_t before = ReadFileOrEmpty(dir + "/" + tag + ".err").size();
  Child c = Child::Start(argv, dir, tag);
  if (endpoints) {
    auto pub = c.WaitForOutputAfter(
        before, R"(publishing on (tcp://[0-9.]+:\d+|ipc://\S+))", "err");
    if (pub) endpoints->pub = *pub;
  }
  return c;
}

// Receives [topic][Envelope] messages.
class Subscriber {
 public:
  // `curve`: when enabled(), the socket is a CURVE client with these keys (set before it
  // connects, as libzmq requires): the bridge's public key and this client's key pair, whose
  // public key the bridge's authorized keys file must list with role `subscribe`. A refused
  // handshake is not reported here: no message ever arrives (client::HandshakeWatch tells).
  Subscriber(zmq::context_t& ctx, const std::string& endpoint, const std::string& prefix = "",
             const client::CurveClientKeys& curve = {})
      : sock_(ctx, zmq::socket_type::sub) {
    sock_.set(zmq::sockopt::rcvhwm, 0);
    sock_.set(zmq::sockopt::subscribe, prefix);
    if (curve.enabled()) {
      sock_.set(zmq::sockopt::curve_serverkey, curve.server_public);
      sock_.set(zmq::sockopt::curve_publickey, curve.client_public);
      sock_.set(zmq::sockopt::curve_secretkey, curve.client_secret);
    }
    sock_.connect(endpoint);
  }

  // Next message within timeout, or nullopt.
  std::optional<std::pair<std::string, v1::Envelope>> Next(
      std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    SetTimeout(timeout);
    v1::Envelope env;
    if (!ReceiveInto(&env)) return std::nullopt;
    return std::make_pair(topic_.to_string(), std::move(env));
  }

  // The lean form, for runs of many messages: the next message into *env, reusing this
  // subscriber's frames and env's buffers, within the timeout last set. False on a timeout or
  // a message that is not [topic][Envelope].
  void SetTimeout(std::chrono::milliseconds timeout) {
    sock_.set(zmq::sockopt::rcvtimeo, static_cast<int>(timeout.count()));
  }
  bool ReceiveInto(v1::Envelope* env) {
    if (!sock_.recv(topic_) || !topic_.more() || !sock_.recv(body_)) return false;
    return env->ParseFromArray(body_.data(), static_cast<int>(body_.size()));
  }
  // The leanest form, for an application that only counts: the next message's seq alone, read
  // from the envelope's wire form (CodedInputStream) without decoding the rest.
  bool ReceiveSeq(uint64_t* seq) {
    if (!sock_.recv(topic_) || !topic_.more() || !sock_.recv(body_)) return false;
    using google::protobuf::internal::WireFormatLite;
    google::protobuf::io::CodedInputStream in(static_cast<const uint8_t*>(body_.data()),
                                              static_cast<int>(body_.size()));
    const uint32_t seq_tag =
        WireFormatLite::MakeTag(v1::Envelope::kSeqFieldNumber, WireFormatLite::WIRETYPE_VARINT);
    for (uint32_t tag = in.ReadTag(); tag != 0; tag = in.ReadTag()) {
      if (tag == seq_tag) return in.ReadVarint64(seq);
      if (!WireFormatLite::SkipField(&in, tag)) return false;
    }
    return false;
  }

 private:
  zmq::socket_t sock_;
  zmq::message_t topic_, body_;
};

// When the first and the last message of a subscriber's run arrived, and their bridge seqs
// (0: nothing arrived).
struct ReceivedSpan {
  std::chrono::steady_clock::time_point first, last;
  uint64_t first_seq = 0, last_seq = 0;
  uint64_t received = 0;  // fewer than last_seq - first_seq + 1: the subscriber missed some

  // Messages per second from the first to the last (by seq, so a gap does not count).
  double Rate() const {
    return static_cast<double>(last_seq - first_seq) /
           std::chrono::duration<double>(last - first).count();
  }
};

// Receives from `sub` until a message with seq >= end_seq arrives or none comes within
// `timeout`: receive(&seq) takes the next message and tells its seq (false: none came). Returns
// the span received. Lean, as an application that counts would be (buffers reused, the clock
// read at the first message and at the end only), so that a load tool measures the bridge
// rather than this loop: `last` is when the loop ended, which is when seq end_seq arrived
// unless the run fell short.
template <typename Receive>
ReceivedSpan ReceiveSpan(Subscriber& sub, uint64_t end_seq, std::chrono::milliseconds timeout,
                         Receive receive) {
  sub.SetTimeout(timeout);
  ReceivedSpan span;
  uint64_t seq = 0;
  while (receive(&seq)) {
    if (span.received++ == 0) {
      span.first = std::chrono::steady_clock::now();
      span.first_seq = seq;
    }
    span.last_seq = seq;
    if (seq >= end_seq) break;
  }
  span.last = std::chrono::steady_clock::now();
  return span;
}

// ReceiveSpan that decodes each envelope whole and calls on_message(envelope) on it.
template <typename OnMessage>
ReceivedSpan ReceiveUntilSeq(Subscriber& sub, uint64_t end_seq, std::chrono::milliseconds timeout,
                             OnMessage on_message) {
  v1::Envelope env;
  return ReceiveSpan(sub, end_seq, timeout, [&](uint64_t* seq) {
    if (!sub.ReceiveInto(&env)) return false;
    *seq = env.seq();
    on_message(env);
    return true;
  });
}

// ReceiveSpan reading each message's seq only, as an application that counts them would.
inline ReceivedSpan ReceiveUntilSeq(Subscriber& sub, uint64_t end_seq,
                                    std::chrono::milliseconds timeout) {
  return ReceiveSpan(sub, end_seq, timeout, [&](uint64_t* seq) { return sub.ReceiveSeq(seq); });
}

}  // namespace wsbridge::testing

// ---- Fault-injecting proxy and log time lines (resilience tests) ------------------------------
//
// FaultProxy         wsbridge-faultproxy (tests/support/fault_proxy.cc) between the bridge and
//                    its upstream: pass / reset / blackhole / latency MS, switched at run time
// FaultProxyCommand  one line on the proxy's control port, returns its answer ("ok")
// LogEvents          the lines of a log that match a pattern, each with its timestamp

#include <sys/time.h>

#include <cstdint>
#include <ctime>

namespace wsbridge::testing {

inline std::string FaultProxyBin() {
#ifdef WSB_FAULTPROXY_BIN
  return WSB_FAULTPROXY_BIN;
#else
  return BinDir() + "/../tests/wsbridge-faultproxy";
#endif
}

// A running wsbridge-faultproxy; `port` is where the bridge connects, `control_port` takes
// commands. Both are 0 when it failed to start (see child.Stderr()).
struct FaultProxy {
  Child child;
  int port = 0;
  int control_port = 0;
};

// Starts a proxy on OS-chosen ports forwarding to 127.0.0.1:target_port, in `mode` ("pass",
// "reset", "blackhole", "latency 50"). Its event log (UTC-stamped lines) is <dir>/<tag>.err.
inline FaultProxy StartFaultProxy(const std::string& dir, int target_port,
                                  const std::string& mode = "pass",
                                  const std::string& tag = "proxy") {
  FaultProxy p;
  p.child = Child::Start({FaultProxyBin(), "--target=127.0.0.1:" + std::to_string(target_port),
                          "--port=0", "--control-port=0", "--mode=" + mode},
                         dir, tag);
  auto port = p.child.WaitForOutput(R"(listening on (\d+))", "out");
  auto control = p.child.WaitForOutput(R"(control on (\d+))", "out");
  if (port && control) {
    p.port = std::stoi(*port);
    p.control_port = std::stoi(*control);
  }
  return p;
}

// Sends `command` (e.g. "blackhole", "latency 50", "status") to the proxy's control port and
// returns its one-line answer without the newline ("ok" once the mode is in force), or "" when
// the proxy cannot be reached or does not answer within `timeout`.
inline std::string FaultProxyCommand(int control_port, const std::string& command,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(control_port));
  std::string answer;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    std::string line = command + "\n";
    if (send(fd, line.data(), line.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(line.size())) {
      char c = 0;
      while (recv(fd, &c, 1, 0) == 1 && c != '\n') answer.push_back(c);
      if (c != '\n') answer.clear();
    }
  }
  close(fd);
  return answer;
}

// Microseconds since the Unix epoch, on the clock the logs are stamped with.
inline int64_t WallNowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The UTC time at the start of a log line, "2024-05-01T12:00:00.123456Z ..." (the bridge's text
// log format and the proxy's), in microseconds since the epoch; nullopt when there is none.
inline std::optional<int64_t> LogLineTimeUs(const std::string& line) {
  static const std::regex rx(R"(^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z)");
  std::smatch m;
  if (!std::regex_search(line, m, rx)) return std::nullopt;
  std::tm tm{};
  tm.tm_year = std::stoi(m[1]) - 1900;
  tm.tm_mon = std::stoi(m[2]) - 1;
  tm.tm_mday = std::stoi(m[3]);
  tm.tm_hour = std::stoi(m[4]);
  tm.tm_min = std::stoi(m[5]);
  tm.tm_sec = std::stoi(m[6]);
  int64_t us = static_cast<int64_t>(timegm(&tm)) * 1000000;
  if (m[7].matched) {
    std::string frac = m[7].str();
    frac.resize(6, '0');  // to microseconds: pad or cut
    us += std::stoll(frac);
  }
  return us;
}

// A log line and its time.
struct LogEvent {
  int64_t us = 0;  // LogLineTimeUs
  std::string line;
};

// The lines of `text` that match `re` (regex_search) and carry a time, in order.
inline std::vector<LogEvent> LogEvents(const std::string& text, const std::string& re) {
  std::regex rx(re);
  std::vector<LogEvent> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!std::regex_search(line, rx)) continue;
    if (auto us = LogLineTimeUs(line)) out.push_back({*us, line});
  }
  return out;
}

}  // namespace wsbridge::testing

// ---- Replay endpoint (replay tests) -------------------------------------------------------------
//
// StartReplayBridge  StartBridge, and also the replay endpoint from the "zmq: replay on" line

namespace wsbridge::testing {

struct ReplayBridgeEndpoints {
  std::string pub;
  std::string replay;
};

// As StartBridge (same flags; later --set flags override its endpoints), and waits for both the
// PUB and the replay endpoint of this run; they stay empty when the bridge did not come up.
inline Child StartReplayBridge(const std::string& dir, const std::string& upstream_url,
                               const std::string& db, std::vector<std::string> flags,
                               ReplayBridgeEndpoints* endpoints,
                               const std::string& tag = "bridge") {
  const size_t before = ReadFileOrEmpty(dir + "/" + tag + ".err").size();
  BridgeEndpoints be;
  Child c = StartBridge(dir, upstream_url, db, std::move(flags), &be, tag);
  endpoints->pub = be.pub;
  endpoints->replay =
      c.WaitForOutputAfter(before, R"(replay on (tcp://[0-9.]+:\d+))", "err").value_or("");
  return c;
}

}  // namespace wsbridge::testing

// ---- Send endpoint (outbound tests) -------------------------------------------------------------
//
// StartSendBridge  StartBridge, and also the send endpoint from the "zmq: send endpoint on" line
// StartOsPortBridge  the bridge with every endpoint OS-chosen, all of them read from its log

namespace wsbridge::testing {

// As StartBridge (same flags; a later --set=zmq.send=... overrides the OS-chosen port), and
// waits for this run's send endpoint; it stays empty when the bridge did not come up.
inline Child StartSendBridge(const std::string& dir, const std::string& upstream_url,
                             const std::string& db, std::vector<std::string> flags,
                             std::string* send_endpoint, const std::string& tag = "bridge") {
  const size_t before = ReadFileOrEmpty(dir + "/" + tag + ".err").size();
  BridgeEndpoints be;
  Child c = StartBridge(dir, upstream_url, db, std::move(flags), &be, tag);
  *send_endpoint =
      c.WaitForOutputAfter(before, R"(zmq: send endpoint on (tcp://[0-9.]+:\d+))", "err")
          .value_or("");
  return c;
}

// A bridge whose every endpoint the OS chooses (ZeroMQ on 127.0.0.1:*, HTTP on 127.0.0.1:0),
// logging at debug level, with the endpoints read back from its log (empty / 0 when it did not
// come up: see child.Stderr()). `flags` are appended (an example's --config, --set keys).
struct OsPortBridge {
  Child child;
  std::string pub;
  std::string send;
  int http_port = 0;
};

inline OsPortBridge StartOsPortBridge(const std::string& dir, const std::string& url,
                                      const std::string& db, const std::vector<std::string>& flags,
                                      const std::string& tag = "bridge",
                                      const std::vector<std::string>& env = {}) {
  std::vector<std::string> argv = {Bin("wsbridge"),          "--upstream=" + url,
                                   "--db=" + db,             "--pub=tcp://127.0.0.1:*",
                                   "--send=tcp://127.0.0.1:*", "--replay=tcp://127.0.0.1:*",
                                   "--http=127.0.0.1:0",     "--log-level=debug"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  const size_t before = ReadFileOrEmpty(dir + "/" + tag + ".err").size();
  OsPortBridge b;
  b.child = Child::Start(argv, dir, tag, env);
  auto from_log = [&](const char* re) {
    return b.child.WaitForOutputAfter(before, re, "err").value_or("");
  };
  b.pub = from_log(R"(publishing on (tcp://[0-9.]+:\d+))");
  b.send = from_log(R"(zmq: send endpoint on (tcp://[0-9.]+:\d+))");
  const std::string http = from_log(R"(http: listening on 127\.0\.0\.1:(\d+))");
  b.http_port = http.empty() ? 0 : std::stoi(http);
  return b;
}

}  // namespace wsbridge::testing

// ---- HTTP CONNECT proxy (connectivity tests) ----------------------------------------------------
//
// StartConnectProxy  wsbridge-connectproxy (tests/support/connect_proxy.cc) on 127.0.0.1

namespace wsbridge::testing {

inline std::string ConnectProxyBin() {
#ifdef WSB_CONNECTPROXY_BIN
  return WSB_CONNECTPROXY_BIN;
#else
  return BinDir() + "/../tests/wsbridge-connectproxy";
#endif
}

// Starts the proxy with `flags` ("--user=u", "--pass=p", "--status=403", "--log=FILE") on *port
// (0: chosen by the OS, written back; 0 when it did not come up).
inline Child StartConnectProxy(const std::string& dir, std::vector<std::string> flags, int* port,
                               const std::string& tag = "connectproxy") {
  std::vector<std::string> argv = {ConnectProxyBin(), "--port=" + std::to_string(*port)};
  argv.insert(argv.end(), flags.begin(), flags.end());
  const size_t before = ReadFileOrEmpty(dir + "/" + tag + ".out").size();
  Child c = Child::Start(argv, dir, tag);
  auto listening = c.WaitForOutputAfter(before, R"(listening on (\d+))", "out");
  *port = listening ? std::stoi(*listening) : 0;
  return c;
}

// ---- tmpfs for real disk-full tests (needs root; used by diskfull_test, outbound_test) ------
// A tmpfs mounted for the test's lifetime (unmounted even when an assertion fails).
class TmpfsMount {
 public:
  explicit TmpfsMount(std::string dir) : dir_(std::move(dir)) {}
  ~TmpfsMount() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  // Returns "" on success, else why it could not mount.
  std::string Mount(const std::string& size) {
    ::mkdir(dir_.c_str(), 0700);
    std::string opts = "size=" + size + ",mode=0700";
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) != 0) {
      return std::string("mount -t tmpfs: ") + std::strerror(errno);
    }
    mounted_ = true;
    return "";
  }
  bool Resize(const std::string& size) {
    std::string opts = "size=" + size + ",mode=0700";
    return ::mount("tmpfs", dir_.c_str(), "tmpfs", MS_REMOUNT | MS_NOSUID | MS_NODEV,
                   opts.c_str()) == 0;
  }
  uint64_t FreeBytes() const {
    struct statvfs st;
    return ::statvfs(dir_.c_str(), &st) == 0 ? uint64_t{st.f_bavail} * st.f_frsize : 0;
  }

 private:
  std::string dir_;
  bool mounted_ = false;
};


}  // namespace wsbridge::testing

// ---- The journal and the outbox as an operator reads them: a read-only Store on the live file --
//
// OpenStoreReadOnly  the Store itself, for reads of more than one thing at once
// ReadCursor         the journal's cursor
// ReadBounds         the journal's bounds (first/last seq, rows)
// ReadJournalRows    every journal row, in seq order (EXPECTs that it can be read)
// OutboxDepth        messages waiting in the outbox
// FillJournal        a journal of N rows of 100 B, written as the daemon writes them

#include "storage/store.h"

namespace wsbridge::testing {

// Opens `db` read-only (Store::Open's status when it cannot).
inline StatusOr<std::unique_ptr<Store>> OpenStoreReadOnly(const std::string& db) {
  StoreOptions o;
  o.path = db;
  o.read_only = true;
  return Store::Open(o);
}

// The journal's cursor; nullopt when the file cannot be opened.
inline std::optional<Cursor> ReadCursor(const std::string& db) {
  auto s = OpenStoreReadOnly(db);
  if (!s.ok()) return std::nullopt;
  return (*s)->cursor();
}

// The journal's bounds; nullopt when they cannot be read.
inline std::optional<JournalBounds> ReadBounds(const std::string& db) {
  auto s = OpenStoreReadOnly(db);
  if (!s.ok()) return std::nullopt;
  auto b = (*s)->Bounds();
  if (!b.ok()) return std::nullopt;
  return *b;
}

// Every row of the journal (up to 10 000 000), in seq order; a failure to open or read is a
// test failure (EXPECT), and what was read by then is returned.
inline std::vector<JournalRow> ReadJournalRows(const std::string& db) {
  auto s = OpenStoreReadOnly(db);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  std::vector<JournalRow> rows;
  if (s.ok()) EXPECT_TRUE((*s)->ReadJournal(1, 0, "", 10000000, &rows).ok());
  return rows;
}

// Writes `rows` journal rows of 100 B (topic "ticks", no upstream seq: an upstream's seqs from 1
// are journaled on top of them) into `db` through a Store, as the daemon writes them, and closes
// it (the WAL checkpointed into the file and removed).
inline Status FillJournal(const std::string& db, uint64_t rows) {
  StoreOptions o;
  o.path = db;
  auto store = Store::Open(o);
  if (!store.ok()) return store.status();
  Batch b;
  for (uint64_t n = 0; n < rows;) {
    b.clear();
    for (int i = 0; i < 10000 && n < rows; ++i, ++n) {
      InboundMessage& m = b.inbound.emplace_back();
      m.topic = "ticks";
      m.payload.assign(100, 'p');
      m.received_at_unix_ns = WallNowUs() * 1000;
    }
    Status s = (*store)->Commit(b, nullptr);
    if (!s.ok()) return s;
  }
  return Status::OK();
}

// The outbox's depth (messages accepted and not yet acknowledged or sent); nullopt when it
// cannot be read.
inline std::optional<uint64_t> OutboxDepth(const std::string& db) {
  auto s = OpenStoreReadOnly(db);
  if (!s.ok()) return std::nullopt;
  auto ob = (*s)->Outbox();
  if (!ob.ok()) return std::nullopt;
  return ob->depth;
}

}  // namespace wsbridge::testing

// ---- HTTP on 127.0.0.1 (the bridge's /healthz, /readyz, /metrics) ------------------------------
//
// HttpExchange  raw bytes out on a fresh connection, everything the server sends back in
// HttpRaw       HttpExchange, the response split into status, head and body
// HttpRequest   one HTTP/1.1 request (Connection: close) by method and path, split as HttpRaw
// HttpGet       one HTTP/1.0 GET, answered as the text "<status> <body>"
// MetricSample, MetricAt  one sample's value from a /metrics text, or from a bridge's /metrics
// SecondsToReady  exec -> /readyz 200 of a bridge on a database

namespace wsbridge::testing {

// Sends `raw` on a fresh TCP connection to 127.0.0.1:port and reads until the server closes
// (each read waits at most `timeout`). Returns all it read; "" when it could not connect or
// send.
inline std::string HttpExchange(int port, const std::string& raw, std::chrono::seconds timeout) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{static_cast<time_t>(timeout.count()), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::send(fd, raw.data(), raw.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(raw.size())) {
    char buf[16384];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
      response.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return response;
}

// An HTTP response taken apart.
struct HttpResult {
  int status = 0;  // 0: no answer, or not an HTTP one
  std::string head;
  std::string body;
};

// Sends `raw` (HttpExchange) and splits the answer at the blank line; status 0, head and body
// empty when it does not start with an HTTP/1.x status line.
inline HttpResult HttpRaw(int port, const std::string& raw,
                          std::chrono::seconds timeout = std::chrono::seconds(10)) {
  HttpResult r;
  std::string response = HttpExchange(port, raw, timeout);
  std::smatch m;
  if (!std::regex_search(response, m, std::regex(R"(^HTTP/1\.[01] (\d{3}))"))) return r;
  r.status = std::stoi(m[1]);
  size_t split = response.find("\r\n\r\n");
  r.head = response.substr(0, split);
  if (split != std::string::npos) r.body = response.substr(split + 4);
  return r;
}

// `method` `path` as HTTP/1.1 with Connection: close on 127.0.0.1:port.
inline HttpResult HttpRequest(int port, const std::string& path, const std::string& method = "GET",
                              std::chrono::seconds timeout = std::chrono::seconds(10)) {
  return HttpRaw(port,
                 method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 timeout);
}

// One HTTP/1.0 GET on 127.0.0.1:port; returns "<status> <body>" or "" when unreachable.
inline std::string HttpGet(int port, const std::string& path) {
  std::string resp = HttpExchange(
      port, "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
      std::chrono::seconds(5));
  size_t sp = resp.find(' ');
  size_t body = resp.find("\r\n\r\n");
  if (sp == std::string::npos || body == std::string::npos) return "";
  return resp.substr(sp + 1, 3) + " " + resp.substr(body + 4);
}

// A sample's value in the text of /metrics ("name" or "name{label=\"v\"}" exactly as written),
// -1 when absent; and the same read from a daemon's /metrics on `port`.
inline double MetricSample(const std::string& metrics, const std::string& sample) {
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > sample.size() && line.compare(0, sample.size(), sample) == 0 &&
        line[sample.size()] == ' ') {
      return std::stod(line.substr(sample.size() + 1));
    }
  }
  return -1;
}
inline double MetricAt(int port, const std::string& sample) {
  const std::string reply = HttpGet(port, "/metrics");  // "<status> <body>"
  return MetricSample(reply.size() > 4 ? reply.substr(4) : "", sample);
}

// Exec -> /readyz 200 of a bridge on `db` (StartOsPortBridge, `flags` appended), in seconds,
// readiness polled every millisecond; -1 when not ready within a minute. The bridge is stopped
// again with SIGTERM (*exit_status: how it exited).
inline double SecondsToReady(const std::string& dir, const std::string& url, const std::string& db,
                             const std::vector<std::string>& flags, const std::string& tag,
                             int* exit_status = nullptr) {
  const auto start = std::chrono::steady_clock::now();
  OsPortBridge b = StartOsPortBridge(dir, url, db, flags, tag);
  bool ready = false;
  while (b.http_port != 0 && !ready &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
    ready = HttpGet(b.http_port, "/readyz").substr(0, 3) == "200";
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const double s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int status = b.child.Kill(SIGTERM);
  if (exit_status != nullptr) *exit_status = status;
  return ready ? s : -1;
}

}  // namespace wsbridge::testing
