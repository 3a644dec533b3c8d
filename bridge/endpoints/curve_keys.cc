// CURVE keys: Z85, the secret key file, the authorized keys file. See curve_keys.h.
#include "bridge/endpoints/curve_keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <zmq_addon.hpp>

#include "common/text.h"

namespace wsbridge {
namespace {

constexpr char kZ85Alphabet[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

// Key files are a few lines; anything larger is not one.
constexpr off_t kMaxKeyFileBytes = 1 << 20;

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// The file's content, through one descriptor (the mode checked is the mode of what is read).
// `must_be_private`: refuse a file readable by group or others. Errors start with `key_name`.
StatusOr<std::string> ReadKeyFile(const std::string& path, const std::string& key_name,
                                  bool must_be_private) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    return Status::IOError(key_name + ": cannot read " + path + ": " + std::strerror(errno));
  }
  struct stat st {};
  std::string error;
  if (::fstat(fd, &st) != 0) {
    error = "cannot read " + path + ": " + std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    error = path + " is not a regular file";
  } else if (st.st_size > kMaxKeyFileBytes) {
    error = path + " is too large to be a key file";
  } else if (must_be_private && (st.st_mode & (S_IRGRP | S_IROTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    error = path + " is readable by group or others (mode " + mode + "); chmod 600 it";
  }
  std::string content;
  while (error.empty()) {
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) error = "cannot read " + path + ": " + std::strerror(errno);
    if (n <= 0) break;
    content.append(buf, static_cast<size_t>(n));
    if (content.size() > static_cast<size_t>(kMaxKeyFileBytes)) {
      error = path + " is too large to be a key file";
    }
  }
  ::close(fd);
  if (!error.empty()) return Status::InvalidArgument(key_name + ": " + error);
  return content;
}

// The lines of `text` (without "\n" or "\r\n"), in order.
std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return lines;
}

// The next word of `line` from `*pos` (words are separated by spaces and tabs); "" at the end of
// the line or where a word starts with '#' (a comment).
std::string_view NextWord(std::string_view line, size_t* pos) {
  size_t begin = line.find_first_not_of(" \t", *pos);
  if (begin == std::string_view::npos || line[begin] == '#') {
    *pos = line.size();
    return {};
  }
  size_t end = line.find_first_of(" \t", begin);
  if (end == std::string_view::npos) end = line.size();
  *pos = end;
  return line.substr(begin, end - begin);
}

}  // namespace

std::string KeyFileText(std::string_view text, const std::string& label) {
  std::vector<std::string> labelled;  // `<label>: K` or `<label>-key = "K"`
  std::vector<std::string> other;     // any other line that is not blank, a comment or a key
  for (std::string_view raw : Lines(text)) {
    std::string line = Trim(std::string(raw));
    if (line.empty() || line[0] == '#') continue;
    if (StartsWith(line, label + ":")) {
      labelled.push_back(Trim(line.substr(label.size() + 1)));
    } else if (StartsWith(line, label + "-key")) {
      std::string value = Trim(line.substr(label.size() + 4));
      if (value.empty() || value[0] != '=') return "";
      value = Trim(value.substr(1));
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
        value = value.substr(1, value.size() - 2);
      }
      labelled.push_back(value);
    } else if (!StartsWith(line, "public:") && !StartsWith(line, "secret:") &&
               !StartsWith(line, "public-key") && !StartsWith(line, "secret-key")) {
      other.push_back(line);
    }
  }
  if (!labelled.empty()) return labelled.size() == 1 ? labelled[0] : "";
  return other.size() == 1 ? other[0] : "";
}

std::string Z85EncodeKey(std::string_view key) {
  if (key.size() != kCurveKeyBytes) return "";
  char out[kCurveKeyZ85 + 1];
  if (zmq_z85_encode(out, reinterpret_cast<const uint8_t*>(key.data()), key.size()) == nullptr) {
    return "";
  }
  return std::string(out, kCurveKeyZ85);
}

std::optional<std::string> Z85DecodeKey(std::string_view text) {
  if (text.size() != kCurveKeyZ85) return std::nullopt;
  for (char c : text) {
    if (c == '\0' || std::strchr(kZ85Alphabet, c) == nullptr) return std::nullopt;
  }
  std::string z85(text);
  uint8_t out[kCurveKeyBytes];
  if (zmq_z85_decode(out, z85.c_str()) == nullptr) return std::nullopt;
  std::string key(reinterpret_cast<const char*>(out), sizeof out);
  // Five characters can spell more than 32 bits ("%%%%%"): only a canonical spelling is a key.
  if (Z85EncodeKey(key) != text) return std::nullopt;
  return key;
}

StatusOr<std::string> ReadSecretKeyFile(const std::string& path, const std::string& key_name) {
  auto content = ReadKeyFile(path, key_name, /*must_be_private=*/true);
  if (!content.ok()) return content.status();
  auto key = Z85DecodeKey(KeyFileText(*content, "secret"));
  if (!key) {
    return Status::InvalidArgument(key_name + ": " + path +
                                   " is not a CURVE secret key (40 Z85 characters, a "
                                   "\"secret: <key>\" line, or a ZeroMQ certificate)");
  }
  return std::move(*key);
}

std::string PublicKeyOf(std::string_view secret_key) {
  std::string secret_z85 = Z85EncodeKey(secret_key);
  if (secret_z85.empty()) return "";
  char public_z85[kCurveKeyZ85 + 1];
  if (zmq_curve_public(public_z85, secret_z85.c_str()) != 0) return "";
  return Z85DecodeKey(std::string_view(public_z85, kCurveKeyZ85)).value_or("");
}

const char* ToString(Role role) {
  switch (role) {
    case Role::kSubscribe:
      return "subscribe";
    case Role::kSend:
      return "send";
    case Role::kAll:
      return "all";
  }
  return "?";
}

std::optional<Role> RoleForDomain(std::string_view zap_domain) {
  if (zap_domain == "pub" || zap_domain == "replay") return Role::kSubscribe;
  if (zap_domain == "send") return Role::kSend;
  return std::nullopt;
}

bool AuthorizedKeys::Allows(std::string_view zap_domain, std::string_view public_key) const {
  std::optional<Role> needed = RoleForDomain(zap_domain);
  if (!needed) return false;
  for (const AuthorizedKey& k : keys) {
    if (k.public_key == public_key && (k.role == Role::kAll || k.role == *needed)) return true;
  }
  return false;
}

bool AuthorizedKeys::Lists(std::string_view public_key) const {
  for (const AuthorizedKey& k : keys) {
    if (k.public_key == public_key) return true;
  }
  return false;
}

StatusOr<AuthorizedKeys> ParseAuthorizedKeys(std::string_view text, const std::string& path) {
  AuthorizedKeys out;
  int number = 0;
  for (std::string_view line : Lines(text)) {
    ++number;
    auto error = [&](const std::string& what) {
      return Status::InvalidArgument(std::string(kAuthorizedKeysKey) + ": " + path + ": line " +
                                     std::to_string(number) + ": " + what);
    };
    size_t pos = 0;
    std::string_view role_word = NextWord(line, &pos);
    if (role_word.empty()) continue;  // blank or a comment
    AuthorizedKey key;
    key.line = number;
    if (role_word == "subscribe") {
      key.role = Role::kSubscribe;
    } else if (role_word == "send") {
      key.role = Role::kSend;
    } else if (role_word == "all") {
      key.role = Role::kAll;
    } else {
      return error("unknown role \"" + OneLine(role_word, 40) + "\" (subscribe, send or all)");
    }
    std::string_view key_word = NextWord(line, &pos);
    if (key_word.empty()) {
      return error("no public key after the role (<role> <Z85 public key> [comment])");
    }
    auto public_key = Z85DecodeKey(key_word);
    if (!public_key) return error("not a Z85 public key (40 characters)");
    key.public_key = std::move(*public_key);
    key.comment = Trim(std::string(line.substr(pos)));
    if (!key.comment.empty() && key.comment[0] == '#') key.comment = Trim(key.comment.substr(1));
    out.keys.push_back(std::move(key));
  }
  return out;
}

StatusOr<AuthorizedKeys> ReadAuthorizedKeysFile(const std::string& path) {
  auto content = ReadKeyFile(path, kAuthorizedKeysKey, /*must_be_private=*/false);
  if (!content.ok()) return content.status();
  return ParseAuthorizedKeys(*content, path);
}

StatusOr<zmq::socket_t> MonitorSocket(zmq::context_t& context, zmq::socket_t& socket,
                                      int events) {
  static std::atomic<unsigned long> next{0};
  const std::string address = "inproc://wsbridge.monitor." + std::to_string(next.fetch_add(1));
  if (zmq_socket_monitor(socket.handle(), address.c_str(), events) != 0) {
    return Status::Unavailable(std::string("cannot monitor a socket: ") + zmq_strerror(zmq_errno()));
  }
  try {
    zmq::socket_t reader(context, zmq::socket_type::pair);
    reader.set(zmq::sockopt::linger, 0);
    reader.connect(address);
    return reader;
  } catch (const zmq::error_t& e) {
    return Status::Unavailable(std::string("cannot monitor a socket: ") + e.what());
  }
}

std::optional<MonitorEvent> NextMonitorEvent(zmq::socket_t& monitor) {
  for (;;) {
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(monitor, std::back_inserter(frames), zmq::recv_flags::dontwait)) {
      return std::nullopt;
    }
    // [uint16 event, uint32 value] (native byte order), then the address.
    if (frames.size() != 2 || frames[0].size() != 6) continue;
    MonitorEvent e;
    std::memcpy(&e.event, frames[0].data(), sizeof e.event);
    std::memcpy(&e.value, frames[0].data<char>() + sizeof e.event, sizeof e.value);
    e.address = frames[1].to_string();
    return e;
  }
}

}  // namespace wsbridge
