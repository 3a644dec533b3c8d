// Metrics and readiness, read from Stats at request time (SPEC §7).
//
//   StatsCollectable    a prometheus::Collectable over the daemon's Stats: every wsbridge_*
//                       metric family, built on each Collect() from the atomics the owning
//                       threads already keep (nothing is counted twice on the hot path)
//   ProcessCollectable  the standard process_* metrics of this process, from /proc
//   RenderMetrics()     the Prometheus text exposition format of any collectables
//   CheckReadiness()    what /readyz answers: ready, or the reasons why not
//
// Threading: Collect() and CheckReadiness() may run on any thread at any time (they only read
// Stats); the Stats must outlive the collectable.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <memory>
#include <string>
#include <vector>

#include "bridge/stats.h"

namespace wsbridge {

class StatsCollectable final : public prometheus::Collectable {
 public:
  explicit StatsCollectable(const Stats* stats) : stats_(stats) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const Stats* stats_;
};

class ProcessCollectable final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

// The text format (version 0.0.4) of everything the collectables return, in order.
std::string RenderMetrics(const std::vector<std::shared_ptr<prometheus::Collectable>>& from);

// The Content-Type of RenderMetrics()'s output.
inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

struct Readiness {
  bool ready = false;
  std::string reason;  // when not ready: one line per cause, e.g. "upstream backing_off: ..."
};

// Ready while the upstream is open (Stats::connected) and storage is writable (storage_ok).
Readiness CheckReadiness(const Stats& stats);

}  // namespace wsbridge
