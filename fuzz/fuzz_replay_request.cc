// libFuzzer target: ReplayRequest bytes as the replay endpoint gets them (bridge/endpoints/replay_endpoint.h):
// ParseFromArray, then ReplayPager::Start's range validation and every page until done.
//
// The journal is a real SQLite file made once: 400 rows on topics "a", "ab", "b", "" and a
// non-ASCII one, payloads from empty to 100 KiB, the oldest 50 rows trimmed by retention. Byte 0
// of the input picks the page limits (the defaults, or small pages and a small byte budget);
// the rest is the ReplayRequest. Checks: Start refuses exactly the ranges with from > to
// (to != 0); the pages end (done) and deliver exactly the kept rows of the range whose topic
// starts with the prefix, each once, in seq order, within the page limits, with the same
// last_seq on every page and first_available_seq when the range reached into trimmed rows.
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/endpoints/replay_endpoint.h"
#include "storage/store.h"

namespace {

using wsbridge::ReplayLimits;
using wsbridge::ReplayPager;

void Check(bool cond) {
  if (!cond) std::abort();
}

constexpr uint64_t kRows = 400;
constexpr uint64_t kTrimmed = 50;
const char* const kTopics[] = {"a", "ab", "b", "", "\xc3\xa9t\xc3\xa9"};

struct Journal {
  std::string dir;
  std::unique_ptr<wsbridge::Store> store;
  std::vector<std::string> topics;  // by seq (index 0 unused)
};

std::string g_dir;
void RemoveDir() {
  std::error_code ec;
  std::filesystem::remove_all(g_dir, ec);
}

Journal* MakeJournal() {
  auto* j = new Journal();
  char tmpl[] = "/tmp/wsb-fuzz-replay-XXXXXX";
  Check(mkdtemp(tmpl) != nullptr);
  j->dir = g_dir = tmpl;
  std::atexit(RemoveDir);
  wsbridge::StoreOptions o;
  o.path = j->dir + "/journal.db";
  o.journal_max_rows = kRows - kTrimmed;
  auto store = wsbridge::Store::Open(o);
  Check(store.ok());
  j->store = std::move(store).value();
  j->topics.push_back("");
  wsbridge::Batch b;
  for (uint64_t seq = 1; seq <= kRows; ++seq) {
    wsbridge::InboundMessage m;
    m.upstream_seq = seq;
    m.topic = kTopics[seq % 5];
    size_t len = seq % 97 == 0 ? 100000 : seq % 7 == 0 ? 0 : seq * 13 % 3000;
    m.payload.assign(len, static_cast<char>('a' + seq % 26));
    j->topics.push_back(m.topic);
    b.inbound.push_back(std::move(m));
  }
  b.last_upstream_seq = kRows;
  Check(j->store->Commit(b, nullptr).ok());
  auto trimmed = j->store->TrimJournal(0, kRows);
  Check(trimmed.ok() && *trimmed == kTrimmed);
  return j;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Journal* journal = MakeJournal();
  if (size == 0) return 0;
  ReplayLimits limits;
  if (data[0] & 1) {
    limits.default_page_messages = 7;
    limits.max_page_messages = 50;
    limits.max_page_bytes = 64 << 10;
  }
  wsbridge::v1::ReplayRequest req;
  if (!req.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;

  auto pager = ReplayPager::Start(journal->store.get(), req, limits);
  const bool bad_range = req.to_seq() != 0 && req.from_seq() > req.to_seq();
  if (!pager.ok()) {
    Check(bad_range && pager.status().code() == wsbridge::Status::Code::kInvalidArgument);
    return 0;
  }
  Check(!bad_range);

  // What the request must deliver.
  const uint64_t from = std::max<uint64_t>(req.from_seq(), 1);
  const uint64_t to = req.to_seq() == 0 ? kRows : std::min<uint64_t>(req.to_seq(), kRows);
  const std::string& prefix = req.topic_prefix();
  std::vector<uint64_t> want;
  for (uint64_t seq = std::max(from, kTrimmed + 1); seq <= to; ++seq) {
    if (journal->topics[seq].compare(0, prefix.size(), prefix) == 0) want.push_back(seq);
  }
  const uint32_t asked = req.max_messages() == 0 ? limits.default_page_messages : req.max_messages();
  const size_t page_max = std::max<uint32_t>(1, std::min(asked, limits.max_page_messages));

  wsbridge::v1::ReplayReply reply;
  size_t got = 0;
  bool saw_first_available = false;
  for (int page = 0;; ++page) {
    Check(page < 100000);
    Check(pager->NextPage(&reply).ok());
    Check(reply.last_seq() == kRows);
    Check(static_cast<size_t>(reply.envelopes_size()) <= page_max);
    if (reply.first_available_seq() != 0) {
      Check(reply.first_available_seq() == kTrimmed + 1 && from <= kTrimmed);
      saw_first_available = true;
    }
    for (const auto& e : reply.envelopes()) {
      Check(got < want.size() && e.seq() == want[got]);
      Check(e.topic() == journal->topics[e.seq()]);
      Check(e.upstream_seq() == e.seq());
      ++got;
    }
    if (reply.done()) break;
    Check(reply.envelopes_size() > 0 || reply.first_available_seq() != 0);
  }
  Check(got == want.size());
  Check(saw_first_available == (from <= kTrimmed && from <= to));
  return 0;
}
