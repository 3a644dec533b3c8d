// HTTP CONNECT proxy settings for the upstream link: upstream.proxy, else the conventional
// HTTPS_PROXY / HTTP_PROXY / ALL_PROXY variables minus NO_PROXY, and how websocketpp reports a
// refused tunnel. Pure functions (they read the environment, nothing else); any thread.
#pragma once

#include <optional>
#include <string>

#include <websocketpp/uri.hpp>

#include "bridge/config.h"
#include "common/status.h"

namespace wsbridge {

// Where and how to tunnel. The credentials are kept apart from the URL handed to websocketpp,
// whose URI parser does not understand user:pass@, and never appear in a message.
struct ProxySettings {
  std::string url;      // "http://host:port", for connection::set_proxy
  std::string display;  // "host:port", for logs and failure reasons
  std::string user;     // percent-decoded; "": no Proxy-Authorization
  std::string pass;
  std::string source;  // "upstream.proxy" or the environment variable it came from
};

// "http://[user:pass@]host[:port][/]"; the scheme may be left out (as in many HTTP_PROXY
// values). Messages name `source`, never the credentials.
StatusOr<ProxySettings> ParseProxy(const std::string& value, const std::string& source);

// NO_PROXY as curl and Go read it (see proxy.cc).
bool NoProxyMatches(const std::string& no_proxy, const std::string& host, const std::string& port);

// upstream.proxy when set; when it is unset (not explicitly set to ""), the conventional
// variables for the upstream's scheme, minus NO_PROXY. nullopt: connect directly.
StatusOr<std::optional<ProxySettings>> ResolveProxy(const Config& config,
                                                    const websocketpp::uri& upstream);

// websocketpp reports a refused CONNECT only as transport error proxy_failed; the status is in
// the line it writes to its error log, which the link captures: "Proxy connection error: 407
// (Proxy Authentication Required)" -> 407, "Proxy Authentication Required" (the last such line).
bool ParseProxyRefusal(const std::string& elog, int* status, std::string* reason);

// "asio handle_proxy_read error: End of file" and the like: why the tunnel could not be set up.
std::string ProxyIoError(const std::string& elog);

}  // namespace wsbridge
