// Tests for Inflater (protocol.decompress) and DeflateStream (permessage-deflate): byte-exact
// round trips against zlib's own deflate, the max_out bound (bombs), truncated, corrupt and
// trailing data, concatenated gzip members, and RFC 7692's context takeover, fragmentation,
// small windows and final blocks. Allocations are counted by replacing operator new in this
// binary: once warm, a small frame must cost none.
#define ZLIB_CONST
#include "bridge/protocol/inflate.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <vector>

namespace {
size_t g_new_calls = 0;
size_t g_new_bytes = 0;
size_t g_new_largest = 0;
}  // namespace

void* operator new(size_t n) {
  ++g_new_calls;
  g_new_bytes += n;
  g_new_largest = std::max(g_new_largest, n);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
// Not inlined: GCC would otherwise see free() of what `new` returned (-Wmismatched-new-delete).
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace wsbridge {
namespace {

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = 1024 * kKiB;
constexpr size_t kNoLimit = 1 << 30;
constexpr int kGzipBits = 16 + MAX_WBITS;
constexpr int kZlibBits = MAX_WBITS;
constexpr int kRawBits = -MAX_WBITS;
constexpr Compression kFormats[] = {Compression::kGzip, Compression::kZlib, Compression::kDeflate};

// zlib's windowBits for a format.
int Bits(Compression c) {
  return c == Compression::kGzip ? kGzipBits : c == Compression::kZlib ? kZlibBits : kRawBits;
}

// operator new calls, bytes and largest allocation from Start() to Stop().
class Allocations {
 public:
  void Start() {
    calls_ = g_new_calls;
    bytes_ = g_new_bytes;
    g_new_largest = 0;
  }
  void Stop() {
    calls_ = g_new_calls - calls_;
    bytes_ = g_new_bytes - bytes_;
    largest_ = g_new_largest;
  }
  size_t calls() const { return calls_; }
  size_t bytes() const { return bytes_; }
  size_t largest() const { return largest_; }

 private:
  size_t calls_ = 0, bytes_ = 0, largest_ = 0;
};

// The allocations of a bomb's inflation to max_out: none larger than max_out (std::string adds
// 1 for its terminator); the growth steps are geometric, so their sum is below 3 x max_out.
void ExpectBoundedGrowth(const Allocations& a, const std::string& out, size_t max_out) {
  EXPECT_LE(out.size(), max_out);
  EXPECT_LE(out.capacity(), max_out + 16 * kKiB);
  EXPECT_LE(a.largest(), max_out + 1);
  EXPECT_LE(a.bytes(), 3 * max_out) << a.calls() << " allocations";
}

std::string MarketJson(int i) {
  return R"({"seq":)" + std::to_string(123000 + i) + R"(,"topic":"trades","data":{"price":"4123)" +
         std::to_string(i % 10) + R"(.5","qty":"0.0)" + std::to_string(10 + i % 90) +
         R"(","side":"buy","ts":1700000000123}})";
}

// JSON lines, `n` bytes.
std::string Text(size_t n) {
  std::string s;
  for (int i = 0; s.size() < n; ++i) s += MarketJson(i) + "\n";
  s.resize(n);
  return s;
}

// Random bytes (incompressible), `n` bytes.
std::string Binary(size_t n) {
  std::mt19937 rng(static_cast<uint32_t>(n));
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// zlib's deflate, streaming: `chunks` times `chunk`, then Z_FINISH.
std::string CompressChunks(std::string_view chunk, size_t chunks, int window_bits,
                           int level = Z_DEFAULT_COMPRESSION) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, level, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out;
  uint8_t buf[64 * 1024];
  for (size_t i = 0; i <= chunks; ++i) {
    const bool last = i == chunks;
    z.next_in = reinterpret_cast<const Bytef*>(chunk.data());
    z.avail_in = last ? 0 : static_cast<uInt>(chunk.size());
    int ret;
    do {
      z.next_out = buf;
      z.avail_out = sizeof buf;
      ret = deflate(&z, last ? Z_FINISH : Z_NO_FLUSH);
      out.append(reinterpret_cast<char*>(buf), sizeof buf - z.avail_out);
    } while (z.avail_out == 0);
    if (last) {
      EXPECT_EQ(ret, Z_STREAM_END);
    }
  }
  deflateEnd(&z);
  return out;
}

// zlib's deflate, one shot: window_bits kGzipBits, kZlibBits or kRawBits.
std::string Compress(std::string_view in, int window_bits) {
  return CompressChunks(in, 1, window_bits);
}

// The server's side of permessage-deflate: one raw deflate stream.
class Sender {
 public:
  explicit Sender(int window_bits = 15, int level = Z_DEFAULT_COMPRESSION) {
    EXPECT_EQ(deflateInit2(&z_, level, Z_DEFLATED, -window_bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
  }
  ~Sender() { deflateEnd(&z_); }

  // A message flushed with Z_SYNC_FLUSH, its 00 00 ff ff tail removed (RFC 7692 §7.2.1).
  std::string Message(std::string_view text) {
    std::string m = Deflate(text, Z_SYNC_FLUSH);
    EXPECT_EQ(m.substr(m.size() - 4), std::string("\x00\x00\xff\xff", 4));
    m.resize(m.size() - 4);
    return m;
  }
  // A message ending with a final block (Z_FINISH), nothing removed; the next message starts a
  // new stream.
  std::string Final(std::string_view text, int flush_before = Z_NO_FLUSH) {
    std::string m = Deflate(text, flush_before);
    m += Deflate("", Z_FINISH);
    deflateReset(&z_);
    return m;
  }
  void Reset() { deflateReset(&z_); }  // server_no_context_takeover

 private:
  std::string Deflate(std::string_view text, int flush) {
    z_.next_in = reinterpret_cast<const Bytef*>(text.data());
    z_.avail_in = static_cast<uInt>(text.size());
    std::string out;
    uint8_t buf[16 * 1024];
    do {
      z_.next_out = buf;
      z_.avail_out = sizeof buf;
      EXPECT_NE(deflate(&z_, flush), Z_STREAM_ERROR);
      out.append(reinterpret_cast<char*>(buf), sizeof buf - z_.avail_out);
    } while (z_.avail_out == 0);
    return out;
  }
  z_stream z_{};
};

const uint8_t* Bytes(std::string_view s) { return reinterpret_cast<const uint8_t*>(s.data()); }

// One message through `ds`, in frames of `frame` bytes (0: one frame). The result of the first
// failure, else of Finish.
InflateResult Receive(DeflateStream& ds, std::string_view wire, std::string* out,
                      size_t max_out = kNoLimit, bool reset_context = false, size_t frame = 0,
                      std::string* error = nullptr) {
  std::string ignored;
  if (error == nullptr) error = &ignored;
  out->clear();
  if (frame == 0) frame = wire.size() + 1;
  for (size_t at = 0; at < wire.size(); at += frame) {
    const std::string_view part = wire.substr(at, frame);
    const InflateResult r = ds.Append(Bytes(part), part.size(), max_out, out, error);
    if (r != InflateResult::kOk) return r;
  }
  return ds.Finish(reset_context, max_out, out, error);
}

std::string Inflated(Inflater& inf, Compression format, std::string_view in,
                     InflateResult expect = InflateResult::kOk) {
  std::string out, error;
  EXPECT_EQ(inf.Inflate(format, in, kNoLimit, &out, &error), expect) << error;
  return out;
}

std::string CorruptError(Inflater& inf, Compression format, std::string_view in) {
  std::string out, error;
  EXPECT_EQ(inf.Inflate(format, in, kNoLimit, &out, &error), InflateResult::kCorrupt);
  EXPECT_EQ(error.find('\n'), std::string::npos) << "one line";
  return error;
}

// ---- Compression names -----------------------------------------------------------------------

TEST(Compression, NamesRoundTrip) {
  for (Compression c : {Compression::kNone, Compression::kAuto, Compression::kGzip,
                        Compression::kZlib, Compression::kDeflate}) {
    EXPECT_EQ(ParseCompression(ToString(c)), c) << ToString(c);
  }
  EXPECT_EQ(ParseCompression("deflate"), Compression::kDeflate);
  EXPECT_FALSE(ParseCompression("GZIP"));
  EXPECT_FALSE(ParseCompression(""));
  EXPECT_FALSE(ParseCompression("brotli"));
}

// ---- Inflater --------------------------------------------------------------------------------

TEST(Inflater, RoundTripsEveryFormatAndSize) {
  Inflater inf;
  for (Compression c : kFormats) {
    for (size_t n : {size_t{0}, size_t{100}, 64 * kKiB, kMiB}) {
      for (const std::string& data : {Text(n), Binary(n)}) {
        SCOPED_TRACE(std::string(ToString(c)) + " " + std::to_string(n));
        const std::string wire = Compress(data, Bits(c));
        EXPECT_EQ(Inflated(inf, c, wire), data);
        if (c != Compression::kDeflate) {
          EXPECT_EQ(Inflated(inf, Compression::kAuto, wire), data);
        }
      }
    }
  }
}

TEST(Inflater, AutoTakesPlainTextAsReceived) {
  Inflater inf;
  std::string out = "stale", error;
  for (std::string_view text : {std::string_view(R"({"seq":1,"topic":"t"})"), std::string_view("["),
                                std::string_view(""), std::string_view("x")}) {
    EXPECT_EQ(inf.Inflate(Compression::kAuto, text, kNoLimit, &out, &error),
              InflateResult::kNotCompressed)
        << text;
  }
  EXPECT_EQ(inf.Inflate(Compression::kNone, "\x1f\x8b", kNoLimit, &out, &error),
            InflateResult::kNotCompressed);
}

TEST(Inflater, AutoRecognisesZlibHeadersOfEveryLevelAndWindow) {
  Inflater inf;
  const std::string data = Text(300);
  for (int bits = 9; bits <= 15; ++bits) {
    for (int level : {1, 6, 9}) {
      const std::string wire = CompressChunks(data, 1, bits, level);
      EXPECT_EQ(Inflated(inf, Compression::kAuto, wire), data) << bits << " " << level;
    }
  }
}

TEST(Inflater, OutputOfExactlyMaxOutFits) {
  Inflater inf;
  const std::string data = Text(40000);  // several chunks
  for (Compression c : kFormats) {
    const std::string wire = Compress(data, Bits(c));
    std::string out, error;
    EXPECT_EQ(inf.Inflate(c, wire, data.size(), &out, &error), InflateResult::kOk);
    EXPECT_EQ(out, data);
    EXPECT_EQ(inf.Inflate(c, wire, data.size() - 1, &out, &error), InflateResult::kTooBig);
    EXPECT_EQ(out, data.substr(0, data.size() - 1));
    EXPECT_EQ(inf.Inflate(c, wire, 0, &out, &error), InflateResult::kTooBig);
    EXPECT_TRUE(out.empty());
  }
}

TEST(Inflater, BombStopsAtMaxOutAndAllocatesLittle) {
  const std::string zeros(64 * kKiB, '\0');
  Inflater inf;
  for (Compression c : kFormats) {
    const std::string bomb = CompressChunks(zeros, 1024, Bits(c), 9);  // 64 MiB of zeros
    SCOPED_TRACE(std::string(ToString(c)) + ", bomb of " + std::to_string(bomb.size()) + " B");
    EXPECT_LT(bomb.size(), 100 * kKiB);
    std::string out, error;
    out.reserve(20000);  // a previous frame's: geometric growth from it passes 1 MiB at 1.25 MiB
    Allocations a;
    a.Start();
    const InflateResult r = inf.Inflate(c, bomb, kMiB, &out, &error);
    a.Stop();
    EXPECT_EQ(r, InflateResult::kTooBig);
    ExpectBoundedGrowth(a, out, kMiB);  // zlib's own state and window are malloc'ed: ~40 KiB
    EXPECT_EQ(out, std::string(kMiB, '\0'));
  }
}

TEST(Inflater, WarmSmallFramesAllocateNothing) {
  Inflater inf;
  const std::string gz = Compress(MarketJson(1), kGzipBits);
  const std::string zl = Compress(MarketJson(2), kZlibBits);
  std::string out, error;
  for (int i = 0; i < 2; ++i) {  // warm: zlib's states, out's capacity
    inf.Inflate(Compression::kAuto, gz, kNoLimit, &out, &error);
    inf.Inflate(Compression::kAuto, zl, kNoLimit, &out, &error);
  }
  Allocations a;
  a.Start();
  for (int i = 0; i < 100; ++i) {
    inf.Inflate(Compression::kAuto, gz, kNoLimit, &out, &error);
    inf.Inflate(Compression::kAuto, zl, kNoLimit, &out, &error);
  }
  a.Stop();
  EXPECT_EQ(a.calls(), 0u);
  EXPECT_EQ(out, MarketJson(2));
}

TEST(Inflater, EveryTruncationIsTruncated) {
  Inflater inf;
  const std::string data = Text(500);
  for (Compression c : kFormats) {
    const std::string wire = Compress(data, Bits(c));
    for (size_t n = 0; n < wire.size(); ++n) {
      EXPECT_EQ(CorruptError(inf, c, wire.substr(0, n)), std::string(ToString(c)) + ": truncated")
          << n << " of " << wire.size() << " bytes";
    }
    EXPECT_EQ(Inflated(inf, c, wire), data) << "usable after the failures";
  }
}

TEST(Inflater, CorruptDataIsOneLineNamingTheFormat) {
  Inflater inf;
  const std::string data = Text(1000);
  std::string gz = Compress(data, kGzipBits);
  gz[10] |= 0x06;  // the first block's BTYPE: 11 (reserved)
  EXPECT_EQ(CorruptError(inf, Compression::kGzip, gz), "gzip: invalid block type");

  EXPECT_EQ(CorruptError(inf, Compression::kGzip, Compress(data, kZlibBits)),
            "gzip: incorrect header check");
  EXPECT_EQ(CorruptError(inf, Compression::kZlib, Compress(data, kGzipBits)),
            "zlib: incorrect header check");
  EXPECT_EQ(CorruptError(inf, Compression::kDeflate, "\xff\xff\xff\xff\xff\xff"),
            "deflate: invalid block type");

  // Random damage anywhere: never kOk with other bytes, never a crash.
  std::mt19937 rng(7);
  const std::string good = Compress(data, kGzipBits);
  for (int i = 0; i < 2000; ++i) {
    std::string bad = good;
    bad[rng() % bad.size()] ^= static_cast<char>(1 + rng() % 255);
    std::string out, error;
    const InflateResult r = inf.Inflate(Compression::kGzip, bad, kNoLimit, &out, &error);
    if (r == InflateResult::kOk) {
      EXPECT_EQ(out, data);  // damage to a header field zlib does not check (MTIME, OS)
    } else {
      EXPECT_EQ(r, InflateResult::kCorrupt);
      EXPECT_EQ(error.rfind("gzip: ", 0), 0u) << error;
    }
  }
}

TEST(Inflater, BadChecksumsAreCorrupt) {
  Inflater inf;
  const std::string data = Text(1000);
  std::string gz = Compress(data, kGzipBits);
  gz[gz.size() - 8] ^= 1;  // CRC-32
  EXPECT_EQ(CorruptError(inf, Compression::kGzip, gz), "gzip: incorrect data check");
  gz = Compress(data, kGzipBits);
  gz[gz.size() - 4] ^= 1;  // ISIZE
  EXPECT_EQ(CorruptError(inf, Compression::kGzip, gz), "gzip: incorrect length check");
  std::string zl = Compress(data, kZlibBits);
  zl.back() ^= 1;  // Adler-32
  EXPECT_EQ(CorruptError(inf, Compression::kZlib, zl), "zlib: incorrect data check");
  EXPECT_EQ(CorruptError(inf, Compression::kAuto, zl), "zlib: incorrect data check");
}

TEST(Inflater, TrailingBytesAreCorrupt) {
  Inflater inf;
  const std::string data = Text(200);
  for (Compression c : kFormats) {
    for (std::string_view tail : {std::string_view("x"), std::string_view("\0", 1),
                                  std::string_view("\x1f"), std::string_view("\x8b\x1f")}) {
      EXPECT_EQ(CorruptError(inf, c, Compress(data, Bits(c)) + std::string(tail)),
                std::string(ToString(c)) + ": trailing bytes after the end of the stream");
    }
  }
  // A zlib stream after a zlib stream is trailing bytes too: only gzip has members.
  EXPECT_EQ(
      CorruptError(inf, Compression::kZlib, Compress(data, kZlibBits) + Compress(data, kZlibBits)),
      "zlib: trailing bytes after the end of the stream");
}

TEST(Inflater, ConcatenatedGzipMembersAreInflated) {
  Inflater inf;
  const std::string a = Text(3000), b = Binary(700), c = "";
  const std::string wire = Compress(a, kGzipBits) + Compress(b, kGzipBits) + Compress(c, kGzipBits);
  EXPECT_EQ(Inflated(inf, Compression::kGzip, wire), a + b + c);
  EXPECT_EQ(Inflated(inf, Compression::kAuto, wire), a + b + c);
  EXPECT_EQ(CorruptError(inf, Compression::kGzip, wire.substr(0, wire.size() - 1)),
            "gzip: truncated");
  EXPECT_EQ(CorruptError(inf, Compression::kGzip, wire + "\x1f\x8b"), "gzip: truncated");
  std::string out, error;
  EXPECT_EQ(inf.Inflate(Compression::kGzip, wire, a.size() + 10, &out, &error),
            InflateResult::kTooBig)
      << "the bound covers all members";
  EXPECT_EQ(out.size(), a.size() + 10);
}

// ---- DeflateStream ---------------------------------------------------------------------------

TEST(DeflateStream, ContextTakeoverAcrossMessages) {
  Sender sender;
  DeflateStream ds;
  std::string out;
  size_t first = 0, last = 0;
  for (int i = 0; i < 200; ++i) {
    const std::string text = i % 50 == 49 ? Text(70 * kKiB) : MarketJson(i);
    const std::string wire = sender.Message(text);
    if (i == 0) first = wire.size();
    if (i == 198) last = wire.size();
    ASSERT_EQ(Receive(ds, wire, &out), InflateResult::kOk) << i;
    ASSERT_EQ(out, text) << i;
  }
  EXPECT_LT(last, first / 2) << "later messages refer to earlier ones";
}

TEST(DeflateStream, MessageSplitIntoFramesAtEveryPoint) {
  const std::string one = MarketJson(1), two = MarketJson(2);
  for (size_t frame : {size_t{1}, size_t{2}, size_t{3}}) {
    Sender sender;
    DeflateStream ds;
    std::string out;
    ASSERT_EQ(Receive(ds, sender.Message(one), &out, kNoLimit, false, frame), InflateResult::kOk);
    EXPECT_EQ(out, one);
    ASSERT_EQ(Receive(ds, sender.Message(two), &out, kNoLimit, false, frame), InflateResult::kOk);
    EXPECT_EQ(out, two) << frame << "-byte frames";
  }
  // The second message refers to the first: split it in two frames at every point.
  for (size_t split = 0;; ++split) {
    Sender sender;
    DeflateStream ds;
    std::string out, error;
    ASSERT_EQ(Receive(ds, sender.Message(one), &out), InflateResult::kOk);
    const std::string wire = sender.Message(one);
    if (split > wire.size()) break;
    out.clear();
    ASSERT_EQ(ds.Append(Bytes(wire), split, kNoLimit, &out, &error), InflateResult::kOk);
    ASSERT_EQ(ds.Append(Bytes(wire) + split, wire.size() - split, kNoLimit, &out, &error),
              InflateResult::kOk);
    ASSERT_EQ(ds.Finish(false, kNoLimit, &out, &error), InflateResult::kOk);
    EXPECT_EQ(out, one) << "split at " << split;
  }
}

TEST(DeflateStream, NoContextTakeover) {
  Sender sender;
  DeflateStream ds;
  std::string out;
  for (int i = 0; i < 20; ++i) {
    sender.Reset();
    const std::string text = MarketJson(i);
    ASSERT_EQ(Receive(ds, sender.Message(text), &out, kNoLimit, /*reset_context=*/true),
              InflateResult::kOk);
    EXPECT_EQ(out, text);
  }
}

TEST(DeflateStream, SmallSenderWindows) {
  for (int bits = 9; bits <= 15; ++bits) {  // zlib refuses 8 for raw deflate
    Sender sender(bits);
    DeflateStream ds;
    std::string out;
    for (int i = 0; i < 30; ++i) {
      const std::string text = i % 10 == 9 ? Text(5000 + i) : MarketJson(i);
      ASSERT_EQ(Receive(ds, sender.Message(text), &out), InflateResult::kOk) << bits << " " << i;
      ASSERT_EQ(out, text) << bits << " " << i;
    }
  }
}

TEST(DeflateStream, FinalBlocksStartNewStreams) {
  Sender sender;
  DeflateStream ds;
  std::string out;
  int n = 0;
  auto expect = [&](const std::string& wire, const std::string& text) {
    ASSERT_EQ(Receive(ds, wire, &out), InflateResult::kOk) << n;
    EXPECT_EQ(out, text) << n;
    ++n;
  };
  expect(sender.Message(MarketJson(0)), MarketJson(0));
  expect(sender.Final(MarketJson(1)), MarketJson(1));  // Z_FINISH, nothing removed
  expect(sender.Message(MarketJson(2)), MarketJson(2));
  expect(sender.Message(MarketJson(3)), MarketJson(3));
  // Z_SYNC_FLUSH then Z_FINISH: the message ends with 00 00 ff ff 03 00.
  expect(sender.Final(MarketJson(4), Z_SYNC_FLUSH), MarketJson(4));
  expect(sender.Message(MarketJson(5)), MarketJson(5));
  // A final block inside a message, a new stream after it in the same message.
  std::string wire = sender.Final(MarketJson(6));
  wire += sender.Message(MarketJson(7));
  expect(wire, MarketJson(6) + MarketJson(7));
  // The same, split in single-byte frames.
  wire = sender.Final(MarketJson(8));
  wire += sender.Message(MarketJson(9));
  ASSERT_EQ(Receive(ds, wire, &out, kNoLimit, false, 1), InflateResult::kOk);
  EXPECT_EQ(out, MarketJson(8) + MarketJson(9));
  expect(sender.Final(MarketJson(10)), MarketJson(10));
  expect(sender.Final(MarketJson(11)), MarketJson(11));
  expect("", "");  // an empty payload: nothing, and the stream goes on
  expect(sender.Message(MarketJson(12)), MarketJson(12));
}

// The examples of RFC 7692 §7.2.3, byte for byte, on one stream.
TEST(DeflateStream, Rfc7692Examples) {
  DeflateStream ds;
  std::string out, error;
  const std::string hello = "Hello";
  // §7.2.3.1 a message, §7.2.3.2 the same again with the window kept.
  EXPECT_EQ(Receive(ds, std::string("\xf2\x48\xcd\xc9\xc9\x07\x00", 7), &out), InflateResult::kOk);
  EXPECT_EQ(out, hello);
  EXPECT_EQ(Receive(ds, std::string("\xf2\x00\x11\x00\x00", 5), &out), InflateResult::kOk);
  EXPECT_EQ(out, hello);
  // §7.2.3.3 a final block (BFINAL 1) followed by the header octet of an empty stored block.
  EXPECT_EQ(Receive(ds, std::string("\xf3\x48\xcd\xc9\xc9\x07\x00\x00", 8), &out),
            InflateResult::kOk);
  EXPECT_EQ(out, hello);
  // §7.2.3.4 two fragments.
  out.clear();
  EXPECT_EQ(ds.Append(Bytes("\xf2\x48\xcd"), 3, kNoLimit, &out, &error), InflateResult::kOk);
  EXPECT_EQ(ds.Append(Bytes("\xc9\xc9\x07\x00"), 4, kNoLimit, &out, &error), InflateResult::kOk);
  EXPECT_EQ(ds.Finish(false, kNoLimit, &out, &error), InflateResult::kOk);
  EXPECT_EQ(out, hello);
  // §7.2.3.5 a stored (uncompressed) block.
  EXPECT_EQ(Receive(ds, std::string("\x00\x05\x00\xfa\xff\x48\x65\x6c\x6c\x6f\x00", 11), &out),
            InflateResult::kOk);
  EXPECT_EQ(out, hello);
}

TEST(DeflateStream, BoundCoversTheWholeMessage) {
  Sender sender;
  DeflateStream ds;
  std::string out, error;
  const std::string big = sender.Message(std::string(10 * kMiB, 'a'));
  EXPECT_LT(big.size(), 20 * kKiB);
  out.reserve(20000);
  Allocations a;
  a.Start();
  const InflateResult r = Receive(ds, big, &out, kMiB);
  a.Stop();
  EXPECT_EQ(r, InflateResult::kTooBig);
  ExpectBoundedGrowth(a, out, kMiB);
  // Further frames of the abandoned message: the same answer, nothing inflated.
  const size_t size = out.size();
  EXPECT_EQ(ds.Append(Bytes(big), big.size(), kMiB, &out, &error), InflateResult::kTooBig);
  EXPECT_EQ(out.size(), size);
  EXPECT_EQ(ds.Finish(true, kMiB, &out, &error), InflateResult::kTooBig);
  // Usable again after Finish, for a stream that starts afresh.
  Sender fresh;
  EXPECT_EQ(Receive(ds, fresh.Message(MarketJson(1)), &out, kMiB), InflateResult::kOk);
  EXPECT_EQ(out, MarketJson(1));

  // The bound counts every frame of the message: two of 600 KiB each.
  const std::string text = Text(1200 * kKiB);
  const std::string wire = fresh.Message(text);
  out.clear();
  const size_t half = wire.size() / 2;
  EXPECT_EQ(ds.Append(Bytes(wire), half, kMiB, &out, &error), InflateResult::kOk);
  EXPECT_EQ(ds.Append(Bytes(wire) + half, wire.size() - half, kMiB, &out, &error),
            InflateResult::kTooBig);
  EXPECT_EQ(out, text.substr(0, kMiB));
  EXPECT_EQ(ds.Finish(true, kMiB, &out, &error), InflateResult::kTooBig);
  // Exactly max_out fits.
  Sender third;
  const std::string exact = Text(kMiB);
  EXPECT_EQ(Receive(ds, third.Message(exact), &out, kMiB), InflateResult::kOk);
  EXPECT_EQ(out, exact);
}

TEST(DeflateStream, CorruptDataThenUsableAfterFinish) {
  DeflateStream ds;
  std::string out, error;
  EXPECT_EQ(Receive(ds, "\xff\xff\xff\xff", &out, kNoLimit, false, 0, &error),
            InflateResult::kCorrupt);
  EXPECT_EQ(error, "permessage-deflate: invalid block type");
  error.clear();
  EXPECT_EQ(ds.Append(Bytes("abc"), 3, kNoLimit, &out, &error), InflateResult::kCorrupt);
  EXPECT_EQ(error, "permessage-deflate: invalid block type");
  EXPECT_EQ(ds.Finish(true, kNoLimit, &out, &error), InflateResult::kCorrupt);
  Sender sender;
  EXPECT_EQ(Receive(ds, sender.Message(MarketJson(3)), &out), InflateResult::kOk);
  EXPECT_EQ(out, MarketJson(3));
  // A distance beyond what the receiver has seen (a sender that kept a window the receiver
  // forgot): corrupt, not garbage.
  DeflateStream fresh;
  EXPECT_EQ(Receive(fresh, sender.Message(MarketJson(3)), &out, kNoLimit, false, 0, &error),
            InflateResult::kCorrupt);
  EXPECT_EQ(error, "permessage-deflate: invalid distance too far back");
}

TEST(DeflateStream, WarmMessagesAllocateNothing) {
  Sender sender;
  DeflateStream ds;
  std::string out;
  std::vector<std::string> wires;
  for (int i = 0; i < 102; ++i) wires.push_back(sender.Message(MarketJson(i)));
  out.reserve(256);
  for (int i = 0; i < 2; ++i) ASSERT_EQ(Receive(ds, wires[i], &out), InflateResult::kOk);
  Allocations a;
  a.Start();
  for (int i = 2; i < 102; ++i) Receive(ds, wires[i], &out);
  a.Stop();
  EXPECT_EQ(a.calls(), 0u);
  EXPECT_EQ(out, MarketJson(101));
}

}  // namespace
}  // namespace wsbridge
