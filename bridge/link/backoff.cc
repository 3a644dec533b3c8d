#include "bridge/link/backoff.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <limits>
#include <string>

namespace wsbridge {

const char* ToString(Jitter mode) {
  switch (mode) {
    case Jitter::kNone:
      return "none";
    case Jitter::kFull:
      return "full";
    case Jitter::kEqual:
      return "equal";
    case Jitter::kDecorrelated:
      return "decorrelated";
  }
  return "?";
}

StatusOr<Jitter> ParseJitter(std::string_view text) {
  for (Jitter j : {Jitter::kFull, Jitter::kEqual, Jitter::kDecorrelated, Jitter::kNone}) {
    if (text == ToString(j)) return j;
  }
  return Status::InvalidArgument(
      "reconnect.jitter: must be one of full, equal, decorrelated, none (got \"" +
      std::string(text) + "\")");
}

namespace {

// The cap and base after the documented clamping: 0 <= base <= cap.
struct Bounds {
  Duration base;
  Duration cap;
};
Bounds Normalize(const BackoffParams& p) {
  Duration cap = std::max(p.cap, Duration::zero());
  Duration base = std::clamp(p.base, Duration::zero(), cap);
  return {base, cap};
}

// Uniform in [lo, hi], both inclusive; lo <= hi.
Duration UniformBetween(Duration lo, Duration hi, RandomSource& rng) {
  uint64_t span = static_cast<uint64_t>(hi.count()) - static_cast<uint64_t>(lo.count());
  return lo + Duration(static_cast<Duration::rep>(rng.UniformInclusive(span)));
}

}  // namespace

Duration BackoffCeiling(const BackoffParams& p, uint32_t attempt) {
  Bounds b = Normalize(p);
  if (b.base == Duration::zero()) return Duration::zero();
  // base * 2^attempt > cap  <=>  base > floor(cap / 2^attempt): no multiplication can overflow.
  if (attempt >= 63 || b.base.count() > (b.cap.count() >> attempt)) return b.cap;
  return Duration(b.base.count() << attempt);
}

Duration NextDelay(Jitter mode, const BackoffParams& p, uint32_t attempt, Duration previous,
                   RandomSource& rng) {
  Bounds b = Normalize(p);
  switch (mode) {
    case Jitter::kNone:
      return BackoffCeiling(p, attempt);
    case Jitter::kFull:
      return UniformBetween(Duration::zero(), BackoffCeiling(p, attempt), rng);
    case Jitter::kEqual: {
      Duration ceiling = BackoffCeiling(p, attempt);
      Duration half = ceiling / 2;
      return half + UniformBetween(Duration::zero(), ceiling - half, rng);
    }
    case Jitter::kDecorrelated: {
      Duration prev = std::max(previous, b.base);
      constexpr auto kMax = std::numeric_limits<Duration::rep>::max();
      Duration hi = prev.count() > kMax / 3 ? Duration(kMax) : prev * 3;
      return std::min(b.cap, UniformBetween(b.base, hi, rng));
    }
  }
  return b.cap;
}

// ---- Retry-After ------------------------------------------------------------------------------

namespace {

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

// The civil year of a day count since 1970-01-01 (inverse of the above, year only).
int64_t YearFromDays(int64_t z) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return static_cast<int64_t>(yoe) + era * 400 + (m <= 2);
}

bool IsLeap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned DaysInMonth(int64_t y, unsigned m) {
  static const unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeap(y) ? 29 : kDays[m - 1];
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// A left-to-right reader over the grammar of RFC 9110 §5.6.7.
class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}
  bool AtEnd() const { return i_ == s_.size(); }

  bool Char(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool Word(std::string_view w) {
    if (s_.size() - i_ < w.size() || !EqualsIgnoreCase(s_.substr(i_, w.size()), w)) return false;
    i_ += w.size();
    return true;
  }
  // Exactly n decimal digits.
  bool Digits(int n, int* out) {
    int v = 0;
    for (int k = 0; k < n; ++k) {
      if (i_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[i_]))) return false;
      v = v * 10 + (s_[i_++] - '0');
    }
    *out = v;
    return true;
  }
  // One of the names; sets *index to its position.
  template <size_t N>
  bool OneOf(const char* const (&names)[N], int* index) {
    for (size_t k = 0; k < N; ++k) {
      if (Word(names[k])) {
        *index = static_cast<int>(k);
        return true;
      }
    }
    return false;
  }
  // "HH:MM:SS".
  bool TimeOfDay(int* h, int* m, int* s) {
    return Digits(2, h) && Char(':') && Digits(2, m) && Char(':') && Digits(2, s);
  }
  bool Peek(char c) const { return i_ < s_.size() && s_[i_] == c; }

 private:
  std::string_view s_;
  size_t i_ = 0;
};

const char* const kShortDays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
// Long names first: "Monday" must not be read as "Mon" + "day".
const char* const kLongDays[] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                 "Friday", "Saturday", "Sunday"};
const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                               "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// Seconds since the Unix epoch of an HTTP-date, or nullopt. `now_year` resolves the two-digit
// year of the RFC 850 form.
std::optional<int64_t> ParseHttpDate(std::string_view text, int64_t now_year) {
  Reader r(text);
  int day = 0, month = 0, h = 0, mi = 0, s = 0, ignored = 0;
  int64_t year = 0;
  if (r.OneOf(kLongDays, &ignored)) {
    // rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
    int yy = 0;
    if (!(r.Char(',') && r.Char(' ') && r.Digits(2, &day) && r.Char('-') &&
          r.OneOf(kMonths, &month) && r.Char('-') && r.Digits(2, &yy) && r.Char(' ') &&
          r.TimeOfDay(&h, &mi, &s) && r.Char(' ') && r.Word("GMT") && r.AtEnd())) {
      return std::nullopt;
    }
    // RFC 9110: a year that appears more than 50 years in the future is the most recent past
    // year with the same last two digits.
    year = now_year - now_year % 100 + yy;
    if (year > now_year + 50) year -= 100;
  } else if (r.OneOf(kShortDays, &ignored)) {
    if (r.Char(',')) {
      // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
      int yyyy = 0;
      if (!(r.Char(' ') && r.Digits(2, &day) && r.Char(' ') && r.OneOf(kMonths, &month) &&
            r.Char(' ') && r.Digits(4, &yyyy) && r.Char(' ') && r.TimeOfDay(&h, &mi, &s) &&
            r.Char(' ') && r.Word("GMT") && r.AtEnd())) {
        return std::nullopt;
      }
      year = yyyy;
    } else {
      // asctime-date: Sun Nov  6 08:49:37 1994 (day as two digits or space + digit)
      int yyyy = 0;
      if (!(r.Char(' ') && r.OneOf(kMonths, &month) && r.Char(' '))) return std::nullopt;
      bool day_ok = r.Char(' ') ? r.Digits(1, &day) : r.Digits(2, &day);
      if (!(day_ok && r.Char(' ') && r.TimeOfDay(&h, &mi, &s) && r.Char(' ') &&
            r.Digits(4, &yyyy) && r.AtEnd())) {
        return std::nullopt;
      }
      year = yyyy;
    }
  } else {
    return std::nullopt;
  }
  unsigned m = static_cast<unsigned>(month) + 1;
  if (day < 1 || static_cast<unsigned>(day) > DaysInMonth(year, m) || h > 23 || mi > 59 ||
      s > 60) {  // 60: a leap second
    return std::nullopt;
  }
  return DaysFromCivil(year, m, static_cast<unsigned>(day)) * 86400 + h * 3600 + mi * 60 + s;
}

bool IsHttpSpace(char c) { return c == ' ' || c == '\t'; }

}  // namespace

std::optional<Duration> ParseRetryAfter(std::string_view value,
                                        std::chrono::system_clock::time_point now_wall) {
  while (!value.empty() && IsHttpSpace(value.front())) value.remove_prefix(1);
  while (!value.empty() && IsHttpSpace(value.back())) value.remove_suffix(1);
  if (value.empty()) return std::nullopt;

  const int64_t max_s = std::chrono::duration_cast<std::chrono::seconds>(kMaxRetryAfter).count();
  if (std::isdigit(static_cast<unsigned char>(value.front()))) {
    // delta-seconds = 1*DIGIT; saturate rather than overflow on absurd lengths.
    int64_t secs = 0;
    for (char c : value) {
      if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
      secs = std::min(max_s, secs * 10 + (c - '0'));
    }
    return std::chrono::seconds(secs);
  }

  const int64_t now_s =
      std::chrono::duration_cast<std::chrono::seconds>(now_wall.time_since_epoch()).count();
  const int64_t now_year = YearFromDays(now_s >= 0 ? now_s / 86400 : (now_s - 86399) / 86400);
  std::optional<int64_t> when = ParseHttpDate(value, now_year);
  if (!when) return std::nullopt;
  auto wait = std::chrono::system_clock::time_point(std::chrono::seconds(*when)) - now_wall;
  if (wait <= std::chrono::system_clock::duration::zero()) return Duration::zero();
  return std::min(std::chrono::duration_cast<Duration>(wait), kMaxRetryAfter);
}

std::string FormatDuration(Duration d) {
  char buf[48];
  const int64_t ns = d.count();
  if (ns < 0) return "-" + FormatDuration(ns == Duration::min().count() ? Duration::max() : -d);
  if (ns < 1000000) {
    std::snprintf(buf, sizeof buf, "%lld us", static_cast<long long>(ns / 1000));
  } else if (ns < 1000000000) {
    std::snprintf(buf, sizeof buf, "%lld ms", static_cast<long long>(ns / 1000000));
  } else {
    // Seconds with up to three decimals, trailing zeros dropped: "1.5 s", "30 s".
    long long ms = static_cast<long long>(ns / 1000000);
    int n = std::snprintf(buf, sizeof buf, "%lld.%03lld", ms / 1000, ms % 1000);
    while (n > 0 && buf[n - 1] == '0') buf[--n] = '\0';
    if (n > 0 && buf[n - 1] == '.') buf[--n] = '\0';
    return std::string(buf) + " s";
  }
  return buf;
}

}  // namespace wsbridge
