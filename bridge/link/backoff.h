// Reconnect backoff: pure functions, randomness injected (IXWebSocket IXExponentialBackoff,
// Envoy JitteredExponentialBackOffStrategy), plus the Retry-After header parser.
//
// The formulas are those of the AWS Architecture Blog, "Exponential Backoff And Jitter"
// (Marc Brooker, 2015), with ceiling(n) = min(cap, base * 2^n):
//   none          delay = ceiling(n)
//   full          delay = uniform(0, ceiling(n))
//   equal         delay = ceiling(n)/2 + uniform(0, ceiling(n)/2)
//   decorrelated  delay = min(cap, uniform(base, previous * 3)), previous starting at base
// All bounds are inclusive. Nothing here reads a clock or keeps state; thread-safe as long as
// each thread uses its own RandomSource.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "bridge/clock.h"
#include "common/status.h"

namespace wsbridge {

// `reconnect.jitter`.
enum class Jitter { kNone, kFull, kEqual, kDecorrelated };

// "none", "full", "equal", "decorrelated".
const char* ToString(Jitter mode);

// Parses the `reconnect.jitter` value. Error, naming the key:
// reconnect.jitter: must be one of full, equal, decorrelated, none (got "fast")
StatusOr<Jitter> ParseJitter(std::string_view text);

struct BackoffParams {
  Duration base{std::chrono::milliseconds(500)};  // reconnect.base_delay_ms: the first delay
  Duration cap{std::chrono::seconds(30)};         // reconnect.max_delay_ms: no delay exceeds it
};

// min(cap, base * 2^attempt), exact and overflow-safe for any attempt (2^4000000000 is simply
// "the cap"). Negative inputs count as zero; a base above the cap is lowered to the cap.
Duration BackoffCeiling(const BackoffParams& p, uint32_t attempt);

// The delay to wait before retry number `attempt` (0 for the first retry, 1 for the second, ...).
// `previous` is the delay returned for the previous retry (only kDecorrelated reads it; pass
// Duration::zero() for the first retry, which counts as `base`). The result is always within
// [0, cap]; for kDecorrelated within [min(base, cap), cap].
Duration NextDelay(Jitter mode, const BackoffParams& p, uint32_t attempt, Duration previous,
                   RandomSource& rng);

// Retry-After values above this are clamped to it, so that a buggy upstream cannot park the
// bridge for years with one header.
constexpr Duration kMaxRetryAfter = std::chrono::hours(24);

// Parses an HTTP Retry-After header value (RFC 9110 §10.2.3) into a wait from `now_wall`:
//   delta-seconds  "120"                            -> 120 s
//   HTTP-date      "Sun, 06 Nov 1994 08:49:37 GMT"  -> that date - now_wall (IMF-fixdate),
//                  "Sunday, 06-Nov-94 08:49:37 GMT" (obsolete RFC 850 form),
//                  "Sun Nov  6 08:49:37 1994"        (obsolete asctime form)
// A date in the past gives zero. The result is clamped to kMaxRetryAfter. Anything else
// (empty, negative, fractional, junk after the value, impossible dates) gives std::nullopt: the
// caller then falls back to its normal backoff. Surrounding whitespace is ignored.
std::optional<Duration> ParseRetryAfter(std::string_view value,
                                        std::chrono::system_clock::time_point now_wall);

// "1.5 s", "250 ms", "30 s", "2 min 5 s": one short human-readable form for logs and reasons.
std::string FormatDuration(Duration d);

}  // namespace wsbridge
