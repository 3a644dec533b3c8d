// upstream.auth_command: a command run before every connection attempt, whose stdout lines
// `Name: value` become handshake headers (short-lived tokens, signed URLs' headers).
//
// RunAuthCommand blocks its caller: the link runs it on a helper thread of its own, never on
// the I/O thread. Any thread may call it; it shares nothing.
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace wsbridge {

struct AuthResult {
  bool ok = false;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string error;  // one line: the command's last stderr line, or what went wrong
};

// Runs `command` with /bin/sh -c (stdin /dev/null, its own process group, no inherited
// descriptors) and collects stdout and stderr until it exits; after `timeout`, or when `cancel`
// becomes true, its whole process group is killed. A stdout line that is not `Name: value` is
// an error naming its number only (the line may hold a secret).
AuthResult RunAuthCommand(const std::string& command, std::chrono::milliseconds timeout,
                          const std::atomic<bool>& cancel);

}  // namespace wsbridge
