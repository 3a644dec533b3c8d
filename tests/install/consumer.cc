// An application outside this project that reads a bridge with the installed client library:
// built by tests/install/install_test.sh against `cmake --install`'s output, with
// find_package(wsbridge_client) and with pkg-config. Receives seqs 1..N (the journal first, then
// live: the gap-filling subscriber) and exits 0; 1 on a timeout or a seq out of order.
//
//   consumer PUB_ENDPOINT REPLAY_ENDPOINT N
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "client/gap_filling_subscriber.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: consumer PUB_ENDPOINT REPLAY_ENDPOINT N\n");
    return 2;
  }
  const uint64_t n = std::strtoull(argv[3], nullptr, 10);
  zmq::context_t ctx;
  wsbridge::client::GapFillingOptions options;
  options.pub_endpoint = argv[1];
  options.replay_endpoint = argv[2];
  options.start_seq = 1;  // everything the journal holds, then live
  uint64_t next = 1;
  bool in_order = true;
  wsbridge::client::GapFillingHandlers handlers;
  handlers.on_message = [&](const wsbridge::v1::Envelope& e) {
    in_order = in_order && e.seq() == next;
    ++next;
  };
  auto sub = wsbridge::client::GapFillingSubscriber::Create(&ctx, options, handlers);
  if (!sub.ok()) {
    std::fprintf(stderr, "consumer: %s\n", sub.status().ToString().c_str());
    return 1;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (next <= n && in_order && std::chrono::steady_clock::now() < deadline) {
    wsbridge::Status s = (*sub)->Poll(std::chrono::milliseconds(100));
    if (!s.ok()) {
      std::fprintf(stderr, "consumer: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  std::printf("consumer: received seq 1..%llu%s\n", static_cast<unsigned long long>(next - 1),
              in_order ? ", in order" : ", OUT OF ORDER");
  return next > n && in_order ? 0 : 1;
}
