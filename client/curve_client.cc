// CURVE keys on client sockets and the watch on their handshakes. See curve_client.h.
#include "client/curve_client.h"

#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <sstream>
#include <vector>
#include <zmq_addon.hpp>

#include "bridge/endpoints/curve_keys.h"
#include "common/text.h"

namespace wsbridge::client {
namespace {

using Clock = std::chrono::steady_clock;

// A public key file is a few lines; anything larger is not one.
constexpr size_t kMaxKeyFileBytes = 64 * 1024;

// --server-key's value as the 32-byte key.
StatusOr<std::string> ServerKey(const std::string& value) {
  if (value[0] != '@') {
    auto key = Z85DecodeKey(value);
    if (!key) {
      return Status::InvalidArgument(
          "--server-key: not a CURVE public key (40 Z85 characters, or @FILE)");
    }
    return std::move(*key);
  }
  const std::string path = value.substr(1);
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return Status::InvalidArgument("--server-key: cannot read " + path + ": " +
                                   std::strerror(errno));
  }
  std::string text(kMaxKeyFileBytes + 1, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), f));
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return Status::InvalidArgument("--server-key: cannot read " + path);
  auto key = text.size() > kMaxKeyFileBytes ? std::nullopt : Z85DecodeKey(KeyFileText(text, "public"));
  if (!key) {
    return Status::InvalidArgument(
        "--server-key: " + path +
        " does not hold a CURVE public key (40 Z85 characters, e.g. the PREFIX.pub of "
        "wsbridge keygen --out PREFIX)");
  }
  return std::move(*key);
}

const char* ProtocolErrorName(uint32_t code) {
  switch (code) {
    case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
      return "a cryptographic error";
    case ZMQ_PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND:
      return "an unexpected command";
    case ZMQ_PROTOCOL_ERROR_ZMTP_INVALID_SEQUENCE:
      return "an invalid sequence";
    case ZMQ_PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE:
      return "a key exchange error";
    default:
      return "a protocol error";
  }
}

}  // namespace

StatusOr<CurveClientKeys> CurveClientKeys::Load(const std::string& server_key,
                                                const std::string& client_key_file) {
  if (server_key.empty() && client_key_file.empty()) return CurveClientKeys{};
  if (server_key.empty()) {
    return Status::InvalidArgument(
        "--client-key-file needs --server-key (the bridge's public key): CURVE takes both");
  }
  if (client_key_file.empty()) {
    return Status::InvalidArgument(
        "--server-key needs --client-key-file (this client's secret key file): CURVE takes "
        "both");
  }
  if (!zmq_has("curve")) {
    return Status::InvalidArgument("--server-key: this libzmq has no CURVE (no libsodium)");
  }
  auto server = ServerKey(server_key);
  if (!server.ok()) return server.status();
  auto secret = ReadSecretKeyFile(client_key_file, "--client-key-file");
  if (!secret.ok()) return secret.status();
  CurveClientKeys keys;
  keys.server_public = std::move(server).value();
  keys.client_public = PublicKeyOf(*secret);
  keys.client_secret = std::move(secret).value();
  return keys;
}

StatusOr<HandshakeWatch> HandshakeWatch::Start(zmq::context_t& ctx, zmq::socket_t& socket,
                                               bool curve) {
  const int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
  auto reader = MonitorSocket(ctx, socket, events);
  if (!reader.ok()) return reader.status();
  return HandshakeWatch(std::move(reader).value(), curve);
}

Status HandshakeWatch::Check() {
  while (refused_.ok()) {
    std::optional<MonitorEvent> e = NextMonitorEvent(reader_);
    if (!e) break;
    OnEvent(e->event, e->value, e->address);
  }
  return refused_;
}

void HandshakeWatch::OnEvent(uint16_t event, uint32_t value, const std::string& endpoint) {
  const std::string on = " on " + endpoint;
  switch (event) {
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
      closed_in_a_row_ = 0;
      return;
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: {
      // The ZAP status the bridge answered (400: not authorized); libzmq does not retry.
      std::string why = "status " + std::to_string(value);
      if (value == 400) {
        why +=
            ", this key is not authorized for this endpoint in the bridge's "
            "zmq.curve.authorized_keys_file";
      }
      refused_ = Status::InvalidArgument(
          curve_ ? "the bridge refused this client's key (CURVE handshake failed" + on + ": " +
                       why + ")"
                 : "the bridge refused this client (handshake failed" + on + ": " + why + ")");
      return;
    }
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
      // Not retried by libzmq either.
      if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
        refused_ = Status::InvalidArgument(
            curve_ ? "the handshake with the bridge failed" + on +
                         ": the endpoint does not use CURVE (leave out --server-key and "
                         "--client-key-file)"
                   : "the bridge refused this client (handshake failed" + on +
                         ": the endpoint requires CURVE; give --server-key and "
                         "--client-key-file)");
      } else {
        char code[16];
        std::snprintf(code, sizeof code, "0x%08x", static_cast<unsigned>(value));
        refused_ = Status::InvalidArgument(
            std::string(curve_ ? "the bridge refused this client's key (CURVE handshake failed"
                               : "the bridge refused this client (handshake failed") +
            on + ": " + ProtocolErrorName(value) + ", " + code + ")");
      }
      return;
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
      // The bridge hung up in the middle of the handshake; libzmq tries again. A CURVE server
      // does that, without a word, to a client whose server key is not its own; and a plain
      // client sometimes sees it instead of the mechanism mismatch (the server closes the
      // connection before its greeting has gone out).
      if (++closed_in_a_row_ < kMaxClosedHandshakes) return;
      refused_ = Status::InvalidArgument(
          "the bridge closed the connection during the " + std::string(curve_ ? "CURVE " : "") +
          "handshake " + std::to_string(closed_in_a_row_) + " times in a row" + on +
          (curve_ ? " (is --server-key the bridge's public key?)"
                  : " (does it require CURVE? then give --server-key and --client-key-file)"));
      return;
    default:
      return;
  }
}

StatusOr<bool> HandshakeWatch::WaitReadable(zmq::socket_t& socket,
                                            std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0},
                               {reader_.handle(), 0, ZMQ_POLLIN, 0}};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    try {
      zmq::poll(items, 2, std::max(left, std::chrono::milliseconds(0)));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) return false;
      return Status::Unavailable(std::string("poll: ") + e.what());
    }
    if (Status s = Check(); !s.ok()) return s;
    if (items[0].revents & ZMQ_POLLIN) return true;
    if (Clock::now() >= deadline) return false;
  }
}

StatusOr<HandshakeWatch> ConnectToBridge(zmq::context_t& ctx, zmq::socket_t& socket,
                                         const std::string& endpoint, const CurveClientKeys& keys) {
  auto watch = HandshakeWatch::Start(ctx, socket, keys.enabled());
  if (!watch.ok())
    return Status::Unavailable("cannot connect to " + endpoint + ": " + watch.status().message());
  try {
    if (keys.enabled()) {
      socket.set(zmq::sockopt::curve_serverkey, keys.server_public);
      socket.set(zmq::sockopt::curve_publickey, keys.client_public);
      socket.set(zmq::sockopt::curve_secretkey, keys.client_secret);
    }
    socket.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return Status::InvalidArgument("cannot connect to " + endpoint + ": " + e.what());
  }
  return watch;
}

}  // namespace wsbridge::client
