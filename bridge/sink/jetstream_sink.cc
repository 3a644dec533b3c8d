#include "bridge/sink/jetstream_sink.h"

#include <nats/nats.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <unordered_map>
#include <vector>

#include "bridge/clock.h"
#include "bridge/link/backoff.h"
#include "common/thread_name.h"
#include "storage/store.h"

namespace wsbridge {

std::string SinkSubject(const std::string& prefix, const std::string& topic) {
  std::string out = prefix + ".";
  if (topic.empty()) return out + "_";
  for (unsigned char c : topic) {
    const bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-';  // ASCII, whatever the locale
    out += safe ? static_cast<char>(c) : '_';
  }
  return out;
}

std::string SinkMsgId(uint64_t epoch, uint64_t seq) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%016" PRIx64 "-%" PRIu64, epoch, seq);
  return buf;
}

namespace {

constexpr const char* kSeqHeader = "Wsbridge-Seq";
constexpr const char* kEpochHeader = "Wsbridge-Epoch";
constexpr jsErrCode kWrongLastSequence = static_cast<jsErrCode>(10071);
constexpr jsErrCode kWrongLastMsgId = static_cast<jsErrCode>(10070);
constexpr size_t kReadRows = 256;          // journal rows per read
constexpr int64_t kMetricsEveryMs = 100;   // lag gauges and the retention hold
constexpr uint64_t kScanBack = 64;         // messages read back from a stream's end to find ours
constexpr size_t kMaxCachedTopics = 4096;  // subjects kept made; a feed with more starts over

// A header value: bytes below 0x20, 0x7f, '%', and a space at either end percent-encoded (a CR
// or LF would end the header, and clients trim blanks at the ends; a topic comes from the
// upstream and may hold anything).
std::string HeaderValue(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(v[i]);
    const bool end_space = c == ' ' && (i == 0 || i + 1 == v.size());
    if (c < 0x20 || c == 0x7f || c == '%' || end_space) {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// nats.c's status, and its last error's text when there is one, in one line.
std::string NatsError(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  const char* last = nats_GetLastError(nullptr);
  if (last != nullptr && *last != '\0' && text.find(last) == std::string::npos) {
    text += std::string(": ") + last;
  }
  return text;
}

bool ParseU64(const char* text, int base, uint64_t* out) {
  if (text == nullptr || *text == '\0') return false;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, base);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

template <typename T, void (*Destroy)(T*)>
struct NatsDeleter {
  void operator()(T* p) const { Destroy(p); }
};
using OptionsPtr = std::unique_ptr<natsOptions, NatsDeleter<natsOptions, natsOptions_Destroy>>;
using StreamInfoPtr =
    std::unique_ptr<jsStreamInfo, NatsDeleter<jsStreamInfo, jsStreamInfo_Destroy>>;
using MsgPtr = std::unique_ptr<natsMsg, NatsDeleter<natsMsg, natsMsg_Destroy>>;

}  // namespace

// One connection to the cluster, in step with the stream: connect, read where the stream
// stands, then publish rows until something fails or the sink stops. Lives on the sink's
// thread, registered as the sink's session_ while it has a connection: nats.c's threads reach
// it only through the sink's callbacks, under session_mu_, for its own connection.
class JetStreamSink::Session {
 public:
  explicit Session(JetStreamSink* sink)
      : sink_(sink), cfg_(sink->options_.config), acked_(sink->acked_) {
    std::snprintf(epoch_hex_, sizeof epoch_hex_, "%016" PRIx64, sink->epoch_);
  }
  ~Session() { Close(); }

  // Each returns OK or the failure, with its reason in *why.
  Status Connect(SinkError* why);
  Status Sync(SinkError* why);
  Status Deliver(SinkError* why);

  // nats.c's threads, under the sink's session_mu_.
  bool Owns(const jsCtx* js) const { return js != nullptr && js == js_; }
  bool Owns(const natsConnection* nc) const { return nc != nullptr && nc == nc_; }
  // A publish the stream refused (its error handler).
  void Refused(jsPubAckErr* pae);
  // Records the first failure that nats.c's threads report (and wakes the sink's thread).
  void Fail(SinkError why, std::string text);

 private:
  Status TakeFailure(SinkError* why);
  Status Publish(const JournalRow& row, SinkError* why);
  // Rows trimmed before they could be read: counted and logged, never skipped silently.
  // `idle`: nothing is in flight, so the stream's position moves past them at once.
  void Skip(uint64_t from, uint64_t to, bool idle);
  // Publishes up to max_pending rows from next_ on; how many.
  StatusOr<uint64_t> PublishBatch(SinkError* why);
  // Waits until the stream answered every publish of the batch (or a failure, or Stop()).
  Status AwaitBatch(SinkError* why);
  void Close();

  JetStreamSink* const sink_;
  const JetStreamConfig& cfg_;
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;

  uint64_t next_ = 0;             // the next journal seq to publish
  uint64_t expected_last_ = 0;    // the stream sequence of the row published last
  uint64_t published_n_ = 0;      // publishes handed to nats.c in this session
  uint64_t last_published_ = 0;   // the journal seq of the last of them
  uint64_t last_handled_ = 0;     // of the last row published or skipped as too large
  std::atomic<uint64_t>& acked_;  // the sink's acked_: the highest journal seq acknowledged
  std::atomic<bool> failed_{false};
  std::mutex failure_mu_;
  SinkError failure_ = SinkError::kDisconnected;
  std::string failure_text_;
  std::vector<JournalRow> rows_;
  char epoch_hex_[20] = {};  // the database's epoch, 16 hex digits
  // topic -> (subject, Wsbridge-Topic value)
  std::unordered_map<std::string, std::pair<std::string, std::string>> topics_;
};

Status JetStreamSink::Session::Connect(SinkError* why) {
  *why = SinkError::kConnect;
  natsOptions* raw = nullptr;
  if (natsOptions_Create(&raw) != NATS_OK) return Status::IOError("nats: cannot create options");
  OptionsPtr opts(raw);
  std::vector<const char*> servers;
  for (const std::string& s : cfg_.servers) servers.push_back(s.c_str());
  auto expand = [&](const std::string& value, const char* key) -> StatusOr<std::string> {
    auto v = ExpandFileRefs(value);
    if (!v.ok()) return Status::InvalidArgument(std::string(key) + ": " + v.status().message());
    return v;
  };
  natsStatus s =
      natsOptions_SetServers(opts.get(), servers.data(), static_cast<int>(servers.size()));
  if (s == NATS_OK) s = natsOptions_SetName(opts.get(), "wsbridge");
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts.get(), 2000);
  // Reconnection is the sink's own (backoff, then reading the stream again), not nats.c's.
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(opts.get(), false);
  // A blackholed link is noticed within about 3 s without an answer to a PING.
  if (s == NATS_OK) s = natsOptions_SetPingInterval(opts.get(), 1000);
  if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(opts.get(), 3);
  if (s == NATS_OK) s = natsOptions_SetClosedCB(opts.get(), OnConnectionLost, sink_);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(opts.get(), OnConnectionLost, sink_);
  if (s == NATS_OK && !cfg_.user.empty()) {
    auto password = expand(cfg_.password, "sink.jetstream.password");
    if (!password.ok()) return password.status();
    s = natsOptions_SetUserInfo(opts.get(), cfg_.user.c_str(), password->c_str());
  }
  if (s == NATS_OK && !cfg_.token.empty()) {
    auto token = expand(cfg_.token, "sink.jetstream.token");
    if (!token.ok()) return token.status();
    s = natsOptions_SetToken(opts.get(), token->c_str());
  }
  if (s == NATS_OK && !cfg_.credentials_file.empty()) {
    s = natsOptions_SetUserCredentialsFromFiles(opts.get(), cfg_.credentials_file.c_str(), nullptr);
  }
  const bool tls = std::any_of(cfg_.servers.begin(), cfg_.servers.end(),
                               [](const std::string& u) { return u.rfind("tls://", 0) == 0; });
  if (s == NATS_OK && (tls || !cfg_.tls.ca_file.empty()))
    s = natsOptions_SetSecure(opts.get(), true);
  if (s == NATS_OK && !cfg_.tls.ca_file.empty()) {
    s = natsOptions_LoadCATrustedCertificates(opts.get(), cfg_.tls.ca_file.c_str());
  }
  if (s != NATS_OK) {
    return Status::InvalidArgument("sink.jetstream: the connection options: " + NatsError(s));
  }

  natsConnection* nc = nullptr;
  s = natsConnection_Connect(&nc, opts.get());
  {
    std::lock_guard<std::mutex> lock(sink_->session_mu_);
    nc_ = nc;
    sink_->session_ = this;
  }
  if (s != NATS_OK) {
    std::string text = NatsError(s);
    const bool auth = s == NATS_NOT_PERMITTED || text.find("uthorization") != std::string::npos ||
                      text.find("uthentication") != std::string::npos;
    *why = auth ? SinkError::kAuth : SinkError::kConnect;
    nc_ = nullptr;
    return Status::Unavailable(
        std::string(auth ? "authentication refused by " : "cannot connect to ") +
        (cfg_.servers.size() == 1 ? cfg_.servers[0] : "the servers") + ": " + text);
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = 5000;  // JetStream API calls (stream info, create, get message)
  jo.PublishAsync.MaxPending = cfg_.max_pending + 1;  // a batch never reaches it
  // Only refusals call back: acks are awaited a batch at a time (js_PublishAsyncComplete),
  // which costs nothing per message (an ack handler took as much as the publish itself).
  jo.PublishAsync.ErrHandler = OnRefused;
  jo.PublishAsync.ErrHandlerClosure = sink_;
  jsCtx* js = nullptr;
  s = natsConnection_JetStream(&js, nc_, &jo);
  if (s != NATS_OK) return Status::Unavailable("JetStream context: " + NatsError(s));
  std::lock_guard<std::mutex> lock(sink_->session_mu_);
  js_ = js;
  return Status::OK();
}

Status JetStreamSink::Session::Sync(SinkError* why) {
  *why = SinkError::kStream;
  const std::string& name = cfg_.stream;
  const std::string subjects = cfg_.subject_prefix + ".>";
  jsStreamInfo* raw = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&raw, js_, name.c_str(), nullptr, &jerr);
  if (s == NATS_NOT_FOUND) {
    if (!cfg_.create_stream) {
      return Status::Unavailable("stream " + name +
                                 " does not exist and sink.jetstream.create_stream is false");
    }
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = name.c_str();
    const char* subject = subjects.c_str();
    sc.Subjects = &subject;
    sc.SubjectsLen = 1;
    sc.Replicas = cfg_.replicas;
    sc.Storage = js_FileStorage;
    s = js_AddStream(&raw, js_, &sc, nullptr, &jerr);
    if (s != NATS_OK) {
      return Status::Unavailable("cannot create stream " + name + " (subjects " + subjects +
                                 ", replicas " + std::to_string(cfg_.replicas) +
                                 "): " + NatsError(s));
    }
    spdlog::info("sink: created stream {} (subjects {}, replicas {})", name, subjects,
                 cfg_.replicas);
  } else if (s != NATS_OK) {
    return Status::Unavailable("stream " + name + ": " + NatsError(s));
  }
  StreamInfoPtr info(raw);
  // Our subjects must be the stream's: otherwise a publish would be refused or stored elsewhere.
  bool covered = false;
  std::string theirs;
  for (int i = 0; info->Config != nullptr && i < info->Config->SubjectsLen; ++i) {
    const std::string subj = info->Config->Subjects[i];
    covered = covered || subj == subjects || subj == ">";
    theirs += (theirs.empty() ? "" : ", ") + subj;
  }
  if (!covered) {
    *why = SinkError::kStreamMismatch;
    return Status::InvalidArgument("stream " + name + " exists with subjects [" + theirs +
                                   "], not " + subjects +
                                   ": not publishing (add the subjects to the stream, or set "
                                   "sink.jetstream.subject_prefix / stream)");
  }

  // Where the stream stands for this database: the headers of the last message a bridge wrote
  // (a message someone else published after it is stepped over, up to kScanBack of them).
  const uint64_t stream_last = info->State.LastSeq;
  uint64_t their_epoch = 0, their_seq = 0;
  bool ours = false;
  for (uint64_t seq = stream_last; info->State.Msgs > 0 && seq >= info->State.FirstSeq && seq > 0 &&
                                   stream_last - seq < kScanBack;
       --seq) {
    natsMsg* m = nullptr;
    s = js_GetMsg(&m, js_, name.c_str(), seq, nullptr, &jerr);
    if (s == NATS_NOT_FOUND) continue;  // deleted
    if (s != NATS_OK) {
      return Status::Unavailable("stream " + name + ": reading message " + std::to_string(seq) +
                                 ": " + NatsError(s));
    }
    MsgPtr msg(m);
    const char* epoch_text = nullptr;
    const char* seq_text = nullptr;
    if (natsMsgHeader_Get(msg.get(), kEpochHeader, &epoch_text) == NATS_OK &&
        natsMsgHeader_Get(msg.get(), kSeqHeader, &seq_text) == NATS_OK &&
        ParseU64(epoch_text, 16, &their_epoch) && ParseU64(seq_text, 10, &their_seq)) {
      ours = their_epoch == sink_->epoch_;
      if (seq != stream_last) {
        spdlog::warn(
            "sink: stream {} has {} message(s) after the last one a bridge wrote "
            "(stream sequence {}): published by someone else into {}",
            name, stream_last - seq, seq, subjects);
      }
      break;
    }
  }
  auto bounds = sink_->store_->Bounds();
  if (!bounds.ok()) return bounds.status();
  const uint64_t journal_first = bounds->first_seq != 0 ? bounds->first_seq : bounds->last_seq + 1;
  if (ours) {
    next_ = their_seq + 1;
    if (their_seq > bounds->last_seq) {
      spdlog::warn(
          "sink: stream {} holds seq {} of this database's epoch, past the journal's "
          "last seq {} (the database was restored from an older copy?): continuing "
          "after seq {}",
          name, their_seq, bounds->last_seq, their_seq);
    }
    spdlog::info(
        "sink: stream {} holds this journal up to seq {} (stream sequence {}): "
        "continuing after it",
        name, their_seq, stream_last);
  } else {
    next_ = journal_first;
    if (info->State.Msgs > 0 && their_epoch != 0) {
      spdlog::info(
          "sink: stream {} ends with epoch {:016x}, this database is epoch {:016x}: a new "
          "history from seq {}",
          name, their_epoch, sink_->epoch_, next_);
    } else {
      spdlog::info("sink: stream {} holds nothing of this database: publishing from seq {}", name,
                   next_);
    }
  }
  expected_last_ = stream_last;
  acked_ = next_ - 1;
  return Status::OK();
}

Status JetStreamSink::Session::Publish(const JournalRow& row, SinkError* why) {
  const InboundMessage& m = row.msg;
  // A topic's subject and header value are made once (a feed has few topics); the numbers go
  // through stack buffers: per row, only nats.c allocates.
  auto topic = topics_.find(m.topic);
  if (topic == topics_.end()) {
    if (topics_.size() >= kMaxCachedTopics) topics_.clear();
    topic = topics_
                .emplace(m.topic, std::make_pair(SinkSubject(cfg_.subject_prefix, m.topic),
                                                 HeaderValue(m.topic)))
                .first;
  }
  natsMsg* raw = nullptr;
  natsStatus s = natsMsg_Create(&raw, topic->second.first.c_str(), nullptr, m.payload.data(),
                                static_cast<int>(m.payload.size()));
  if (s != NATS_OK) return Status::IOError("nats: cannot create a message: " + NatsError(s));
  MsgPtr msg(raw);
  char id[40], prev_id[40], expected[24], seq[24], upstream_seq[24], received_at[24];
  std::snprintf(id, sizeof id, "%s-%" PRIu64, epoch_hex_, row.seq);
  std::snprintf(prev_id, sizeof prev_id, "%s-%" PRIu64, epoch_hex_, last_published_);
  std::snprintf(expected, sizeof expected, "%" PRIu64, expected_last_);
  std::snprintf(seq, sizeof seq, "%" PRIu64, row.seq);
  std::snprintf(upstream_seq, sizeof upstream_seq, "%" PRIu64, m.upstream_seq);
  std::snprintf(received_at, sizeof received_at, "%" PRId64, m.received_at_unix_ns);
  const std::pair<const char*, const char*> headers[] = {
      {"Nats-Msg-Id", id},
      {"Nats-Expected-Last-Sequence", expected},
      {kSeqHeader, seq},
      {kEpochHeader, epoch_hex_},
      {"Wsbridge-Upstream-Seq", upstream_seq},
      {"Wsbridge-Topic", topic->second.second.c_str()},
      {"Wsbridge-Received-At", received_at},
      // After the session's first row, also the previous row's id: a row refused (someone
      // else's message took its place) must not be followed by the next one landing after the
      // stranger. (Not on the first: a restarted server may not know its last id until a row
      // is stored.)
      {"Nats-Expected-Last-Msg-Id", published_n_ > 0 ? prev_id : nullptr},
      {"Wsbridge-Binary", m.binary ? "true" : nullptr},  // a binary frame (text: absent)
  };
  for (const auto& [key, value] : headers) {
    if (s == NATS_OK && value != nullptr) s = natsMsgHeader_Set(msg.get(), key, value);
  }
  if (s == NATS_OK) {
    natsMsg* out = msg.release();
    s = js_PublishMsgAsync(js_, &out, nullptr);
    msg.reset(out);  // still ours when the publish failed (nats.c sets it to NULL on success)
  }
  if (s == NATS_MAX_PAYLOAD) {
    // Larger than the server's max_payload: no retry can store it. Counted and logged, never
    // skipped silently; the rows after it go on (set max_payload above
    // upstream.max_message_bytes plus 1 KiB of headers to never see this).
    sink_->stats_->sink.skipped.fetch_add(1, std::memory_order_relaxed);
    sink_->stats_->sink.errors[static_cast<size_t>(SinkError::kRejected)].fetch_add(1);
    spdlog::error(
        "sink: seq {} ({} bytes) is larger than the server's max_payload: not in the "
        "stream ({})",
        row.seq, m.payload.size(), NatsError(s));
    last_handled_ = row.seq;
    return Status::OK();
  }
  if (s != NATS_OK) {
    *why = SinkError::kDisconnected;
    return Status::Unavailable("publish of seq " + std::to_string(row.seq) + ": " + NatsError(s));
  }
  ++expected_last_;
  ++published_n_;
  last_published_ = row.seq;
  last_handled_ = row.seq;
  sink_->stats_->sink.published.fetch_add(1, std::memory_order_relaxed);
  return Status::OK();
}

Status JetStreamSink::Session::Deliver(SinkError* why) {
  JetStreamSink& sink = *sink_;
  sink.stats_->sink.connected = 1;
  sink.stats_->SetSinkReason("");
  sink.UpdateGauges(true);
  while (true) {
    if (failed_) return TakeFailure(why);
    sink.UpdateGauges(false);
    {
      // Nothing to publish: wait for a commit (or a failure, Stop(), 100 ms for the gauges).
      std::unique_lock<std::mutex> lock(sink.mu_);
      if (sink.stop_) return Status::OK();
      if (next_ > sink.journal_last_) {
        sink.cv_.wait_for(lock, std::chrono::milliseconds(kMetricsEveryMs),
                          [&] { return sink.stop_ || failed_ || sink.journal_last_ >= next_; });
        continue;
      }
    }
    auto published = PublishBatch(why);
    if (!published.ok()) return published.status();
    if (*published == 0) continue;
    if (Status s = AwaitBatch(why); !s.ok() || failed_) return failed_ ? TakeFailure(why) : s;
    // Every row of the batch is in the stream (a refusal would have failed the session), but
    // for one too large for it, counted and logged.
    acked_ = last_handled_;
  }
}

StatusOr<uint64_t> JetStreamSink::Session::PublishBatch(SinkError* why) {
  JetStreamSink& sink = *sink_;
  const uint64_t max_pending = static_cast<uint64_t>(cfg_.max_pending);
  uint64_t batch = 0;
  while (batch < max_pending && !failed_) {
    rows_.clear();
    const size_t want = static_cast<size_t>(std::min<uint64_t>(max_pending - batch, kReadRows));
    Status s = sink.store_->ReadJournal(next_, 0, "", want, &rows_);
    if (!s.ok()) {
      *why = SinkError::kStream;
      return Status::IOError("reading the journal from seq " + std::to_string(next_) + ": " +
                             s.ToString());
    }
    if (rows_.empty()) {  // the end, or everything from next_ on was trimmed meanwhile
      auto bounds = sink.store_->Bounds();
      if (bounds.ok() && bounds->first_seq == 0 && bounds->last_seq >= next_) {
        Skip(next_, bounds->last_seq, batch == 0);
        next_ = bounds->last_seq + 1;
      } else if (bounds.ok() && bounds->first_seq > next_) {
        Skip(next_, bounds->first_seq - 1, batch == 0);
        next_ = bounds->first_seq;
      }
      break;
    }
    if (rows_.front().seq > next_) Skip(next_, rows_.front().seq - 1, batch == 0);
    for (const JournalRow& row : rows_) {
      s = Publish(row, why);
      if (!s.ok()) return s;
    }
    batch += rows_.size();
    next_ = rows_.back().seq + 1;
    if (rows_.size() < want) break;  // caught up with the journal
  }
  return batch;
}

Status JetStreamSink::Session::AwaitBatch(SinkError* why) {
  JetStreamSink& sink = *sink_;
  const int64_t deadline = SteadyMs() + sink.options_.ack_timeout_ms;
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = kMetricsEveryMs;  // in slices: Stop(), failures and the gauges go on meanwhile
  while (true) {
    natsStatus s = js_PublishAsyncComplete(js_, &po);
    if (s == NATS_OK || failed_) return Status::OK();
    {
      std::lock_guard<std::mutex> lock(sink.mu_);
      if (sink.stop_) return Status::OK();
    }
    if (s != NATS_TIMEOUT) {
      *why = SinkError::kDisconnected;
      return Status::Unavailable("waiting for the stream's acks: " + NatsError(s));
    }
    if (SteadyMs() > deadline) {
      *why = SinkError::kTimeout;
      return Status::Unavailable("no ack from the stream for " +
                                 std::to_string(sink.options_.ack_timeout_ms) +
                                 " ms with publishes in flight");
    }
    sink.UpdateGauges(false);
  }
}

void JetStreamSink::Session::Skip(uint64_t from, uint64_t to, bool idle) {
  const uint64_t n = to - from + 1;
  sink_->stats_->sink.skipped.fetch_add(n, std::memory_order_relaxed);
  spdlog::error(
      "sink: seq {}..{} ({} rows) were trimmed by journal.max_rows/max_bytes before "
      "the sink delivered them: they are not in the stream",
      from, to, n);
  // Nothing in flight: they count as delivered (the retention hold moves on); otherwise the
  // batch's completion moves it past them.
  if (idle) acked_ = std::max<uint64_t>(acked_, to);
}

void JetStreamSink::UpdateGauges(bool force) {
  const int64_t now = SteadyMs();
  if (!force && now - last_gauges_ms_ < kMetricsEveryMs) return;
  last_gauges_ms_ = now;
  JetStreamSink& sink = *this;
  uint64_t journal_last;
  {
    std::lock_guard<std::mutex> lock(sink.mu_);
    journal_last = sink.journal_last_;
  }
  const uint64_t acked = acked_;
  sink.hold_ = acked + 1;
  Stats::Sink& g = sink.stats_->sink;
  g.acked_seq = static_cast<int64_t>(acked);
  const uint64_t lag = journal_last > acked ? journal_last - acked : 0;
  g.lag_messages = static_cast<int64_t>(lag);
  int64_t lag_ns = 0;
  if (lag > 0) {
    std::vector<JournalRow> oldest;
    if (sink.store_->ReadJournal(acked + 1, 0, "", 1, &oldest).ok() && !oldest.empty()) {
      lag_ns = std::max<int64_t>(0, WallNowNs() - oldest[0].msg.received_at_unix_ns);
    }
  }
  g.lag_ns = lag_ns;
}

void JetStreamSink::OnRefused(jsCtx* js, jsPubAckErr* pae, void* closure) {
  auto* sink = static_cast<JetStreamSink*>(closure);
  std::lock_guard<std::mutex> lock(sink->session_mu_);
  if (sink->session_ != nullptr && sink->session_->Owns(js)) sink->session_->Refused(pae);
}

void JetStreamSink::OnConnectionLost(natsConnection* nc, void* closure) {
  auto* sink = static_cast<JetStreamSink*>(closure);
  const char* last = nullptr;
  natsConnection_GetLastError(nc, &last);
  std::string text = "connection lost";
  if (last != nullptr && *last != '\0') text += std::string(": ") + last;
  std::lock_guard<std::mutex> lock(sink->session_mu_);
  if (sink->session_ != nullptr && sink->session_->Owns(nc)) {
    sink->session_->Fail(SinkError::kDisconnected, std::move(text));
  }
}

void JetStreamSink::Session::Refused(jsPubAckErr* pae) {
  std::string text = pae->ErrText != nullptr && *pae->ErrText != '\0'
                         ? std::string(pae->ErrText)
                         : std::string(natsStatus_GetText(pae->Err));
  const char* seq_text = nullptr;
  if (pae->Msg != nullptr && natsMsgHeader_Get(pae->Msg, kSeqHeader, &seq_text) == NATS_OK) {
    text = "seq " + std::string(seq_text) + ": " + text;
  }
  const SinkError why = pae->ErrCode == kWrongLastSequence || pae->ErrCode == kWrongLastMsgId
                            ? SinkError::kConflict
                        : pae->Err == NATS_TIMEOUT ? SinkError::kTimeout
                        : pae->ErrCode != 0        ? SinkError::kRejected
                                                   : SinkError::kDisconnected;
  Fail(why, std::move(text));
}

void JetStreamSink::Session::Fail(SinkError why, std::string text) {
  {
    std::lock_guard<std::mutex> lock(failure_mu_);
    if (failed_) return;
    failure_ = why;
    failure_text_ = std::move(text);
    failed_ = true;
  }
  std::lock_guard<std::mutex> lock(sink_->mu_);
  sink_->cv_.notify_all();
}

Status JetStreamSink::Session::TakeFailure(SinkError* why) {
  std::lock_guard<std::mutex> lock(failure_mu_);
  *why = failure_;
  return Status::Unavailable(failure_text_);
}

void JetStreamSink::Session::Close() {
  sink_->stats_->sink.connected = 0;
  sink_->UpdateGauges(true);
  jsCtx* js;
  natsConnection* nc;
  {
    // From here on the callbacks leave this session alone.
    std::lock_guard<std::mutex> lock(sink_->session_mu_);
    if (sink_->session_ == this) sink_->session_ = nullptr;
    js = js_;
    nc = nc_;
    js_ = nullptr;
    nc_ = nullptr;
  }
  if (js != nullptr) jsCtx_Destroy(js);
  if (nc != nullptr) natsConnection_Destroy(nc);
}

// ---------------------------------------------------------------------------------------------

JetStreamSink::JetStreamSink(JetStreamSinkOptions options, Stats* stats)
    : options_(std::move(options)), stats_(stats) {
  stats_->sink.enabled = 1;
  stats_->sink.required = options_.config.required ? 1 : 0;
}

JetStreamSink::~JetStreamSink() {
  Stop();
  // nats.c delivers callbacks on threads of its own: wait for them before the sink goes.
  nats_CloseAndWait(2000);
}

Status JetStreamSink::Start() {
  StoreOptions so;
  so.path = options_.db_path;
  so.read_only = true;
  auto store = Store::Open(so);
  if (!store.ok())
    return Status::IOError("sink: opening the journal: " + store.status().ToString());
  store_ = std::move(*store);
  const Cursor c = store_->cursor();
  epoch_ = c.epoch;
  journal_last_ = c.last_seq;
  thread_ = std::thread([this] {
    NameThisThread("wsb-sink");
    if (options_.nice != 0) {
      // Per-thread on Linux, and inherited by the threads nats.c creates from this one.
      (void)setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), options_.nice);
    }
    Run();
  });
  return Status::OK();
}

void JetStreamSink::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void JetStreamSink::NotifyJournaled(uint64_t last_seq) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    journal_last_ = last_seq;
  }
  cv_.notify_one();
}

bool JetStreamSink::WaitStopping(int64_t ms) {
  const int64_t end = SteadyMs() + ms;
  for (int64_t now = SteadyMs(); now < end; now = SteadyMs()) {
    UpdateGauges(false);  // the lag keeps growing while the sink waits
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_for(lock, std::chrono::milliseconds(std::min(end - now, kMetricsEveryMs)),
                     [&] { return stop_; })) {
      return true;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  return stop_;
}

void JetStreamSink::Run() {
  const BackoffParams params{std::chrono::milliseconds(options_.base_delay_ms),
                             std::chrono::milliseconds(options_.max_delay_ms)};
  auto parsed = ParseJitter(options_.jitter);  // checked when the configuration loaded
  const Jitter jitter = parsed.ok() ? *parsed : Jitter::kFull;
  SystemRandom rng;
  uint32_t attempt = 0;
  Duration previous = Duration::zero();
  SinkError last_why = SinkError::kCount;
  std::string last_text;
  bool outage_said = false;  // a failure was logged at warn: say when it is over
  while (true) {
    SinkError why = SinkError::kConnect;
    Status s;
    const uint64_t acked_before = acked_;
    {
      Session session(this);
      s = session.Connect(&why);
      if (s.ok()) s = session.Sync(&why);
      if (s.ok()) {
        if (outage_said) {
          spdlog::info("sink: connected to {} again", options_.config.servers.size() == 1
                                                          ? options_.config.servers[0]
                                                          : "the cluster");
          outage_said = false;
        }
        s = session.Deliver(&why);
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    // The stream took rows: start the backoff again. A session that fails every time after
    // its sync (a row the server always refuses) keeps backing off.
    if (acked_ > acked_before) {
      attempt = 0;
      previous = Duration::zero();
    }
    stats_->sink.errors[static_cast<size_t>(why)].fetch_add(1, std::memory_order_relaxed);
    const Duration delay = NextDelay(jitter, params, attempt++, previous, rng);
    previous = delay;
    const std::string text = s.message();
    stats_->SetSinkReason(text);
    // One line per failure, but a failure that repeats itself exactly is said once.
    if (why != last_why || text != last_text) {
      spdlog::warn("sink: {}; retrying in {}", text, FormatDuration(delay));
      outage_said = true;
    } else {
      spdlog::debug("sink: {}; retrying in {}", text, FormatDuration(delay));
    }
    last_why = why;
    last_text = text;
    if (WaitStopping(std::chrono::duration_cast<std::chrono::milliseconds>(delay).count())) return;
  }
}

}  // namespace wsbridge
