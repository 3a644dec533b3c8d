// PayloadPool and RecyclingMessages: what the upstream I/O thread reuses instead of allocating
// for every frame. What must hold: reuse happens (same buffer, same block), the bounds hold, a
// buffer that does not fit is not used, and threads never share.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "bridge/link/payload_pool.h"
#include "bridge/link/ws_config.h"

namespace wsbridge {
namespace {

std::vector<std::string> Strings(int n, size_t bytes) {
  std::vector<std::string> v(n);
  for (std::string& s : v) s.assign(bytes, 'x');
  return v;
}

TEST(PayloadPool, TakeReusesAGivenBackBufferThatFits) {
  PayloadPool pool;
  std::vector<std::string> spent = Strings(1, 100);
  const char* buffer = spent[0].data();
  pool.PutAll(&spent);
  EXPECT_TRUE(spent.empty());
  std::string s = pool.Take(90);
  EXPECT_EQ(s.data(), buffer) << "the same allocation, read into again";
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(pool.spare(), 0u);
  EXPECT_EQ(pool.spare_bytes(), 0u);
}

TEST(PayloadPool, AMisfitIsFreedNotUsed) {
  PayloadPool pool;
  std::vector<std::string> spent = Strings(1, 100);
  pool.PutAll(&spent);
  std::string small = pool.Take(1000);  // too small: a new buffer
  EXPECT_GE(small.capacity(), 1000u);
  EXPECT_EQ(pool.spare(), 0u) << "the misfit went";
  spent = Strings(1, 4000);
  pool.PutAll(&spent);
  std::string wasteful = pool.Take(100);  // 40 times too large for it: a new buffer
  EXPECT_LT(wasteful.capacity(), 1000u);
  EXPECT_EQ(pool.spare_bytes(), 0u);
}

TEST(PayloadPool, BoundedInBytesAndInTheLargestBufferKept) {
  PayloadPool pool;
  std::vector<std::string> spent = Strings(1, PayloadPool::kMaxCapacity + 1);
  pool.PutAll(&spent);
  EXPECT_EQ(pool.spare(), 0u) << "a buffer above kMaxCapacity is freed";
  spent = Strings(static_cast<int>(2 * PayloadPool::kMaxBytes / 4096), 4096);
  pool.PutAll(&spent);
  EXPECT_TRUE(spent.empty());
  EXPECT_LE(pool.spare_bytes(), PayloadPool::kMaxBytes);
  EXPECT_GE(pool.spare_bytes(), PayloadPool::kMaxBytes - 2 * 4096) << "filled up to the bound";
}

TEST(PayloadPool, EachThreadHasItsOwn) {
  std::vector<std::string> spent = Strings(3, 100);
  PayloadPool* mine = PayloadPool::ThisThread();
  const size_t before = mine->spare();
  mine->PutAll(&spent);
  size_t other_spare = 1;
  std::thread([&] { other_spare = PayloadPool::ThisThread()->spare(); }).join();
  EXPECT_EQ(other_spare, 0u);
  EXPECT_EQ(mine->spare(), before + 3);
}

using Message = WsClientConfig::message_type;
using Manager = WsClientConfig::con_msg_manager_type;

TEST(RecyclingMessages, AReleasedMessageBlockIsReusedOnTheSameThread) {
  auto manager = std::make_shared<Manager>();
  const Message* first = manager->get_message(websocketpp::frame::opcode::text, 10).get();
  auto second = manager->get_message(websocketpp::frame::opcode::binary, 10);
  EXPECT_EQ(second.get(), first) << "the first one's block, freed, made the second";
  EXPECT_EQ(second->get_opcode(), websocketpp::frame::opcode::binary);
  EXPECT_TRUE(second->get_payload().empty());
  EXPECT_GE(second->get_raw_payload().capacity(), 10u);
}

TEST(RecyclingMessages, PayloadBuffersComeFromTheThreadsPool) {
  auto manager = std::make_shared<Manager>();
  std::vector<std::string> spent = Strings(1, 200);
  const char* buffer = spent[0].data();
  PayloadPool::ThisThread()->PutAll(&spent);
  auto m = manager->get_message(websocketpp::frame::opcode::text, 150);
  EXPECT_EQ(m->get_payload().data(), buffer);
}

TEST(RecyclingMessages, AMessageMayDieOnAnotherThread) {
  auto manager = std::make_shared<Manager>();
  auto m = manager->get_message(websocketpp::frame::opcode::text, 10);
  m->set_payload("hello");
  std::thread([m = std::move(m)]() mutable {
    EXPECT_EQ(m->get_payload(), "hello");
    m.reset();  // into this thread's free list, which goes with the thread
  }).join();
  EXPECT_EQ(manager->get_message(websocketpp::frame::opcode::text, 10)->get_payload(), "");
}

}  // namespace
}  // namespace wsbridge
