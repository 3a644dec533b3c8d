// wsbridge-connectproxy: a small HTTP CONNECT proxy for the integration tests (issue 8).
//
//   bridge --CONNECT host:port--> [ 127.0.0.1:<port>  wsbridge-connectproxy ] --TCP--> host:port
//
//   --port N           listen on 127.0.0.1:N (0: chosen by the OS); "listening on <port>" on stdout
//   --user U --pass P  require "Proxy-Authorization: Basic base64(U:P)"; otherwise 407 with
//                      Proxy-Authenticate
//   --status N         answer every CONNECT with HTTP N (e.g. 403, 502) instead of tunnelling
//   --log FILE         one line per CONNECT, appended and flushed:
//                        "tunnel <host:port> user=<user>"      (a tunnel was set up)
//                        "refused <host:port> <status>"        (answered with an error)
//
// Only CONNECT is served (other methods: 405). After the 200 the bytes flow unchanged in both
// directions until either side closes. Everything runs on one thread.
#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <cstdio>
#include <memory>
#include <string>

namespace {

using asio::ip::tcp;

struct Options {
  int port = 0;
  std::string user, pass;
  int status = 0;
  std::string log;
};

std::string Base64(const std::string& in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += k[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += k[v >> 18];
    out += k[(v >> 12) & 63];
    out += k[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

const char* Reason(int status) {
  switch (status) {
    case 200: return "Connection established";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 405: return "Method Not Allowed";
    case 407: return "Proxy Authentication Required";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}


class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(asio::io_context& io, tcp::socket client, const Options& o, FILE* log)
      : io_(io), client_(std::move(client)), target_(io), resolver_(io), o_(o), log_(log) {}

  void Start() {
    auto self = shared_from_this();
    asio::async_read_until(client_, in_, "\r\n\r\n",
                           [self](std::error_code ec, size_t n) { self->OnRequest(ec, n); });
  }

 private:
  void OnRequest(std::error_code ec, size_t n) {
    if (ec) return;
    std::string head(asio::buffers_begin(in_.data()), asio::buffers_begin(in_.data()) + n);
    in_.consume(n);
    std::string first = head.substr(0, head.find("\r\n"));
    std::string method = first.substr(0, first.find(' '));
    size_t sp = first.find(' ');
    authority_ = sp == std::string::npos ? "" : first.substr(sp + 1, first.find(' ', sp + 1) - sp - 1);
    if (method != "CONNECT") return Answer(405);
    if (o_.status != 0) return Answer(o_.status);
    std::string user;
    if (!o_.user.empty()) {
      std::string want = "Basic " + Base64(o_.user + ":" + o_.pass);
      std::string got;
      size_t pos = 0;
      while ((pos = head.find("\r\n", pos)) != std::string::npos) {
        pos += 2;
        size_t end = head.find("\r\n", pos);
        std::string line = head.substr(pos, end - pos);
        size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string name = line.substr(0, colon);
        for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (name == "proxy-authorization") {
          got = line.substr(colon + 1);
          got.erase(0, got.find_first_not_of(' '));
        }
      }
      if (got != want) return Answer(407);
      user = o_.user;
    }
    size_t colon = authority_.rfind(':');
    if (colon == std::string::npos) return Answer(400);
    std::string host = authority_.substr(0, colon), port = authority_.substr(colon + 1);
    if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    auto self = shared_from_this();
    resolver_.async_resolve(host, port, [self, user](std::error_code ec, tcp::resolver::results_type r) {
      if (ec) return self->Answer(502);
      asio::async_connect(self->target_, r, [self, user](std::error_code ec, const tcp::endpoint&) {
        if (ec) return self->Answer(502);
        self->Log("tunnel " + self->authority_ + " user=" + (user.empty() ? "-" : user));
        auto msg = std::make_shared<std::string>("HTTP/1.1 200 Connection established\r\n\r\n");
        asio::async_write(self->client_, asio::buffer(*msg), [self, msg](std::error_code ec, size_t) {
          if (ec) return;
          self->Pump(self->client_, self->target_, self->in_);
          self->Pump(self->target_, self->client_, self->back_);
        });
      });
    });
  }

  void Answer(int status) {
    Log("refused " + authority_ + " " + std::to_string(status));
    auto msg = std::make_shared<std::string>(
        "HTTP/1.1 " + std::to_string(status) + " " + Reason(status) + "\r\n" +
        (status == 407 ? "Proxy-Authenticate: Basic realm=\"test\"\r\n" : "") +
        "Content-Length: 0\r\nConnection: close\r\n\r\n");
    auto self = shared_from_this();
    asio::async_write(client_, asio::buffer(*msg), [self, msg](std::error_code, size_t) {
      std::error_code ignored;
      self->client_.shutdown(tcp::socket::shutdown_both, ignored);
      self->client_.close(ignored);
    });
  }

  // Copies from -> to until EOF or error (first whatever `buf` already holds), then closes both.
  void Pump(tcp::socket& from, tcp::socket& to, asio::streambuf& buf) {
    auto self = shared_from_this();
    if (buf.size() > 0) {
      asio::async_write(to, buf.data(), [self, &from, &to, &buf](std::error_code ec, size_t n) {
        if (ec) return self->CloseBoth();
        buf.consume(n);
        self->Pump(from, to, buf);
      });
      return;
    }
    from.async_read_some(buf.prepare(16384), [self, &from, &to, &buf](std::error_code ec, size_t n) {
      if (ec) return self->CloseBoth();
      buf.commit(n);
      self->Pump(from, to, buf);
    });
  }

  void CloseBoth() {
    std::error_code ignored;
    client_.close(ignored);
    target_.close(ignored);
  }

  void Log(const std::string& line) {
    if (!log_) return;
    std::fprintf(log_, "%s\n", line.c_str());
    std::fflush(log_);
  }

  asio::io_context& io_;
  tcp::socket client_, target_;
  tcp::resolver resolver_;
  const Options& o_;
  FILE* log_;
  asio::streambuf in_, back_;
  std::string authority_;
};

void Accept(tcp::acceptor& acceptor, asio::io_context& io, const Options& o, FILE* log) {
  acceptor.async_accept([&acceptor, &io, &o, log](std::error_code ec, tcp::socket s) {
    if (!ec) {
      std::error_code ignored;
      s.set_option(tcp::no_delay(true), ignored);
      std::make_shared<Session>(io, std::move(s), o, log)->Start();
    }
    Accept(acceptor, io, o, log);
  });
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"wsbridge-connectproxy: an HTTP CONNECT proxy for tests"};
  app.add_option("--port", o.port, "port on 127.0.0.1; 0: chosen by the OS");
  app.add_option("--user", o.user, "require basic auth with this user");
  app.add_option("--pass", o.pass, "... and this password");
  app.add_option("--status", o.status, "answer every CONNECT with this HTTP status");
  app.add_option("--log", o.log, "append one line per CONNECT to this file");
  CLI11_PARSE(app, argc, argv);
  FILE* log = nullptr;
  if (!o.log.empty()) {
    log = std::fopen(o.log.c_str(), "a");
    if (!log) {
      std::fprintf(stderr, "--log %s: cannot open\n", o.log.c_str());
      return 2;
    }
  }
  asio::io_context io;
  tcp::acceptor acceptor(io);
  tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(o.port));
  std::error_code ec;
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::fprintf(stderr, "listen on port %d: %s\n", o.port, ec.message().c_str());
    return 1;
  }
  std::printf("listening on %d\n", acceptor.local_endpoint().port());
  std::fflush(stdout);
  Accept(acceptor, io, o, log);
  io.run();
  return 0;
}
