// Inflation benchmarks: the CPU per inbound message that protocol.decompress (Inflater, one
// gzip/zlib/deflate frame at a time) and permessage-deflate (DeflateStream, one Append and one
// Finish per message) add on the I/O thread, for ~100-byte market-data JSON messages.
#include <benchmark/benchmark.h>
#include <zlib.h>

#include <memory>
#include <string>
#include <vector>

#include "bridge/protocol/inflate.h"

namespace {

using wsbridge::Compression;
using wsbridge::DeflateStream;
using wsbridge::Inflater;
using wsbridge::InflateResult;

constexpr size_t kMaxOut = 1 << 20;

// ~100 bytes: {"seq":1000000,"topic":"trades","data":{"price":"41234.5",...}}
std::string Message(int i) {
  return R"({"seq":)" + std::to_string(1000000 + i) + R"(,"topic":"trades","data":{"price":"4)" +
         std::to_string(1200 + (i * 7919) % 100) + "." + std::to_string(i % 10) +
         R"(","qty":"0.0)" + std::to_string(10 + (i * 31) % 90) + R"(","side":")" +
         (i % 3 == 0 ? "sell" : "buy") + R"(","ts":)" + std::to_string(1700000000000 + i * 13) +
         "}}";
}

// Raw deflate of each message (window_bits < 0) on one stream, flushed with Z_SYNC_FLUSH and
// stripped of 00 00 ff ff (permessage-deflate), or each a whole stream (Z_FINISH, any format).
std::vector<std::string> Compress(int n, int window_bits, bool context_takeover) {
  z_stream z{};
  deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY);
  std::vector<std::string> wires;
  for (int i = 0; i < n; ++i) {
    const std::string text = Message(i);
    std::string wire(deflateBound(&z, text.size()) + 16, '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
    z.avail_in = static_cast<uInt>(text.size());
    z.next_out = reinterpret_cast<Bytef*>(wire.data());
    z.avail_out = static_cast<uInt>(wire.size());
    deflate(&z, context_takeover ? Z_SYNC_FLUSH : Z_FINISH);
    wire.resize(wire.size() - z.avail_out - (context_takeover ? 4 : 0));
    if (!context_takeover) deflateReset(&z);
    wires.push_back(std::move(wire));
  }
  deflateEnd(&z);
  return wires;
}

double MeanSize(const std::vector<std::string>& v) {
  size_t sum = 0;
  for (const std::string& s : v) sum += s.size();
  return static_cast<double>(sum) / static_cast<double>(v.size());
}

// One whole frame per iteration: range(0) is the Compression.
void BM_InflaterFrame(benchmark::State& state) {
  const auto format = static_cast<Compression>(state.range(0));
  const int bits = format == Compression::kGzip   ? 16 + MAX_WBITS
                   : format == Compression::kZlib ? MAX_WBITS
                                                  : -MAX_WBITS;
  const std::vector<std::string> wires = Compress(256, bits, false);
  Inflater inf;
  std::string out, error;
  size_t i = 0;
  for (auto _ : state) {
    if (inf.Inflate(format, wires[i++ % wires.size()], kMaxOut, &out, &error) !=
        InflateResult::kOk) {
      state.SkipWithError(error.c_str());
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(std::string(ToString(format)) + ", " + std::to_string(Message(0).size()) +
                 " B -> " + std::to_string(static_cast<int>(MeanSize(wires))) + " B");
}
BENCHMARK(BM_InflaterFrame)
    ->Arg(static_cast<int>(Compression::kGzip))
    ->Arg(static_cast<int>(Compression::kZlib))
    ->Arg(static_cast<int>(Compression::kDeflate));

// The floor: zlib alone (inflateReset, one inflate() into a fixed buffer) on the gzip frames of
// BM_InflaterFrame, to tell Inflater's own cost from zlib's.
void BM_ZlibAloneGzipFrame(benchmark::State& state) {
  const std::vector<std::string> wires = Compress(256, 16 + MAX_WBITS, false);
  z_stream z{};
  inflateInit2(&z, 16 + MAX_WBITS);
  std::vector<Bytef> buf(16 * 1024);
  size_t i = 0;
  for (auto _ : state) {
    const std::string& wire = wires[i++ % wires.size()];
    inflateReset(&z);
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(wire.data()));
    z.avail_in = static_cast<uInt>(wire.size());
    z.next_out = buf.data();
    z.avail_out = static_cast<uInt>(buf.size());
    if (inflate(&z, Z_NO_FLUSH) != Z_STREAM_END) {
      state.SkipWithError("inflate");
      break;
    }
    benchmark::DoNotOptimize(buf.data());
  }
  inflateEnd(&z);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ZlibAloneGzipFrame);

// One message per iteration (one Append, one Finish). range(0): 1 = context takeover (one
// deflate stream for all messages), 0 = server_no_context_takeover.
void BM_DeflateStreamMessage(benchmark::State& state) {
  const bool takeover = state.range(0) == 1;
  const std::vector<std::string> wires = Compress(1 << 14, -MAX_WBITS, takeover);
  auto ds = std::make_unique<DeflateStream>();
  std::string out, error;
  size_t i = 0;
  for (auto _ : state) {
    if (i == wires.size()) {  // the sender's stream ends here: start over with a new receiver
      state.PauseTiming();
      ds = std::make_unique<DeflateStream>();
      i = 0;
      state.ResumeTiming();
    }
    const std::string& wire = wires[i++];
    out.clear();
    if (ds->Append(reinterpret_cast<const uint8_t*>(wire.data()), wire.size(), kMaxOut, &out,
                   &error) != InflateResult::kOk ||
        ds->Finish(!takeover, kMaxOut, &out, &error) != InflateResult::kOk) {
      state.SkipWithError(error.c_str());
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(std::string(takeover ? "context takeover" : "no context takeover") + ", " +
                 std::to_string(Message(0).size()) + " B -> " +
                 std::to_string(static_cast<int>(MeanSize(wires))) + " B");
}
BENCHMARK(BM_DeflateStreamMessage)->Arg(1)->Arg(0);

}  // namespace
