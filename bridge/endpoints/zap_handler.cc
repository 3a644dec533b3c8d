// ZapHandler: ZAP (RFC 27) for the CURVE endpoints, and their handshake monitors. See
// zap_handler.h.
#include "bridge/endpoints/zap_handler.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <optional>
#include <unordered_map>
#include <zmq_addon.hpp>

#include "common/text.h"
#include "common/thread_name.h"

namespace wsbridge {
namespace {

// The endpoint (Stats::auth_failures index) a ZAP domain names; nullopt for any other domain.
std::optional<AuthEndpoint> EndpointOfDomain(std::string_view domain) {
  if (domain == "pub") return AuthEndpoint::kPub;
  if (domain == "send") return AuthEndpoint::kSend;
  if (domain == "replay") return AuthEndpoint::kReplay;
  return std::nullopt;
}

std::string ToString(const zmq::message_t& m) { return std::string(m.data<char>(), m.size()); }

// What a refused handshake's ZMQ_PROTOCOL_ERROR_* value means, for the log line.
std::string ProtocolErrorText(uint32_t value) {
  switch (value) {
    case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
      return "the client does not use CURVE (a plain client?)";
    case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
      return "the CURVE handshake did not decrypt (the client has the wrong server key?)";
    default: {
      char hex[16];
      std::snprintf(hex, sizeof hex, "0x%08x", value);
      return std::string("ZMTP protocol error ") + hex;
    }
  }
}

}  // namespace

// One endpoint's handshake monitor: the PAIR socket reading the events libzmq publishes.
struct ZapHandler::Monitor {
  zmq::socket_t reader;
  AuthEndpoint endpoint;
  std::string domain;
};

// Logs a refusal at most once a minute per key (endpoint and client key); remembers at most
// kMaxKeys keys, so that a flood of fresh keys cannot grow it (or the log) without bound.
class ZapHandler::RefusalLog {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr Clock::duration kWindow = std::chrono::minutes(1);
  static constexpr size_t kMaxKeys = 4096;

  bool ShouldLog(const std::string& key) {
    Clock::time_point now = Clock::now();
    auto it = last_.find(key);
    if (it != last_.end()) {
      if (now - it->second < kWindow) return false;
      it->second = now;
      return true;
    }
    if (last_.size() >= kMaxKeys) {
      for (auto i = last_.begin(); i != last_.end();) {
        i = now - i->second >= kWindow ? last_.erase(i) : std::next(i);
      }
      if (last_.size() >= kMaxKeys) return false;
    }
    last_.emplace(key, now);
    return true;
  }

 private:
  std::unordered_map<std::string, Clock::time_point> last_;
};

StatusOr<std::unique_ptr<ZapHandler>> ZapHandler::Start(zmq::context_t* context,
                                                        AuthorizedKeys keys, Stats* stats,
                                                        OnStopped on_stopped) {
  std::unique_ptr<ZapHandler> h(
      new ZapHandler(context, std::move(keys), stats, std::move(on_stopped)));
  if (h->wake_fd_ < 0) {
    return Status::IOError(std::string("authentication handler: eventfd: ") + std::strerror(errno));
  }
  try {
    h->socket_ = zmq::socket_t(*context, zmq::socket_type::rep);
    h->socket_.set(zmq::sockopt::linger, 0);
    h->socket_.bind(kEndpoint);
  } catch (const zmq::error_t& e) {
    return Status::Unavailable(std::string("authentication handler: cannot bind ") + kEndpoint +
                               ": " + e.what());
  }
  h->running_ = true;
  h->thread_ = std::thread([p = h.get()] { p->Run(); });
  return h;
}

ZapHandler::ZapHandler(zmq::context_t* context, AuthorizedKeys keys, Stats* stats,
                       OnStopped on_stopped)
    : context_(context),
      stats_(stats),
      on_stopped_(std::move(on_stopped)),
      wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      keys_(std::make_shared<const AuthorizedKeys>(std::move(keys))),
      refusal_log_(std::make_unique<RefusalLog>()) {}

ZapHandler::~ZapHandler() {
  Stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void ZapHandler::Wake() {
  uint64_t one = 1;
  // Only fails if the counter would overflow, in which case the thread is awake anyway.
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void ZapHandler::Reload(AuthorizedKeys keys) {
  auto next = std::make_shared<const AuthorizedKeys>(std::move(keys));
  std::lock_guard<std::mutex> lock(mu_);
  keys_ = std::move(next);
}

Status ZapHandler::WatchHandshakes(zmq::socket_t& endpoint_socket, const std::string& zap_domain) {
  std::optional<AuthEndpoint> endpoint = EndpointOfDomain(zap_domain);
  if (!endpoint) {
    return Status::InvalidArgument("authentication handler: unknown ZAP domain \"" + zap_domain +
                                   "\" (pub, send or replay)");
  }
  // NO_DETAIL too: a plain client that sees the mechanism mismatch first hangs up before its
  // greeting arrives, and that is all this side sees (a bare TCP probe counts as well).
  auto reader = MonitorSocket(*context_, endpoint_socket,
                              ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                  ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL);
  if (!reader.ok()) {
    return Status::Unavailable("authentication handler: the " + zap_domain + " endpoint: " +
                               reader.status().message());
  }
  auto monitor = std::make_unique<Monitor>();
  monitor->endpoint = *endpoint;
  monitor->domain = zap_domain;
  monitor->reader = std::move(reader).value();
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_monitors_.push_back(std::move(monitor));
  }
  Wake();
  return Status::OK();
}

void ZapHandler::Stop() {
  int expected = kRun;
  command_.compare_exchange_strong(expected, kStop);
  Wake();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void ZapHandler::StopForTest() {
  int expected = kRun;
  command_.compare_exchange_strong(expected, kStopForTest);
  Wake();
}

size_t ZapHandler::key_count() {
  std::lock_guard<std::mutex> lock(mu_);
  return keys_->size();
}

void ZapHandler::Run() {
  NameThisThread("wsb-zap");
  std::string reason;
  try {
    reason = Serve();
  } catch (const zmq::error_t& e) {
    reason = e.num() == ETERM ? "the ZeroMQ context was terminated"
                              : std::string("ZAP socket error: ") + e.what();
  } catch (const std::exception& e) {
    reason = std::string("unexpected error: ") + e.what();
  }
  running_ = false;
  // socket_ stays bound (see the header): handshakes stall until the daemon is gone.
  if (!reason.empty() && on_stopped_) on_stopped_(reason);
}

std::string ZapHandler::Serve() {
  std::vector<zmq_pollitem_t> items;
  for (;;) {
    items.clear();
    items.push_back({socket_.handle(), 0, ZMQ_POLLIN, 0});
    items.push_back({nullptr, wake_fd_, ZMQ_POLLIN, 0});
    for (const auto& m : monitors_) items.push_back({m->reader.handle(), 0, ZMQ_POLLIN, 0});

    if (zmq_poll(items.data(), static_cast<int>(items.size()), -1) < 0) {
      if (zmq_errno() == EINTR) continue;
      throw zmq::error_t();
    }
    if (items[1].revents != 0) {
      uint64_t count;
      [[maybe_unused]] ssize_t n = ::read(wake_fd_, &count, sizeof count);
      switch (command_.load()) {
        case kStop:
          return "";
        case kStopForTest:
          return "stopped by its test hook (SIGUSR2)";
        default:
          break;
      }
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& m : pending_monitors_) monitors_.push_back(std::move(m));
      pending_monitors_.clear();
    }
    if (items[0].revents != 0) {
      std::vector<zmq::message_t> frames;
      if (zmq::recv_multipart(socket_, std::back_inserter(frames), zmq::recv_flags::dontwait)) {
        Answer(frames);
      }
    }
    // items[2..] match monitors_ as it was before any adoption above (adoption only appends).
    for (size_t i = 2; i < items.size(); ++i) {
      if (items[i].revents != 0) OnMonitorEvent(*monitors_[i - 2]);
    }
  }
}

// RFC 27 request: version "1.0", request id, domain, address, routing id, mechanism, then the
// mechanism's credentials (CURVE: the client's 32-byte public key). Reply: version, request id,
// status code, status text, user id, metadata. Only a request that passes every check below is
// answered "200".
void ZapHandler::Answer(const std::vector<zmq::message_t>& frames) {
  auto reply = [&](const char* code, const char* text, const std::string& user_id) {
    std::vector<zmq::message_t> out;
    out.emplace_back("1.0", 3);
    out.emplace_back(frames.size() > 1 ? frames[1].data() : nullptr,
                     frames.size() > 1 ? frames[1].size() : 0);
    out.emplace_back(code, std::strlen(code));
    out.emplace_back(text, std::strlen(text));
    out.emplace_back(user_id.data(), user_id.size());
    out.emplace_back();
    zmq::send_multipart(socket_, out);
  };

  if (frames.size() < 6 || ToString(frames[0]) != "1.0") {
    reply("500", "Malformed ZAP request", "");
    spdlog::error("authentication handler: malformed ZAP request ({} frames); refused",
                  frames.size());
    return;
  }
  const std::string domain = ToString(frames[2]);
  const std::string address = ToString(frames[3]);
  const std::string mechanism = ToString(frames[5]);
  std::optional<AuthEndpoint> endpoint = EndpointOfDomain(domain);
  const int index = endpoint ? static_cast<int>(*endpoint) : -1;
  const std::string where = endpoint ? "zmq." + domain : "ZAP domain \"" + OneLine(domain) + "\"";
  const std::string from = address.empty() ? "" : " from " + OneLine(address);

  if (mechanism != "CURVE" || frames.size() != 7 || frames[6].size() != kCurveKeyBytes) {
    reply("400", "CURVE required", "");
    Refuse(index, where + "/" + mechanism,
           where + ": refused a " + OneLine(mechanism) + " client" + from + " (CURVE required)");
    return;
  }
  const std::string key = ToString(frames[6]);
  const std::string key_z85 = Z85EncodeKey(key);
  std::shared_ptr<const AuthorizedKeys> keys;
  {
    std::lock_guard<std::mutex> lock(mu_);
    keys = keys_;
  }
  if (!endpoint) {
    reply("400", "Unknown ZAP domain", "");
    Refuse(index, where + "/" + key,
           where + ": refused client key " + key_z85 + from +
               " (unknown ZAP domain: pub, send or replay)");
    return;
  }
  if (!keys->Allows(domain, key)) {
    const char* role = ToString(*RoleForDomain(domain));
    std::string why = keys->Lists(key) ? std::string("not authorized for ") + role
                                       : std::string("not in ") + kAuthorizedKeysKey;
    reply("400", "Not authorized", "");
    Refuse(index, where + "/" + key,
           where + ": refused client key " + key_z85 + " (" + why + ")" + from);
    return;
  }
  reply("200", "OK", key_z85);  // user id: the client's Z85 public key ("User-Id" metadata)
}

void ZapHandler::OnMonitorEvent(Monitor& monitor) {
  const std::optional<MonitorEvent> e = NextMonitorEvent(monitor.reader);
  if (!e || (e->event != ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
             e->event != ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)) {
    return;
  }
  const uint32_t value = e->value;
  Refuse(static_cast<int>(monitor.endpoint), monitor.domain + "/handshake",
         "zmq." + monitor.domain +
             ": refused a client in the CURVE handshake: " + ProtocolErrorText(value));
}

void ZapHandler::Refuse(int endpoint, const std::string& log_key, const std::string& line) {
  if (endpoint >= 0) {
    stats_->auth_failures[static_cast<size_t>(endpoint)].fetch_add(1, std::memory_order_relaxed);
  }
  if (refusal_log_->ShouldLog(log_key)) {
    spdlog::warn("{}", line);
  }
}

}  // namespace wsbridge
