#include "bridge/link/auth_command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>

#include "common/text.h"

namespace wsbridge {
namespace {

std::string LastNonEmptyLine(const std::string& text) {
  std::stringstream in(text);
  std::string line, last;
  while (std::getline(in, line)) {
    line = Trim(line);
    if (!line.empty()) last = line;
  }
  if (last.size() > 300) last = last.substr(0, 300) + "...";
  return last;
}

bool IsHeaderToken(const std::string& s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (std::isalnum(c)) continue;
    if (std::strchr("!#$%&'*+-.^_`|~", c) == nullptr || c == 0) return false;
  }
  return true;
}

}  // namespace

AuthResult RunAuthCommand(const std::string& command, std::chrono::milliseconds timeout,
                          const std::atomic<bool>& cancel) {
  constexpr size_t kMaxOutput = 64 * 1024;
  AuthResult r;
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    r.error = std::string("cannot create a pipe: ") + std::strerror(errno);
    for (int fd : {out[0], out[1], err[0], err[1]}) {
      if (fd >= 0) close(fd);
    }
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  sigset_t none, defaults;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);  // the daemon blocks signals in its threads
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};
  pid_t pid = -1;
  int rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, const_cast<char* const*>(argv), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    close(out[0]);
    close(err[0]);
    r.error = std::string("cannot run /bin/sh: ") + std::strerror(rc);
    return r;
  }

  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  std::string text[2];
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  bool timed_out = false, cancelled = false;
  auto expired = [&] {
    if (cancel.load()) cancelled = true;
    else if (Clock::now() >= deadline) timed_out = true;
    return cancelled || timed_out;
  };
  while ((fds[0].fd >= 0 || fds[1].fd >= 0) && !expired()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    int wait_ms = static_cast<int>(std::clamp<int64_t>(left.count(), 1, 50));
    if (poll(fds, 2, wait_ms) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        if (text[i].size() < kMaxOutput) text[i].append(buf, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(fds[i].fd);
        fds[i].fd = -1;
      }
    }
  }
  int status = 0;
  // Both pipes closed: the command is done or about to be; it still gets until the deadline.
  while (!timed_out && !cancelled && waitpid(pid, &status, WNOHANG) == 0) {
    if (expired()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (timed_out || cancelled) {
    kill(-pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  for (auto& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  std::string last_err = LastNonEmptyLine(text[1]);
  if (cancelled) {
    r.error = "cancelled";
    return r;
  }
  if (timed_out) {
    r.error = "timed out after " + std::to_string(timeout.count()) + " ms" +
              (last_err.empty() ? "" : ": " + last_err);
    return r;
  }
  if (WIFSIGNALED(status)) {
    r.error = last_err.empty() ? "killed by signal " + std::to_string(WTERMSIG(status)) : last_err;
    return r;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    r.error = last_err.empty() ? "exit status " + std::to_string(WEXITSTATUS(status)) : last_err;
    return r;
  }
  std::stringstream lines(text[0]);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (Trim(line).empty()) continue;
    size_t colon = line.find(':');
    std::string name = colon == std::string::npos ? "" : Trim(line.substr(0, colon));
    if (!IsHeaderToken(name)) {
      // The line itself may hold a secret: only its number is reported.
      r.error = "stdout line " + std::to_string(n) + " is not \"Name: value\"";
      r.headers.clear();
      return r;
    }
    r.headers.emplace_back(name, Trim(line.substr(colon + 1)));
  }
  r.ok = true;
  return r;
}

}  // namespace wsbridge
