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

// Untrusted text (a server's close reason or error message) as one printable log line: control
// characters become spaces; past `max` bytes it is cut on a UTF-8 character boundary and ends
// in "...".
inline std::string OneLine(std::string_view text, size_t max = 120) {
  size_t n = text.size();
  if (n > max) {
    n = max;
    while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  }
  std::string out(text.substr(0, n));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  if (n < text.size()) out += "...";
  return out;
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
