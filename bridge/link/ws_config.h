// websocketpp client configurations for the upstream link (ws:// and wss://).
//
// They differ from websocketpp's stock client configs in these ways:
// - The random source for the per-frame masking key. The stock one calls std::random_device for
//   every outgoing frame (~23 µs here), which caps sends near 40 k frames/s. RFC 6455 §5.3 asks
//   for a strong source, so this one still draws from the kernel CSPRNG (getrandom), but 1 KiB
//   at a time.
// - The message manager (RecyclingMessages, ws_recycling.h): received messages and their payload
//   buffers are reused instead of allocated for every frame.
// - UTF-8 validation of received text messages (RFC 6455 §8.1). websocketpp checks each byte
//   with a state machine as it arrives, ~3.5 ns a byte: for a 4 KiB message that was half of
//   the I/O thread's time. For these two configurations the whole message is checked once it
//   is complete, with simdjson's SIMD validator; an invalid one still fails the connection
//   with 1007, as before (see the specializations at the end; tests/unit/ws_config_test.cc).
// - The processor's get_message() hands the finished message over by move (a specialization at
//   the end, like the UTF-8 check).
// - permessage-deflate (RFC 7692) is StrictPermessageDeflate (permessage_deflate.h): offered
//   when upstream.permessage_deflate is on, negotiated strictly, and bounded on the inflated
//   size (max_message_size) by the payload specializations at the end.
// - The payload bytes of every frame as it came off the wire (before inflation) are counted
//   per thread (WirePayloadBytes), for wsbridge_wire_bytes_in_total.
#pragma once

#include <simdjson.h>
#include <sys/random.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <websocketpp/config/asio_client.hpp>
#include <websocketpp/config/asio_no_tls_client.hpp>
#include <websocketpp/processors/hybi13.hpp>

#include "bridge/link/permessage_deflate.h"
#include "bridge/link/ws_recycling.h"

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
  typedef websocketpp::message_buffer::message<RecyclingMessages> message_type;
  typedef RecyclingMessages<message_type> con_msg_manager_type;
  typedef websocketpp::message_buffer::alloc::endpoint_msg_manager<con_msg_manager_type>
      endpoint_msg_manager_type;
  static const size_t connection_read_buffer_size = 65536;
  typedef LongTransportTimeouts<typename base::transport_config> transport_config;
  typedef websocketpp::transport::asio::endpoint<transport_config> transport_type;
  typedef StrictPermessageDeflate permessage_deflate_type;
};

using WsClientConfig = ClientConfig<websocketpp::config::asio_client>;
using WssClientConfig = ClientConfig<websocketpp::config::asio_tls_client>;

namespace ws_detail {

// Payload bytes received on this thread's upstream connections, as on the wire (compressed
// ones before inflation). The link reads it on its I/O thread.
inline uint64_t& WirePayloadBytes() {
  thread_local uint64_t bytes = 0;
  return bytes;
}

// hybi13::process_payload_bytes without the per-byte UTF-8 state machine: unmask, then append
// (inflating, bounded by max_size, when permessage-deflate is on), as websocketpp 0.8.2 does
// otherwise.
template <typename Header, typename MsgMetadata>
size_t AppendPayload(const Header& basic_header, MsgMetadata& msg,
                     StrictPermessageDeflate& deflate, size_t max_size, size_t& bytes_needed,
                     uint8_t* buf, size_t len, websocketpp::lib::error_code& ec) {
  namespace frame = websocketpp::frame;
  if (frame::get_masked(basic_header)) {
    msg.prepared_key = frame::byte_mask_circ(buf, len, msg.prepared_key);
  }
  WirePayloadBytes() += len;
  std::string& out = msg.msg_ptr->get_raw_payload();
  if (deflate.is_enabled() && msg.msg_ptr->get_compressed()) {
    ec = deflate.decompress(buf, len, out, max_size);
    if (ec) return 0;
  } else {
    out.append(reinterpret_cast<char*>(buf), len);
  }
  bytes_needed -= len;
  return len;
}

// hybi13::finalize_message, with the UTF-8 check over the whole text message.
template <typename MsgMetadata>
websocketpp::lib::error_code FinishMessage(MsgMetadata& msg, StrictPermessageDeflate& deflate,
                                           size_t max_size) {
  std::string& out = msg.msg_ptr->get_raw_payload();
  if (deflate.is_enabled() && msg.msg_ptr->get_compressed()) {
    websocketpp::lib::error_code ec = deflate.finish(out, max_size);
    if (ec) return ec;
  }
  if (msg.msg_ptr->get_opcode() == websocketpp::frame::opcode::TEXT &&
      !simdjson::validate_utf8(out.data(), out.size())) {
    return websocketpp::processor::error::make_error_code(
        websocketpp::processor::error::invalid_utf8);
  }
  return {};
}

}  // namespace ws_detail
}  // namespace wsbridge

// Explicit specializations for our two configurations only (declared here, before any use):
// the whole-message UTF-8 check above, and get_message() handing the finished message over by
// move (websocketpp 0.8.2 copies the shared_ptr, then resets the original: two atomic
// reference-count operations per message for nothing).
#define WSBRIDGE_PROCESSOR_SPECIALIZATIONS(Config)                                              \
  template <>                                                                                   \
  inline size_t websocketpp::processor::hybi13<Config>::process_payload_bytes(                 \
      uint8_t* buf, size_t len, lib::error_code& ec) {                                          \
    return wsbridge::ws_detail::AppendPayload(m_basic_header, *m_current_msg,                   \
                                              m_permessage_deflate, this->m_max_message_size,   \
                                              m_bytes_needed, buf, len, ec);                    \
  }                                                                                             \
  template <>                                                                                   \
  inline websocketpp::lib::error_code                                                          \
  websocketpp::processor::hybi13<Config>::finalize_message() {                                 \
    lib::error_code ec = wsbridge::ws_detail::FinishMessage(*m_current_msg, m_permessage_deflate,  \
                                                            this->m_max_message_size);          \
    if (!ec) m_state = READY;                                                                   \
    return ec;                                                                                  \
  }                                                                                             \
  template <>                                                                                   \
  inline websocketpp::processor::hybi13<Config>::message_ptr                                   \
  websocketpp::processor::hybi13<Config>::get_message() {                                      \
    if (!ready()) return message_ptr();                                                         \
    message_ptr ret = std::move(m_current_msg->msg_ptr); /* m_control_msg's or m_data_msg's */  \
    this->reset_headers();                                                                      \
    return ret;                                                                                 \
  }
WSBRIDGE_PROCESSOR_SPECIALIZATIONS(wsbridge::WsClientConfig)
WSBRIDGE_PROCESSOR_SPECIALIZATIONS(wsbridge::WssClientConfig)
#undef WSBRIDGE_PROCESSOR_SPECIALIZATIONS
