#include "bridge/link/upstream.h"

#include <spdlog/spdlog.h>

#include <asio/ssl/host_name_verification.hpp>
#include <asio/steady_timer.hpp>
#include <websocketpp/client.hpp>
#include <websocketpp/uri.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "bridge/clock.h"
#include "bridge/link/auth_command.h"
#include "bridge/link/connection_policy.h"
#include "bridge/link/proxy.h"
#include "bridge/link/ws_config.h"
#include "bridge/logging.h"
#include "bridge/pipeline/writer.h"
#include "bridge/protocol/frame_protocol.h"
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

  Link(const Config& config, UpstreamHooks hooks, std::unique_ptr<FrameProtocol> protocol,
       PolicyOptions policy_options, std::optional<ProxySettings> proxy)
      : config_(config),
        hooks_(std::move(hooks)),
        protocol_(std::move(protocol)),
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
        // Counted as websocketpp buffers them (CheckWritten): the bytes of the frame sent.
        size_t sent_bytes = r.payload.size();
        websocketpp::lib::error_code ec;
        if (r.binary) {
          ec = SendRaw(r.payload, websocketpp::frame::opcode::binary);
        } else if (framed_) {
          const std::string framed = protocol_->Frame(r.payload);
          sent_bytes = framed.size();
          ec = SendRaw(framed);
        } else {
          ec = SendRaw(r.payload);
        }
        if (ec) {
          spdlog::warn("upstream: outbound send failed: {}", ec.message());
          return;  // the connection is going away; the next open resends from the outbox
        }
        if (!acks_) {
          enqueued_bytes_ += sent_bytes;
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
            if (!config_.heartbeat.app_ping.empty()) SendRaw(config_.heartbeat.app_ping);
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
    handshake_error_.clear();
    closing_for_protocol_ = false;
    session_open_ = false;
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
    // websocketpp calls this even after a failed extension negotiation (it has already
    // terminated the connection then): the response is checked here, before anything is sent.
    auto deflate = CheckDeflateResponse(con_->get_response_header("Sec-WebSocket-Extensions"),
                                        StrictPermessageDeflate::offered());
    if (!deflate.ok()) {
      handshake_error_ = deflate.status().message();
      con_->terminate(websocketpp::lib::error_code());
      return;
    }
    std::string compression = !StrictPermessageDeflate::offered() ? ""
                              : *deflate ? ", permessage-deflate (" + (*deflate)->ToString() + ")"
                                         : ", permessage-deflate declined by the server";
    spdlog::info("upstream: connected to {}{}", RedactedUrl(), compression);
    hooks_.stats->connects.fetch_add(1, std::memory_order_relaxed);
    enqueued_bytes_ = 0;
    unwritten_.clear();
    Apply(policy_.OnOpen(Now(), id));
    if (protocol_->OnConnectionOpen()) StartSession(id);
  }

  // The session is open (at the WebSocket open, or when an Engine.IO server has connected the
  // namespace): the resume and on_open texts, then the outbox may flow.
  void StartSession(ConnId id) {
    if (session_open_) return;  // a server repeating its namespace connect
    session_open_ = true;
    uint64_t resume = hooks_.resume_seq();
    spdlog::info("upstream: session open, resuming after upstream seq {}", resume);
    if (!resume_text_.empty()) SendText(protocol_->Frame(ReplaceLastSeq(resume_text_, resume)));
    for (const auto& text : config_.protocol.on_open) {
      SendText(protocol_->Frame(ReplaceLastSeq(text, resume)));
    }
    PushLinkEvent(LinkEvent::Kind::kOpen, id);
  }

  // The protocol ended this connection (Engine.IO close or connect error, an inflated frame too
  // big): close it; OnClose reports `reason` (and `fatal`) to the policy.
  void CloseForProtocol(websocketpp::close::status::value code, const std::string& reason,
                        bool fatal) {
    if (closing_for_protocol_) return;
    closing_for_protocol_ = true;
    protocol_close_ = CloseInfo{static_cast<int>(code), reason, true};
    protocol_close_.fatal = fatal;
    websocketpp::lib::error_code ec;
    con_->close(code, reason.substr(0, 120), ec);  // a close reason has room for 123 bytes
    if (ec) con_->terminate(websocketpp::lib::error_code());
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
    if (closing_for_protocol_) return;  // what follows a frame that ended the session
    InboundFrame f;
    f.received_at_unix_ns = read_at_unix_ns_;
    f.binary = msg->get_opcode() == websocketpp::frame::opcode::binary;
    std::string& payload = msg->get_raw_payload();
    if (protocol_->active()) {
      FrameOutcome out = protocol_->OnMessage(f.binary, &payload);
      if (!Carry(id, &out)) return;
      f.binary = out.binary;
      f.upstream_seq = out.upstream_seq;
      f.topic = std::move(out.topic);
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

  // Carries out what the protocol made of one message: its answers first, then the rest.
  // True when the message is data to journal.
  bool Carry(ConnId id, FrameOutcome* out) {
    Stats& stats = *hooks_.stats;
    for (const std::string& text : out->send) SendText(text);
    if (out->replies) stats.replies_sent.fetch_add(out->replies, std::memory_order_relaxed);
    if (out->reply_failed) stats.reply_failures.fetch_add(1, std::memory_order_relaxed);
    if (out->inflate_failed) stats.inflate_failures.fetch_add(1, std::memory_order_relaxed);
    if (out->malformed_packet) stats.malformed_packets.fetch_add(1, std::memory_order_relaxed);
    if (!out->warning.empty()) spdlog::warn("upstream: {}", out->warning);
    if (out->silence_bound) {
      policy_.SetSilenceBound(Now(), id, *out->silence_bound);
      ArmTimer();
    }
    switch (out->kind) {
      case FrameOutcome::Kind::kData:
        return true;
      case FrameOutcome::Kind::kConsumed:
        return false;
      case FrameOutcome::Kind::kAppPong:
        stats.app_pongs.fetch_add(1, std::memory_order_relaxed);
        OnPong(id);
        return false;
      case FrameOutcome::Kind::kAck: {
        LinkEvent e;
        e.kind = LinkEvent::Kind::kAck;
        e.conn = id;
        e.id = std::move(out->ack_id);
        hooks_.events->Push(std::move(e));
        return false;
      }
      case FrameOutcome::Kind::kSessionOpen:
        StartSession(id);
        return false;
      case FrameOutcome::Kind::kLost:
        CloseForProtocol(websocketpp::close::status::normal, out->reason, false);
        return false;
      case FrameOutcome::Kind::kFatal:
        CloseForProtocol(websocketpp::close::status::normal, out->reason, true);
        return false;
      case FrameOutcome::Kind::kTooBig:
        CloseForProtocol(websocketpp::close::status::message_too_big, out->reason, false);
        return false;
    }
    return false;
  }

  // A small read (a low rate: a few messages) is committed right here when the writer is idle,
  // saving every message a thread hand-off. A large one goes to the writer through the queue,
  // so that its commit overlaps reading the next one.
  void HandOff() {
    hand_off_posted_ = false;
    if (read_frames_.empty()) {  // only pongs, acks and replied pings in this read
      CountWireBytes();
      return;
    }
    hooks_.stats->frames_in.fetch_add(read_frames_.size(), std::memory_order_relaxed);
    hooks_.stats->bytes_in.fetch_add(read_bytes_, std::memory_order_relaxed);
    CountWireBytes();
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

  void CountWireBytes() {
    uint64_t total = ws_detail::WirePayloadBytes();
    hooks_.stats->wire_bytes_in.fetch_add(total - wire_bytes_seen_, std::memory_order_relaxed);
    wire_bytes_seen_ = total;
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
    if (!handshake_error_.empty()) {
      FailHandshake(id);
      return;
    }
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

  // The server's handshake response could not be honoured (OnOpen): a failed attempt, not a
  // lost connection.
  void FailHandshake(ConnId id) {
    Failure f{Failure::Kind::kExtension, 0, std::nullopt, handshake_error_};
    handshake_error_.clear();
    con_.reset();
    Fail(id, f);
  }

  void OnClose(ConnId id) {
    if (id != con_id_ || !con_) return;
    if (!handshake_error_.empty()) {
      FailHandshake(id);
      return;
    }
    CloseInfo info;
    auto local = con_->get_local_close_code();
    info.code = con_->get_remote_close_code();
    info.reason = con_->get_remote_close_reason();
    std::string what;
    if (closing_for_protocol_ && local != websocketpp::close::status::message_too_big) {
      info = protocol_close_;
      what = protocol_close_.reason;
    } else if (local == websocketpp::close::status::message_too_big) {
      info.local = true;
      info.code = local;
      hooks_.stats->oversized_closes.fetch_add(1, std::memory_order_relaxed);
      what = "closed with 1009: an inbound frame exceeded upstream.max_message_bytes (" +
             std::to_string(config_.upstream.max_message_bytes) + ")" +
             (closing_for_protocol_ ? " once inflated" : "");
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
    hooks_.stats->CountReconnectReason(
        local == websocketpp::close::status::message_too_big ? "message_too_big"
        : closing_for_protocol_                              ? "protocol"
                                                             : "closed");
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

  // Every message the bridge sends goes out uncompressed, even with permessage-deflate on
  // (see permessage_deflate.h): connection::send(string) would mark it compressed.
  websocketpp::lib::error_code SendRaw(const std::string& payload,
                                       websocketpp::frame::opcode::value op =
                                           websocketpp::frame::opcode::text) {
    return con_->send(payload.data(), payload.size(), op);
  }

  websocketpp::lib::error_code SendText(const std::string& text) {
    auto ec = SendRaw(text);
    if (ec) spdlog::warn("upstream: send failed: {}", ec.message());
    return ec;
  }

  std::string RedactedUrl() const {
    websocketpp::uri u(config_.upstream.url);
    if (!u.get_valid()) return "<invalid url>";
    return u.str();
  }

  const Config& config_;
  UpstreamHooks hooks_;
  std::unique_ptr<FrameProtocol> protocol_;
  const bool framed_ = protocol_->options().framing != Framing::kJson;  // outbound texts wrapped
  // protocol.resume, unless framing is engineio and it was left at its default (the reference
  // protocol's resume text means nothing to a socket.io server).
  const std::string resume_text_ =
      config_.protocol.framing == "engineio" && config_.sources.count("protocol.resume") != 0 &&
              config_.sources.at("protocol.resume") == "default"
          ? ""
          : config_.protocol.resume;
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
  std::string handshake_error_;  // the server's response cannot be honoured (OnOpen)
  bool closing_for_protocol_ = false;  // CloseForProtocol was called on this connection
  bool session_open_ = false;          // StartSession ran on this connection
  CloseInfo protocol_close_;           // what it reports
  uint64_t wire_bytes_seen_ = 0;       // ws_detail::WirePayloadBytes() already counted
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

StatusOr<std::unique_ptr<FrameProtocol>> CreateFrameProtocol(const Config& config) {
  const ProtocolConfig& pc = config.protocol;
  FrameProtocolOptions o;
  o.framing = pc.framing == "engineio" ? Framing::kEngineIo : Framing::kJson;
  o.replies = pc.replies;
  o.decompress = ParseCompression(pc.decompress).value_or(Compression::kNone);
  o.max_message_bytes = config.upstream.max_message_bytes;
  o.socketio_namespace = pc.socketio_namespace;
  o.socketio_auth = pc.socketio_auth;
  o.inspector.seq_field = pc.seq_field;
  o.inspector.topic_field = o.framing == Framing::kEngineIo ? "" : pc.topic_field;
  o.inspector.app_pong = config.heartbeat.app_pong;
  o.inspector.ack_match = pc.ack_match;
  o.inspector.ack_id_field = pc.ack_id_field;
  auto protocol = FrameProtocol::Create(std::move(o));
  if (!protocol.ok()) return protocol.status();
  if ((*protocol)->options().framing == Framing::kEngineIo) {
    // Texts sent on open are socket.io events there: they must be ["event", ...] arrays.
    const auto& sources = config.sources;
    auto src = sources.find("protocol.resume");
    bool resume_default = src == sources.end() || src->second == "default";
    std::vector<std::pair<std::string, std::string>> texts;
    if (!resume_default && !pc.resume.empty()) texts.emplace_back("protocol.resume", pc.resume);
    for (size_t i = 0; i < pc.on_open.size(); ++i) {
      texts.emplace_back("protocol.on_open[" + std::to_string(i) + "]", pc.on_open[i]);
    }
    for (const auto& [key, text] : texts) {
      Status st = (*protocol)->CheckOutbound(ReplaceLastSeq(text, 0), false);
      if (!st.ok()) return Status::InvalidArgument(key + ": " + st.message());
    }
  }
  return protocol;
}

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
  auto protocol = CreateFrameProtocol(config);
  if (!protocol.ok()) return protocol.status();
  StrictPermessageDeflate::SetOffered(config.upstream.permessage_deflate);
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
        config, std::move(hooks), std::move(protocol).value(), *policy, std::move(proxy).value()));
  }
  return std::unique_ptr<Upstream>(new Link<WsClientConfig>(
      config, std::move(hooks), std::move(protocol).value(), *policy, std::move(proxy).value()));
}

}  // namespace wsbridge
