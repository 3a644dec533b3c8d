// wsbridge-upstream: the reference upstream server of SPEC §6, for the demo, the tests and as
// an example for upstream authors. This file only turns the command line into Options.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "common/docs.h"
#include "tools/upstream_server.h"

#ifndef WSBRIDGE_VERSION
#define WSBRIDGE_VERSION "unknown"
#endif

int main(int argc, char** argv) {
  wsbridge::upstream::Options o;
  CLI::App app{
      "wsbridge-upstream: reference upstream WebSocket server (SPEC section 6).\n"
      "Produces {\"seq\":N,\"topic\":\"T\",\"data\":{...}} messages, N = 1, 2, 3, ...; a\n"
      "connection gets nothing until it sends {\"type\":\"resume\",\"after\":L}, then the kept\n"
      "history after L, then live messages. Outbound messages with an \"id\" are answered\n"
      "{\"type\":\"ack\",\"id\":\"<id>\"}; {\"type\":\"ping\"} is answered {\"type\":\"pong\"}.\n"
      "Real feeds' ways (SPEC section 9) on request: server pings to echo (--server-ping),\n"
      "compressed binary frames (--compress), permessage-deflate (--permessage-deflate).\n"
      "Prints \"listening on <port>\" on stdout once it accepts connections.",
      "wsbridge-upstream"};
  app.footer(wsbridge::DocsPointer("feeds.md"));
  app.set_version_flag("--version", std::string("wsbridge-upstream ") + WSBRIDGE_VERSION);

  app.add_option("--bind", o.bind, "address to listen on")->capture_default_str();
  app.add_option("--port", o.port, "port to listen on; 0: chosen by the OS")->capture_default_str();
  app.add_option("--rate", o.rate,
                 "messages per second; 0: as fast as the fastest client drains them "
                 "(nothing is produced while no client has resumed)")
      ->check(CLI::Validator(
          [](std::string& v) {
            return v.empty() || v[0] == '-' ? std::string("must not be negative") : std::string();
          },
          "NONNEGATIVE"))
      ->capture_default_str();
  app.add_option("--topics", o.topics, "topics, used round-robin (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--history", o.history, "most recent messages kept for resume")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--count", o.count, "stop producing after N messages; 0: never")
      ->capture_default_str();
  app.add_option("--first-seq", o.first_seq,
                 "seq of the first message (to continue numbering after a restart)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--payload-bytes", o.payload_bytes,
                 "pad each message's \"data\" to about N bytes; 0: no padding")
      ->check(CLI::Range(size_t{0}, size_t{64} << 20))
      ->capture_default_str();
  app.add_option("--log-received", o.log_received,
                 "append every message received from clients to FILE, one per line, flushed "
                 "(an id already seen is not logged again; resume and ping are not logged)");
  app.add_flag("--no-ack", o.no_ack, "never answer acks");
  app.add_option("--tls-cert", o.tls_cert, "serve wss:// with this certificate chain (PEM)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", o.tls_key, "private key (PEM) for --tls-cert")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-client-ca", o.tls_client_ca,
                 "require a client certificate signed by a CA in FILE (mutual TLS)")
      ->check(CLI::ExistingFile);
  app.add_flag("--quiet,-q", o.quiet, "no per-connection lines on stderr");

  const char* kTest = "Test switches";
  app.add_option("--close-after", o.close_after,
                 "close each connection with 1001 after sending it N messages")
      ->group(kTest);
  app.add_option("--reject-status", o.reject_status,
                 "refuse every handshake with this HTTP status (e.g. 401, 429, 503)")
      ->check(CLI::Range(300, 599))
      ->group(kTest);
  app.add_option("--retry-after", o.retry_after,
                 "Retry-After header value (seconds) on handshakes refused by --reject-status or "
                 "--max-connections")
      ->group(kTest);
  app.add_option("--require-header", o.require_headers,
                 "\"Name: value\": refuse handshakes without it with 401 (repeatable)")
      ->group(kTest);
  app.add_option("--log-headers", o.log_headers,
                 "append each handshake's request headers to FILE as one JSON object per line")
      ->group(kTest);
  app.add_option("--max-connections", o.max_connections,
                 "refuse handshakes with 503 beyond N open connections; 0: unlimited")
      ->group(kTest);

  const char* kFeeds = "Real feeds' protocols (SPEC section 9)";
  auto* server_ping =
      app.add_option("--server-ping", o.server_ping_ms,
                     "every MS ms send each open connection {\"ping\":<unix ms>} (numbers strictly "
                     "increasing); the client must answer exactly {\"pong\":<that number>}; "
                     "frames with a \"pong\" member are consumed, never logged as received; 0: off")
          ->type_name("MS")
          ->group(kFeeds);
  app.add_option("--ping-deadline", o.ping_deadline_ms,
                 "with --server-ping: close a connection whose ping is not answered within MS ms "
                 "with code 4000, reason \"ping not answered\"; 0: never close")
      ->type_name("MS")
      ->needs(server_ping)
      ->capture_default_str()
      ->group(kFeeds);
  app.add_option("--compress", o.compress,
                 "send every frame (data, history, acks, pongs, pings) as a binary frame holding "
                 "the text compressed as one gzip member, zlib stream or raw deflate stream; "
                 "binary frames from clients with a gzip or zlib header (with deflate: any that "
                 "inflates) are inflated, others taken as they are")
      ->check(CLI::IsMember({"gzip", "zlib", "deflate"}))
      ->group(kFeeds);
  app.add_flag("--permessage-deflate", o.permessage_deflate,
               "accept permessage-deflate (RFC 7692) offers, honouring the client's window sizes "
               "and no_context_takeover; the negotiated parameters are in the connection's log "
               "line. Offers of an 8-bit window are refused with 400 (zlib's smallest is 9)")
      ->group(kFeeds);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "wsbridge-upstream: %s (see --help)\n", e.what());
    return 2;
  }

  auto server = wsbridge::upstream::Server::Create(o);
  if (!server.ok()) {
    std::fprintf(stderr, "wsbridge-upstream: %s\n", server.status().ToString().c_str());
    return 1;
  }
  wsbridge::Status st = (*server)->Run();
  if (!st.ok()) {
    std::fprintf(stderr, "wsbridge-upstream: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}
