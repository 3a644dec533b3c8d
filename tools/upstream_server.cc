#include "tools/upstream_server.h"

#include <simdjson.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <regex>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <websocketpp/config/asio.hpp>
#include <websocketpp/extensions/permessage_deflate/enabled.hpp>
#include <websocketpp/server.hpp>

namespace wsbridge::upstream {
namespace {

using Clock = std::chrono::steady_clock;

// Per-connection bound on bytes queued in websocketpp and not yet handed to the socket. A
// slow reader makes its connection wait (polled every kPollInterval); if it falls further
// behind than the history, it skips ahead, which is what a real feed does.
constexpr size_t kMaxBufferedBytes = size_t{4} << 20;
constexpr auto kPollInterval = std::chrono::milliseconds(1);
// How long SIGINT/SIGTERM waits for close handshakes before stopping anyway.
constexpr auto kShutdownGrace = std::chrono::seconds(2);
// Largest inflated size of a compressed frame from a client (--compress); beyond, the frame is
// taken as received, compressed.
constexpr size_t kMaxInflatedBytes = size_t{16} << 20;
// --server-ping with --ping-deadline 0: unanswered pings remembered per connection (the latest).
constexpr size_t kMaxUnansweredPings = 64;

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

StatusOr<File> OpenAppend(const std::string& path, const char* flag) {
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (f == nullptr) {
    return Status::IOError(std::string(flag) + " " + path + ": " + std::strerror(errno));
  }
  return File(f);
}

// One line to the file, flushed so that a test reading the file sees it at once.
void AppendLine(std::FILE* f, std::string_view line) {
  std::fwrite(line.data(), 1, line.size(), f);
  std::fputc('\n', f);
  std::fflush(f);
}

void AppendJsonEscaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += ch;
        }
    }
  }
}

void AppendUint(std::string& out, uint64_t v) {
  char buf[20];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// An id rendered as text, the way the bridge compares ids: strings unescaped, integers and
// booleans as written. Other JSON types are not ids one can ack.
std::optional<std::string> IdText(simdjson::dom::element id) {
  switch (id.type()) {
    case simdjson::dom::element_type::STRING:
      return std::string(std::string_view(id));
    case simdjson::dom::element_type::INT64:
      return std::to_string(int64_t(id));
    case simdjson::dom::element_type::UINT64:
      return std::to_string(uint64_t(id));
    case simdjson::dom::element_type::BOOL:
      return bool(id) ? "true" : "false";
    default:
      return std::nullopt;
  }
}

// `after` of a resume: a non-negative integer (a string of digits is accepted too).
std::optional<uint64_t> AfterValue(simdjson::dom::object obj) {
  simdjson::dom::element el;
  if (obj["after"].get(el) != simdjson::SUCCESS) return 0;  // absent: from the start
  uint64_t v = 0;
  if (el.get_uint64().get(v) == simdjson::SUCCESS) return v;
  std::string_view s;
  if (el.get_string().get(s) == simdjson::SUCCESS && !s.empty()) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && end == s.data() + s.size()) return v;
  }
  return std::nullopt;
}

// ---- --compress: each frame's text compressed on its own (gzip, zlib or raw deflate) ----------

enum class Codec { kNone, kGzip, kZlib, kDeflate };

std::optional<Codec> ParseCodec(std::string_view name) {
  if (name.empty()) return Codec::kNone;
  if (name == "gzip") return Codec::kGzip;
  if (name == "zlib") return Codec::kZlib;
  if (name == "deflate") return Codec::kDeflate;
  return std::nullopt;
}

// zlib's windowBits selecting the format: 16 + 15 gzip, 15 zlib, -15 raw deflate.
int WindowBits(Codec c) { return c == Codec::kGzip ? 16 + 15 : c == Codec::kZlib ? 15 : -15; }

// One deflate stream, reset for each frame (one complete gzip member / zlib stream / raw
// deflate stream per frame, as feeds that compress do).
class Deflater {
 public:
  explicit Deflater(Codec c) {
    z_ = {};
    // memLevel 1: deflateReset clears the hash table for every frame, 64 KiB at the default
    // memLevel 8 and 1 KiB at 1 (2.9 against 3.7 us per 100 B frame here, the same bytes out):
    // this tool's one producer thread is what limits `wsbridge-load-inbound 1 feeds` with gzip.
    ok_ = deflateInit2(&z_, Z_DEFAULT_COMPRESSION, Z_DEFLATED, WindowBits(c), 1,
                       Z_DEFAULT_STRATEGY) == Z_OK;
  }
  ~Deflater() {
    if (ok_) deflateEnd(&z_);
  }
  Deflater(const Deflater&) = delete;
  Deflater& operator=(const Deflater&) = delete;

  bool ok() const { return ok_; }

  std::string Compress(std::string_view in) {
    deflateReset(&z_);
    std::string out(deflateBound(&z_, static_cast<uLong>(in.size())), '\0');
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z_.avail_in = static_cast<uInt>(in.size());
    int r;
    do {  // deflateBound is enough for one call; the loop only guards against surprises
      if (z_.total_out == out.size()) out.resize(out.size() * 2);
      z_.next_out = reinterpret_cast<Bytef*>(&out[z_.total_out]);
      z_.avail_out = static_cast<uInt>(out.size() - z_.total_out);
      r = deflate(&z_, Z_FINISH);
    } while (r == Z_OK || r == Z_BUF_ERROR);
    out.resize(z_.total_out);
    return out;
  }

 private:
  z_stream z_;
  bool ok_ = false;
};

// The format of a binary frame from a client, by its first bytes: gzip (1f 8b 08), zlib (CMF
// says deflate with a window of at most 32 KiB and the header checksum holds), else `fallback`
// (kDeflate with --compress deflate: try raw deflate; kNone: not compressed).
Codec DetectCodec(std::string_view b, Codec fallback) {
  const auto u = [&](size_t i) { return static_cast<unsigned>(static_cast<unsigned char>(b[i])); };
  if (b.size() >= 3 && u(0) == 0x1f && u(1) == 0x8b && u(2) == 8) return Codec::kGzip;
  if (b.size() >= 2 && (u(0) & 0x0f) == 8 && (u(0) >> 4) <= 7 && ((u(0) << 8) | u(1)) % 31 == 0) {
    return Codec::kZlib;
  }
  return fallback == Codec::kDeflate ? Codec::kDeflate : Codec::kNone;
}

// Inflates one complete stream of format `c` into *out, at most `limit` bytes. An error message
// when it is not a complete, valid stream or inflates past the limit.
std::optional<std::string> Inflate(std::string_view in, Codec c, size_t limit, std::string* out) {
  z_stream z{};
  if (inflateInit2(&z, WindowBits(c)) != Z_OK) return std::string("inflateInit2 failed");
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  out->clear();
  char buf[16384];
  int r = Z_OK;
  std::optional<std::string> error;
  while (r == Z_OK) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    r = inflate(&z, Z_NO_FLUSH);
    out->append(buf, sizeof buf - z.avail_out);
    if (out->size() > limit) {
      error = "inflates past " + std::to_string(limit) + " bytes";
      break;
    }
    if (r == Z_BUF_ERROR && z.avail_in == 0) {
      error = "truncated";
      break;
    }
  }
  if (!error && r != Z_STREAM_END) {
    error = z.msg != nullptr ? z.msg : "inflate error " + std::to_string(r);
  }
  inflateEnd(&z);
  return error;
}

StatusOr<std::shared_ptr<asio::ssl::context>> MakeTlsContext(const Options& o) {
  using asio::ssl::context;
  auto ctx = std::make_shared<context>(context::tls_server);
  asio::error_code ec;
  ctx->set_options(context::default_workarounds | context::no_sslv2 | context::no_sslv3 |
                       context::no_tlsv1 | context::no_tlsv1_1 | context::single_dh_use,
                   ec);
  if (ec) return Status::InvalidArgument("TLS options: " + ec.message());
  ctx->use_certificate_chain_file(o.tls_cert, ec);
  if (ec) return Status::InvalidArgument("--tls-cert " + o.tls_cert + ": " + ec.message());
  ctx->use_private_key_file(o.tls_key, context::pem, ec);
  if (ec) return Status::InvalidArgument("--tls-key " + o.tls_key + ": " + ec.message());
  if (!o.tls_client_ca.empty()) {
    ctx->load_verify_file(o.tls_client_ca, ec);
    if (ec) {
      return Status::InvalidArgument("--tls-client-ca " + o.tls_client_ca + ": " + ec.message());
    }
    ctx->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert, ec);
    if (ec) return Status::InvalidArgument("TLS verify mode: " + ec.message());
  }
  return ctx;
}

// websocketpp 0.8.2 with this Asio takes the completion of the TLS shutdown that follows a
// close handshake for a cancellation, so a wss connection only ends when the socket-shutdown
// timer fires (5 s by default). A shorter timer makes a closed wss connection gone (close
// handler, --max-connections count) within a second.
struct TlsConfig : websocketpp::config::asio_tls {
  using type = TlsConfig;
  struct transport_config : websocketpp::config::asio_tls::transport_config {
    static const long timeout_socket_shutdown = 1000;  // ms; websocketpp's name and type
  };
  using transport_type = websocketpp::transport::asio::endpoint<transport_config>;
};

// --permessage-deflate: websocketpp's RFC 7692 implementation, in "accept" mode (the client's
// window sizes and no_context_takeover requests are honoured; by default context takeover and
// 15-bit windows). Its limits: zlib cannot deflate with an 8-bit window, which websocketpp then
// answers as 9 (a violation of RFC 7692 that clients reject), so such offers are refused with 400
// in OnValidate.
struct PermessageDeflateSettings {};  // websocketpp's enabled<> takes a config it does not read
template <typename Base>
struct WithPermessageDeflate : Base {
  using type = WithPermessageDeflate;
  using permessage_deflate_type =
      websocketpp::extensions::permessage_deflate::enabled<PermessageDeflateSettings>;
};

// What Create() prepared for the server: validated options, open files, TLS material.
struct Resources {
  Options options;
  File received_log;                        // null without --log-received
  File headers_log;                         // null without --log-headers
  std::shared_ptr<asio::ssl::context> tls;  // null for plain ws://
  std::vector<std::pair<std::string, std::string>> required_headers;
};

// The server over one websocketpp config (plain or TLS).
//
// Owns the io_context, the websocketpp endpoint, every open connection (by connection_ptr in
// conns_, dropped on close), the history of prepared messages, and the log files. Every
// member function runs on the thread inside Run(), from io_context handlers; nothing here is
// thread-safe and nothing needs to be.
//
// Delivery: each resumed connection has a cursor (the next seq to send) into history_. Pump()
// sends from the cursor while the connection's websocketpp queue holds less than
// kMaxBufferedBytes; a connection that is still behind is polled again on the next tick. At
// --rate 0 the messages are produced inside Pump() when a connection has caught up, so the
// feed runs exactly as fast as the fastest client drains it.
//
// Frames: by default each history entry is a prepared text frame shared by every connection.
// With --compress it is a prepared binary frame holding the compressed text (compressed once,
// still shared). With --permessage-deflate each connection compresses with its own context, so
// history entries hold the unprepared payload and every send prepares a copy for that
// connection (slower, only with the switch).
//
// Server pings (--server-ping): one heartbeat_ timer wakes at the earlier of the next ping round
// and the oldest unanswered ping's deadline; each Conn keeps its unanswered pings in order.
template <typename Config>
class ServerImpl final : public Server {
 public:
  explicit ServerImpl(Resources r)
      : opts_(std::move(r.options)),
        received_log_(std::move(r.received_log)),
        headers_log_(std::move(r.headers_log)),
        tls_(std::move(r.tls)),
        required_headers_(std::move(r.required_headers)),
        signals_(io_, SIGINT, SIGTERM),
        tick_(io_),
        deadline_(io_),
        heartbeat_(io_),
        codec_(*ParseCodec(opts_.compress)),
        deflater_(codec_ == Codec::kNone ? nullptr : std::make_unique<Deflater>(codec_)),
        next_seq_(opts_.first_seq) {
    for (const auto& t : opts_.topics) {
      std::string e;
      AppendJsonEscaped(e, t);
      escaped_topics_.push_back(std::move(e));
    }
    namespace log = websocketpp::log;
    server_.clear_access_channels(log::alevel::all);
    server_.clear_error_channels(log::elevel::all);
    // No library log at all: websocketpp reports a client that vanishes mid-write (e.g. a
    // bridge killed with SIGKILL, which the tests do) as "[fatal]", and the close and fail
    // handlers below already say on stderr what happened to each connection and why.
    server_.init_asio(&io_);
    server_.set_reuse_addr(true);

    using websocketpp::connection_hdl;
    server_.set_validate_handler([this](connection_hdl h) { return OnValidate(h); });
    server_.set_open_handler([this](connection_hdl h) { OnOpen(h); });
    server_.set_close_handler([this](connection_hdl h) { OnClose(h); });
    server_.set_fail_handler([this](connection_hdl h) { OnFail(h); });
    server_.set_message_handler(
        [this](connection_hdl h, MessagePtr m) { OnMessage(h, std::move(m)); });
    if constexpr (kTls) server_.set_tls_init_handler([this](connection_hdl) { return tls_; });
    // Small frames must not wait for Nagle + delayed ACK (a 40 ms stall on Linux). Set once
    // the socket is accepted: websocketpp's socket_init handler runs before it is opened.
    server_.set_tcp_pre_init_handler([this](connection_hdl h) {
      std::error_code ec;
      auto con = server_.get_con_from_hdl(h, ec);
      if (!ec) con->get_raw_socket().set_option(asio::ip::tcp::no_delay(true), ec);
    });
  }

  Status Run() override {
    std::error_code ec;
    auto addr = asio::ip::make_address(opts_.bind, ec);
    if (!ec) {
      server_.listen(asio::ip::tcp::endpoint(addr, opts_.port), ec);
    } else {
      ec.clear();
      server_.listen(opts_.bind, std::to_string(opts_.port), ec);
    }
    if (!ec) server_.start_accept(ec);
    if (ec) {
      return Status::Unavailable("cannot listen on " + opts_.bind + ":" +
                                 std::to_string(opts_.port) + ": " + ec.message());
    }
    auto local = server_.get_local_endpoint(ec);
    if (ec) return Status::Unavailable("cannot read the listening port: " + ec.message());
    std::printf("listening on %u\n", unsigned{local.port()});
    std::fflush(stdout);

    signals_.async_wait([this](const std::error_code& e, int signo) {
      if (!e) Stop(signo);
    });
    base_ = Clock::now();
    Reschedule();
    if (opts_.server_ping_ms != 0) {
      next_ping_at_ = base_ + std::chrono::milliseconds(opts_.server_ping_ms);
      ArmHeartbeat();
    }
    io_.run();
    conns_.clear();
    return Status::OK();
  }

 private:
  using Endpoint = websocketpp::server<Config>;
  using ConnectionPtr = typename Endpoint::connection_ptr;
  using Message = typename Config::message_type;
  using MessagePtr = typename Message::ptr;
  static constexpr bool kTls = std::is_base_of_v<websocketpp::config::asio_tls, Config>;
  static constexpr bool kPermessageDeflate =
      std::is_base_of_v<WithPermessageDeflate<TlsConfig>, Config> ||
      std::is_base_of_v<WithPermessageDeflate<websocketpp::config::asio>, Config>;

  // A server ping not answered yet: its number and when it must have been answered.
  struct PendingPing {
    uint64_t value = 0;
    Clock::time_point deadline;
  };

  struct Conn {
    ConnectionPtr con;
    uint64_t id = 0;        // for log lines
    bool resumed = false;   // nothing is sent before the client's resume
    bool closing = false;   // close() called or send failed: send nothing more
    bool waiting = false;   // has something to send and must be polled
    uint64_t next_seq = 0;  // next seq to send, once resumed
    uint64_t sent = 0;      // data messages sent, for --close-after
    uint64_t skipped = 0;   // messages it missed by falling behind the history
    // --server-ping: the pings not answered yet (oldest first), pings sent, pings answered.
    std::deque<PendingPing> pings;
    uint64_t pings_sent = 0;
    uint64_t pongs = 0;
  };

  void Log(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    if (opts_.quiet) return;
    std::va_list ap;
    va_start(ap, fmt);
    std::fputs("wsbridge-upstream: ", stderr);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
  }

  // ---- handshake ---------------------------------------------------------------------------

  bool OnValidate(websocketpp::connection_hdl h) {
    ConnectionPtr con = server_.get_con_from_hdl(h);
    if (headers_log_) LogHeaders(*con);
    if (stopping_) return Refuse(*con, 503, "shutting down", /*retry_after=*/false);
    if (opts_.reject_status != 0) {
      return Refuse(*con, opts_.reject_status, "--reject-status", /*retry_after=*/true);
    }
    for (const auto& [name, value] : required_headers_) {
      if (con->get_request_header(name) != value) {
        return Refuse(*con, 401, "missing or wrong header " + name, /*retry_after=*/false);
      }
    }
    if (opts_.max_connections != 0 && conns_.size() >= opts_.max_connections) {
      return Refuse(*con, 503, "--max-connections reached", /*retry_after=*/true);
    }
    if constexpr (kPermessageDeflate) {
      // websocketpp answers an offer of an 8-bit window with 9 (zlib cannot deflate with 8),
      // which the client must reject: say why instead of opening a connection it will fail.
      const std::string& offer = con->get_request_header("Sec-WebSocket-Extensions");
      static const std::regex kEightBits(R"(max_window_bits\s*=\s*"?0*8"?\s*([;,]|$))");
      if (std::regex_search(offer, kEightBits)) {
        return Refuse(*con, 400,
                      "permessage-deflate with an 8-bit window is not supported (zlib's "
                      "smallest is 9)",
                      /*retry_after=*/false);
      }
    }
    return true;
  }

  // Always false: the validate handler's answer.
  bool Refuse(typename Endpoint::connection_type& con, int status, const std::string& why,
              bool retry_after) {
    con.set_status(static_cast<websocketpp::http::status_code::value>(status));
    // Negotiated before this handler runs; a refusal offers no extension.
    con.remove_header("Sec-WebSocket-Extensions");
    if (retry_after && !opts_.retry_after.empty()) {
      con.append_header("Retry-After", opts_.retry_after);
    }
    con.set_body("refused: " + why + "\n");
    Log("handshake from %s refused with %d: %s", con.get_remote_endpoint().c_str(), status,
        why.c_str());
    return false;
  }

  void LogHeaders(typename Endpoint::connection_type& con) {
    std::string line = "{";
    bool first = true;
    for (const auto& [name, value] : con.get_request().get_headers()) {
      if (!first) line += ',';
      first = false;
      line += '"';
      AppendJsonEscaped(line, name);
      line += "\":\"";
      AppendJsonEscaped(line, value);
      line += '"';
    }
    line += '}';
    AppendLine(headers_log_.get(), line);
  }

  // ---- connection lifecycle ----------------------------------------------------------------

  void OnOpen(websocketpp::connection_hdl h) {
    Conn c;
    c.con = server_.get_con_from_hdl(h);
    c.id = ++last_conn_id_;
    const std::string& extensions = c.con->get_response_header("Sec-WebSocket-Extensions");
    Log("connection %llu open from %s, path %s%s%s", static_cast<unsigned long long>(c.id),
        c.con->get_remote_endpoint().c_str(), c.con->get_resource().c_str(),
        extensions.empty() ? "" : ", extensions: ", extensions.c_str());
    conns_.emplace(h, std::move(c));
  }

  void OnClose(websocketpp::connection_hdl h) {
    auto it = conns_.find(h);
    if (it == conns_.end()) return;
    const Conn& c = it->second;
    const std::error_code ec = c.con->get_ec();
    std::string pings;
    if (opts_.server_ping_ms != 0) {
      pings = ", " + std::to_string(c.pongs) + " of " + std::to_string(c.pings_sent) +
              " pings answered";
    }
    Log("connection %llu closed (remote code %d, local code %d%s%s) after %llu messages "
        "(%llu skipped)%s",
        static_cast<unsigned long long>(c.id), int(c.con->get_remote_close_code()),
        int(c.con->get_local_close_code()), ec ? ", " : "", ec ? ec.message().c_str() : "",
        static_cast<unsigned long long>(c.sent), static_cast<unsigned long long>(c.skipped),
        pings.c_str());
    conns_.erase(it);
    if (stopping_ && conns_.empty()) io_.stop();
  }

  void OnFail(websocketpp::connection_hdl h) {
    ConnectionPtr con = server_.get_con_from_hdl(h);
    auto it = conns_.find(h);
    if (it != conns_.end()) conns_.erase(it);
    // Refusals were logged by Refuse(); at shutdown the pending accept fails as aborted.
    if (con->get_ec() != websocketpp::error::rejected && !stopping_) {
      Log("connection from %s failed: %s", con->get_remote_endpoint().c_str(),
          con->get_ec().message().c_str());
    }
    if (stopping_ && conns_.empty()) io_.stop();
  }

  void Stop(int signo) {
    if (stopping_) return;
    stopping_ = true;
    Log("stopping on signal %d", signo);
    tick_.cancel();
    heartbeat_.cancel();
    std::error_code ec;
    server_.stop_listening(ec);
    for (auto& [h, c] : conns_) {
      c.closing = true;
      c.con->close(websocketpp::close::status::going_away, "server shutting down", ec);
    }
    if (conns_.empty()) {
      io_.stop();
      return;
    }
    deadline_.expires_after(kShutdownGrace);
    deadline_.async_wait([this](const std::error_code& e) {
      if (!e) io_.stop();
    });
  }

  // ---- inbound -----------------------------------------------------------------------------

  void OnMessage(websocketpp::connection_hdl h, MessagePtr msg) {
    auto it = conns_.find(h);
    if (it == conns_.end()) return;
    Conn& c = it->second;

    bool text = msg->get_opcode() == websocketpp::frame::opcode::text;
    const std::string* payload_ptr = &msg->get_payload();
    if (!text && codec_ != Codec::kNone) {
      // --compress: a client may send compressed frames too; plain ones are taken as they are.
      const Codec c_in = DetectCodec(*payload_ptr, codec_);
      if (c_in != Codec::kNone) {
        if (auto error = Inflate(*payload_ptr, c_in, kMaxInflatedBytes, &inflated_)) {
          Log("connection %llu: a binary frame of %zu bytes does not inflate (%s): taken as "
              "received",
              static_cast<unsigned long long>(c.id), payload_ptr->size(), error->c_str());
        } else {
          payload_ptr = &inflated_;
          text = true;
        }
      }
    }
    const std::string& payload = *payload_ptr;

    simdjson::dom::element doc;
    simdjson::dom::object obj;
    if (!text || parser_.parse(payload).get(doc) != simdjson::SUCCESS ||
        doc.get_object().get(obj) != simdjson::SUCCESS) {
      LogReceived(payload);
      return;
    }

    if (opts_.server_ping_ms != 0) {
      simdjson::dom::element pong;
      if (obj["pong"].get(pong) == simdjson::SUCCESS) {
        OnPong(c, obj, pong, payload);
        return;
      }
    }

    std::string_view type;
    if (obj["type"].get_string().get(type) == simdjson::SUCCESS) {
      if (type == "resume") {
        if (auto after = AfterValue(obj)) {
          Resume(c, *after);
        } else {
          Log("connection %llu: resume with a bad \"after\" ignored: %s",
              static_cast<unsigned long long>(c.id), payload.c_str());
        }
        return;
      }
      if (type == "ping") {
        SendText(c, R"({"type":"pong"})");
        return;
      }
    }

    simdjson::dom::element id_el;
    std::optional<std::string> id;
    if (obj["id"].get(id_el) == simdjson::SUCCESS) id = IdText(id_el);
    if (!id) {
      LogReceived(payload);
      return;
    }
    // Acked every time (the bridge re-sends until acked), logged once.
    if (seen_ids_.insert(*id).second) LogReceived(payload);
    if (!opts_.no_ack) {
      std::string ack = R"({"type":"ack","id":")";
      AppendJsonEscaped(ack, *id);
      ack += "\"}";
      SendText(c, ack);
    }
  }

  void LogReceived(const std::string& payload) {
    if (received_log_) AppendLine(received_log_.get(), payload);
  }

  // One frame of the server's own (ack, pong, ping): text, or compressed in a binary frame with
  // --compress; with permessage-deflate negotiated, websocketpp compresses it on the wire.
  void SendText(Conn& c, const std::string& text) {
    if (c.closing) return;
    std::error_code ec =
        deflater_ ? c.con->send(deflater_->Compress(text), websocketpp::frame::opcode::binary)
                  : c.con->send(text, websocketpp::frame::opcode::text);
    if (ec) c.closing = true;
  }

  // ---- server pings (--server-ping) ----------------------------------------------------------

  // A frame with a "pong" member: consumed. It answers a ping only when it is exactly
  // {"pong":N} with N the number of a ping still unanswered.
  void OnPong(Conn& c, simdjson::dom::object obj, simdjson::dom::element pong,
              const std::string& payload) {
    uint64_t value = 0;
    if (obj.size() == 1 && pong.get_uint64().get(value) == simdjson::SUCCESS) {
      for (auto p = c.pings.begin(); p != c.pings.end(); ++p) {
        if (p->value == value) {
          c.pings.erase(p);
          ++c.pongs;
          return;
        }
      }
    }
    Log("connection %llu: %s answers no unanswered ping: ignored",
        static_cast<unsigned long long>(c.id), payload.c_str());
  }

  // Wakes at the next ping round or the oldest unanswered ping's deadline, whichever is first.
  void ArmHeartbeat() {
    if (stopping_) return;
    Clock::time_point when = next_ping_at_;
    if (opts_.ping_deadline_ms != 0) {
      for (const auto& [h, c] : conns_) {
        if (!c.closing && !c.pings.empty()) when = std::min(when, c.pings.front().deadline);
      }
    }
    heartbeat_.expires_at(when);
    heartbeat_.async_wait([this](const std::error_code& e) {
      if (!e) Heartbeat();
    });
  }

  void Heartbeat() {
    if (stopping_) return;
    const auto now = Clock::now();
    if (opts_.ping_deadline_ms != 0) {
      for (auto& [h, c] : conns_) {
        if (c.closing || c.pings.empty() || c.pings.front().deadline > now) continue;
        Log("connection %llu: ping %llu not answered within %u ms: closing with %u",
            static_cast<unsigned long long>(c.id),
            static_cast<unsigned long long>(c.pings.front().value), opts_.ping_deadline_ms,
            unsigned{kPingCloseCode});
        c.closing = true;
        c.pings.clear();
        std::error_code ec;
        c.con->close(kPingCloseCode, "ping not answered", ec);
      }
    }
    if (now >= next_ping_at_) {
      const auto unix_ms =
          static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count());
      last_ping_value_ = std::max(unix_ms, last_ping_value_ + 1);
      std::string ping = R"({"ping":)";
      AppendUint(ping, last_ping_value_);
      ping += '}';
      const auto deadline = now + std::chrono::milliseconds(opts_.ping_deadline_ms);
      for (auto& [h, c] : conns_) {
        if (c.closing) continue;
        SendText(c, ping);
        ++c.pings_sent;
        c.pings.push_back({last_ping_value_, deadline});
        // Without a deadline nothing ends a connection that never answers: keep the latest.
        if (opts_.ping_deadline_ms == 0 && c.pings.size() > kMaxUnansweredPings) {
          c.pings.pop_front();
        }
      }
      next_ping_at_ += std::chrono::milliseconds(opts_.server_ping_ms);
      if (next_ping_at_ <= now) {  // a round was missed (a stall): start again from now
        next_ping_at_ = now + std::chrono::milliseconds(opts_.server_ping_ms);
      }
    }
    ArmHeartbeat();
  }

  void Resume(Conn& c, uint64_t after) {
    uint64_t want = after == UINT64_MAX ? after : after + 1;
    const uint64_t oldest = OldestSeq();
    if (want < oldest) {
      // Asked for what we no longer keep (or never had): start at the oldest kept. The
      // client sees the jump in seq.
      Log("connection %llu: resume after %llu, but history starts at %llu: jumping",
          static_cast<unsigned long long>(c.id), static_cast<unsigned long long>(after),
          static_cast<unsigned long long>(oldest));
      want = oldest;
    }
    // Asked for the future (e.g. we restarted and lost our numbering): go live.
    want = std::min(want, next_seq_);
    Log("connection %llu: resume after %llu: replaying %llu messages, then live",
        static_cast<unsigned long long>(c.id), static_cast<unsigned long long>(after),
        static_cast<unsigned long long>(next_seq_ - want));
    c.resumed = true;
    c.next_seq = want;
    c.waiting = Pump(c);
    Reschedule();
  }

  // ---- producing and sending ---------------------------------------------------------------

  uint64_t OldestSeq() const { return next_seq_ - history_.size(); }
  bool CountDone() const { return opts_.count != 0 && produced_ >= opts_.count; }

  // Appends the next message to the history; false once --count is reached.
  bool Produce() {
    if (CountDone()) return false;
    const uint64_t seq = next_seq_++;
    ++produced_;
    const auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    const std::string& topic = escaped_topics_[(seq - opts_.first_seq) % escaped_topics_.size()];

    std::string data = R"({"ts_ns":)";
    AppendUint(data, static_cast<uint64_t>(now_ns));
    constexpr size_t kPadOverhead = sizeof(R"(,"pad":"")") - 1;
    if (opts_.payload_bytes > data.size() + 1 + kPadOverhead) {
      data += R"(,"pad":")";
      data.append(opts_.payload_bytes - data.size() - 2, 'x');  // 2: closing '"' and '}'
      data += '"';
    }
    data += '}';

    std::string text;
    text.reserve(32 + topic.size() + data.size());
    text += R"({"seq":)";
    AppendUint(text, seq);
    text += R"(,"topic":")";
    text += topic;
    text += R"(","data":)";
    text += data;
    text += '}';

    history_.push_back(MakeFrame(std::move(text)));
    if (history_.size() > opts_.history) history_.pop_front();
    return true;
  }

  // The history entry for one message's text: see the class comment.
  MessagePtr MakeFrame(std::string text) {
    namespace frame = websocketpp::frame;
    const frame::opcode::value op = deflater_ ? frame::opcode::binary : frame::opcode::text;
    if (deflater_) text = deflater_->Compress(text);
    if constexpr (kPermessageDeflate) {
      auto m = std::make_shared<Message>(typename Message::con_msg_man_ptr(), op, 0);
      m->get_raw_payload() = std::move(text);
      return m;
    } else {
      return PrepareFrame(std::move(text), op);
    }
  }

  // A server's frames are not masked, so one prepared frame (header + payload) is the same
  // bytes for every connection: websocketpp queues a prepared message by pointer, so the
  // history is shared by all connections and sending copies nothing.
  static MessagePtr PrepareFrame(std::string text, websocketpp::frame::opcode::value op) {
    namespace frame = websocketpp::frame;
    auto m = std::make_shared<Message>(typename Message::con_msg_man_ptr(), op, 0);
    const uint64_t size = text.size();
    m->get_raw_payload() = std::move(text);
    m->set_header(frame::prepare_header(frame::basic_header(op, size, true, false, false),
                                        frame::extended_header(size)));
    m->set_prepared(true);
    return m;
  }

  // Sends what c may send now; true if it still has something to send (poll again).
  bool Pump(Conn& c) {
    if (!c.resumed || c.closing || stopping_) return false;
    const uint64_t oldest = OldestSeq();
    if (c.next_seq < oldest) {
      // Logged once per connection: a stalled reader would otherwise log on every tick.
      if (c.skipped == 0) {
        Log("connection %llu fell behind the history: skipping seq %llu..%llu (and more "
            "later, counted at close)",
            static_cast<unsigned long long>(c.id), static_cast<unsigned long long>(c.next_seq),
            static_cast<unsigned long long>(oldest - 1));
      }
      c.skipped += oldest - c.next_seq;
      c.next_seq = oldest;
    }
    for (;;) {
      if (c.con->get_buffered_amount() >= kMaxBufferedBytes) return true;
      if (c.next_seq == next_seq_ && (opts_.rate > 0 || !Produce())) return false;
      std::error_code ec;
      const MessagePtr& m = history_[c.next_seq - OldestSeq()];
      if constexpr (kPermessageDeflate) {
        ec = c.con->send(m->get_payload(), m->get_opcode());  // a copy, compressed for c
      } else {
        ec = c.con->send(m);
      }
      if (ec) {
        c.closing = true;  // not open any more; the close handler forgets it
        return false;
      }
      ++c.next_seq;
      ++c.sent;
      if (opts_.close_after != 0 && c.sent >= opts_.close_after) {
        Log("connection %llu: closing with 1001 after %llu messages (--close-after)",
            static_cast<unsigned long long>(c.id), static_cast<unsigned long long>(c.sent));
        c.closing = true;
        c.con->close(websocketpp::close::status::going_away, "close-after", ec);
        return false;
      }
    }
  }

  // Produces what --rate says is due by now, in one burst.
  void ProduceDue(Clock::time_point now) {
    if (CountDone()) return;
    const double elapsed = std::chrono::duration<double>(now - base_).count();
    const auto target = static_cast<uint64_t>(elapsed * opts_.rate);
    if (target <= produced_since_base_) return;
    uint64_t n = target - produced_since_base_;
    // More than 100 ms behind (a stall, or a rate beyond what we can build): forgive the debt
    // rather than emit an ever larger burst.
    const uint64_t max_burst = std::max<uint64_t>(1000, static_cast<uint64_t>(opts_.rate / 10));
    if (n > max_burst) {
      n = max_burst;
      base_ = now;
      produced_since_base_ = 0;
    } else {
      produced_since_base_ += n;
    }
    for (uint64_t i = 0; i < n && Produce(); ++i) {
    }
  }

  void Tick() {
    if (stopping_) return;
    if (opts_.rate > 0) ProduceDue(Clock::now());
    for (auto& [h, c] : conns_) c.waiting = Pump(c);
    Reschedule();
  }

  // Arms the tick for the earliest of: a waiting connection (next poll), the next message due.
  void Reschedule() {
    if (stopping_) return;
    const auto now = Clock::now();
    std::optional<Clock::time_point> when;
    for (const auto& [h, c] : conns_) {
      if (c.waiting) {
        when = now + kPollInterval;
        break;
      }
    }
    if (!when && opts_.rate > 0 && !CountDone()) {
      const auto due =
          base_ + std::chrono::duration_cast<Clock::duration>(
                      std::chrono::duration<double>(double(produced_since_base_ + 1) / opts_.rate));
      when = std::max(due, now + kPollInterval);
    }
    if (!when) return;
    if (tick_armed_ && tick_.expiry() <= *when) return;
    tick_.expires_at(*when);  // cancels a later wait, whose handler then sees aborted
    tick_armed_ = true;
    tick_.async_wait([this](const std::error_code& e) {
      if (e == asio::error::operation_aborted) return;
      tick_armed_ = false;
      Tick();
    });
  }

  const Options opts_;
  File received_log_;
  File headers_log_;
  std::shared_ptr<asio::ssl::context> tls_;
  const std::vector<std::pair<std::string, std::string>> required_headers_;
  std::vector<std::string> escaped_topics_;

  asio::io_context io_;
  Endpoint server_;
  asio::signal_set signals_;
  asio::steady_timer tick_;
  asio::steady_timer deadline_;
  asio::steady_timer heartbeat_;        // --server-ping rounds and deadlines
  Clock::time_point next_ping_at_;      // next --server-ping round
  uint64_t last_ping_value_ = 0;        // pings carry strictly increasing numbers
  const Codec codec_;                   // --compress
  std::unique_ptr<Deflater> deflater_;  // null without --compress
  std::string inflated_;                // a client's frame, inflated (reused)
  bool tick_armed_ = false;
  bool stopping_ = false;

  std::map<websocketpp::connection_hdl, Conn, std::owner_less<websocketpp::connection_hdl>> conns_;
  uint64_t last_conn_id_ = 0;

  std::deque<MessagePtr> history_;  // seqs OldestSeq() .. next_seq_-1
  uint64_t next_seq_;               // seq of the next message produced
  uint64_t produced_ = 0;           // for --count
  Clock::time_point base_;          // --rate schedule origin
  uint64_t produced_since_base_ = 0;

  simdjson::dom::parser parser_;
  std::unordered_set<std::string> seen_ids_;
};

}  // namespace

StatusOr<std::unique_ptr<Server>> Server::Create(const Options& options) {
  Resources r;
  r.options = options;
  const Options& o = r.options;
  if (o.topics.empty()) return Status::InvalidArgument("--topics: at least one topic");
  if (o.history == 0) return Status::InvalidArgument("--history: must be at least 1");
  if (o.rate < 0) return Status::InvalidArgument("--rate: must not be negative");
  if (o.first_seq == 0) return Status::InvalidArgument("--first-seq: must be at least 1");
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return Status::InvalidArgument("--tls-cert and --tls-key go together");
  }
  if (!o.tls_client_ca.empty() && o.tls_cert.empty()) {
    return Status::InvalidArgument("--tls-client-ca needs --tls-cert and --tls-key");
  }
  for (const auto& spec : o.require_headers) {
    auto colon = spec.find(':');
    std::string_view name = colon == std::string::npos
                                ? std::string_view()
                                : Trim(std::string_view(spec).substr(0, colon));
    if (name.empty()) {
      return Status::InvalidArgument("--require-header \"" + spec + "\": expected \"Name: value\"");
    }
    r.required_headers.emplace_back(std::string(name),
                                    std::string(Trim(std::string_view(spec).substr(colon + 1))));
  }
  if (!o.log_received.empty()) {
    auto f = OpenAppend(o.log_received, "--log-received");
    if (!f.ok()) return f.status();
    r.received_log = std::move(f).value();
  }
  if (!o.log_headers.empty()) {
    auto f = OpenAppend(o.log_headers, "--log-headers");
    if (!f.ok()) return f.status();
    r.headers_log = std::move(f).value();
  }
  if (!ParseCodec(o.compress)) {
    return Status::InvalidArgument("--compress: must be one of gzip, zlib, deflate (got \"" +
                                   o.compress + "\")");
  }
  if (o.compress != "" && !Deflater(*ParseCodec(o.compress)).ok()) {
    return Status::Unavailable("--compress: zlib's deflateInit2 failed");
  }
  // A client that goes away while we write must not kill us.
  std::signal(SIGPIPE, SIG_IGN);
  using Plain = websocketpp::config::asio;
  if (o.tls_cert.empty()) {
    if (o.permessage_deflate) {
      return std::unique_ptr<Server>(
          std::make_unique<ServerImpl<WithPermessageDeflate<Plain>>>(std::move(r)));
    }
    return std::unique_ptr<Server>(std::make_unique<ServerImpl<Plain>>(std::move(r)));
  }
  auto ctx = MakeTlsContext(o);
  if (!ctx.ok()) return ctx.status();
  r.tls = std::move(ctx).value();
  if (o.permessage_deflate) {
    return std::unique_ptr<Server>(
        std::make_unique<ServerImpl<WithPermessageDeflate<TlsConfig>>>(std::move(r)));
  }
  return std::unique_ptr<Server>(std::make_unique<ServerImpl<TlsConfig>>(std::move(r)));
}

}  // namespace wsbridge::upstream
