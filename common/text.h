// Small string helpers shared by the daemon's parts. Pure functions; any thread.
#pragma once

#include <algorithm>
#include <cctype>
#include <string>

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

}  // namespace wsbridge
