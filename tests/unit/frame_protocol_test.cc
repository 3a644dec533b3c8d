// Tests for FrameProtocol (bridge/protocol/frame_protocol.h): messages in, outcomes out, on
// byte strings. Decompression (gzip, zlib, raw deflate; corrupt, truncated, too big), reply
// rules (raw JSON fidelity of {{path}}), json framing with pongs/acks/seq/topic, and Engine.IO
// v4 / socket.io v4 framing (handshake, namespaces, ack ids, malformed packets).
#include "bridge/protocol/frame_protocol.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <string>
#include <vector>

namespace wsbridge {
namespace {

using Kind = FrameOutcome::Kind;

std::unique_ptr<FrameProtocol> Make(FrameProtocolOptions o) {
  auto fp = FrameProtocol::Create(std::move(o));
  EXPECT_TRUE(fp.ok()) << fp.status().ToString();
  if (!fp.ok()) return nullptr;
  return std::move(fp).value();
}

std::string CreateError(FrameProtocolOptions o) {
  auto fp = FrameProtocol::Create(std::move(o));
  EXPECT_FALSE(fp.ok());
  return fp.ok() ? "" : fp.status().message();
}

ReplyRule FieldRule(std::string field, std::string reply, bool consume = true) {
  ReplyRule r;
  r.field = std::move(field);
  r.reply = std::move(reply);
  r.consume = consume;
  return r;
}

ReplyRule FieldEqualsRule(std::string field, std::string equals, std::string reply) {
  ReplyRule r = FieldRule(std::move(field), std::move(reply));
  r.equals = std::move(equals);
  return r;
}

ReplyRule TextRule(std::string text, std::string reply) {
  ReplyRule r;
  r.text = std::move(text);
  r.reply = std::move(reply);
  return r;
}

// `data` compressed with zlib: window_bits 31 gzip, 15 zlib, -15 raw deflate.
std::string Compress(const std::string& data, int window_bits) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, window_bits, 8,
                         Z_DEFAULT_STRATEGY),
            Z_OK);
  std::string out(deflateBound(&zs, data.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}
std::string Gzip(const std::string& data) { return Compress(data, 31); }
std::string Zlib(const std::string& data) { return Compress(data, 15); }
std::string Deflate(const std::string& data) { return Compress(data, -15); }

// One message through `fp`; *payload holds what a kData outcome journals.
FrameOutcome Text(FrameProtocol& fp, std::string text, std::string* payload = nullptr) {
  std::string p = std::move(text);
  FrameOutcome out = fp.OnMessage(false, &p);
  if (payload != nullptr) *payload = std::move(p);
  return out;
}
FrameOutcome Binary(FrameProtocol& fp, std::string bytes, std::string* payload = nullptr) {
  std::string p = std::move(bytes);
  FrameOutcome out = fp.OnMessage(true, &p);
  if (payload != nullptr) *payload = std::move(p);
  return out;
}

std::vector<std::string> Sent(std::initializer_list<const char*> texts) {
  return std::vector<std::string>(texts.begin(), texts.end());
}

// ---------------------------------------------------------------------------------------------
// json framing

TEST(FrameProtocolJson, DataKeepsThePayloadAndReadsSeqAndTopic) {
  auto fp = Make({});
  EXPECT_TRUE(fp->OnConnectionOpen());
  std::string payload;
  auto out = Text(*fp, R"({"seq":5,"topic":"btc","data":{"p":1}})", &payload);
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_FALSE(out.binary);
  EXPECT_EQ(payload, R"({"seq":5,"topic":"btc","data":{"p":1}})");
  ASSERT_TRUE(out.upstream_seq);
  EXPECT_EQ(*out.upstream_seq, 5u);
  EXPECT_EQ(out.topic, "btc");
  EXPECT_TRUE(out.send.empty());
  EXPECT_EQ(out.replies, 0u);
  EXPECT_TRUE(out.warning.empty());
  EXPECT_FALSE(out.malformed_packet || out.inflate_failed || out.reply_failed);

  out = Text(*fp, "not json", &payload);
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_FALSE(out.upstream_seq);
  EXPECT_EQ(payload, "not json");

  // Binary messages without protocol.decompress: data as received, not inspected.
  out = Binary(*fp, std::string("{\"seq\":9}\xff", 10), &payload);
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_TRUE(out.binary);
  EXPECT_FALSE(out.upstream_seq);
  EXPECT_EQ(payload, std::string("{\"seq\":9}\xff", 10));
}

TEST(FrameProtocolJson, AppPongAndAck) {
  FrameProtocolOptions o;
  o.inspector.app_pong = "type=pong";
  o.inspector.ack_match = "type=ack";
  auto fp = Make(o);
  EXPECT_EQ(Text(*fp, R"({"type":"pong"})").kind, Kind::kAppPong);
  auto out = Text(*fp, R"({"type":"ack","id":"m-1"})");
  EXPECT_EQ(out.kind, Kind::kAck);
  EXPECT_EQ(out.ack_id, "m-1");
  EXPECT_EQ(Text(*fp, R"({"type":"data","seq":1})").kind, Kind::kData);
}

TEST(FrameProtocolJson, ActiveOnlyWhenSomethingReadsFrames) {
  FrameProtocolOptions o;
  o.inspector.seq_field = "";
  o.inspector.topic_field = "";
  EXPECT_FALSE(Make(o)->active());
  EXPECT_TRUE(Make({})->active());  // seq and topic by default
  FrameProtocolOptions r = o;
  r.replies.push_back(TextRule("ping", "pong"));
  EXPECT_TRUE(Make(r)->active());
  FrameProtocolOptions d = o;
  d.decompress = Compression::kAuto;
  EXPECT_TRUE(Make(d)->active());
  FrameProtocolOptions e = o;
  e.framing = Framing::kEngineIo;
  EXPECT_TRUE(Make(e)->active());
}

TEST(FrameProtocolJson, FrameAndCheckOutboundPassEverything) {
  auto fp = Make({});
  EXPECT_EQ(fp->Frame(R"({"a":1})"), R"({"a":1})");
  EXPECT_TRUE(fp->CheckOutbound("anything", false).ok());
  EXPECT_TRUE(fp->CheckOutbound("\x01\x02", true).ok());
}

// ---------------------------------------------------------------------------------------------
// protocol.replies

// HTX: gzip-compressed binary frames; the server's {"ping":N} must be answered {"pong":N}.
TEST(FrameProtocolReplies, HtxGzipPing) {
  FrameProtocolOptions o;
  o.decompress = Compression::kGzip;
  o.inspector.seq_field = "";
  o.inspector.topic_field = "ch";
  o.replies.push_back(FieldRule("ping", R"({"pong":{{ping}}})"));
  auto fp = Make(o);
  auto out = Binary(*fp, Gzip(R"({"ping":1700000000123})"));
  EXPECT_EQ(out.kind, Kind::kConsumed);
  EXPECT_EQ(out.send, Sent({R"({"pong":1700000000123})"}));
  EXPECT_EQ(out.replies, 1u);
  EXPECT_FALSE(out.reply_failed);

  std::string payload;
  const std::string tick = R"({"ch":"market.btcusdt.trade.detail","ts":1700000000456,"tick":{}})";
  out = Binary(*fp, Gzip(tick), &payload);
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_FALSE(out.binary);  // inflated to UTF-8 text
  EXPECT_EQ(payload, tick);
  EXPECT_EQ(out.topic, "market.btcusdt.trade.detail");
  EXPECT_TRUE(out.send.empty());
}

// Deribit: {"method":"heartbeat","params":{"type":"test_request"}} must be answered with a
// public/test call; plain heartbeats are data. A JSON-RPC server ping with an id is answered
// with that id, whatever its type.
TEST(FrameProtocolReplies, DeribitTestRequestAndJsonRpcPing) {
  FrameProtocolOptions o;
  o.replies.push_back(FieldEqualsRule("params.type", "test_request",
                                      R"({"jsonrpc":"2.0","method":"public/test","params":{}})"));
  o.replies.push_back(FieldEqualsRule("method", "ping",
                                      R"({"jsonrpc":"2.0","id":{{id}},"result":"pong"})"));
  auto fp = Make(o);
  auto out = Text(
      *fp, R"({"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}})");
  EXPECT_EQ(out.kind, Kind::kConsumed);
  EXPECT_EQ(out.send, Sent({R"({"jsonrpc":"2.0","method":"public/test","params":{}})"}));

  out = Text(*fp, R"({"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}})");
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_TRUE(out.send.empty());

  out = Text(*fp, R"({"jsonrpc":"2.0","id":"a-7","method":"ping"})");
  EXPECT_EQ(out.send, Sent({R"({"jsonrpc":"2.0","id":"a-7","result":"pong"})"}));
  out = Text(*fp, R"({"jsonrpc":"2.0","id":90071992547409931,"method":"ping"})");
  EXPECT_EQ(out.send, Sent({R"({"jsonrpc":"2.0","id":90071992547409931,"result":"pong"})"}));
  // equals compares integers and booleans as written, strings unquoted.
  FrameProtocolOptions n;
  n.replies.push_back(FieldEqualsRule("op", "7", "a"));
  n.replies.push_back(FieldEqualsRule("ok", "true", "b"));
  auto fn = Make(n);
  EXPECT_EQ(Text(*fn, R"({"op":7})").send, Sent({"a"}));
  EXPECT_EQ(Text(*fn, R"({"op":"7"})").send, Sent({"a"}));
  EXPECT_EQ(Text(*fn, R"({"op":7.0})").kind, Kind::kData);
  EXPECT_EQ(Text(*fn, R"({"ok":true})").send, Sent({"b"}));
}

// {{path}} is the value's JSON text exactly as the frame has it: no re-serialization.
TEST(FrameProtocolReplies, RawJsonFidelity) {
  FrameProtocolOptions o;
  o.replies.push_back(FieldRule(
      "p", R"([{{p.big}},{{ p.f }},{{p.e}},{{p.s}},{{p.o}},{{p.neg}},{{p.list.2}},{{p.n}},{{p.t}}])"));
  auto fp = Make(o);
  const std::string frame =
      R"({"p":{"big":18446744073709551615,"f":1.10,"e":-2.5E+07,"s":"q\"\\\u00e9\n/","o":{ "x" : [1, 2 ,{"y":null}] },)"
      R"("neg":-0,"list":[10,20,[3 , 4]],"n":null,"t":true}})";
  auto out = Text(*fp, frame);
  ASSERT_EQ(out.send.size(), 1u) << out.warning;
  EXPECT_EQ(out.send[0],
            R"([18446744073709551615,1.10,-2.5E+07,"q\"\\\u00e9\n/",{ "x" : [1, 2 ,{"y":null}] },)"
            R"(-0,[3 , 4],null,true])");
}

TEST(FrameProtocolReplies, TextRuleAndFirstMatchWins) {
  FrameProtocolOptions o;
  o.replies.push_back(TextRule("ping", "pong"));
  o.replies.push_back(FieldRule("ping", "second"));
  o.replies.push_back(FieldRule("ping", "third"));
  auto fp = Make(o);
  EXPECT_EQ(Text(*fp, "ping").send, Sent({"pong"}));
  EXPECT_EQ(Text(*fp, "ping ").kind, Kind::kData);  // whole text only
  EXPECT_EQ(Text(*fp, R"({"ping":1})").send, Sent({"second"}));
}

TEST(FrameProtocolReplies, NotConsumedContinuesAsData) {
  FrameProtocolOptions o;
  o.replies.push_back(FieldRule("hb", R"({"hb_ack":{{hb}}})", /*consume=*/false));
  auto fp = Make(o);
  std::string payload;
  auto out = Text(*fp, R"({"hb":3,"seq":12,"topic":"sys"})", &payload);
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_EQ(out.send, Sent({R"({"hb_ack":3})"}));
  EXPECT_EQ(out.replies, 1u);
  EXPECT_EQ(payload, R"({"hb":3,"seq":12,"topic":"sys"})");
  ASSERT_TRUE(out.upstream_seq);
  EXPECT_EQ(*out.upstream_seq, 12u);
  EXPECT_EQ(out.topic, "sys");
}

TEST(FrameProtocolReplies, MissingPathSendsNothingAndWarnsOncePerRule) {
  FrameProtocolOptions o;
  o.replies.push_back(FieldRule("ping", R"({"pong":{{ping}},"id":{{id}}})"));
  o.replies.push_back(FieldRule("hb", "{{hb.id}}", /*consume=*/false));
  auto fp = Make(o);
  auto out = Text(*fp, R"({"ping":1})");
  EXPECT_EQ(out.kind, Kind::kConsumed);  // consumed per the rule, without a reply
  EXPECT_TRUE(out.send.empty());
  EXPECT_EQ(out.replies, 0u);
  EXPECT_TRUE(out.reply_failed);
  EXPECT_EQ(out.warning,
            "protocol.replies[0]: {{id}} is missing from a matched frame; no reply sent");
  out = Text(*fp, R"({"ping":2})");
  EXPECT_TRUE(out.reply_failed);
  EXPECT_TRUE(out.warning.empty());  // once per rule
  EXPECT_TRUE(fp->OnConnectionOpen());
  EXPECT_TRUE(Text(*fp, R"({"ping":3})").warning.empty());  // for the object's life

  out = Text(*fp, R"({"hb":5,"seq":1})");
  EXPECT_EQ(out.kind, Kind::kData);  // consume = false
  EXPECT_TRUE(out.reply_failed);
  EXPECT_EQ(out.warning,
            "protocol.replies[1]: {{hb.id}} is missing from a matched frame; no reply sent");
  EXPECT_EQ(Text(*fp, R"({"ping":4,"id":"x"})").send, Sent({R"({"pong":4,"id":"x"})"}));
}

TEST(FrameProtocolReplies, CheckedBeforeAppPongAndAck) {
  FrameProtocolOptions o;
  o.inspector.app_pong = "type=ping";
  o.replies.push_back(FieldEqualsRule("type", "ping", R"({"type":"pong"})"));
  auto fp = Make(o);
  auto out = Text(*fp, R"({"type":"ping"})");
  EXPECT_EQ(out.kind, Kind::kConsumed);
  EXPECT_EQ(out.send, Sent({R"({"type":"pong"})"}));
}

TEST(FrameProtocolReplies, CreateErrorsNameTheRule) {
  auto with = [](std::vector<ReplyRule> rules) {
    FrameProtocolOptions o;
    o.replies = std::move(rules);
    return CreateError(o);
  };
  ReplyRule both = TextRule("ping", "pong");
  both.field = "ping";
  EXPECT_EQ(with({TextRule("a", "b"), both}),
            "protocol.replies[1]: needs exactly one of text or field");
  EXPECT_EQ(with({FieldRule("", "pong")}),
            "protocol.replies[0]: needs exactly one of text or field");
  EXPECT_EQ(with({FieldRule("ping", "")}), "protocol.replies[0].reply: must be set");
  EXPECT_EQ(with({FieldRule("ping", R"({"pong":{{ping})")}),
            "protocol.replies[0].reply: unterminated {{");
  EXPECT_EQ(with({FieldRule("ping", "x{{a}}{{b")}),
            "protocol.replies[0].reply: unterminated {{");
  EXPECT_NE(with({FieldRule("ping", "{{}}")}).find("protocol.replies[0].reply: {{}} is not"),
            std::string::npos);
  EXPECT_NE(with({FieldRule("ping", "{{a..b}}")}).find("protocol.replies[0].reply: {{a..b}}"),
            std::string::npos);
  EXPECT_NE(with({FieldRule("a..b", "x")}).find("protocol.replies[0].field:"),
            std::string::npos);
  ReplyRule text_equals = TextRule("ping", "pong");
  text_equals.equals = "x";
  EXPECT_EQ(with({text_equals}), "protocol.replies[0].equals: only with field, not with text");
  // Literal braces that are not a placeholder are fine: JSON objects close with "}}".
  FrameProtocolOptions ok;
  ok.replies.push_back(FieldRule("ping", R"({"a":{"b":{{ping}}}})"));
  auto fp = Make(ok);
  EXPECT_EQ(Text(*fp, R"({"ping":"x"})").send, Sent({R"({"a":{"b":"x"}})"}));
}

// ---------------------------------------------------------------------------------------------
// protocol.decompress

TEST(FrameProtocolDecompress, AutoRecognisesGzipAndZlibAndKeepsTheRest) {
  FrameProtocolOptions o;
  o.decompress = Compression::kAuto;
  auto fp = Make(o);
  const std::string text = R"({"seq":3,"topic":"t"})";
  for (const std::string& wire : {Gzip(text), Zlib(text)}) {
    std::string payload;
    auto out = Binary(*fp, wire, &payload);
    EXPECT_EQ(out.kind, Kind::kData);
    EXPECT_FALSE(out.binary);
    EXPECT_EQ(payload, text);
    ASSERT_TRUE(out.upstream_seq);
    EXPECT_EQ(*out.upstream_seq, 3u);
    EXPECT_FALSE(out.inflate_failed);
  }
  // Not compressed: taken as received, still binary, not inspected.
  std::string payload;
  auto out = Binary(*fp, text, &payload);
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_TRUE(out.binary);
  EXPECT_EQ(payload, text);
  EXPECT_FALSE(out.upstream_seq);
  EXPECT_FALSE(out.inflate_failed);
  // Text messages are never inflated.
  out = Text(*fp, text, &payload);
  EXPECT_EQ(payload, text);
  EXPECT_FALSE(out.binary);
}

TEST(FrameProtocolDecompress, ExplicitFormats) {
  const std::string text = R"({"seq":1})";
  struct Case {
    Compression mode;
    std::string wire;
  };
  for (const Case& c : {Case{Compression::kGzip, Gzip(text)}, Case{Compression::kZlib, Zlib(text)},
                        Case{Compression::kDeflate, Deflate(text)}}) {
    FrameProtocolOptions o;
    o.decompress = c.mode;
    auto fp = Make(o);
    std::string payload;
    auto out = Binary(*fp, c.wire, &payload);
    EXPECT_EQ(out.kind, Kind::kData) << ToString(c.mode);
    EXPECT_EQ(payload, text) << ToString(c.mode);
    EXPECT_FALSE(out.binary);
  }
}

TEST(FrameProtocolDecompress, InflatedBinaryStaysBinary) {
  FrameProtocolOptions o;
  o.decompress = Compression::kGzip;
  auto fp = Make(o);
  const std::string bytes("\x00\xff\xfe\x80 binary", 11);
  std::string payload;
  auto out = Binary(*fp, Gzip(bytes), &payload);
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_TRUE(out.binary);
  EXPECT_EQ(payload, bytes);
}

TEST(FrameProtocolDecompress, CorruptAndTruncatedAreKeptAsReceived) {
  FrameProtocolOptions o;
  o.decompress = Compression::kGzip;
  auto fp = Make(o);
  const std::string gz = Gzip(R"({"seq":1,"data":"some text to compress, some text"})");
  std::string corrupt = gz;
  corrupt[corrupt.size() / 2] ^= 0x5a;
  const std::string truncated = gz.substr(0, gz.size() - 6);
  const std::string wrong_format = Zlib("{}");
  bool first = true;
  for (const std::string& wire : {corrupt, truncated, wrong_format}) {
    std::string payload;
    auto out = Binary(*fp, wire, &payload);
    EXPECT_EQ(out.kind, Kind::kData);
    EXPECT_TRUE(out.binary);
    EXPECT_TRUE(out.inflate_failed);
    EXPECT_EQ(payload, wire);
    EXPECT_EQ(out.warning.empty(), !first) << out.warning;  // once per connection
    if (first) {
      EXPECT_EQ(out.warning.rfind("protocol.decompress: a binary frame failed to inflate", 0), 0u);
    }
    first = false;
  }
  fp->OnConnectionOpen();
  EXPECT_FALSE(Binary(*fp, truncated).warning.empty());
}

TEST(FrameProtocolDecompress, TooBig) {
  FrameProtocolOptions o;
  o.decompress = Compression::kAuto;
  o.max_message_bytes = 1000;
  auto fp = Make(o);
  auto out = Binary(*fp, Gzip(std::string(5000, 'a')));
  EXPECT_EQ(out.kind, Kind::kTooBig);
  EXPECT_EQ(out.reason, "a frame inflated past upstream.max_message_bytes (1000)");
  std::string payload;
  out = Binary(*fp, Zlib(std::string(1000, 'b')), &payload);  // exactly the bound: fine
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_EQ(payload.size(), 1000u);
}

// ---------------------------------------------------------------------------------------------
// engineio framing

FrameProtocolOptions EngineIo(std::string ns = "/", std::string auth = "") {
  FrameProtocolOptions o;
  o.framing = Framing::kEngineIo;
  o.socketio_namespace = std::move(ns);
  o.socketio_auth = std::move(auth);
  o.inspector.seq_field = "1.seq";
  return o;
}

constexpr const char* kOpen =
    R"(0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000})";

TEST(FrameProtocolEngineIo, Handshake) {
  auto fp = Make(EngineIo());
  EXPECT_TRUE(fp->active());
  EXPECT_FALSE(fp->OnConnectionOpen());  // the session opens with kSessionOpen

  auto out = Text(*fp, kOpen);
  EXPECT_EQ(out.kind, Kind::kConsumed);
  EXPECT_EQ(out.send, Sent({"40"}));
  ASSERT_TRUE(out.silence_bound);
  EXPECT_EQ(out.silence_bound->count(), 45000);

  out = Text(*fp, R"(40{"sid":"wZX3oN0bSVIhsaknAAAI"})");
  EXPECT_EQ(out.kind, Kind::kSessionOpen);
  EXPECT_TRUE(out.send.empty());

  out = Text(*fp, "2");
  EXPECT_EQ(out.kind, Kind::kConsumed);
  EXPECT_EQ(out.send, Sent({"3"}));
  EXPECT_EQ(out.replies, 1u);

  EXPECT_EQ(Text(*fp, "3").kind, Kind::kConsumed);
  EXPECT_EQ(Text(*fp, "6").kind, Kind::kConsumed);

  std::string payload;
  out = Text(*fp, R"(42["trade",{"seq":7,"px":"101.5"}])", &payload);
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_EQ(payload, R"(["trade",{"seq":7,"px":"101.5"}])");
  EXPECT_EQ(out.topic, "trade");
  ASSERT_TRUE(out.upstream_seq);
  EXPECT_EQ(*out.upstream_seq, 7u);
  EXPECT_FALSE(out.malformed_packet);

  out = Text(*fp, "41");
  EXPECT_EQ(out.kind, Kind::kLost);
  EXPECT_EQ(out.reason, "socket.io: the server disconnected the namespace");
  out = Text(*fp, "1");
  EXPECT_EQ(out.kind, Kind::kLost);
  EXPECT_FALSE(out.reason.empty());
}

TEST(FrameProtocolEngineIo, ConnectErrorIsFatal) {
  auto fp = Make(EngineIo());
  auto out = Text(*fp, R"(44{"message":"Not authorized","data":{"code":401}})");
  EXPECT_EQ(out.kind, Kind::kFatal);
  EXPECT_EQ(out.reason, "socket.io connect error: Not authorized");
  out = Text(*fp, "44{\"message\":\"bad\\ntoken\"}");
  EXPECT_EQ(out.reason, "socket.io connect error: bad token");  // one line
  out = Text(*fp, R"(44"Invalid namespace")");  // older servers: a bare string
  EXPECT_EQ(out.kind, Kind::kFatal);
  EXPECT_EQ(out.reason, R"(socket.io connect error: "Invalid namespace")");
}

TEST(FrameProtocolEngineIo, MalformedOpenPacketIsLost) {
  auto fp = Make(EngineIo());
  for (const char* open : {"0", "0{}", "0nope", R"(0{"pingInterval":25000})",
                           R"(0{"pingInterval":"25000","pingTimeout":20000})",
                           R"(0{"pingInterval":-1,"pingTimeout":20000})"}) {
    auto out = Text(*fp, open);
    EXPECT_EQ(out.kind, Kind::kLost) << open;
    EXPECT_NE(out.reason.find("engine.io: malformed open packet"), std::string::npos) << open;
    EXPECT_TRUE(out.send.empty());
  }
}

TEST(FrameProtocolEngineIo, NamespaceAndAuth) {
  auto fp = Make(EngineIo("/chat", R"({"token":"abc"})"));
  auto out = Text(*fp, kOpen);
  EXPECT_EQ(out.send, Sent({R"(40/chat,{"token":"abc"})"}));
  EXPECT_EQ(Text(*fp, R"(40{"sid":"root"})").kind, Kind::kConsumed);  // another namespace
  EXPECT_EQ(Text(*fp, R"(40/chat,{"sid":"x"})").kind, Kind::kSessionOpen);
  std::string payload;
  out = Text(*fp, R"(42/chat,["msg",{"seq":2}])", &payload);
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_EQ(payload, R"(["msg",{"seq":2}])");
  EXPECT_EQ(out.topic, "msg");
  EXPECT_EQ(Text(*fp, R"(42["msg",1])").kind, Kind::kConsumed);       // root namespace
  EXPECT_EQ(Text(*fp, R"(42/chatter,["msg",1])").kind, Kind::kConsumed);
  EXPECT_EQ(Text(*fp, "41").kind, Kind::kConsumed);
  EXPECT_EQ(Text(*fp, "41/chat,").kind, Kind::kLost);
  EXPECT_EQ(Text(*fp, "41/chat").kind, Kind::kLost);  // no comma at the end of the packet
  EXPECT_EQ(Text(*fp, R"(44{"message":"other"})").kind, Kind::kConsumed);
  EXPECT_EQ(Text(*fp, R"(44/chat,{"message":"no"})").kind, Kind::kFatal);
  EXPECT_EQ(fp->Frame(R"(["say","hi"])"), R"(42/chat,["say","hi"])");

  auto root = Make(EngineIo("/", R"({"token":"abc"})"));
  EXPECT_EQ(Text(*root, kOpen).send, Sent({R"(40{"token":"abc"})"}));
  EXPECT_EQ(root->Frame(R"(["say","hi"])"), R"(42["say","hi"])");
  EXPECT_EQ(Text(*Make(EngineIo("/chat")), kOpen).send, Sent({"40/chat,"}));
}

TEST(FrameProtocolEngineIo, AckIds) {
  auto fp = Make(EngineIo());
  std::string payload;
  auto out = Text(*fp, R"(4212["ev",{"seq":4}])", &payload);
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_EQ(payload, R"(["ev",{"seq":4}])");
  EXPECT_EQ(out.topic, "ev");
  EXPECT_EQ(Text(*fp, R"(4312["ok"])").kind, Kind::kConsumed);

  auto chat = Make(EngineIo("/chat"));
  out = Text(*chat, R"(42/chat,7["ev",1])", &payload);
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_EQ(payload, R"(["ev",1])");
}

TEST(FrameProtocolEngineIo, MalformedPacketsAreKeptAsData) {
  auto fp = Make(EngineIo());
  fp->OnConnectionOpen();
  for (const char* packet :
       {"", "9", "5", "4", "49", "42", "42{}", "42[]", "42[1,2]", R"(42["ev",)", "42 nope",
        R"(42{"a":["b"]})"}) {
    std::string payload;
    auto out = Text(*fp, packet, &payload);
    EXPECT_EQ(out.kind, Kind::kData) << packet;
    EXPECT_TRUE(out.malformed_packet) << packet;
    EXPECT_EQ(payload, packet);
    EXPECT_TRUE(out.send.empty());
  }
  std::string payload;
  auto out = Text(*fp, R"(451-["file",{"_placeholder":true,"num":0}])", &payload);
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_TRUE(out.malformed_packet);
  EXPECT_EQ(out.warning,
            "socket.io binary attachments are not supported; the packet is journaled as received");
  EXPECT_EQ(payload, R"(451-["file",{"_placeholder":true,"num":0}])");
  out = Binary(*fp, std::string("\x01\x02\x03", 3), &payload);
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_TRUE(out.binary);
  EXPECT_TRUE(out.malformed_packet);
  EXPECT_FALSE(out.warning.empty());
  EXPECT_EQ(payload, std::string("\x01\x02\x03", 3));
}

TEST(FrameProtocolEngineIo, WarnsOncePerKindPerConnection) {
  auto fp = Make(EngineIo());
  fp->OnConnectionOpen();
  EXPECT_FALSE(Text(*fp, "42[1]").warning.empty());
  EXPECT_TRUE(Text(*fp, "42[2]").warning.empty());
  EXPECT_FALSE(Text(*fp, "9").warning.empty());  // another kind
  EXPECT_TRUE(Text(*fp, "8").warning.empty());
  fp->OnConnectionOpen();
  EXPECT_FALSE(Text(*fp, "42[3]").warning.empty());
}

TEST(FrameProtocolEngineIo, RepliesAndPongsOnTheEventArray) {
  FrameProtocolOptions o = EngineIo("/feed");
  o.inspector.app_pong = "0=pong";
  o.replies.push_back(FieldEqualsRule("0", "ping", R"(["pong",{{1.t}}])"));
  auto fp = Make(o);
  auto out = Text(*fp, R"(42/feed,["ping",{"t":1.50}])");
  EXPECT_EQ(out.kind, Kind::kConsumed);
  EXPECT_EQ(out.send, Sent({R"(42/feed,["pong",1.50])"}));
  EXPECT_EQ(out.replies, 1u);
  EXPECT_EQ(Text(*fp, R"(42/feed,["pong"])").kind, Kind::kAppPong);

  FrameProtocolOptions bad = EngineIo();
  bad.replies.push_back(FieldRule("0", R"({"pong":1})"));
  EXPECT_EQ(CreateError(bad), std::string("protocol.replies[0].reply: with protocol.framing = "
                                          "\"engineio\" a payload must be a JSON array "
                                          "[\"event\", ...]"));
}

TEST(FrameProtocolEngineIo, CompressedPackets) {
  FrameProtocolOptions o = EngineIo();
  o.decompress = Compression::kAuto;
  auto fp = Make(o);
  EXPECT_EQ(Binary(*fp, Gzip("2")).send, Sent({"3"}));
  std::string payload;
  auto out = Binary(*fp, Zlib(R"(42["t",{"seq":1}])"), &payload);
  EXPECT_EQ(out.kind, Kind::kData);
  EXPECT_FALSE(out.binary);
  EXPECT_EQ(payload, R"(["t",{"seq":1}])");
}

TEST(FrameProtocolEngineIo, CheckOutbound) {
  auto fp = Make(EngineIo());
  EXPECT_TRUE(fp->CheckOutbound(R"(["order",{"id":"1"}])", false).ok());
  const std::string error =
      "with protocol.framing = \"engineio\" a payload must be a JSON array [\"event\", ...]";
  for (const char* bad : {R"({"id":"1"})", "[1]", "[]", "order", "", R"(["a")"}) {
    Status st = fp->CheckOutbound(bad, false);
    EXPECT_FALSE(st.ok()) << bad;
    EXPECT_EQ(st.message(), error);
  }
  EXPECT_FALSE(fp->CheckOutbound(R"(["order"])", true).ok());
}

TEST(FrameProtocolEngineIo, CreateChecksNamespaceAndAuth) {
  EXPECT_EQ(CreateError(EngineIo("/", "[1]")), "protocol.socketio_auth: must be a JSON object");
  EXPECT_EQ(CreateError(EngineIo("/", "{nope")), "protocol.socketio_auth: must be a JSON object");
  EXPECT_NE(CreateError(EngineIo("chat")).find("protocol.socketio_namespace"), std::string::npos);
}

}  // namespace
}  // namespace wsbridge
