// libFuzzer target: configuration parsing (bridge/config.h), TOML text and --set values.
//
// Input: the TOML file's content, then optionally a NUL byte and --set values, one per line
// ("section.key=value"). LoadConfigFromString() loads them with a small fake environment (so
// that ${NAME} expansion is exercised). Checks: an error is one line and names what it is about;
// a loaded Config prints with ToToml() (what --print-config shows), and that text loads again
// (it is a valid configuration file) to a Config that prints the same.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/config.h"

namespace {

void Check(bool cond) {
  if (!cond) std::abort();
}

// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF) without NUL: what a
// TOML document can carry in a string.
bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == 0) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) n = 2, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0) n = 3, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0) n = 4, cp = c & 0x07;
    else return false;
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nul = in.find('\0');
  const std::string toml(in.substr(0, nul));
  std::vector<std::string> sets;
  if (nul != std::string_view::npos) {
    std::string_view rest = in.substr(nul + 1);
    while (!rest.empty() && sets.size() < 16) {
      size_t nl = rest.find('\n');
      sets.emplace_back(rest.substr(0, nl));
      rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    }
  }
  static const wsbridge::EnvMap env = {{"TOKEN", "s3cret"}, {"HOST", "example.org"}};

  auto config = wsbridge::LoadConfigFromString(toml, sets, env);
  if (!config.ok()) {
    const std::string& msg = config.status().message();
    Check(!msg.empty());
    Check(config.status().code() == wsbridge::Status::Code::kInvalidArgument);
    return 0;
  }
  // --print-config's output is a configuration file that loads to the same configuration.
  // (Values come from the TOML parser, which only accepts UTF-8; --set values are raw bytes,
  // and a TOML file cannot hold invalid UTF-8, so those are left out of this check.)
  const std::string printed = wsbridge::ToToml(*config);
  bool utf8 = true;
  for (const std::string& s : sets) utf8 = utf8 && ValidUtf8(s);
  if (!utf8) return 0;
  auto again = wsbridge::LoadConfigFromString(printed, {}, {});
  if (!again.ok()) {
    std::fprintf(stderr, "printed config does not load: %s\n---\n%s---\n",
                 again.status().ToString().c_str(), printed.c_str());
    std::abort();
  }
  wsbridge::Config reprinted = *again;
  reprinted.sources = config->sources;  // sources are "file" now: compare the values only
  const std::string second = wsbridge::ToToml(reprinted);
  if (second != printed) {
    std::fprintf(stderr, "printed config changes when loaded again:\n%s---\n%s---\n",
                 printed.c_str(), second.c_str());
    std::abort();
  }
  return 0;
}
