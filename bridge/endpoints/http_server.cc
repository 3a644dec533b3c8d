#include "bridge/endpoints/http_server.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <thread>
#include <websocketpp/config/asio_no_tls.hpp>
#include <websocketpp/server.hpp>

#include "bridge/metrics.h"
#include "common/thread_name.h"

namespace wsbridge {
namespace {

// Request bodies are never needed here (GET/HEAD only); refuse anything large early.
constexpr size_t kMaxRequestBodyBytes = 16 * 1024;

class HttpServerImpl final : public HttpServer {
 public:
  using Server = websocketpp::server<websocketpp::config::asio>;

  explicit HttpServerImpl(const Stats* stats)
      : stats_(stats),
        collectables_{std::make_shared<StatsCollectable>(stats),
                      std::make_shared<ProcessCollectable>()} {}

  ~HttpServerImpl() override { Stop(); }

  Status Listen(const std::string& listen) {
    size_t colon = listen.rfind(':');
    if (colon == std::string::npos) {
      return Status::InvalidArgument("http.listen: must be host:port (got \"" + listen + "\")");
    }
    std::string host = listen.substr(0, colon);
    std::string port = listen.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    if (host.empty() || host == "*") host = "0.0.0.0";  // explicitly asked for: all interfaces
    try {
      server_.clear_access_channels(websocketpp::log::alevel::all);
      server_.clear_error_channels(websocketpp::log::elevel::all);
      server_.init_asio(&io_);
      server_.set_reuse_addr(true);
      server_.set_user_agent("wsbridge/" WSBRIDGE_VERSION);
      server_.set_max_http_body_size(kMaxRequestBodyBytes);
      server_.set_http_handler([this](websocketpp::connection_hdl h) { OnHttp(h); });
      // A WebSocket handshake to this port gets 400: there is nothing to upgrade to.
      server_.set_validate_handler([](websocketpp::connection_hdl) { return false; });

      asio::error_code aec;
      asio::ip::tcp::resolver resolver(io_);
      auto results = resolver.resolve(host, port, asio::ip::resolver_base::passive, aec);
      if (aec || results.empty()) {
        return Status::InvalidArgument("http.listen: cannot resolve \"" + host +
                                       "\": " + (aec ? aec.message() : "no address"));
      }
      asio::ip::tcp::endpoint ep = results.begin()->endpoint();
      websocketpp::lib::error_code ec;
      server_.listen(ep, ec);
      if (!ec) server_.start_accept(ec);
      if (ec) {
        return Status::InvalidArgument("http.listen: cannot listen on " + listen + ": " +
                                       ec.message());
      }
      asio::ip::tcp::endpoint bound = server_.get_local_endpoint(aec);
      if (aec) bound = ep;
      std::string addr = bound.address().to_string();
      if (bound.address().is_v6()) addr = "[" + addr + "]";
      address_ = addr + ":" + std::to_string(bound.port());
    } catch (const std::exception& e) {
      return Status::InvalidArgument("http.listen: cannot listen on " + listen + ": " + e.what());
    }
    spdlog::info("http: listening on {}", address_);
    return Status::OK();
  }

  std::string address() const override { return address_; }

  void Start() override {
    if (thread_.joinable()) return;
    thread_ = std::thread([this] {
      NameThisThread("wsb-http");
      Serve();
    });
  }

  void BeginShutdown() override { shutting_down_ = true; }

  void Stop() override {
    if (stopped_.exchange(true)) return;
    io_.stop();
    if (thread_.joinable()) thread_.join();
    websocketpp::lib::error_code ec;
    if (server_.is_listening()) server_.stop_listening(ec);
  }

 private:
  // The thread body: nothing a request does may end the thread before Stop().
  void Serve() {
    for (;;) {
      try {
        io_.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("http: request handling failed: {}", e.what());
      }
    }
  }

  struct Response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
  };

  Response Route(const std::string& path) {
    if (path == "/healthz") return {200, "text/plain; charset=utf-8", "ok\n"};
    if (path == "/readyz") {
      if (shutting_down_) return {503, "text/plain; charset=utf-8", "shutting down\n"};
      Readiness r = CheckReadiness(*stats_);
      if (r.ready) return {200, "text/plain; charset=utf-8", "ready\n"};
      return {503, "text/plain; charset=utf-8", r.reason};
    }
    if (path == "/metrics") return {200, kMetricsContentType, RenderMetrics(collectables_)};
    return {404, "text/plain; charset=utf-8", "not found; try /healthz, /readyz or /metrics\n"};
  }

  void OnHttp(websocketpp::connection_hdl hdl) {
    Server::connection_ptr con = server_.get_con_from_hdl(hdl);
    const auto& req = con->get_request();
    const std::string& method = req.get_method();
    std::string path = req.get_uri();
    // Absolute form ("GET http://host/metrics"): keep the path. Drop any query.
    if (size_t scheme = path.find("://"); scheme != std::string::npos && path[0] != '/') {
      size_t slash = path.find('/', scheme + 3);
      path = slash == std::string::npos ? "/" : path.substr(slash);
    }
    path = path.substr(0, path.find_first_of("?#"));

    Response r;
    if (method != "GET" && method != "HEAD") {
      r = {405, "text/plain; charset=utf-8", "method not allowed; use GET\n"};
      con->append_header("Allow", "GET, HEAD");
    } else {
      try {
        r = Route(path);
      } catch (const std::exception& e) {
        r = {500, "text/plain; charset=utf-8", std::string("internal error: ") + e.what() + "\n"};
      }
    }
    con->set_status(static_cast<websocketpp::http::status_code::value>(r.status));
    con->replace_header("Content-Type", r.content_type);
    con->replace_header("Cache-Control", "no-store");
    con->replace_header("Connection", "close");
    spdlog::debug("http: {} {} -> {} ({} bytes)", method, path, r.status, r.body.size());
    con->set_body(method == "HEAD" ? std::string() : std::move(r.body));
  }

  const Stats* stats_;
  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  asio::io_context io_;  // before server_: the server's sockets live in it
  Server server_;
  std::string address_;
  std::thread thread_;
  std::atomic<bool> shutting_down_{false};
  std::atomic<bool> stopped_{false};
};

}  // namespace

StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(const std::string& listen,
                                                         const Stats* stats) {
  auto server = std::make_unique<HttpServerImpl>(stats);
  if (Status s = server->Listen(listen); !s.ok()) return s;
  return std::unique_ptr<HttpServer>(std::move(server));
}

}  // namespace wsbridge
