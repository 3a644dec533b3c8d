#include "bridge/upstream.h"

#include <spdlog/spdlog.h>

#include <asio/ssl/host_name_verification.hpp>
#include <asio/steady_timer.hpp>
#include <websocketpp/client.hpp>
#include <websocketpp/uri.hpp>

#include <chrono>
#include <deque>

#include "bridge/clock.h"
#include "bridge/connection_policy.h"
#include "bridge/json_fields.h"
#include "bridge/writer.h"
#include "bridge/ws_config.h"

namespace wsbridge {
namespace {

std::string ReplaceLastSeq(std::string text, uint64_t last_seq) {
  static const std::string kToken = "{last_seq}";
  const std::string value = std::to_string(last_seq);
  for (size_t pos = text.find(kToken); pos != std::string::npos;
       pos = text.find(kToken, pos + value.size())) {
    text.replace(pos, kToken.size(), value);
  }
  return text;
}

asio::ip::tcp::socket& LowestLayer(asio::ip::tcp::socket& s) { return s; }
template <typename Stream>
auto& LowestLayer(Stream& s) {
  return s.lowest_layer();
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
       PolicyOptions policy_options)
      : config_(config),
        hooks_(std::move(hooks)),
        inspector_(std::move(inspector)),
        policy_(policy_options, &rng_),
        timer_(io_),
        written_timer_(io_) {
    client_.clear_access_channels(websocketpp::log::alevel::all);
    client_.clear_error_channels(websocketpp::log::elevel::all);
    client_.init_asio(&io_);
    InitTls();
    // Small frames must not wait for Nagle + delayed ACK (a 40 ms stall on Linux).
    client_.set_socket_init_handler([](websocketpp::connection_hdl, auto& socket) {
      asio::error_code ec;
      LowestLayer(socket).set_option(asio::ip::tcp::no_delay(true), ec);
    });
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

  void Connect(ConnId id) {
    if (stopping_) return;
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
      con->append_header(name, *value);
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
    policy_.OnActivity(Now(), id);
    InboundFrame f;
    f.received_at_unix_ns = WallNowNs();
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
    hooks_.stats->frames_in.fetch_add(1, std::memory_order_relaxed);
    hooks_.stats->bytes_in.fetch_add(payload.size(), std::memory_order_relaxed);
    f.payload = std::move(payload);
    if (hooks_.queue->Push(std::move(f)) && !paused_) {
      paused_ = true;
      hooks_.stats->reads_paused.fetch_add(1, std::memory_order_relaxed);
      con_->pause_reading();
    }
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
    }
    Fail(id, f);
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
  bool paused_ = false;
  int exit_code_ = 0;
  std::string tls_error_;
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
  if (uri.get_secure()) {
    if (!config.upstream.tls.verify) {
      spdlog::warn("upstream.tls.verify=false: the upstream's certificate and host name are NOT "
                   "checked");
    }
    return std::unique_ptr<Upstream>(new Link<WssClientConfig>(
        config, std::move(hooks), std::move(inspector).value(), *policy));
  }
  return std::unique_ptr<Upstream>(new Link<WsClientConfig>(
      config, std::move(hooks), std::move(inspector).value(), *policy));
}

}  // namespace wsbridge
