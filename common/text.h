// Small string helpers shared by the daemon's parts. Pure functions; any thread.
#pragma once

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

namespace wsbridge {

inline std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Without leading and trailing spaces, tabs, CR and LF.
inline std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// A dotted JSON field path as the configuration writes one ("data.seq", "1.seq"): no empty
// segment, none of the characters that would make it ambiguous in a key=value setting.
inline bool IsDottedPath(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.' || s.find("..") != std::string_view::npos) {
    return false;
  }
  return s.find_first_of(" \t\r\n\"{}[],:=") == std::string_view::npos;
}

}  // namespace wsbridge
