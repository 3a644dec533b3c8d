// Unit benchmarks: the two per-message costs on the inbound hot path.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "bridge/protocol/json_fields.h"
#include "storage/store.h"

namespace {

std::string Frame(size_t bytes) {
  std::string f = R"({"seq":123456,"topic":"ticks","data":{"ts_ns":1700000000000000000,"pad":")";
  if (bytes > f.size() + 3) f.append(bytes - f.size() - 3, 'x');
  return f + "\"}}";
}

void BM_InspectFrame(benchmark::State& state) {
  auto fi = std::move(wsbridge::FrameInspector::Create({})).value();
  std::string frame = Frame(static_cast<size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(fi->Inspect(frame));
  state.SetBytesProcessed(state.iterations() * frame.size());
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_InspectFrame)->Arg(100)->Arg(4096);

// Commit of a batch of `range(0)` 100-byte messages, durability=process.
void BM_CommitBatch(benchmark::State& state) {
  char tmpl[] = "/tmp/wsbridge-bench.XXXXXX";
  std::string dir = mkdtemp(tmpl);
  wsbridge::StoreOptions o;
  o.path = dir + "/bench.db";
  o.journal_max_rows = 1ull << 40;
  auto store = std::move(wsbridge::Store::Open(o)).value();
  wsbridge::Batch batch;
  uint64_t useq = 0;
  for (auto _ : state) {
    state.PauseTiming();
    batch.clear();
    for (int i = 0; i < state.range(0); ++i) {
      wsbridge::InboundMessage m;
      m.upstream_seq = ++useq;
      m.topic = "ticks";
      m.payload = Frame(100);
      batch.inbound.push_back(std::move(m));
    }
    batch.last_upstream_seq = useq;
    state.ResumeTiming();
    wsbridge::BatchResult r;
    if (!store->Commit(batch, &r).ok()) state.SkipWithError("commit failed");
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  store.reset();
  (void)!std::system(("rm -rf " + dir).c_str());
}
BENCHMARK(BM_CommitBatch)->Arg(1)->Arg(64)->Arg(1024)->UseRealTime();

}  // namespace
