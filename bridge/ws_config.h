// websocketpp client configurations for the upstream link (ws:// and wss://).
//
// They differ from websocketpp's stock client configs in one way: the random source for the
// per-frame masking key. The stock one calls std::random_device for every outgoing frame
// (~23 µs here), which caps sends near 40 k frames/s. RFC 6455 §5.3 asks for a strong source,
// so this one still draws from the kernel CSPRNG (getrandom), but 1 KiB at a time.
#pragma once

#include <sys/random.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <websocketpp/config/asio_client.hpp>
#include <websocketpp/config/asio_no_tls_client.hpp>

namespace wsbridge {

// Buffered getrandom(): each thread keeps its own buffer, so no lock is needed.
template <typename IntType, typename Concurrency>
class BufferedKernelRandom {
 public:
  IntType operator()() {
    thread_local Buffer buf;
    return buf.Next();
  }

 private:
  struct Buffer {
    unsigned char bytes[1024];
    size_t pos = sizeof bytes;
    IntType Next() {
      if (pos + sizeof(IntType) > sizeof bytes) Refill();
      IntType v;
      std::memcpy(&v, bytes + pos, sizeof v);
      pos += sizeof v;
      return v;
    }
    void Refill() {
      size_t got = 0;
      while (got < sizeof bytes) {
        ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
        if (n > 0) got += static_cast<size_t>(n);
      }
      pos = 0;
    }
  };
};

// websocketpp's transport timeouts (DNS, TCP connect, TLS handshake: 5 s each by default) are
// raised out of the way: upstream.connect_timeout_ms, enforced by the ConnectionPolicy, is the
// one bound on TCP + TLS + handshake.
template <typename BaseTransportConfig>
struct LongTransportTimeouts : public BaseTransportConfig {
  static const long timeout_dns_resolve = 600000;
  static const long timeout_connect = 600000;
  static const long timeout_proxy = 600000;
  static const long timeout_socket_pre_init = 600000;
  static const long timeout_socket_post_init = 600000;
};

template <typename Base>
struct ClientConfig : public Base {
  typedef ClientConfig type;
  typedef Base base;
  typedef BufferedKernelRandom<uint32_t, typename base::concurrency_type> rng_type;
  static const size_t connection_read_buffer_size = 65536;
  typedef LongTransportTimeouts<typename base::transport_config> transport_config;
  typedef websocketpp::transport::asio::endpoint<transport_config> transport_type;
};

using WsClientConfig = ClientConfig<websocketpp::config::asio_client>;
using WssClientConfig = ClientConfig<websocketpp::config::asio_tls_client>;

}  // namespace wsbridge
