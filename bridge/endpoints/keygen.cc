// wsbridge keygen. See keygen.h.
#include "bridge/endpoints/keygen.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/docs.h"

namespace wsbridge {
namespace {

constexpr const char* kUsage =
    "Usage: wsbridge keygen [--out PREFIX]\n"
    "\n"
    "Generates a CURVE key pair for the ZeroMQ endpoints (SPEC section 10).\n"
    "Without --out, prints it:\n"
    "  public: <40 Z85 characters>\n"
    "  secret: <40 Z85 characters>\n"
    "With --out PREFIX, writes PREFIX.key (the secret key, mode 0600) and PREFIX.pub (the\n"
    "public key, mode 0644) and prints the public line; an existing file is never overwritten.\n"
    "\n"
    "The server's PREFIX.key is zmq.curve.secret_key_file; a client's public key goes into\n"
    "zmq.curve.authorized_keys_file as `<subscribe|send|all> <public key> [comment]`.\n";

int Fail(const std::string& message) {
  std::fprintf(stderr, "wsbridge keygen: %s\n", message.c_str());
  return 2;
}

// Creates `path` with `mode` and writes `text`; fails if it exists (or is a symlink). On error
// the message is one line and a file this call created is removed.
bool WriteNewFile(const std::string& path, mode_t mode, const std::string& text,
                  std::string* error) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) {
    *error = errno == EEXIST ? path + " already exists; not overwriting it"
                             : "cannot create " + path + ": " + std::strerror(errno);
    return false;
  }
  // The umask may only have narrowed `mode`; make it exactly `mode` (the .pub is meant to be
  // readable by the clients' owners).
  std::string failure;
  if (::fchmod(fd, mode) != 0) failure = std::strerror(errno);
  size_t done = 0;
  while (failure.empty() && done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) failure = std::strerror(errno);
    if (n > 0) done += static_cast<size_t>(n);
  }
  if (failure.empty() && ::fsync(fd) != 0) failure = std::strerror(errno);
  if (::close(fd) != 0 && failure.empty()) failure = std::strerror(errno);
  if (failure.empty()) return true;
  *error = "cannot write " + path + ": " + failure;
  ::unlink(path.c_str());
  return false;
}

}  // namespace

int KeygenMain(int argc, char** argv) {
  std::string prefix;
  bool has_out = false;
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::printf("\n%s\n", DocsPointer("security.md").c_str());
      return 0;
    }
    if (arg == "--out" && i + 1 < argc) {
      prefix = argv[++i];
      has_out = true;
    } else if (arg.rfind("--out=", 0) == 0) {
      prefix = arg.substr(6);
      has_out = true;
    } else if (arg == "--out") {
      return Fail("--out needs a PREFIX (wsbridge keygen --help)");
    } else {
      return Fail("unknown argument \"" + arg + "\" (wsbridge keygen --help)");
    }
  }
  if (has_out && prefix.empty()) return Fail("--out needs a non-empty PREFIX");

  char public_z85[41];
  char secret_z85[41];
  if (zmq_curve_keypair(public_z85, secret_z85) != 0) {
    return Fail(std::string("cannot generate a key pair: ") + zmq_strerror(zmq_errno()) +
                " (libzmq without CURVE?)");
  }
  if (!has_out) {
    std::printf("public: %s\nsecret: %s\n", public_z85, secret_z85);
    return std::fflush(stdout) == 0 ? 0 : 2;
  }
  std::string error;
  const std::string key_path = prefix + ".key";
  const std::string pub_path = prefix + ".pub";
  if (!WriteNewFile(key_path, 0600, std::string(secret_z85) + "\n", &error)) return Fail(error);
  if (!WriteNewFile(pub_path, 0644, std::string(public_z85) + "\n", &error)) {
    ::unlink(key_path.c_str());  // created above: leave no half pair behind
    return Fail(error);
  }
  std::printf("wrote %s (secret, 0600) and %s\npublic: %s\n", key_path.c_str(), pub_path.c_str(),
              public_z85);
  return std::fflush(stdout) == 0 ? 0 : 2;
}

}  // namespace wsbridge
