// Binding the daemon's ZeroMQ endpoints safely (SPEC §10); the contract is in
// endpoint_security.h. Free functions, no state of their own: the returned IpcLock (an
// EndpointGuard) owns the lock file's descriptor, the caller owns the socket.
//
// Called on the thread that owns the socket, during start-up, before the daemon's other threads
// exist (BindEndpoint changes the process umask for the duration of an ipc bind).
//
// libzmq 4.3.4 behaviour relied on here (checked by tests/unit/endpoint_security_test.cc):
// - an ipc bind unlink()s whatever is at the path first (a live daemon's socket, a regular
//   file) and creates the socket file with bind(2), so with the mode the umask leaves;
// - closing or unbinding an ipc socket leaves its file behind (a clean stop leaves a "stale"
//   file too, replaced by the next start under the lock);
// - a tcp bind does not resolve names ("localhost" fails with ENODEV) and needs ZMQ_IPV6 for
//   an IPv6 address;
// - ZMQ_ZAP_DOMAIN on a socket without CURVE would send its NULL-mechanism peers to the ZAP
//   handler: it is set only together with CURVE.
#include "bridge/endpoints/endpoint_security.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/text.h"

namespace wsbridge {
namespace {

constexpr size_t kCurveKeyBytes = 32;

std::string Errno() { return std::strerror(errno); }

std::string Octal(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// "tcp://h:p" -> "tcp", "h:p"; no "://": transport "".
struct Parsed {
  std::string transport;
  std::string address;
};
Parsed Parse(const std::string& endpoint) {
  size_t sep = endpoint.find("://");
  if (sep == std::string::npos) return {"", endpoint};
  return {endpoint.substr(0, sep), endpoint.substr(sep + 3)};
}

// ---- tcp -----------------------------------------------------------------------------------

// The host of a tcp bind address: "[::1]:5556" -> "::1", "127.0.0.1:*" -> "127.0.0.1".
std::string TcpHost(const std::string& address) {
  if (!address.empty() && address.front() == '[') {
    size_t close = address.find(']');
    return close == std::string::npos ? address : address.substr(1, close - 1);
  }
  size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

// 127.0.0.0/8, ::1, ::ffff:127.x.y.z or "localhost"; anything else (*, 0.0.0.0, an interface
// name, a short form such as 127.1) is not.
bool IsLoopbackHost(const std::string& host) {
  if (Lower(host) == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

Status CheckTcp(const std::string& endpoint, const std::string& address, const EndpointRole& role,
                const EndpointSecurity& security) {
  if (!security.curve_secret_key.empty()) {
    if (security.curve_secret_key.size() != kCurveKeyBytes) {
      return Status::InvalidArgument(role.key + ": the CURVE secret key has " +
                                     std::to_string(security.curve_secret_key.size()) +
                                     " bytes, not 32");
    }
    return Status::OK();
  }
  if (IsLoopbackHost(TcpHost(address)) || security.allow_insecure) return Status::OK();
  return Status::InvalidArgument(
      role.key + ": " + endpoint +
      " is not a loopback address and has no CURVE: set zmq.curve.secret_key_file (see "
      "docs/security.md) or zmq.allow_insecure = true");
}

// ---- ipc -----------------------------------------------------------------------------------

// Held while the socket is bound: the flock on "<path>.lock".
class IpcLock : public EndpointGuard {
 public:
  explicit IpcLock(int fd) : fd_(fd) {}
  ~IpcLock() override { ::close(fd_); }
  IpcLock(const IpcLock&) = delete;
  IpcLock& operator=(const IpcLock&) = delete;

 private:
  int fd_;
};

// The process umask for a scope (restored on every way out, exceptions included).
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : old_(::umask(mask)) {}
  ~ScopedUmask() { ::umask(old_); }
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;

 private:
  mode_t old_;
};

// The path must be absolute (no abstract "@name" socket, which has no permissions; no "*"
// temporary file); its directory must exist and not be world-writable.
Status CheckIpcDirectory(const std::string& endpoint, const std::string& path,
                         const EndpointRole& role) {
  if (path.empty() || path.front() != '/') {
    return Status::InvalidArgument(role.key + ": " + endpoint +
                                   ": an ipc endpoint must be an absolute path (ipc:///dir/name), "
                                   "so that file permissions protect it");
  }
  const std::string dir = path.substr(0, std::max<size_t>(path.rfind('/'), 1));
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return Status::InvalidArgument(role.key + ": " + endpoint + ": its directory " + dir +
                                   " cannot be used: " + Errno());
  }
  if (!S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument(role.key + ": " + endpoint + ": " + dir +
                                   " is not a directory");
  }
  if ((st.st_mode & S_IWOTH) != 0) {
    return Status::InvalidArgument(role.key + ": " + endpoint + ": its directory " + dir +
                                   " is world-writable (mode " + Octal(st.st_mode) +
                                   "); use a directory only the daemon's user and group can "
                                   "write (e.g. systemd RuntimeDirectory=)");
  }
  return Status::OK();
}

// Whatever is at the path already must be a socket (libzmq would delete anything there, a
// symlink's target is not looked at); *exists tells whether there is one.
Status CheckSocketPath(const std::string& endpoint, const std::string& path,
                       const EndpointRole& role, bool* exists) {
  struct stat st {};
  *exists = ::lstat(path.c_str(), &st) == 0;
  if (*exists && !S_ISSOCK(st.st_mode)) {
    return Status::InvalidArgument(role.key + ": " + endpoint + ": " + path +
                                   " exists and is not a socket; refusing to replace it");
  }
  return Status::OK();
}

// Takes the lock beside the socket file; refuses when another process holds it.
StatusOr<std::unique_ptr<EndpointGuard>> LockIpcPath(const std::string& endpoint,
                                                     const std::string& path,
                                                     const EndpointRole& role) {
  const std::string lock_path = path + ".lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
  if (fd < 0) {
    return Status::IOError(role.key + ": " + endpoint + ": cannot open the lock file " +
                           lock_path + ": " + Errno());
  }
  auto lock = std::make_unique<IpcLock>(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return Status::InvalidArgument(role.key + ": " + endpoint + ": the lock file " + lock_path +
                                   " is not a regular file");
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return Status::Unavailable(role.key + ": " + endpoint +
                                 " is in use by another running wsbridge (lock " + lock_path +
                                 " held); refusing to take it over");
    }
    return Status::IOError(role.key + ": " + endpoint + ": cannot lock " + lock_path + ": " +
                           Errno());
  }
  return StatusOr<std::unique_ptr<EndpointGuard>>(std::move(lock));
}

// With the lock held: gives the bound socket file its group and mode, then checks the result.
Status ApplyIpcPermissions(const std::string& endpoint, const std::string& path,
                           const EndpointRole& role, const EndpointSecurity& security) {
  const mode_t mode = security.ipc_mode & 07777;
  if (security.ipc_gid != static_cast<gid_t>(-1) &&
      ::fchownat(AT_FDCWD, path.c_str(), static_cast<uid_t>(-1), security.ipc_gid,
                 AT_SYMLINK_NOFOLLOW) != 0) {
    return Status::IOError(role.key + ": " + endpoint + ": cannot set its group (zmq.ipc_group, "
                           "gid " + std::to_string(security.ipc_gid) + "): " + Errno());
  }
  if (::fchmodat(AT_FDCWD, path.c_str(), mode, AT_SYMLINK_NOFOLLOW) != 0) {
    return Status::IOError(role.key + ": " + endpoint + ": cannot set its mode (zmq.ipc_mode " +
                           Octal(mode) + "): " + Errno());
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode) || st.st_uid != ::geteuid() ||
      (st.st_mode & 07777) != mode ||
      (security.ipc_gid != static_cast<gid_t>(-1) && st.st_gid != security.ipc_gid)) {
    return Status::IOError(role.key + ": " + endpoint + ": the socket file is not as set (mode " +
                           Octal(st.st_mode) + ", uid " + std::to_string(st.st_uid) + ", gid " +
                           std::to_string(st.st_gid) + ")");
  }
  return Status::OK();
}

// Binds an ipc endpoint (options already set); the lock is returned while the socket is bound.
StatusOr<std::unique_ptr<EndpointGuard>> BindIpc(zmq::socket_t& socket,
                                                 const std::string& endpoint,
                                                 const std::string& path, const EndpointRole& role,
                                                 const EndpointSecurity& security) {
  if (Status s = CheckIpcDirectory(endpoint, path, role); !s.ok()) return s;
  auto lock = LockIpcPath(endpoint, path, role);
  if (!lock.ok()) return lock;
  // Under the lock, a socket file at the path belongs to no running daemon.
  bool exists = false;
  if (Status s = CheckSocketPath(endpoint, path, role, &exists); !s.ok()) return s;
  if (exists) {
    if (::unlink(path.c_str()) != 0) {
      return Status::IOError(role.key + ": " + endpoint + ": cannot remove the stale socket "
                             "file: " + Errno());
    }
    spdlog::info("{}: replaced the stale socket file {} (no running wsbridge held its lock)",
                 role.key, path);
  }
  {
    // Created no wider than 0600 nor than asked; widened to the mode asked once its group is set.
    ScopedUmask narrow(0177 | (~security.ipc_mode & 0777));
    socket.bind(endpoint);
  }
  if (Status s = ApplyIpcPermissions(endpoint, path, role, security); !s.ok()) {
    try {
      socket.unbind(endpoint);
    } catch (const zmq::error_t&) {
    }
    return s;
  }
  return lock;
}

// The address libzmq can bind for a checked tcp endpoint: it resolves no names, so
// "localhost" becomes 127.0.0.1; an IPv6 host needs ZMQ_IPV6.
std::string TcpBindEndpoint(zmq::socket_t& socket, const std::string& address) {
  const std::string host = TcpHost(address);
  if (Lower(host) == "localhost") return "tcp://127.0.0.1" + address.substr(host.size());
  if (host.find(':') != std::string::npos) socket.set(zmq::sockopt::ipv6, true);
  return "tcp://" + address;
}

}  // namespace

Status CheckEndpoint(const std::string& endpoint, const EndpointRole& role,
                     const EndpointSecurity& security) {
  const Parsed p = Parse(endpoint);
  if (p.transport == "tcp") return CheckTcp(endpoint, p.address, role, security);
  if (p.transport == "ipc") {
    if (Status s = CheckIpcDirectory(endpoint, p.address, role); !s.ok()) return s;
    // Probe the lock (taken and released) so that a second daemon stops before opening files.
    if (auto lock = LockIpcPath(endpoint, p.address, role); !lock.ok()) return lock.status();
    bool exists = false;
    return CheckSocketPath(endpoint, p.address, role, &exists);
  }
  if (p.transport == "inproc" || security.allow_insecure) return Status::OK();
  // pgm, epgm, norm, tipc, ...: reachable from the network, with neither CURVE nor permissions.
  return Status::InvalidArgument(role.key + ": " + endpoint +
                                 ": only tcp, ipc and inproc endpoints can be protected; set "
                                 "zmq.allow_insecure = true to use another transport");
}

StatusOr<std::unique_ptr<EndpointGuard>> BindEndpoint(zmq::socket_t& socket,
                                                      const std::string& endpoint,
                                                      const EndpointRole& role,
                                                      const EndpointSecurity& security) {
  const Parsed p = Parse(endpoint);
  if (p.transport != "ipc") {
    if (Status s = CheckEndpoint(endpoint, role, security); !s.ok()) return s;
  }
  try {
    if (role.max_message_bytes > 0) socket.set(zmq::sockopt::maxmsgsize, role.max_message_bytes);
    if (p.transport == "ipc") return BindIpc(socket, endpoint, p.address, role, security);
    if (p.transport != "tcp") {
      if (p.transport != "inproc") {
        spdlog::warn("{}: {} is neither tcp, ipc nor inproc: unprotected (zmq.allow_insecure)",
                     role.key, endpoint);
      }
      socket.bind(endpoint);
      return StatusOr<std::unique_ptr<EndpointGuard>>(nullptr);
    }
    if (!security.curve_secret_key.empty()) {
      socket.set(zmq::sockopt::curve_server, true);
      socket.set(zmq::sockopt::curve_secretkey, security.curve_secret_key);
      socket.set(zmq::sockopt::zap_domain, role.zap_domain);
      if (security.watch_handshakes) {
        if (Status s = security.watch_handshakes(socket, role.zap_domain); !s.ok()) return s;
      }
    } else if (!IsLoopbackHost(TcpHost(p.address))) {
      spdlog::warn("{}: {} is not a loopback address and has no CURVE: anyone who can reach it "
                   "may use it (zmq.allow_insecure = true)",
                   role.key, endpoint);
    }
    socket.bind(TcpBindEndpoint(socket, p.address));
  } catch (const zmq::error_t& e) {
    return Status::InvalidArgument(role.key + ": cannot bind " + endpoint + ": " + e.what());
  }
  return StatusOr<std::unique_ptr<EndpointGuard>>(nullptr);
}

}  // namespace wsbridge
