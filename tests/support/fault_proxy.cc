// wsbridge-faultproxy: a fault-injecting TCP proxy for the integration tests (issue 3).
//
//   bridge --TCP--> [ 127.0.0.1:<port>  wsbridge-faultproxy ] --TCP--> --target host:port
//                        ^
//                        control: 127.0.0.1:<control port>, one command per line, answered "ok"
//
// It forwards bytes unchanged in both directions, and breaks the link on command:
//   pass          forward everything
//   reset         RST every existing connection (both sides: SO_LINGER 0, then close) and every
//                 new one as soon as it is accepted
//   blackhole     keep every socket open and forward nothing in either direction; new
//                 connections are accepted (the peer's connect succeeds) but the target is not
//                 dialled until the mode allows forwarding again. Nothing is read, so nothing is
//                 lost: bytes wait in the kernel's buffers (like retransmissions on a dead route)
//                 and flow again, in order, on the switch back to pass or latency.
//   latency MS    forward every chunk MS milliseconds after it was read, in both directions
//                 (pipelined: a delay, not a throughput limit)
//   status        answers "ok mode=<mode> sessions=<open> accepted=<total>"
// Bad commands are answered "error: <why>".
//
// Output: "listening on <port>" then "control on <port>" on stdout (flushed) once both accept;
// one line per event on stderr, each starting with the UTC time in the bridge's log format
// ("2024-05-01T12:00:00.123456Z accept #3 from 127.0.0.1:40000"), so that a test can put the
// proxy's and the bridge's events on one time line.
//
// Everything runs on one thread (one asio::io_context); memory per connection is bounded
// (kReadChunk per read, at most kMaxQueuedBytes queued per direction; a full queue stops reading
// from that side, which TCP turns into back-pressure on the sender).
//
// Extending it: a seeded fault schedule (--schedule SEED, for a soak) is a class owning a timer
// and a std::mt19937_64 that calls Proxy::SetMode() with the next Mode at the next random time;
// Proxy needs nothing else.
#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#ifndef WSBRIDGE_VERSION
#define WSBRIDGE_VERSION "unknown"
#endif

namespace wsbridge::faultproxy {
namespace {

using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 16 * 1024;
constexpr size_t kMaxQueuedBytes = 256 * 1024;
constexpr size_t kMaxControlLine = 1024;

// One event line on stderr, prefixed with the UTC wall time (microseconds), flushed.
void Log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void Log(const char* fmt, ...) {
  auto now = std::chrono::system_clock::now();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(us / 1000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char stamp[64];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  std::fprintf(stderr, "%s.%06lldZ ", stamp, static_cast<long long>(us % 1000000));
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
  std::fflush(stderr);
}

std::string Describe(const tcp::socket& s) {
  asio::error_code ec;
  auto ep = s.remote_endpoint(ec);
  if (ec) return "?";
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

// What the proxy does to the bytes: a value type, parsed from a control line or --mode.
struct Mode {
  enum class Kind { kPass, kReset, kBlackhole, kLatency };
  Kind kind = Kind::kPass;
  std::chrono::milliseconds latency{0};  // kLatency only

  bool forwards() const { return kind == Kind::kPass || kind == Kind::kLatency; }
  std::chrono::milliseconds delay() const {
    return kind == Kind::kLatency ? latency : std::chrono::milliseconds(0);
  }

  std::string ToString() const {
    switch (kind) {
      case Kind::kPass:
        return "pass";
      case Kind::kReset:
        return "reset";
      case Kind::kBlackhole:
        return "blackhole";
      case Kind::kLatency:
        return "latency " + std::to_string(latency.count());
    }
    return "?";
  }

  // "pass", "reset", "blackhole", "latency 50" (also "latency=50", "latency:50"). On error,
  // nullopt and *error says why.
  static std::optional<Mode> Parse(std::string_view text, std::string* error) {
    auto trim = [](std::string_view s) {
      while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
      while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
        s.remove_suffix(1);
      return s;
    };
    text = trim(text);
    Mode m;
    if (text == "pass") return m;
    if (text == "reset") {
      m.kind = Kind::kReset;
      return m;
    }
    if (text == "blackhole") {
      m.kind = Kind::kBlackhole;
      return m;
    }
    constexpr std::string_view kLatency = "latency";
    if (text.substr(0, kLatency.size()) == kLatency && text.size() > kLatency.size()) {
      char sep = text[kLatency.size()];
      std::string_view arg = trim(text.substr(kLatency.size() + 1));
      if (sep != ' ' && sep != '=' && sep != ':') {
        *error = "unknown mode \"" + std::string(text) + "\"";
        return std::nullopt;
      }
      long long ms = -1;
      try {
        size_t used = 0;
        ms = std::stoll(std::string(arg), &used);
        if (used != arg.size()) ms = -1;
      } catch (const std::exception&) {
        ms = -1;
      }
      if (ms < 0 || ms > 3600 * 1000) {
        *error = "latency wants milliseconds 0..3600000 (got \"" + std::string(arg) + "\")";
        return std::nullopt;
      }
      m.kind = Kind::kLatency;
      m.latency = std::chrono::milliseconds(ms);
      return m;
    }
    *error = "unknown mode \"" + std::string(text) + "\" (pass, reset, blackhole, latency MS)";
    return std::nullopt;
  }
};

class Session;

// The proxy: the listening socket, the current Mode and the open Sessions. Owns the sessions
// (by shared_ptr, keyed by id); a session removes itself through Forget() when it closes.
// Single-threaded: every member runs on the io_context's one thread.
class Proxy {
 public:
  Proxy(asio::io_context& io, tcp::endpoint listen, tcp::resolver::results_type target, Mode mode)
      : io_(io), acceptor_(io, listen), target_(std::move(target)), mode_(mode) {}

  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  const Mode& mode() const { return mode_; }
  const tcp::resolver::results_type& target() const { return target_; }
  asio::io_context& io() { return io_; }
  size_t sessions() const { return sessions_.size(); }
  uint64_t accepted() const { return accepted_; }

  void Start() { Accept(); }

  // Applies `mode` to every open session and to the ones accepted from now on.
  void SetMode(const Mode& mode);

  void Forget(uint64_t id) { sessions_.erase(id); }

 private:
  void Accept();

  asio::io_context& io_;
  tcp::acceptor acceptor_;
  tcp::resolver::results_type target_;
  Mode mode_;
  uint64_t accepted_ = 0;
  std::map<uint64_t, std::shared_ptr<Session>> sessions_;
};

// One direction of one Session: reads chunks from `from`, queues them with the time each may
// leave (read time + the mode's latency), writes them in order to `to`. At most one read and
// one write in flight; reads stop while the queue holds kMaxQueuedBytes or the mode forwards
// nothing. EOF from `from` becomes a shutdown(send) on `to` once the queue is drained.
// Owned by its Session, which outlives every handler (they hold the Session's shared_ptr).
class Pipe {
 public:
  Pipe(Session* session, const char* name, tcp::socket& from, tcp::socket& to)
      : session_(session), name_(name), from_(from), to_(to), timer_(from.get_executor()) {}

  // Starts whatever the current mode and state allow; call after every change.
  void Pump();
  void Cancel() { timer_.cancel(); }
  bool done() const { return eof_ && queue_.empty() && !writing_; }

 private:
  struct Chunk {
    std::vector<char> bytes;
    Clock::time_point due;
  };

  Session* const session_;
  const char* const name_;
  tcp::socket& from_;
  tcp::socket& to_;
  asio::steady_timer timer_;
  std::vector<char> read_buf_ = std::vector<char>(kReadChunk);
  std::deque<Chunk> queue_;
  size_t queued_bytes_ = 0;
  bool reading_ = false;
  bool writing_ = false;
  bool timer_armed_ = false;
  bool eof_ = false;
  bool shut_ = false;
};

// One accepted connection and its connection to the target, with a Pipe each way. Kept alive
// by the Proxy's map and by its own pending handlers; Close() removes it from the map.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Proxy* proxy, uint64_t id, tcp::socket client)
      : proxy_(proxy),
        id_(id),
        client_(std::move(client)),
        upstream_(proxy->io()),
        up_(this, "client->target", client_, upstream_),
        down_(this, "target->client", upstream_, client_) {}

  uint64_t id() const { return id_; }
  const Mode& mode() const { return proxy_->mode(); }
  bool closed() const { return closed_; }
  bool connected() const { return connected_; }
  std::shared_ptr<Session> self() { return shared_from_this(); }

  // Called on accept and on every mode change.
  void Apply() {
    if (closed_) return;
    const Mode& m = mode();
    if (m.kind == Mode::Kind::kReset) {
      Close(/*reset=*/true, "reset by mode");
      return;
    }
    if (!m.forwards()) return;  // blackhole: hold everything as it is
    if (!connecting_ && !connected_) {
      Dial();
      return;
    }
    if (connected_) {
      up_.Pump();
      down_.Pump();
    }
  }

  // Both directions finished cleanly: close.
  void MaybeFinish() {
    if (!closed_ && up_.done() && down_.done()) Close(false, "both directions ended");
  }

  // Closes both sockets (with RST when `reset`: SO_LINGER 0) and forgets the session.
  void Close(bool reset, const std::string& why) {
    if (closed_) return;
    closed_ = true;
    up_.Cancel();
    down_.Cancel();
    asio::error_code ec;
    for (tcp::socket* s : {&client_, &upstream_}) {
      if (!s->is_open()) continue;
      if (reset) s->set_option(asio::socket_base::linger(true, 0), ec);
      s->close(ec);
    }
    Log("%s #%llu (%s)", reset ? "reset" : "closed", static_cast<unsigned long long>(id_),
        why.c_str());
    proxy_->Forget(id_);  // may drop the last owner but one: handlers still hold self()
  }

 private:
  void Dial() {
    connecting_ = true;
    auto self = shared_from_this();
    asio::async_connect(upstream_, proxy_->target(),
                        [this, self](const asio::error_code& ec, const tcp::endpoint&) {
                          connecting_ = false;
                          if (closed_) return;
                          if (ec) {
                            Close(false, "target: " + ec.message());
                            return;
                          }
                          asio::error_code ignored;
                          upstream_.set_option(tcp::no_delay(true), ignored);
                          connected_ = true;
                          Log("connected #%llu to target", static_cast<unsigned long long>(id_));
                          Apply();
                        });
  }

  Proxy* const proxy_;
  const uint64_t id_;
  tcp::socket client_;
  tcp::socket upstream_;
  Pipe up_;
  Pipe down_;
  bool connecting_ = false;
  bool connected_ = false;
  bool closed_ = false;
};

void Pipe::Pump() {
  if (session_->closed() || !session_->connected()) return;
  const Mode& mode = session_->mode();
  if (!mode.forwards()) return;
  auto self = session_->self();

  if (!reading_ && !eof_ && queued_bytes_ < kMaxQueuedBytes) {
    reading_ = true;
    from_.async_read_some(
        asio::buffer(read_buf_), [this, self](const asio::error_code& ec, size_t n) {
          reading_ = false;
          if (session_->closed()) return;
          if (ec == asio::error::eof) {
            eof_ = true;
          } else if (ec) {
            // A reset (or any error) on one side is passed on as a reset to the other.
            session_->Close(true, std::string(name_) + " read: " + ec.message());
            return;
          } else {
            Chunk c;
            c.bytes.assign(read_buf_.begin(), read_buf_.begin() + static_cast<std::ptrdiff_t>(n));
            c.due = Clock::now() + session_->mode().delay();
            queued_bytes_ += n;
            queue_.push_back(std::move(c));
          }
          Pump();
        });
  }

  if (!writing_ && !queue_.empty()) {
    Chunk& front = queue_.front();
    if (front.due > Clock::now()) {
      if (!timer_armed_) {
        timer_armed_ = true;
        timer_.expires_at(front.due);
        timer_.async_wait([this, self](const asio::error_code&) {
          timer_armed_ = false;
          Pump();
        });
      }
    } else {
      writing_ = true;
      asio::async_write(to_, asio::buffer(front.bytes),
                        [this, self](const asio::error_code& ec, size_t n) {
                          writing_ = false;
                          if (session_->closed()) return;
                          if (ec) {
                            session_->Close(true, std::string(name_) + " write: " + ec.message());
                            return;
                          }
                          queued_bytes_ -= n;
                          queue_.pop_front();
                          Pump();
                        });
    }
  }

  if (eof_ && queue_.empty() && !writing_ && !shut_) {
    shut_ = true;
    asio::error_code ignored;
    to_.shutdown(tcp::socket::shutdown_send, ignored);
    Log("eof #%llu %s", static_cast<unsigned long long>(session_->id()), name_);
    session_->MaybeFinish();
  }
}

void Proxy::SetMode(const Mode& mode) {
  mode_ = mode;
  Log("mode %s", mode_.ToString().c_str());
  // Copy: Apply() may close sessions, which erases them from the map.
  std::vector<std::shared_ptr<Session>> all;
  all.reserve(sessions_.size());
  for (auto& [id, s] : sessions_) all.push_back(s);
  for (auto& s : all) s->Apply();
}

void Proxy::Accept() {
  acceptor_.async_accept([this](const asio::error_code& ec, tcp::socket socket) {
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      Log("accept failed: %s", ec.message().c_str());
    } else {
      uint64_t id = ++accepted_;
      asio::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      Log("accept #%llu from %s (mode %s)", static_cast<unsigned long long>(id),
          Describe(socket).c_str(), mode_.ToString().c_str());
      auto s = std::make_shared<Session>(this, id, std::move(socket));
      sessions_.emplace(id, s);
      s->Apply();
    }
    Accept();
  });
}

// One client of the control port: reads lines, applies each to the Proxy, answers each.
// Owned by its own pending handlers (shared_ptr); ends when the client closes.
class ControlConnection : public std::enable_shared_from_this<ControlConnection> {
 public:
  ControlConnection(Proxy* proxy, tcp::socket socket)
      : proxy_(proxy), socket_(std::move(socket)), in_(kMaxControlLine) {}

  void Start() { ReadLine(); }

 private:
  void ReadLine() {
    auto self = shared_from_this();
    asio::async_read_until(socket_, in_, '\n', [this, self](const asio::error_code& ec, size_t n) {
      if (ec) return;  // closed, or a line longer than kMaxControlLine: drop the client
      std::string line(asio::buffers_begin(in_.data()),
                       asio::buffers_begin(in_.data()) + static_cast<std::ptrdiff_t>(n) - 1);
      in_.consume(n);
      out_ = Execute(line) + "\n";
      asio::async_write(socket_, asio::buffer(out_),
                        [this, self](const asio::error_code& e2, size_t) {
                          if (!e2) ReadLine();
                        });
    });
  }

  std::string Execute(const std::string& line) {
    std::string_view cmd(line);
    while (!cmd.empty() && (cmd.back() == '\r' || cmd.back() == ' ')) cmd.remove_suffix(1);
    if (cmd == "status") {
      return "ok mode=" + proxy_->mode().ToString() +
             " sessions=" + std::to_string(proxy_->sessions()) +
             " accepted=" + std::to_string(proxy_->accepted());
    }
    std::string error;
    auto mode = Mode::Parse(cmd, &error);
    if (!mode) return "error: " + error;
    proxy_->SetMode(*mode);
    return "ok";
  }

  Proxy* const proxy_;
  tcp::socket socket_;
  asio::streambuf in_;
  std::string out_;
};

// Accepts control clients on the control port. Lives as long as the io_context runs.
class ControlServer {
 public:
  ControlServer(asio::io_context& io, tcp::endpoint listen, Proxy* proxy)
      : acceptor_(io, listen), proxy_(proxy) {}

  uint16_t port() const { return acceptor_.local_endpoint().port(); }

  void Start() {
    acceptor_.async_accept([this](const asio::error_code& ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) std::make_shared<ControlConnection>(proxy_, std::move(socket))->Start();
      Start();
    });
  }

 private:
  tcp::acceptor acceptor_;
  Proxy* const proxy_;
};

// "host:port" -> (host, port); false when malformed.
bool SplitHostPort(const std::string& s, std::string* host, std::string* port) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) return false;
  *host = s.substr(0, colon);
  *port = s.substr(colon + 1);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']')
    *host = host->substr(1, host->size() - 2);
  return true;
}

int Main(int argc, char** argv) {
  CLI::App app{
      "wsbridge-faultproxy: a TCP proxy that injects faults on command (test support).\n"
      "Listens on 127.0.0.1, forwards to --target. Modes: pass, reset, blackhole, latency MS;\n"
      "switch at run time with one line on the control port (answered \"ok\"), or \"status\".\n"
      "Prints \"listening on <port>\" and \"control on <port>\" on stdout.",
      "wsbridge-faultproxy"};
  app.set_version_flag("--version", std::string("wsbridge-faultproxy ") + WSBRIDGE_VERSION);
  std::string target_text;
  uint16_t port = 0;
  uint16_t control_port = 0;
  std::string mode_text = "pass";
  std::string bind = "127.0.0.1";
  app.add_option("--target", target_text, "where to forward: host:port")->required();
  app.add_option("--port", port, "port to listen on; 0: chosen by the OS")->capture_default_str();
  app.add_option("--control-port", control_port, "control port; 0: chosen by the OS")
      ->capture_default_str();
  app.add_option("--mode", mode_text, "initial mode: pass, reset, blackhole, \"latency MS\"")
      ->capture_default_str();
  app.add_option("--bind", bind, "address for both listening sockets")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "wsbridge-faultproxy: %s (see --help)\n", e.what());
    return 2;
  }

  std::string error;
  auto mode = Mode::Parse(mode_text, &error);
  if (!mode) {
    std::fprintf(stderr, "wsbridge-faultproxy: --mode: %s\n", error.c_str());
    return 2;
  }
  std::string host, service;
  if (!SplitHostPort(target_text, &host, &service)) {
    std::fprintf(stderr, "wsbridge-faultproxy: --target: want host:port (got \"%s\")\n",
                 target_text.c_str());
    return 2;
  }

  asio::io_context io;
  asio::error_code ec;
  auto address = asio::ip::make_address(bind, ec);
  if (ec) {
    std::fprintf(stderr, "wsbridge-faultproxy: --bind %s: %s\n", bind.c_str(),
                 ec.message().c_str());
    return 2;
  }
  tcp::resolver resolver(io);
  auto target = resolver.resolve(host, service, ec);
  if (ec) {
    std::fprintf(stderr, "wsbridge-faultproxy: --target %s: %s\n", target_text.c_str(),
                 ec.message().c_str());
    return 1;
  }
  try {
    Proxy proxy(io, tcp::endpoint(address, port), target, *mode);
    ControlServer control(io, tcp::endpoint(address, control_port), &proxy);
    proxy.Start();
    control.Start();
    Log("proxy on %u -> %s, control on %u, mode %s", unsigned{proxy.port()}, target_text.c_str(),
        unsigned{control.port()}, proxy.mode().ToString().c_str());
    std::printf("listening on %u\ncontrol on %u\n", unsigned{proxy.port()},
                unsigned{control.port()});
    std::fflush(stdout);
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&io](const asio::error_code& e, int) {
      if (!e) io.stop();
    });
    io.run();
  } catch (const std::exception& e) {  // bind failures and the like, at start-up
    std::fprintf(stderr, "wsbridge-faultproxy: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace wsbridge::faultproxy

int main(int argc, char** argv) { return wsbridge::faultproxy::Main(argc, argv); }
