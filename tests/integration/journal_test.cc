// The journal at scale, through the real daemon (issue: start-up independent of the journal's
// size, damage found off the start path):
//
//   TimeToReadyIndependentOfJournalSize  exec -> /readyz 200 with a 1 M-row journal is at most
//                                        twice that with an empty database, in the same run
//   DamagedPageReportedByTheBackgroundCheck  the daemon starts on a file with a damaged page,
//                                        then its background check holds /readyz, sets
//                                        wsbridge_storage_damaged and logs the page
//   CheckCommand                         `wsbridge check --db FILE`: 0 sound, 1 damaged (one line
//                                        per problem), 2 foreign or missing
//   TruncatedOrForeignFileRefusedAtStart  the cheap checks still refuse at once, file untouched
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "integration/harness.h"
#include "testutil.h"

namespace wsbridge::testing {
namespace {

using namespace std::chrono_literals;

std::string Url(int port) { return "ws://127.0.0.1:" + std::to_string(port) + "/"; }

off_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

// Runs `wsbridge check ARGS` to its end; returns the exit status, *out its stdout and stderr.
int RunCheck(const std::string& dir, const std::vector<std::string>& args, std::string* out) {
  std::vector<std::string> argv = {Bin("wsbridge"), "check"};
  argv.insert(argv.end(), args.begin(), args.end());
  static int runs = 0;
  const std::string tag = "check" + std::to_string(++runs);
  Child c = Child::Start(argv, dir, tag);
  const int status = c.Wait(120s);
  *out = c.Stdout() + c.Stderr();
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    upstream_ = StartUpstream(dir_.path(), {"--rate=10", "--history=1000"}, &port_);
    ASSERT_NE(port_, 0) << upstream_.Stderr();
  }

  double TimeToReady(const std::string& db, const std::string& tag) {
    int status = 0;
    const double s = SecondsToReady(dir_.path(), Url(port_), db, {}, tag, &status);
    EXPECT_TRUE(ExitedZero(status)) << ReadFileOrEmpty(dir_.File(tag + ".err"));
    return s;
  }

  TempDir dir_;
  int port_ = 0;
  Child upstream_;
};

TEST_F(JournalTest, TimeToReadyIndependentOfJournalSize) {
  const std::string large = dir_.File("large.db"), empty = dir_.File("empty.db");
  ASSERT_OK(FillJournal(large, 1000000));
  { ASSERT_OK(Store::Open(StoreOptions{empty})); }
  ASSERT_GT(FileSize(large), 100 << 20);
  // Alternating, three of each; the fastest of each counts (the machine is shared).
  std::vector<double> t_empty, t_large;
  for (int i = 0; i < 3; ++i) {
    t_empty.push_back(TimeToReady(empty, "empty"));
    t_large.push_back(TimeToReady(large, "large"));
  }
  const double best_empty = *std::min_element(t_empty.begin(), t_empty.end());
  const double best_large = *std::min_element(t_large.begin(), t_large.end());
  ASSERT_GT(best_empty, 0);
  ASSERT_GT(best_large, 0);
  std::printf("time to ready: empty %.1f ms, 1 M rows (%lld MiB) %.1f ms\n", best_empty * 1e3,
              static_cast<long long>(FileSize(large) >> 20), best_large * 1e3);
  EXPECT_LE(best_large, 2 * best_empty)
      << "empty " << best_empty << " s, 1 M rows " << best_large << " s";
  // The whole-file check runs in the background all the same, and finds the file sound.
  OsPortBridge b = StartOsPortBridge(dir_.path(), Url(port_), large, {}, "checked");
  ASSERT_TRUE(
      WaitFor([&] { return MetricAt(b.http_port, "wsbridge_storage_checks_total") == 1; }, 120s))
      << b.child.Stderr();
  EXPECT_EQ(MetricAt(b.http_port, "wsbridge_storage_damaged"), 0);
  const std::string log = b.child.Stderr();
  EXPECT_EQ(LinesWith(log, "background check: " + large + " sound (1000").size(), 1u) << log;
  std::printf("background check of 1 M rows: %.2f s\n",
              MetricAt(b.http_port, "wsbridge_storage_check_seconds"));
}

TEST_F(JournalTest, DamagedPageReportedByTheBackgroundCheck) {
  const std::string db = dir_.File("damaged.db");
  ASSERT_OK(FillJournal(db, 200000));
  std::string bytes = ReadFileOrEmpty(db);
  const size_t page = 4096;  // the default
  const size_t victim = bytes.size() / page / 2 * page;  // a journal page in the middle
  for (size_t i = 0; i < page; ++i) bytes[victim + i] = static_cast<char>(0x5a);
  {
    FILE* f = std::fopen(db.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
    std::fclose(f);
  }
  const std::string page_no = "Page " + std::to_string(victim / page + 1) + ":";

  OsPortBridge b = StartOsPortBridge(dir_.path(), Url(port_), db, {});
  ASSERT_NE(b.http_port, 0) << b.child.Stderr();
  ASSERT_TRUE(WaitFor([&] { return MetricAt(b.http_port, "wsbridge_storage_damaged") == 1; }, 60s))
      << b.child.Stderr();
  EXPECT_EQ(MetricAt(b.http_port, "wsbridge_storage_checks_total"), 1);
  const std::string ready = HttpGet(b.http_port, "/readyz");
  EXPECT_EQ(ready.substr(0, 3), "503") << ready;
  EXPECT_NE(ready.find("storage: damaged: integrity_check: " + page_no), std::string::npos)
      << ready;
  EXPECT_NE(ready.find("run wsbridge check --db " + db), std::string::npos) << ready;
  const std::string log = b.child.Stderr();
  EXPECT_GE(
      LinesWith(log, "background check: " + db + " damaged: integrity_check: " + page_no).size(),
      1u)
      << log;
  // It keeps serving: the upstream's messages are still journaled.
  const double journaled = MetricAt(b.http_port, "wsbridge_messages_journaled_total");
  EXPECT_TRUE(WaitFor(
      [&] { return MetricAt(b.http_port, "wsbridge_messages_journaled_total") > journaled; }));

  // `wsbridge check` says the same, while the daemon runs.
  std::string out;
  EXPECT_EQ(RunCheck(dir_.path(), {"--db", db}, &out), 1) << out;
  EXPECT_GE(LinesWith(out, db + ": damaged: integrity_check: " + page_no).size(), 1u) << out;
}

TEST_F(JournalTest, CheckCommand) {
  const std::string db = dir_.File("sound.db");
  ASSERT_OK(FillJournal(db, 5000));
  std::string out;
  EXPECT_EQ(RunCheck(dir_.path(), {"--db", db}, &out), 0) << out;
  EXPECT_EQ(LinesWith(out, db + ": sound (5000 journal rows, seq 1..5000, checked in").size(), 1u)
      << out;
  EXPECT_EQ(LineCount(out), 1u) << out;

  const std::string foreign = dir_.File("notes.txt");
  {
    FILE* f = std::fopen(foreign.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("not a database at all, but long enough to look like a header of one......\n", f);
    std::fclose(f);
  }
  EXPECT_EQ(RunCheck(dir_.path(), {"--db", foreign}, &out), 2) << out;
  EXPECT_EQ(LinesWith(out, "wsbridge check: " + foreign).size(), 1u) << out;
  EXPECT_EQ(RunCheck(dir_.path(), {"--db", dir_.File("missing.db")}, &out), 2) << out;
  EXPECT_EQ(LinesWith(out, "no such file").size(), 1u) << out;
  EXPECT_EQ(RunCheck(dir_.path(), {}, &out), 2) << out;
  EXPECT_EQ(LinesWith(out, "--db FILE is required").size(), 1u) << out;
}

TEST_F(JournalTest, TruncatedOrForeignFileRefusedAtStart) {
  const std::string truncated = dir_.File("truncated.db");
  ASSERT_OK(FillJournal(truncated, 20000));
  const std::string whole = ReadFileOrEmpty(truncated);
  ASSERT_EQ(::truncate(truncated.c_str(), static_cast<off_t>(whole.size() / 2)), 0);
  const std::string foreign = dir_.File("foreign.db");
  {
    FILE* f = std::fopen(foreign.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("[upstream]\nurl = \"wss://example.net\"\n", f);
    std::fclose(f);
  }
  for (const std::string& db : {truncated, foreign}) {
    SCOPED_TRACE(db);
    const std::string before = ReadFileOrEmpty(db);
    const std::string tag = db == truncated ? "truncated" : "foreign";
    Child bridge = Child::Start(
        {Bin("wsbridge"), "--upstream=" + Url(port_), "--db=" + db, "--pub=tcp://127.0.0.1:*",
         "--send=tcp://127.0.0.1:*", "--replay=tcp://127.0.0.1:*", "--http=127.0.0.1:0"},
        dir_.path(), tag);
    const int status = bridge.Wait(30s);
    EXPECT_TRUE(ExitedWith(status, 2)) << status;
    const std::string log = bridge.Stderr();
    EXPECT_EQ(LinesWith(log, db + ": ").size(), 1u) << log;
    EXPECT_TRUE(ReadFileOrEmpty(db) == before) << "the file was changed";
  }
}

}  // namespace
}  // namespace wsbridge::testing
