#include "bridge/link/proxy.h"

#include <arpa/inet.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <regex>
#include <sstream>
#include <vector>

#include "common/text.h"

namespace wsbridge {
namespace {
std::string PercentDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Splits "host:port", "[v6]:port" or "host" (port "" then). False when malformed.
bool SplitHostPort(const std::string& v, std::string* host, std::string* port) {
  port->clear();
  if (!v.empty() && v[0] == '[') {
    size_t close = v.find(']');
    if (close == std::string::npos) return false;
    *host = v.substr(0, close + 1);
    std::string rest = v.substr(close + 1);
    if (rest.empty()) return true;
    if (rest[0] != ':') return false;
    *port = rest.substr(1);
    return true;
  }
  size_t colon = v.rfind(':');
  if (colon == std::string::npos) {
    *host = v;
    return true;
  }
  *host = v.substr(0, colon);
  *port = v.substr(colon + 1);
  return true;
}

}  // namespace

StatusOr<ProxySettings> ParseProxy(const std::string& value, const std::string& source) {
  std::string v = Trim(value);
  size_t scheme_end = v.find("://");
  if (scheme_end != std::string::npos) {
    std::string scheme = Lower(v.substr(0, scheme_end));
    if (scheme != "http") {
      return Status::InvalidArgument(source + ": only http:// (HTTP CONNECT) proxies are "
                                     "supported, got " + scheme + "://");
    }
    v = v.substr(scheme_end + 3);
  }
  size_t slash = v.find_first_of("/?#");
  if (slash != std::string::npos) v.resize(slash);
  ProxySettings p;
  p.source = source;
  size_t at = v.rfind('@');
  if (at != std::string::npos) {
    std::string info = v.substr(0, at);
    v = v.substr(at + 1);
    size_t colon = info.find(':');
    p.user = PercentDecode(info.substr(0, colon));
    if (colon != std::string::npos) p.pass = PercentDecode(info.substr(colon + 1));
  }
  std::string host, port;
  if (v.empty() || !SplitHostPort(v, &host, &port) || host.empty() || host == "[]") {
    return Status::InvalidArgument(source + ": expected http://[user:pass@]host:port");
  }
  if (port.empty()) port = "80";
  char* end = nullptr;
  long n = std::strtol(port.c_str(), &end, 10);
  if (*end != '\0' || n < 1 || n > 65535) {
    return Status::InvalidArgument(source + ": bad proxy port \"" + port + "\"");
  }
  p.display = host + ":" + port;
  p.url = "http://" + p.display;
  return p;
}

namespace {

bool ParseIpv4(const std::string& s, uint32_t* out) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  *out = ntohl(a.s_addr);
  return true;
}

}  // namespace

// NO_PROXY as curl and Go read it: comma-separated entries; "*" matches everything; a name
// matches itself and its subdomains (a leading "." or "*." is optional); an entry may carry
// ":port"; IPv4 entries may be CIDR blocks ("10.0.0.0/8").
bool NoProxyMatches(const std::string& no_proxy, const std::string& raw_host,
                    const std::string& port) {
  std::string host = Lower(raw_host);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::stringstream in(no_proxy);
  std::string entry;
  while (std::getline(in, entry, ',')) {
    entry = Lower(Trim(entry));
    if (entry.empty()) continue;
    if (entry == "*") return true;
    std::string name = entry, eport;
    if (std::count(entry.begin(), entry.end(), ':') == 1 || entry[0] == '[') {
      if (!SplitHostPort(entry, &name, &eport)) continue;
    }
    if (name.size() > 2 && name.front() == '[' && name.back() == ']') {
      name = name.substr(1, name.size() - 2);
    }
    if (!eport.empty() && eport != port) continue;
    size_t slash = name.find('/');
    if (slash != std::string::npos) {
      uint32_t net = 0, ip = 0;
      int bits = std::atoi(name.c_str() + slash + 1);
      if (ParseIpv4(name.substr(0, slash), &net) && ParseIpv4(host, &ip) && bits >= 0 &&
          bits <= 32) {
        uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
        if ((net & mask) == (ip & mask)) return true;
      }
      continue;
    }
    if (name.rfind("*.", 0) == 0) name = name.substr(1);
    if (!name.empty() && name[0] == '.') name = name.substr(1);
    if (name.empty()) continue;
    if (host == name) return true;
    if (host.size() > name.size() && host.compare(host.size() - name.size(), name.size(), name) == 0 &&
        host[host.size() - name.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

namespace {

std::string GetEnv(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

}  // namespace

// upstream.proxy when set; when it is unset (not explicitly set to ""), the conventional
// variables: https_proxy / HTTPS_PROXY for wss://, http_proxy / HTTP_PROXY for ws://, then
// all_proxy / ALL_PROXY (lower case first, as curl), minus NO_PROXY / no_proxy.
StatusOr<std::optional<ProxySettings>> ResolveProxy(const Config& config,
                                                    const websocketpp::uri& upstream) {
  if (!config.upstream.proxy.empty()) {
    auto p = ParseProxy(config.upstream.proxy, "upstream.proxy");
    if (!p.ok()) return p.status();
    return std::optional<ProxySettings>(*p);
  }
  auto src = config.sources.find("upstream.proxy");
  if (src != config.sources.end() && src->second != "default") {
    return std::optional<ProxySettings>();  // upstream.proxy = "" given on purpose: direct
  }
  std::vector<const char*> vars;
  if (upstream.get_secure()) {
    vars = {"https_proxy", "HTTPS_PROXY"};
  } else {
    vars = {"http_proxy", "HTTP_PROXY"};
  }
  vars.push_back("all_proxy");
  vars.push_back("ALL_PROXY");
  for (const char* var : vars) {
    std::string value = GetEnv(var);
    if (value.empty()) continue;
    std::string no_proxy = GetEnv("no_proxy");
    if (no_proxy.empty()) no_proxy = GetEnv("NO_PROXY");
    if (NoProxyMatches(no_proxy, upstream.get_host(), upstream.get_port_str())) {
      spdlog::info("upstream: {} is set, but NO_PROXY covers {}: connecting directly", var,
                   upstream.get_host());
      return std::optional<ProxySettings>();
    }
    auto p = ParseProxy(value, var);
    if (!p.ok()) return p.status();
    return std::optional<ProxySettings>(*p);
  }
  return std::optional<ProxySettings>();
}

// "Proxy connection error: 407 (Proxy Authentication Required)": websocketpp reports a refused
// CONNECT only as transport error proxy_failed; the status is in the line it writes to the
// error log (elevel::info), which the link captures for this.
bool ParseProxyRefusal(const std::string& elog, int* status, std::string* reason) {
  static const std::regex rx(R"(Proxy connection error: (\d+) \(([^)\n]*)\))");
  std::smatch m;
  std::string::const_iterator begin = elog.begin();
  bool found = false;
  while (std::regex_search(begin, elog.end(), m, rx)) {  // the last one
    *status = std::stoi(m[1]);
    *reason = m[2];
    found = true;
    begin = m[0].second;
  }
  return found;
}

// "asio handle_proxy_read error: End of file" and the like: why the tunnel could not be set up.
std::string ProxyIoError(const std::string& elog) {
  static const std::regex rx(R"(handle_proxy_\w+ error: ([^\n]*))");
  std::smatch m;
  if (std::regex_search(elog, m, rx)) return m[1];
  return "";
}

}  // namespace wsbridge
