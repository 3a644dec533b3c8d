// The upstream client configuration's own UTF-8 check (bridge/link/ws_config.h): text messages are
// validated whole once complete, instead of byte by byte. Real websocketpp client and server
// over loopback TCP; the server sends hand-built frames, so it can send what a conforming
// sender would refuse to (invalid UTF-8, a code point split across fragments).
#include "bridge/link/ws_config.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include <websocketpp/client.hpp>
#include <websocketpp/config/asio_no_tls.hpp>
#include <websocketpp/server.hpp>

namespace wsbridge {
namespace {

using Server = websocketpp::server<websocketpp::config::asio>;
using Client = websocketpp::client<WsClientConfig>;
using Message = websocketpp::config::asio::message_type;
using Frame = std::pair<websocketpp::frame::opcode::value, bool>;  // opcode, fin

// A server that sends `frames` (payload, opcode, fin) to each client as it opens, as prepared
// frames: websocketpp does not check the UTF-8 of those.
class FrameServer {
 public:
  explicit FrameServer(std::vector<std::pair<std::string, Frame>> frames)
      : frames_(std::move(frames)) {
    server_.clear_access_channels(websocketpp::log::alevel::all);
    server_.clear_error_channels(websocketpp::log::elevel::all);
    server_.init_asio();
    server_.set_open_handler([this](websocketpp::connection_hdl h) { SendAll(h); });
    websocketpp::lib::error_code ec;
    server_.listen(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0), ec);
    server_.start_accept(ec);
    port_ = server_.get_local_endpoint(ec).port();
    thread_ = std::thread([this] { server_.run(); });
  }
  ~FrameServer() {
    asio::post(server_.get_io_service(), [this] { server_.get_io_service().stop(); });
    thread_.join();
  }
  int port() const { return port_; }

 private:
  void SendAll(websocketpp::connection_hdl h) {
    namespace frame = websocketpp::frame;
    auto con = server_.get_con_from_hdl(h);
    for (const auto& [payload, f] : frames_) {
      auto m = std::make_shared<Message>(Message::con_msg_man_ptr(),
                                                      f.first, 0);
      m->get_raw_payload() = payload;
      m->set_header(frame::prepare_header(frame::basic_header(f.first, payload.size(), f.second,
                                                              false),
                                          frame::extended_header(payload.size())));
      m->set_prepared(true);
      con->send(m);
    }
  }

  std::vector<std::pair<std::string, Frame>> frames_;
  Server server_;
  int port_ = 0;
  std::thread thread_;
};

struct Received {
  std::vector<std::string> messages;
  websocketpp::close::status::value local_close = 0;
};

// Connects with the bridge's client configuration and reads until the connection ends.
Received ReadAll(int port) {
  Client c;
  c.clear_access_channels(websocketpp::log::alevel::all);
  c.clear_error_channels(websocketpp::log::elevel::all);
  c.init_asio();
  Received out;
  c.set_message_handler([&](websocketpp::connection_hdl, Client::message_ptr m) {
    out.messages.push_back(m->get_payload());
  });
  c.set_close_handler([&](websocketpp::connection_hdl h) {
    out.local_close = c.get_con_from_hdl(h)->get_local_close_code();
  });
  websocketpp::lib::error_code ec;
  auto con = c.get_connection("ws://127.0.0.1:" + std::to_string(port) + "/", ec);
  EXPECT_FALSE(ec) << ec.message();
  c.connect(con);
  c.run();
  return out;
}

constexpr auto kText = websocketpp::frame::opcode::text;
constexpr auto kContinuation = websocketpp::frame::opcode::continuation;

TEST(WholeMessageUtf8, ValidTextPassesEvenWhenACodePointSpansFragments) {
  std::string big;
  while (big.size() < 4096) big += "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 ";  // é € 😀
  FrameServer server({{"h\xc3", {kText, false}},       // é split: first byte here,
                      {"\xa9llo", {kContinuation, true}},  // second byte here
                      {big, {kText, true}},
                      {"bye", {kText, true}},
                      {"", {websocketpp::frame::opcode::close, true}}});
  Received r = ReadAll(server.port());
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[0], "h\xc3\xa9llo");
  EXPECT_EQ(r.messages[1], big);
  EXPECT_EQ(r.messages[2], "bye");
}

TEST(WholeMessageUtf8, InvalidTextFailsTheConnectionWith1007) {
  FrameServer server({{"first", {kText, true}},
                      {"bad \xff\xfe here", {kText, true}},
                      {"never delivered", {kText, true}}});
  Received r = ReadAll(server.port());
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0], "first");
  EXPECT_EQ(r.local_close, websocketpp::close::status::invalid_payload);  // 1007
}

TEST(WholeMessageUtf8, TruncatedSequenceAtTheEndIsInvalid) {
  FrameServer server({{"ends mid code point \xe2\x82", {kText, true}}});
  Received r = ReadAll(server.port());
  EXPECT_TRUE(r.messages.empty());
  EXPECT_EQ(r.local_close, websocketpp::close::status::invalid_payload);
}

TEST(WholeMessageUtf8, BinaryIsNotChecked) {
  FrameServer server({{std::string("\xff\xfe\x00\x01", 4), {websocketpp::frame::opcode::binary, true}},
                      {"", {websocketpp::frame::opcode::close, true}}});
  Received r = ReadAll(server.port());
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0], std::string("\xff\xfe\x00\x01", 4));
}

}  // namespace
}  // namespace wsbridge
