// libFuzzer target: the intake of SendRequest bytes on zmq.send, through the real code
// (bridge/endpoints/outbound.h: Outbound::ReadRequests parses with ParseFromArray and validates) on real
// ZeroMQ sockets (inproc), then the reply the producer gets.
//
// Input: byte 0 holds flags (bit 0: upstream acks on, i.e. the id must come from the payload's
// "id" field; bit 1: the batch's commit fails); the rest is what a DEALER sends, split into
// frames at each "\x00\xff" (at most 4 frames), so multi-frame and REQ-shaped envelopes are
// covered too. Checks: every request queued for the batch has an id and a payload (and with acks
// the id is the payload's "id"); the producer gets exactly one reply, a SendReply that parses,
// ACCEPTED only for a queued request, with the id it was queued under.
#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "bridge/endpoints/outbound.h"
#include "bridge/protocol/json_fields.h"
#include "bridge/stats.h"
#include "wsbridge.pb.h"

namespace {

using wsbridge::Batch;
using wsbridge::BatchResult;
using wsbridge::SendOutcome;

void Check(bool cond) {
  if (!cond) std::abort();
}

struct Endpoint {
  std::unique_ptr<wsbridge::Outbound> outbound;
  std::unique_ptr<zmq::socket_t> producer;  // DEALER
};

struct World {
  zmq::context_t ctx{1};
  wsbridge::Stats stats;
  Endpoint endpoints[2];  // [0]: no acks, [1]: acks on "id"
};

World* MakeWorld() {
  spdlog::set_level(spdlog::level::off);  // every rejection is logged: not what we measure
  google::protobuf::SetLogHandler(nullptr);  // nor protobuf's complaints about bad UTF-8
  auto* w = new World();
  for (int acks = 0; acks < 2; ++acks) {
    wsbridge::OutboundOptions o;
    o.endpoint = "inproc://fuzz-send-" + std::to_string(acks);
    o.acks = acks == 1;
    o.ack_id_pointer = "/id";
    Endpoint& e = w->endpoints[acks];
    e.outbound = std::make_unique<wsbridge::Outbound>(o, &w->ctx, &w->stats);
    Check(e.outbound->Bind().ok());
    e.producer = std::make_unique<zmq::socket_t>(w->ctx, zmq::socket_type::dealer);
    e.producer->set(zmq::sockopt::linger, 0);
    e.producer->connect(o.endpoint);
  }
  return w;
}

bool WaitReadable(zmq::socket_t& s, int ms) {
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  return zmq::poll(&item, 1, std::chrono::milliseconds(ms)) > 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = MakeWorld();
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::vector<std::string_view> frames;
  size_t start = 0;
  while (frames.size() < 3) {
    size_t sep = rest.find(std::string_view("\x00\xff", 2), start);
    if (sep == std::string_view::npos) break;
    frames.push_back(rest.substr(start, sep - start));
    start = sep + 2;
  }
  frames.push_back(rest.substr(start));

  const bool acks = flags & 1;
  Endpoint& e = world->endpoints[acks ? 1 : 0];
  for (size_t i = 0; i < frames.size(); ++i) {
    auto flag = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    Check(e.producer->send(zmq::buffer(frames[i].data(), frames[i].size()), flag).has_value());
  }
  Check(WaitReadable(e.outbound->socket(), 5000));

  Batch batch;
  e.outbound->ReadRequests(&batch, 1);
  Check(batch.outbound.size() <= 1);
  for (const auto& r : batch.outbound) {
    Check(!r.id.empty() && !r.payload.empty());
    if (acks) {
      auto id = wsbridge::ExtractStringField(r.payload, "/id");
      Check(!r.binary && id && *id == r.id);
    }
  }
  std::string queued_id = batch.outbound.empty() ? "" : batch.outbound[0].id;
  if (e.outbound->has_pending_replies()) {
    Check(!batch.outbound.empty());
    if (flags & 2) {
      e.outbound->OnCommitFailed(wsbridge::Status::IOError("fuzz: database or disk is full"),
                                 &batch);
      Check(batch.outbound.empty());
    } else {
      BatchResult result;
      result.outbound.push_back(SendOutcome{SendOutcome::Kind::kAccepted, 1});
      e.outbound->OnCommitted(result);
    }
  }
  Check(!e.outbound->has_pending_replies());

  // Exactly one reply: a multipart message whose last frame is the SendReply.
  Check(WaitReadable(*e.producer, 5000));
  std::vector<zmq::message_t> reply;
  do {
    zmq::message_t part;
    Check(e.producer->recv(part, zmq::recv_flags::dontwait).has_value());
    reply.push_back(std::move(part));
  } while (reply.back().more());
  Check(reply.size() == frames.size());  // the envelope frames come back before the reply
  wsbridge::v1::SendReply r;
  if (!r.ParseFromArray(reply.back().data(), static_cast<int>(reply.back().size()))) {
    // Known bug (docs/reliability.md, fuzzing): a SendRequest that fails to parse because its id
    // is not UTF-8 is answered with that id echoed, which makes the SendReply unparseable for
    // the producer (proto3 strings must be UTF-8). Tolerated only in exactly that case, so that
    // fuzzing goes on; tests/unit/fuzz_regression_test.cc holds the input.
    wsbridge::v1::SendRequest req;
    Check(!req.ParseFromArray(frames.back().data(), static_cast<int>(frames.back().size())));
    static bool noted = false;
    if (!noted) std::fprintf(stderr, "fuzz_send_request: known bug hit (unparseable SendReply "
                                     "for a non-UTF-8 id); going on\n");
    noted = true;
    return 0;
  }
  switch (r.status()) {
    case wsbridge::v1::ACCEPTED:
      Check(!queued_id.empty() && r.id() == queued_id && r.outbox_seq() == 1 && !(flags & 2));
      break;
    case wsbridge::v1::REJECTED_STORAGE:
      Check(!queued_id.empty() && (flags & 2) && !r.error().empty());
      break;
    case wsbridge::v1::REJECTED_INVALID:
      Check(queued_id.empty() && !r.error().empty());
      break;
    default:
      Check(false);
  }
  zmq::message_t extra;
  Check(!e.producer->recv(extra, zmq::recv_flags::dontwait).has_value());
  return 0;
}
