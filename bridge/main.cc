// wsbridge: the daemon. Parses the configuration, sets up logging, runs the Daemon.
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "bridge/config.h"
#include "bridge/daemon.h"
#include "bridge/logging.h"

int main(int argc, char** argv) {
  // SIGTERM/SIGINT are taken by Daemon::Run() with sigwait. Block them before any thread exists
  // (the store starts one in Create()), so that every thread inherits the mask and a signal
  // during start-up waits for Run() instead of killing the process.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto cl = wsbridge::LoadConfig(argc, argv, wsbridge::ProcessEnv());
  if (!cl.ok()) {
    std::fprintf(stderr, "wsbridge: %s\n", wsbridge::RedactForLog(cl.status().message()).c_str());
    return 2;
  }
  if (cl->exit_now) return cl->exit_code;
  const wsbridge::Config& config = cl->config;
  if (cl->print_config) {
    std::fputs(wsbridge::ToToml(config).c_str(), stdout);
    return 0;
  }

  wsbridge::SetupLogging(config);
  auto daemon = wsbridge::Daemon::Create(config);
  if (!daemon.ok()) {
    spdlog::critical("{}", daemon.status().message());
    spdlog::shutdown();
    return 2;
  }
  int code = (*daemon)->Run();
  daemon->reset();
  spdlog::shutdown();  // flushes, and reports repeats still held back
  return code;
}
