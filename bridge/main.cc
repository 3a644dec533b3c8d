// wsbridge: the daemon. Parses the configuration, sets up logging, runs the Daemon.
// `wsbridge keygen ...` generates a CURVE key pair instead (bridge/endpoints/keygen.h), and
// `wsbridge check --db FILE` checks a database file (bridge/store_check.h).
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>

#include "bridge/config.h"
#include "bridge/daemon.h"
#include "bridge/endpoints/keygen.h"
#include "bridge/logging.h"
#include "bridge/store_check.h"

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "keygen") == 0) return wsbridge::KeygenMain(argc, argv);
  if (argc > 1 && std::strcmp(argv[1], "check") == 0) return wsbridge::CheckMain(argc, argv);

  // SIGTERM/SIGINT (stop), SIGHUP (reload the authorized keys) and SIGUSR2 (tests) are taken by
  // Daemon::Run() with sigwait. Block them before any thread exists (the store and the
  // authentication handler start theirs during start-up), so that every thread inherits the
  // mask and a signal during start-up waits for Run() instead of killing the process.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  sigaddset(&stop_signals, SIGUSR2);
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
