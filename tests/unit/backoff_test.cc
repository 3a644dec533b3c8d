// Backoff formulas (AWS "Exponential Backoff And Jitter") and Retry-After parsing, by table,
// with a seeded RandomSource so that every run draws the same numbers.
#include "bridge/link/backoff.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "bridge/clock.h"

namespace wsbridge {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

constexpr uint64_t kSeed = 0x5eed5eed5eedull;
constexpr int kDraws = 4000;
const BackoffParams kDefaults{milliseconds(500), seconds(30)};  // the shipped defaults

// ---- jitter names --------------------------------------------------------------------------

TEST(ParseJitter, AcceptsEveryModeByItsConfigName) {
  for (Jitter j : {Jitter::kNone, Jitter::kFull, Jitter::kEqual, Jitter::kDecorrelated}) {
    StatusOr<Jitter> parsed = ParseJitter(ToString(j));
    ASSERT_TRUE(parsed.ok()) << ToString(j);
    EXPECT_EQ(*parsed, j);
  }
}

TEST(ParseJitter, RejectsOthersNamingTheKey) {
  for (const char* bad : {"", "fast", "Full", "full ", "exponential"}) {
    StatusOr<Jitter> parsed = ParseJitter(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), Status::Code::kInvalidArgument);
    EXPECT_EQ(parsed.status().message(),
              std::string("reconnect.jitter: must be one of full, equal, decorrelated, none "
                          "(got \"") +
                  bad + "\")");
  }
}

// ---- ceiling: min(cap, base * 2^attempt) ---------------------------------------------------

TEST(BackoffCeiling, DoublesExactlyUntilTheCap) {
  const std::vector<int64_t> expected_ms = {500,   1000,  2000,  4000,  8000, 16000,
                                            30000, 30000, 30000, 30000, 30000};
  for (uint32_t attempt = 0; attempt < expected_ms.size(); ++attempt) {
    EXPECT_EQ(BackoffCeiling(kDefaults, attempt), milliseconds(expected_ms[attempt]))
        << "attempt " << attempt;
  }
}

TEST(BackoffCeiling, HugeAttemptCountsSaturateAtTheCapWithoutOverflow) {
  for (uint32_t attempt : {31u, 32u, 62u, 63u, 64u, 65u, 1000u, UINT32_MAX - 1, UINT32_MAX}) {
    EXPECT_EQ(BackoffCeiling(kDefaults, attempt), seconds(30)) << attempt;
  }
  // The largest representable cap: 1 ns * 2^62 still fits, 2^63 would not.
  const BackoffParams wide{nanoseconds(1), Duration::max()};
  EXPECT_EQ(BackoffCeiling(wide, 62), nanoseconds(int64_t{1} << 62));
  EXPECT_EQ(BackoffCeiling(wide, 63), Duration::max());
  EXPECT_EQ(BackoffCeiling(wide, UINT32_MAX), Duration::max());
  // A base just under the cap doubles past it: capped, not wrapped.
  const BackoffParams big{Duration::max() / 2 + nanoseconds(1), Duration::max()};
  EXPECT_EQ(BackoffCeiling(big, 1), Duration::max());
}

TEST(BackoffCeiling, OddParameters) {
  EXPECT_EQ(BackoffCeiling({Duration::zero(), seconds(30)}, 5), Duration::zero());
  EXPECT_EQ(BackoffCeiling({seconds(60), seconds(30)}, 0), seconds(30));  // base above cap
  EXPECT_EQ(BackoffCeiling({milliseconds(-5), seconds(30)}, 3), Duration::zero());
  EXPECT_EQ(BackoffCeiling({milliseconds(500), milliseconds(-1)}, 3), Duration::zero());
  EXPECT_EQ(BackoffCeiling({milliseconds(3), milliseconds(10)}, 2), milliseconds(10));
}

// ---- every mode, by table ------------------------------------------------------------------

struct ModeCase {
  Jitter mode;
  // Inclusive bounds of one draw for a given ceiling (decorrelated is checked separately).
  double lo_fraction;
  double hi_fraction;
};

void PrintTo(const ModeCase& c, std::ostream* os) { *os << ToString(c.mode); }

class JitterModeTest : public ::testing::TestWithParam<ModeCase> {};

TEST_P(JitterModeTest, EveryDrawWithinTheFormulaRangeAndTheRangeIsCovered) {
  const ModeCase c = GetParam();
  SplitMix64Random rng(kSeed);
  for (uint32_t attempt = 0; attempt < 12; ++attempt) {
    const Duration ceiling = BackoffCeiling(kDefaults, attempt);
    const Duration lo = nanoseconds(static_cast<int64_t>(ceiling.count() * c.lo_fraction));
    const Duration hi = nanoseconds(static_cast<int64_t>(ceiling.count() * c.hi_fraction));
    Duration seen_min = Duration::max(), seen_max = Duration::min();
    double sum = 0;
    for (int i = 0; i < kDraws; ++i) {
      Duration d = NextDelay(c.mode, kDefaults, attempt, Duration::zero(), rng);
      ASSERT_GE(d, lo) << ToString(c.mode) << " attempt " << attempt;
      ASSERT_LE(d, hi) << ToString(c.mode) << " attempt " << attempt;
      ASSERT_LE(d, kDefaults.cap);
      seen_min = std::min(seen_min, d);
      seen_max = std::max(seen_max, d);
      sum += static_cast<double>(d.count());
    }
    // Uniform over [lo, hi]: the draws reach both ends and centre on the middle (a fixed seed,
    // so these are exact facts about this sequence, not flaky statistics).
    const double span = static_cast<double>((hi - lo).count());
    EXPECT_LE(static_cast<double>((seen_min - lo).count()), 0.01 * span + 1) << attempt;
    EXPECT_LE(static_cast<double>((hi - seen_max).count()), 0.01 * span + 1) << attempt;
    const double mean = sum / kDraws;
    EXPECT_NEAR(mean, static_cast<double>(lo.count()) + span / 2, 0.05 * span + 1) << attempt;
  }
}

INSTANTIATE_TEST_SUITE_P(AllModes, JitterModeTest,
                         ::testing::Values(ModeCase{Jitter::kNone, 1.0, 1.0},
                                           ModeCase{Jitter::kFull, 0.0, 1.0},
                                           ModeCase{Jitter::kEqual, 0.5, 1.0}),
                         [](const ::testing::TestParamInfo<ModeCase>& param_info) {
                           return std::string(ToString(param_info.param.mode));
                         });

TEST(NextDelay, NoneIsTheExactCeiling) {
  SplitMix64Random rng(kSeed);
  Duration prev = Duration::zero();
  for (uint32_t attempt = 0; attempt < 6; ++attempt) {
    Duration d = NextDelay(Jitter::kNone, kDefaults, attempt, prev, rng);
    EXPECT_EQ(d, milliseconds(500) * (1 << attempt));
    if (attempt > 0) {
      EXPECT_EQ(d, prev * 2);  // exact doubling
    }
    prev = d;
  }
  EXPECT_EQ(NextDelay(Jitter::kNone, kDefaults, 6, prev, rng), seconds(30));
}

TEST(NextDelay, DecorrelatedStaysWithinBaseAndCapAndThreeTimesThePrevious) {
  SplitMix64Random rng(kSeed);
  Duration prev = Duration::zero();  // the first draw counts it as `base`
  Duration seen_max = Duration::zero();
  int at_cap = 0;
  for (int i = 0; i < 20000; ++i) {
    const Duration d =
        NextDelay(Jitter::kDecorrelated, kDefaults, static_cast<uint32_t>(i), prev, rng);
    ASSERT_GE(d, kDefaults.base) << i;
    ASSERT_LE(d, kDefaults.cap) << i;
    ASSERT_LE(d, std::max(prev, kDefaults.base) * 3) << i;
    seen_max = std::max(seen_max, d);
    at_cap += d == kDefaults.cap;
    prev = d;
  }
  EXPECT_EQ(seen_max, kDefaults.cap);  // min(cap, ...) is reached, and often
  EXPECT_GT(at_cap, 1000);
}

TEST(NextDelay, DecorrelatedFirstDrawIsBetweenBaseAndThreeBase) {
  SplitMix64Random rng(kSeed);
  for (int i = 0; i < kDraws; ++i) {
    Duration d = NextDelay(Jitter::kDecorrelated, kDefaults, 0, Duration::zero(), rng);
    ASSERT_GE(d, milliseconds(500));
    ASSERT_LE(d, milliseconds(1500));
  }
}

TEST(NextDelay, HugeInputsDoNotOverflowInAnyMode) {
  const BackoffParams wide{milliseconds(500), Duration::max()};
  for (Jitter mode : {Jitter::kNone, Jitter::kFull, Jitter::kEqual, Jitter::kDecorrelated}) {
    SplitMix64Random rng(kSeed);
    for (uint32_t attempt : {62u, 63u, 64u, 100000u, UINT32_MAX}) {
      for (const BackoffParams& p : {kDefaults, wide}) {
        Duration d = NextDelay(mode, p, attempt, Duration::max(), rng);
        EXPECT_GE(d, Duration::zero()) << ToString(mode) << " " << attempt;
        EXPECT_LE(d, p.cap) << ToString(mode) << " " << attempt;
      }
    }
  }
}

TEST(NextDelay, SameSeedSameDelays) {
  for (Jitter mode : {Jitter::kFull, Jitter::kEqual, Jitter::kDecorrelated}) {
    SplitMix64Random a(42), b(42), c(43);
    std::vector<Duration> da, db, dc;
    Duration pa{}, pb{}, pc{};
    for (uint32_t i = 0; i < 10; ++i) {
      da.push_back(pa = NextDelay(mode, kDefaults, i, pa, a));
      db.push_back(pb = NextDelay(mode, kDefaults, i, pb, b));
      dc.push_back(pc = NextDelay(mode, kDefaults, i, pc, c));
    }
    EXPECT_EQ(da, db) << ToString(mode);
    EXPECT_NE(da, dc) << ToString(mode);
  }
}

TEST(NextDelay, ZeroBaseMeansNoDelay) {
  SplitMix64Random rng(kSeed);
  const BackoffParams zero{Duration::zero(), Duration::zero()};
  for (Jitter mode : {Jitter::kNone, Jitter::kFull, Jitter::kEqual, Jitter::kDecorrelated}) {
    EXPECT_EQ(NextDelay(mode, zero, 7, seconds(1), rng), Duration::zero()) << ToString(mode);
  }
}

TEST(RandomSource, UniformInclusiveCoversBothEnds) {
  SplitMix64Random rng(kSeed);
  std::vector<int> hits(4, 0);
  for (int i = 0; i < 4000; ++i) {
    uint64_t v = rng.UniformInclusive(3);
    ASSERT_LE(v, 3u);
    ++hits[v];
  }
  for (int h : hits) EXPECT_NEAR(h, 1000, 100);
  for (int i = 0; i < 1000; ++i) {
    double u = rng.Uniform01();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
  EXPECT_EQ(rng.UniformInclusive(0), 0u);
}

// ---- Retry-After ---------------------------------------------------------------------------

std::chrono::system_clock::time_point Wall(int64_t unix_seconds) {
  return std::chrono::system_clock::time_point(seconds(unix_seconds));
}
constexpr int64_t k1994 = 784111777;   // Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example)
constexpr int64_t k2025 = 1735689600;  // Wed, 01 Jan 2025 00:00:00 GMT

struct RetryAfterCase {
  const char* value;
  int64_t now_unix;
  std::optional<Duration> expected;
};

TEST(ParseRetryAfter, Table) {
  const std::vector<RetryAfterCase> cases = {
      // delta-seconds
      {"120", k2025, seconds(120)},
      {"0", k2025, seconds(0)},
      {"  7\t", k2025, seconds(7)},
      {"0030", k2025, seconds(30)},
      {"86400", k2025, hours(24)},
      {"86401", k2025, kMaxRetryAfter},
      {"99999999999999999999999999", k2025, kMaxRetryAfter},  // saturates, no overflow
      // IMF-fixdate
      {"Sun, 06 Nov 1994 08:49:37 GMT", k1994 - 90, seconds(90)},
      {"Sun, 06 Nov 1994 08:49:37 GMT", k1994, seconds(0)},
      {"Sun, 06 Nov 1994 08:49:37 GMT", k1994 + 3600, seconds(0)},    // in the past: go now
      {"sun, 06 nov 1994 08:49:37 gmt", k1994 - 1, seconds(1)},       // lenient about case
      {"Thu, 29 Feb 2024 12:00:00 GMT", 1709208000 - 5, seconds(5)},  // leap day
      {"Wed, 01 Jan 2025 00:02:00 GMT", k2025, seconds(120)},
      {"Fri, 01 Jan 2100 00:00:00 GMT", k2025, kMaxRetryAfter},  // clamped
      // obsolete RFC 850 form, two-digit year
      {"Sunday, 06-Nov-94 08:49:37 GMT", k1994 - 60, seconds(60)},
      {"Wednesday, 01-Jan-25 00:01:00 GMT", k2025, seconds(60)},
      // RFC 9110: more than 50 years ahead means the most recent past year with those digits.
      {"Tuesday, 01-Jan-80 00:00:00 GMT", k2025, seconds(0)},      // 1980, not 2080
      {"Tuesday, 01-Jan-70 00:00:00 GMT", k2025, kMaxRetryAfter},  // 2070: 45 years ahead
      // obsolete asctime form
      {"Sun Nov  6 08:49:37 1994", k1994 - 30, seconds(30)},
      {"Sun Nov 06 08:49:37 1994", k1994 - 30, seconds(30)},
      {"Wed Jan  1 00:00:10 2025", k2025, seconds(10)},
      // garbage
      {"", k2025, std::nullopt},
      {"   ", k2025, std::nullopt},
      {"-5", k2025, std::nullopt},
      {"+5", k2025, std::nullopt},
      {"1.5", k2025, std::nullopt},
      {"12abc", k2025, std::nullopt},
      {"12 34", k2025, std::nullopt},
      {"soon", k2025, std::nullopt},
      {"Sun, 06 Nov 1994 08:49:37", k2025, std::nullopt},        // no GMT
      {"Sun, 06 Nov 1994 08:49:37 UTC", k2025, std::nullopt},    // not GMT
      {"Sun, 06 Nov 1994 08:49:37 GMT x", k2025, std::nullopt},  // junk after
      {"Sun, 6 Nov 1994 08:49:37 GMT", k2025, std::nullopt},     // day must be 2 digits
      {"Sun, 31 Feb 2024 00:00:00 GMT", k2025, std::nullopt},    // no such day
      {"Wed, 29 Feb 2023 00:00:00 GMT", k2025, std::nullopt},    // not a leap year
      {"Sun, 06 Foo 1994 08:49:37 GMT", k2025, std::nullopt},
      {"Sun, 06 Nov 1994 24:00:00 GMT", k2025, std::nullopt},
      {"Sun, 06 Nov 1994 08:60:00 GMT", k2025, std::nullopt},
      {"Sun, 06 Nov 94 08:49:37 GMT", k2025, std::nullopt},
      {"Sunday, 06-Nov-1994 08:49:37 GMT", k2025, std::nullopt},
      {"Sun Nov  6 08:49:37 94", k2025, std::nullopt},
      {"2025-01-01T00:00:00Z", k2025, std::nullopt},
  };
  for (const RetryAfterCase& c : cases) {
    std::optional<Duration> got = ParseRetryAfter(c.value, Wall(c.now_unix));
    EXPECT_EQ(got.has_value(), c.expected.has_value()) << "\"" << c.value << "\"";
    if (got && c.expected) {
      EXPECT_EQ(got->count(), c.expected->count()) << "\"" << c.value << "\"";
    }
  }
}

TEST(ParseRetryAfter, SubSecondNowGivesAnExactRemainder) {
  // The wall clock is rarely on a whole second: the wait is measured to the nanosecond.
  auto now = Wall(k1994 - 2) + milliseconds(250);
  std::optional<Duration> got = ParseRetryAfter("Sun, 06 Nov 1994 08:49:37 GMT", now);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, milliseconds(1750));
}

TEST(FormatDuration, ShortHumanForms) {
  EXPECT_EQ(FormatDuration(Duration::zero()), "0 us");
  EXPECT_EQ(FormatDuration(std::chrono::microseconds(12)), "12 us");
  EXPECT_EQ(FormatDuration(milliseconds(500)), "500 ms");
  EXPECT_EQ(FormatDuration(milliseconds(1500)), "1.5 s");
  EXPECT_EQ(FormatDuration(milliseconds(1234)), "1.234 s");
  EXPECT_EQ(FormatDuration(seconds(30)), "30 s");
  EXPECT_EQ(FormatDuration(hours(1)), "3600 s");
  EXPECT_EQ(FormatDuration(milliseconds(-250)), "-250 ms");
}

}  // namespace
}  // namespace wsbridge
