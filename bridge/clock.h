// Injected time and randomness (Envoy's TimeSource / SimulatedTimeSystem, leveldb's Env).
//
// Everything that decides *when* something happens (backoff, heartbeat, connect timeouts) takes
// the current time as a parameter or reads it from a Clock, and draws its randomness from a
// RandomSource. The daemon passes SteadyClock and SystemRandom; tests pass SimulatedClock and
// SplitMix64Random, so an hour of flapping upstream runs in milliseconds, deterministically.
//
// Header-only on purpose: the pure policy library (wsbridge_policy) uses only the abstract
// interfaces; the real implementations below are read by the I/O layer, never by the policy.
#pragma once

#include <sys/random.h>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace wsbridge {

// Monotonic time with nanosecond resolution. TimePoint{} is the clock's epoch (boot, for the
// steady clock); only differences are meaningful.
using Duration = std::chrono::nanoseconds;
using TimePoint = std::chrono::time_point<std::chrono::steady_clock, Duration>;

// Wall-clock time in ns since the Unix epoch (received_at, retention ages, lag): not for
// intervals. Any thread.
inline int64_t WallNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Converts a millisecond count from the configuration to a Duration, saturating instead of
// overflowing (int64 nanoseconds hold ~292 years; anything beyond ~50 years is "forever").
inline Duration MillisToDuration(int64_t ms) {
  constexpr int64_t kMaxMs = int64_t{50} * 365 * 24 * 3600 * 1000;
  if (ms <= 0) return Duration::zero();
  if (ms > kMaxMs) ms = kMaxMs;
  return std::chrono::milliseconds(ms);
}

// A source of monotonic time. Implementations must be safe to call from any thread.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
};

// The real monotonic clock (std::chrono::steady_clock). Stateless; Default() lives forever.
class SteadyClock final : public Clock {
 public:
  TimePoint Now() const override {
    return std::chrono::time_point_cast<Duration>(std::chrono::steady_clock::now());
  }
  static SteadyClock& Default() {
    static SteadyClock clock;
    return clock;
  }
};

// A clock that only moves when told to (tests). Starts at `start` (default: one hour after the
// epoch, so that "now - something" never goes below the epoch in a test). Time never goes
// backwards: Set() to an earlier point is ignored. Now() is safe from any thread; Advance() and
// Set() are meant to be called by the one thread that drives the test.
class SimulatedClock final : public Clock {
 public:
  explicit SimulatedClock(TimePoint start = TimePoint{} + std::chrono::hours(1))
      : ns_(start.time_since_epoch().count()) {}

  TimePoint Now() const override { return TimePoint{Duration{ns_.load()}}; }

  void Advance(Duration d) {
    if (d > Duration::zero()) ns_.fetch_add(d.count());
  }
  void Set(TimePoint t) {
    int64_t target = t.time_since_epoch().count();
    int64_t cur = ns_.load();
    while (target > cur && !ns_.compare_exchange_weak(cur, target)) {
    }
  }

 private:
  std::atomic<int64_t> ns_;
};

// A source of uniformly distributed 64-bit numbers. Not a cryptographic source: it spreads
// reconnects of many bridges apart (jitter), nothing more. Implementations are NOT thread-safe;
// each owner (the I/O thread) keeps its own.
class RandomSource {
 public:
  virtual ~RandomSource() = default;
  virtual uint64_t Next() = 0;

  // Uniform in [0, 1), with 53 random bits.
  double Uniform01() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

  // Uniform in [0, n] (inclusive), without modulo bias worth mentioning (Lemire's multiply).
  uint64_t UniformInclusive(uint64_t n) {
    if (n == UINT64_MAX) return Next();
    __extension__ typedef unsigned __int128 U128;  // GCC/Clang; -Wpedantic-clean
    return static_cast<uint64_t>((static_cast<U128>(Next()) * (n + 1)) >> 64);
  }
};

// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fully determined by its seed. Tests seed
// it with a constant so that every jittered delay is reproducible.
class SplitMix64Random final : public RandomSource {
 public:
  explicit SplitMix64Random(uint64_t seed) : state_(seed) {}
  uint64_t Next() override {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

// The daemon's random source: SplitMix64 seeded once from the kernel (getrandom(2)), so that
// bridges started at the same moment (a rolled-out deployment) do not reconnect in lock-step.
class SystemRandom final : public RandomSource {
 public:
  SystemRandom() : gen_(EntropySeed()) {}
  uint64_t Next() override { return gen_.Next(); }

  static uint64_t EntropySeed() {
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) == static_cast<ssize_t>(sizeof seed)) return seed;
    // No entropy available (very old kernel, seccomp): still differ between processes.
    auto t = std::chrono::steady_clock::now().time_since_epoch().count();
    uint64_t mix = static_cast<uint64_t>(t) ^ (reinterpret_cast<uintptr_t>(&seed) << 17);
    return SplitMix64Random(mix).Next();
  }

 private:
  SplitMix64Random gen_;
};

}  // namespace wsbridge
