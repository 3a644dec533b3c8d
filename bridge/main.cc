// wsbridge: the daemon. Parses the configuration, sets up logging, runs the Daemon.
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "bridge/config.h"
#include "bridge/daemon.h"

int main(int argc, char** argv) {
  auto cl = wsbridge::LoadConfig(argc, argv, wsbridge::ProcessEnv());
  if (!cl.ok()) {
    std::fprintf(stderr, "wsbridge: %s\n", cl.status().message().c_str());
    return 2;
  }
  if (cl->exit_now) return cl->exit_code;
  const wsbridge::Config& config = cl->config;
  if (cl->print_config) {
    std::fputs(wsbridge::ToToml(config).c_str(), stdout);
    return 0;
  }

  auto logger = spdlog::stderr_logger_mt("wsbridge");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(config.log.level));
  if (config.log.format == "json") {
    spdlog::set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","msg":"%v"})",
                        spdlog::pattern_time_type::utc);
  } else {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %l %v", spdlog::pattern_time_type::utc);
  }
  spdlog::flush_on(spdlog::level::info);

  auto daemon = wsbridge::Daemon::Create(config);
  if (!daemon.ok()) {
    spdlog::critical("{}", daemon.status().message());
    return 2;
  }
  return (*daemon)->Run();
}
