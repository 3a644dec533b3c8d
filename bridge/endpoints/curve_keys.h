// CURVE keys for the daemon's endpoints (SPEC §10): Z85 text <-> 32-byte binary keys, the server's
// secret key file, and the authorized keys file (which client key may use which endpoint).
//
//   ReadSecretKeyFile()   a secret key file (refused when readable by group or others)
//   PublicKeyOf()         the public key of a secret key
//   ParseAuthorizedKeys() / ReadAuthorizedKeysFile()   `<role> <Z85 public key> [comment]` lines
//   AuthorizedKeys        the parsed list; Allows(zap_domain, public_key) is the ZAP decision
//
// Keys are binary (32 bytes) everywhere except in files, logs and on the command line (Z85, 40
// characters). A secret key never appears in an error message or a log line.
//
// ZAP domains are the endpoint names: "pub" and "replay" need role `subscribe`, "send" needs role
// `send`; `all` is both. Any other domain is refused (see RoleForDomain()).
//
// Pure functions and values, no state: any thread. Used by the daemon (wsbridge_core) and by the
// clients' --client-key-file (wsbridge_curve is a small library of its own for that reason).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "common/status.h"

namespace wsbridge {

constexpr size_t kCurveKeyBytes = 32;  // binary
constexpr size_t kCurveKeyZ85 = 40;    // Z85 text

// The 32-byte key as 40 Z85 characters ("" if `key` is not 32 bytes).
std::string Z85EncodeKey(std::string_view key);

// 40 Z85 characters as the 32-byte key; nullopt if `text` is anything else.
std::optional<std::string> Z85DecodeKey(std::string_view text);

// The Z85 key text in a key file's `text` for `label` ("secret" or "public"): a `<label>: K` line
// (what keygen prints), a ZeroMQ certificate's `<label>-key = "K"`, or else the one bare line
// (what keygen --out writes); blank lines, `#` comments and lines labelled otherwise are
// ignored. "" when there is not exactly one.
std::string KeyFileText(std::string_view text, const std::string& label);

// Reads a CURVE secret key file: the Z85 key alone (spaces and newlines around it ignored), a
// `secret: <Z85>` line (what `wsbridge keygen` prints; a `public:` line beside it is ignored), or
// a ZeroMQ certificate's `secret-key = "<Z85>"`. Refuses a file readable by group or others, one
// that cannot be read, and anything else; errors are one line starting with `key_name` (e.g.
// "zmq.curve.secret_key_file: /etc/wsbridge/server.key is readable by group or others (mode
// 0644); chmod 600 it"). Returns the 32-byte binary secret key.
StatusOr<std::string> ReadSecretKeyFile(const std::string& path, const std::string& key_name);

// The 32-byte public key of a 32-byte secret key; "" when libzmq has no CURVE (zmq_has("curve")
// is false) or `secret_key` is not 32 bytes.
std::string PublicKeyOf(std::string_view secret_key);

enum class Role { kSubscribe, kSend, kAll };

// "subscribe", "send", "all".
const char* ToString(Role role);

// The role a ZAP domain needs: "pub" and "replay" -> kSubscribe, "send" -> kSend; any other
// domain -> nullopt (refused).
std::optional<Role> RoleForDomain(std::string_view zap_domain);

struct AuthorizedKey {
  Role role = Role::kSubscribe;
  std::string public_key;  // binary, 32 bytes
  std::string comment;     // the rest of the line, may be ""
  int line = 0;            // 1-based line number in the file
};

// The parsed authorized keys file. A key may be listed on several lines; its roles add up.
struct AuthorizedKeys {
  std::vector<AuthorizedKey> keys;

  size_t size() const { return keys.size(); }  // lines, not distinct keys

  // True when `public_key` (binary) is listed with the role `zap_domain` needs (or `all`).
  bool Allows(std::string_view zap_domain, std::string_view public_key) const;
  // True when `public_key` (binary) is listed at all, whatever its role.
  bool Lists(std::string_view public_key) const;
};

// The configuration key that names the authorized keys file; errors start with it.
inline constexpr const char* kAuthorizedKeysKey = "zmq.curve.authorized_keys_file";

// Parses the authorized keys file's text: one `<role> <Z85 public key> [comment]` per line, role
// `subscribe`, `send` or `all`; a `#` at the start of a word starts a comment (a Z85 key never
// starts with `#`, though it may contain one); blank lines are fine. An error names the file and
// the line: "zmq.curve.authorized_keys_file: /etc/wsbridge/clients: line 3: unknown role
// \"admin\" (subscribe, send or all)".
StatusOr<AuthorizedKeys> ParseAuthorizedKeys(std::string_view text, const std::string& path);

// Reads and parses the file (at start and on every SIGHUP reload).
StatusOr<AuthorizedKeys> ReadAuthorizedKeysFile(const std::string& path);

// ---- Watching CURVE handshakes (socket monitors), for the ZAP handler and the client tools.

// One socket-monitor event: ZMQ_EVENT_*, its value (e.g. a ZMQ_PROTOCOL_ERROR_*), the peer or
// endpoint address it is about.
struct MonitorEvent {
  uint16_t event = 0;
  uint32_t value = 0;
  std::string address;
};

// zmq_socket_monitor() of `events` on `socket`, and the PAIR socket on `context` that receives
// them (each call its own inproc address). Call it on the socket's owner thread, before the
// socket binds or connects.
StatusOr<zmq::socket_t> MonitorSocket(zmq::context_t& context, zmq::socket_t& socket,
                                      int events);

// The next event waiting on a monitor's PAIR socket, without blocking; nullopt when there is
// none (a message that is not a monitor event is skipped).
std::optional<MonitorEvent> NextMonitorEvent(zmq::socket_t& monitor);

}  // namespace wsbridge
