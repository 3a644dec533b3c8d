#include "bridge/pipeline/writer.h"

#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "wsbridge.pb.h"

namespace wsbridge {
namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Writer::Writer(WriterOptions options, std::unique_ptr<Store> store, zmq::context_t* ctx,
               InboundQueue* queue, LinkEvents* events, Stats* stats)
    : options_(std::move(options)),
      queue_(queue),
      stats_(stats),
      link_events_(events),
      store_(std::move(store)),
      pub_(*ctx, zmq::socket_type::xpub),
      outbound_(options_.outbound, ctx, stats) {
  UpdateOutboxGauges();
  Cursor c = store_->cursor();
  epoch_ = c.epoch;
  accepted_upstream_seq_ = c.last_upstream_seq;
  committed_upstream_seq_ = c.last_upstream_seq;
  stats_->last_seq = static_cast<int64_t>(c.last_seq);
  stats_->last_upstream_seq = static_cast<int64_t>(c.last_upstream_seq);
}

Writer::~Writer() = default;

Status Writer::Bind() {
  try {
    pub_.set(zmq::sockopt::sndhwm, options_.pub_hwm);
    pub_.set(zmq::sockopt::linger, 0);
    auto guard = BindEndpoint(pub_, options_.pub_endpoint, kPubEndpoint, options_.security);
    if (!guard.ok()) return guard.status();
    pub_guard_ = std::move(guard).value();
    bound_endpoint_ = pub_.get(zmq::sockopt::last_endpoint);
    pub_fd_ = pub_.get(zmq::sockopt::fd);
  } catch (const zmq::error_t& e) {
    return Status::InvalidArgument("zmq.pub: cannot bind " + options_.pub_endpoint + ": " +
                                   e.what());
  }
  return outbound_.Bind();
}

void Writer::Stop() {
  stop_ = true;
  queue_->Wake();
}

size_t Writer::FillBatch() {
  size_t bytes = 0;
  size_t start = pending_pos_;
  while (pending_pos_ < pending_.size() && batch_.inbound.size() < options_.max_batch_messages &&
         bytes < options_.max_batch_bytes) {
    InboundFrame& f = pending_[pending_pos_++];
    if (f.upstream_seq) {
      uint64_t useq = *f.upstream_seq;
      if (useq <= accepted_upstream_seq_) {
        stats_->duplicates_dropped.fetch_add(1, std::memory_order_relaxed);
        SPDLOG_DEBUG("dropped duplicate upstream seq {} (last {})", useq, accepted_upstream_seq_);
        continue;
      }
      if (accepted_upstream_seq_ != 0 && useq > accepted_upstream_seq_ + 1) {
        uint64_t missing = useq - accepted_upstream_seq_ - 1;
        stats_->seq_gaps.fetch_add(1, std::memory_order_relaxed);
        stats_->seq_gap_messages.fetch_add(missing, std::memory_order_relaxed);
        spdlog::warn("upstream seq jumped from {} to {}: {} message(s) the upstream no longer has",
                     accepted_upstream_seq_, useq, missing);
      }
      accepted_upstream_seq_ = useq;
      batch_.last_upstream_seq = useq;
    }
    bytes += f.payload.size();
    InboundMessage m;
    m.upstream_seq = f.upstream_seq.value_or(0);
    m.topic = std::move(f.topic);
    m.payload = std::move(f.payload);
    m.binary = f.binary;
    m.received_at_unix_ns = f.received_at_unix_ns;
    batch_.inbound.push_back(std::move(m));
  }
  if (pending_pos_ == pending_.size()) {
    pending_.clear();
    pending_pos_ = 0;
  }
  return pending_pos_ - start;
}

bool Writer::CommitAndPublish(bool give_back_payloads) {
  BatchResult result;
  int64_t t0 = NowNs();
  Status s = store_->Commit(batch_, &result);
  if (!s.ok()) {
    outbound_.OnCommitFailed(s, &batch_);
    batch_.delivered_up_to = 0;  // deletions are retried when the next events come
    batch_.acked_ids.clear();
    stats_->commit_failures.fetch_add(1, std::memory_order_relaxed);
    if (stats_->storage_ok.exchange(0) == 1) {
      spdlog::error("storage: commit failed, inbound paused until it works again: {}",
                    s.ToString());
      stats_->SetStorageReason("storage: " + s.ToString());
    }
    return false;
  }
  stats_->commit_seconds.Observe(NowNs() - t0);
  stats_->commits.fetch_add(1, std::memory_order_relaxed);
  if (stats_->storage_ok.exchange(1) == 0) {
    spdlog::info("storage: commits work again");
    stats_->SetStorageReason("");
  }
  Cursor c = store_->cursor();
  committed_upstream_seq_ = c.last_upstream_seq;
  stats_->last_seq = static_cast<int64_t>(c.last_seq);
  stats_->last_upstream_seq = static_cast<int64_t>(c.last_upstream_seq);
  stats_->journaled.fetch_add(batch_.inbound.size(), std::memory_order_relaxed);
  // G3: producers hear ACCEPTED only now, after the commit.
  const bool outbox_changed =
      !batch_.outbound.empty() || batch_.delivered_up_to != 0 || !batch_.acked_ids.empty();
  outbound_.OnCommitted(result);
  // G1: only now, after the commit, do the messages leave the process.
  Publish(result.first_seq);
  if (on_journaled_ && !batch_.inbound.empty()) on_journaled_(c.last_seq);
  rows_since_trim_ += batch_.inbound.size();
  if (give_back_payloads && !batch_.inbound.empty()) {
    for (InboundMessage& m : batch_.inbound) spent_.push_back(std::move(m.payload));
    queue_->GiveBack(&spent_);
  }
  batch_.clear();
  if (outbox_changed) UpdateOutboxGauges();
  return true;
}

void Writer::Publish(uint64_t first_seq) {
  wsbridge::v1::Envelope env;
  uint64_t seq = first_seq;
  for (InboundMessage& m : batch_.inbound) {
    env.set_seq(seq++);
    env.set_upstream_seq(m.upstream_seq);
    env.set_topic(m.topic);
    env.mutable_payload()->swap(m.payload);  // lent to the envelope, returned below
    env.set_binary(m.binary);
    env.set_received_at_unix_ns(m.received_at_unix_ns);
    env.set_epoch(epoch_);
    // Serialized straight into the frame ZeroMQ sends: no intermediate copy.
    zmq::message_t topic(m.topic.data(), m.topic.size());
    zmq::message_t body(env.ByteSizeLong());
    env.SerializeWithCachedSizesToArray(static_cast<uint8_t*>(body.data()));
    m.payload.swap(*env.mutable_payload());
    // PUB never blocks: past the high-water mark a slow subscriber misses messages and gets
    // them back through replay (the journal is the source of truth).
    auto sent = pub_.send(topic, zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    if (sent) (void)pub_.send(body, zmq::send_flags::dontwait);
  }
  stats_->published.fetch_add(batch_.inbound.size(), std::memory_order_relaxed);
}

bool Writer::TryCommitInline(std::vector<InboundFrame>* frames) {
  std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
  // Anything queued or pending would have to go first; a batch still here is a failed commit
  // the writer retries; replies pending belong to the writer's turn. All of that: not idle.
  if (!lock.owns_lock() || stop_.load() || !pending_.empty() || !batch_.empty() ||
      outbound_.has_pending_replies() || !queue_->empty()) {
    return false;
  }
  pending_.swap(*frames);  // both were empty: *frames keeps pending_'s capacity
  while (!pending_.empty()) {
    FillBatch();
    // On the I/O thread, which allocated the payloads: they are freed here.
    if (!batch_.empty() && !CommitAndPublish(/*give_back_payloads=*/false)) {
      queue_->Wake();  // the writer thread takes over the retry, and what is left
      break;
    }
  }
  DrainSubscriptions();  // the XPUB's notifications may have been consumed by these sends
  // Retention is the writer thread's: wake it once a step's worth of rows came in this way.
  if (rows_since_trim_ >= TrimPace()) queue_->Wake();
  return true;
}

void Writer::Run() {
  // The PUB socket is polled through its notification fd, not as a ZeroMQ socket: zmq_poll
  // would use the socket outside mu_, while TryCommitInline() may be sending on it.
  zmq::pollitem_t items[] = {{nullptr, pub_fd_, ZMQ_POLLIN, 0},
                             {outbound_.socket().handle(), 0, ZMQ_POLLIN, 0},
                             {nullptr, queue_->wake_fd(), ZMQ_POLLIN, 0}};
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    MaybeTrim(/*after_commit=*/false);
    DrainSubscriptions();
    link_events_->TakeAll(&events_);
    outbound_.HandleEvents(events_, &batch_);
    const bool stopping = stop_.load();
    // Producers' requests join the batch: one commit answers all of them (group commit).
    // Once stopping, no more are taken: what was accepted is answered, nothing new comes in.
    if (!stopping && !outbound_.has_pending_replies()) {
      outbound_.ReadRequests(&batch_, WallNowNs());
    }
    if (pending_.empty() && batch_.inbound.empty()) {
      if (queue_->PopAll(&pending_) && resume_reader_) resume_reader_();
    }
    if (batch_.inbound.empty()) FillBatch();
    if (!batch_.empty()) {
      const bool committed = CommitAndPublish(/*give_back_payloads=*/true);
      if (committed) MaybeTrim(/*after_commit=*/true);  // over by this batch at most
      if (!committed) {
        // Inbound rows stay in the batch for the retry; producers got REJECTED_STORAGE.
        if (stopping) {
          spdlog::error("storage: stopping with {} uncommitted message(s); the upstream will "
                        "resend them after the resume point", batch_.inbound.size());
          break;
        }
        lock.unlock();
        poll(nullptr, 0, options_.retry_ms);
        lock.lock();
        continue;
      }
    }
    outbound_.FillDelivery(store_.get(), deliver_);
    if (!pending_.empty()) continue;  // more frames already waiting: next batch at once
    if (stopping) {
      if (queue_->PopAll(&pending_) && resume_reader_) resume_reader_();
      if (pending_.empty()) break;
      continue;
    }
    lock.unlock();
    // Idle: wait for work, or go straight back to a retention backlog.
    zmq::poll(items, 3, std::chrono::milliseconds(trim_behind_ ? 0 : 1000));
    lock.lock();
  }
}

void Writer::DrainSubscriptions() {
  zmq::message_t msg;
  while (pub_.recv(msg, zmq::recv_flags::dontwait)) {
    if (msg.size() == 0) continue;
    const char* data = static_cast<const char*>(msg.data());
    std::string prefix(data + 1, msg.size() - 1);
    if (data[0] == 1) {
      stats_->subscriptions.fetch_add(1, std::memory_order_relaxed);
      spdlog::debug("zmq: subscription to topic prefix \"{}\"", prefix);
    } else if (data[0] == 0) {
      stats_->subscriptions.fetch_sub(1, std::memory_order_relaxed);
      spdlog::debug("zmq: unsubscription from topic prefix \"{}\"", prefix);
    }
  }
}

void Writer::UpdateOutboxGauges() {
  auto o = store_->Outbox();
  if (!o.ok()) return;
  stats_->outbox_depth = static_cast<int64_t>(o->depth);
  stats_->outbox_oldest_unix_ns = o->oldest_accepted_unix_ns;
}

void Writer::MaybeTrim(bool after_commit) {
  // Retention keeps pace with the inserts: a step right after each of this thread's commits,
  // as soon as a step's worth of rows came in by the I/O thread's, while the last step found
  // more than it could delete, and at least every trim_interval_ms (the age bound on a quiet
  // feed). A step on a journal within its bounds reads one row and writes nothing.
  int64_t now = NowNs();
  const bool due = (after_commit && rows_since_trim_ > 0) || trim_behind_ ||
                   rows_since_trim_ >= TrimPace() ||
                   now - last_trim_ns_ >= options_.trim_interval_ms * 1000000LL;
  if (!due) return;
  last_trim_ns_ = now;
  // Each step deletes what came in since the last one and a fixed step more, so a backlog
  // shrinks while the feed runs; each stays short, so the inbound path never waits long.
  const uint64_t step = options_.trim_step_rows + rows_since_trim_;
  rows_since_trim_ = 0;
  const uint64_t hold = age_hold_ != nullptr ? std::max<uint64_t>(1, age_hold_->load()) : 0;
  auto trimmed = store_->TrimJournal(WallNowNs(), step, hold);
  trim_behind_ = trimmed.ok() && *trimmed == step;  // more to do: trim again at once
  if (!trimmed.ok()) spdlog::warn("journal: trim failed: {}", trimmed.status().ToString());
  if (auto b = store_->Bounds(); b.ok()) {
    stats_->journal_rows = static_cast<int64_t>(b->rows);
    stats_->journal_bytes = static_cast<int64_t>(b->bytes);
  }
}

}  // namespace wsbridge
