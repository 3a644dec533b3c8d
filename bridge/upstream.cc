#include "bridge/upstream.h"

#include <spdlog/spdlog.h>

#include <asio/ssl/host_name_verification.hpp>
#include <asio/steady_timer.hpp>
#include <websocketpp/client.hpp>
#include <websocketpp/uri.hpp>

#include <chrono>

#include "bridge/json_fields.h"
#include "bridge/writer.h"
#include "bridge/ws_config.h"

namespace wsbridge {
namespace {

using std::chrono::milliseconds;
using SteadyTime = std::chrono::steady_clock::time_point;

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

// Everything the two transports share lives in this template; the TLS difference is the
// tls_init_handler, set only for WssClientConfig.
template <typename WsConfig>
class Link final : public Upstream {
 public:
  using Client = websocketpp::client<WsConfig>;
  using ConnectionPtr = typename Client::connection_ptr;
  using MessagePtr = typename Client::message_ptr;

  Link(const Config& config, UpstreamHooks hooks, std::unique_ptr<FrameInspector> inspector)
      : config_(config),
        hooks_(std::move(hooks)),
        inspector_(std::move(inspector)),
        reconnect_timer_(io_),
        heartbeat_timer_(io_),
        connect_timer_(io_) {
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
    Connect();
    io_.run();
    return exit_code_;
  }

  void Stop() override {
    asio::post(io_, [this] {
      if (stopping_) return;
      stopping_ = true;
      reconnect_timer_.cancel();
      heartbeat_timer_.cancel();
      connect_timer_.cancel();
      if (con_) {
        websocketpp::lib::error_code ec;
        auto state = con_->get_state();
        if (state == websocketpp::session::state::open) {
          con_->set_close_handshake_timeout(2000);
          con_->close(websocketpp::close::status::normal, "bridge shutting down", ec);
        } else if (state == websocketpp::session::state::connecting) {
          con_->terminate(websocketpp::lib::error_code());
        }
      }
    });
  }

  void ResumeReading() override {
    asio::post(io_, [this] {
      if (!paused_ || !con_) return;
      paused_ = false;
      websocketpp::lib::error_code ec;
      con_->resume_reading();
    });
  }

 private:
  void InitTls();

  void Connect() {
    if (stopping_) return;
    websocketpp::lib::error_code ec;
    ConnectionPtr con = client_.get_connection(config_.upstream.url, ec);
    if (ec) {
      Failed("cannot start a connection to " + RedactedUrl() + ": " + ec.message());
      return;
    }
    for (const auto& [name, raw] : config_.upstream.headers) {
      auto value = ExpandFileRefs(raw);
      if (!value.ok()) {
        Failed("upstream.headers." + name + ": " + value.status().message());
        return;
      }
      con->append_header(name, *value);
    }
    for (const auto& p : config_.upstream.subprotocols) con->add_subprotocol(p, ec);
    con->set_max_message_size(config_.upstream.max_message_bytes);
    con->set_open_handshake_timeout(config_.upstream.connect_timeout_ms);
    con->set_open_handler([this](websocketpp::connection_hdl) { OnOpen(); });
    con->set_fail_handler([this](websocketpp::connection_hdl) { OnFail(); });
    con->set_close_handler([this](websocketpp::connection_hdl) { OnClose(); });
    con->set_message_handler(
        [this](websocketpp::connection_hdl, MessagePtr msg) { OnMessage(std::move(msg)); });
    con->set_pong_handler([this](websocketpp::connection_hdl, std::string) { OnActivity(); });
    con_ = con;
    tls_error_.clear();
    paused_ = false;
    client_.connect(con);
    connect_timer_.expires_after(milliseconds(config_.upstream.connect_timeout_ms));
    connect_timer_.async_wait([this, con](const asio::error_code& e) {
      if (e || con != con_ || con->get_state() != websocketpp::session::state::connecting) return;
      con->terminate(websocketpp::lib::error_code());
    });
  }

  void OnOpen() {
    connect_timer_.cancel();
    hooks_.stats->connected = 1;
    hooks_.stats->connects.fetch_add(1, std::memory_order_relaxed);
    hooks_.stats->SetUpstreamReason("");
    uint64_t resume = hooks_.resume_seq();
    spdlog::info("upstream: connected to {}, resuming after upstream seq {}", RedactedUrl(),
                 resume);
    if (!config_.protocol.resume.empty()) {
      SendText(ReplaceLastSeq(config_.protocol.resume, resume));
    }
    for (const auto& text : config_.protocol.on_open) SendText(ReplaceLastSeq(text, resume));
    last_activity_ = std::chrono::steady_clock::now();
    ScheduleHeartbeat();
  }

  void OnMessage(MessagePtr msg) {
    OnActivity();
    InboundFrame f;
    f.received_at_unix_ns = WallNowNs();
    f.binary = msg->get_opcode() == websocketpp::frame::opcode::binary;
    std::string& payload = msg->get_raw_payload();
    if (!f.binary && inspector_->active()) {
      FrameInfo info = inspector_->Inspect(payload);
      if (info.kind == FrameInfo::Kind::kAppPong) {
        hooks_.stats->app_pongs.fetch_add(1, std::memory_order_relaxed);
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

  void SendText(const std::string& text) {
    auto ec = con_->send(text, websocketpp::frame::opcode::text);
    if (ec) spdlog::warn("upstream: send failed: {}", ec.message());
  }

  void OnActivity() { last_activity_ = std::chrono::steady_clock::now(); }

  void OnFail() {
    connect_timer_.cancel();
    std::string reason = "connection attempt failed: ";
    int status = con_ ? static_cast<int>(con_->get_response_code()) : 0;
    if (status != 0 && status != 101) {
      reason += "HTTP " + std::to_string(status);
    } else if (!tls_error_.empty()) {
      reason += "TLS: " + tls_error_;
    } else if (con_) {
      reason += con_->get_ec().message();
    }
    Failed(reason);
  }

  void OnClose() {
    heartbeat_timer_.cancel();
    hooks_.stats->connected = 0;
    std::string reason;
    if (con_) {
      auto remote = con_->get_remote_close_code();
      auto local = con_->get_local_close_code();
      if (local == websocketpp::close::status::message_too_big) {
        hooks_.stats->oversized_closes.fetch_add(1, std::memory_order_relaxed);
        reason = "closed with 1009: an inbound frame exceeded upstream.max_message_bytes (" +
                 std::to_string(config_.upstream.max_message_bytes) + ")";
      } else {
        reason = "connection closed (remote code " + std::to_string(remote) + ", local code " +
                 std::to_string(local) + ")";
      }
    }
    if (stopping_) {
      spdlog::info("upstream: closed");
      con_.reset();
      return;
    }
    spdlog::warn("upstream: {}", reason);
    hooks_.stats->SetUpstreamReason(reason);
    ScheduleReconnect();
  }

  void Failed(const std::string& reason) {
    hooks_.stats->connected = 0;
    hooks_.stats->connect_failures.fetch_add(1, std::memory_order_relaxed);
    hooks_.stats->SetUpstreamReason(reason);
    if (stopping_) return;
    spdlog::warn("upstream: {}", reason);
    ScheduleReconnect();
  }

  void ScheduleReconnect() {
    if (stopping_) return;
    reconnect_timer_.expires_after(milliseconds(config_.reconnect.base_delay_ms));
    reconnect_timer_.async_wait([this](const asio::error_code& e) {
      if (!e) Connect();
    });
  }

  void ScheduleHeartbeat() {
    if (config_.heartbeat.interval_ms <= 0) return;
    heartbeat_timer_.expires_after(milliseconds(config_.heartbeat.interval_ms));
    heartbeat_timer_.async_wait([this](const asio::error_code& e) {
      if (e || !con_ || con_->get_state() != websocketpp::session::state::open) return;
      websocketpp::lib::error_code ec;
      ping_sent_ = std::chrono::steady_clock::now();
      con_->ping("", ec);
      if (!config_.heartbeat.app_ping.empty()) SendText(config_.heartbeat.app_ping);
      heartbeat_timer_.expires_after(milliseconds(config_.heartbeat.timeout_ms));
      heartbeat_timer_.async_wait([this](const asio::error_code& e2) {
        if (e2 || !con_) return;
        if (last_activity_ < ping_sent_) {
          spdlog::warn("upstream: no data and no pong for {} ms after a ping: connection is dead",
                       config_.heartbeat.timeout_ms);
          con_->terminate(websocketpp::lib::error_code());
          return;
        }
        ScheduleHeartbeat();
      });
    });
  }

  std::string RedactedUrl() const {
    websocketpp::uri u(config_.upstream.url);
    if (!u.get_valid()) return "<invalid url>";
    return u.str();
  }

  const Config& config_;
  UpstreamHooks hooks_;
  std::unique_ptr<FrameInspector> inspector_;
  asio::io_context io_;
  Client client_;
  ConnectionPtr con_;
  asio::steady_timer reconnect_timer_;
  asio::steady_timer heartbeat_timer_;
  asio::steady_timer connect_timer_;
  bool stopping_ = false;
  bool paused_ = false;
  int exit_code_ = 0;
  std::string tls_error_;
  SteadyTime last_activity_{};
  SteadyTime ping_sent_{};
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
  if (uri.get_secure()) {
    if (!config.upstream.tls.verify) {
      spdlog::warn("upstream.tls.verify=false: the upstream's certificate and host name are NOT "
                   "checked");
    }
    return std::unique_ptr<Upstream>(
        new Link<WssClientConfig>(config, std::move(hooks), std::move(inspector).value()));
  }
  return std::unique_ptr<Upstream>(
      new Link<WsClientConfig>(config, std::move(hooks), std::move(inspector).value()));
}

}  // namespace wsbridge
