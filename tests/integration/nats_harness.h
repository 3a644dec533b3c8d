// NATS JetStream for the sink's integration tests (SPEC §11): real nats-server processes, and
// nats.c to look at what they hold.
//
// NatsAuth          user/password or token: written into a server's config, given by a client
// NatsServerOptions / NatsServer
//                   one nats-server with JetStream: its config file, store and logs in the test's
//                   directory, ports from the OS; Kill and Restart keep the ports and the store
// NatsServerBin     where nats-server is ($WSB_NATS_SERVER, /usr/sbin for Debian's package, ...)
// NatsCluster       three NatsServers in one JetStream cluster on loopback (replicas 3 possible)
// NatsClient        a nats.c connection with its JetStream context: publish, stream state,
//                   create / purge / delete a stream, read a stream back whole
// StreamSpec        what CreateStream makes (subjects, replicas, limits, discard policy)
// StreamState       a stream's configuration and state as js_GetStreamInfo tells them
// StreamMessage     one message read back: stream seq, subject, data, headers
// ReadStream, GetStreamState, CreateStream, PurgeStream, DeleteStream
//                   the NatsClient calls on a connection made for the one call
//
// Errors are values: every nats.c failure becomes a Status (Unavailable) that names the call and
// carries natsStatus_GetText, nats_GetLastError and the JetStream error code, for ASSERT_OK and
// ASSERT_OK_AND_ASSIGN (testutil.h).
//
// Ownership: a NatsServer owns its process (killed with SIGKILL when it goes out of scope) and
// the files under its name in the directory it is given (the directory itself belongs to the
// test, a TempDir); a NatsCluster owns its three servers; a NatsClient owns its connection, and
// every nats.c object a call makes is freed before the call returns (the holders below).
// Threads: the test's main thread only. nats.c runs threads of its own inside a NatsClient; none
// of them calls back into this code.
#pragma once

#include <nats/nats.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "integration/harness.h"
#include "testutil.h"

namespace wsbridge::testing {

// ---- nats.c resources and errors ---------------------------------------------------------------

// std::unique_ptr holders of the nats.c objects, freed with their own destroy function.
template <typename T, void (*Destroy)(T*)>
struct NatsDestroy {
  void operator()(T* p) const {
    if (p != nullptr) Destroy(p);
  }
};
template <typename T, void (*Destroy)(T*)>
using NatsPtr = std::unique_ptr<T, NatsDestroy<T, Destroy>>;
using NatsOptionsPtr = NatsPtr<natsOptions, natsOptions_Destroy>;
using NatsConnectionPtr = NatsPtr<natsConnection, natsConnection_Destroy>;
using JsCtxPtr = NatsPtr<jsCtx, jsCtx_Destroy>;
using NatsMsgPtr = NatsPtr<natsMsg, natsMsg_Destroy>;
using NatsSubscriptionPtr = NatsPtr<natsSubscription, natsSubscription_Destroy>;
using JsStreamInfoPtr = NatsPtr<jsStreamInfo, jsStreamInfo_Destroy>;
using JsConsumerInfoPtr = NatsPtr<jsConsumerInfo, jsConsumerInfo_Destroy>;
using JsAccountInfoPtr = NatsPtr<jsAccountInfo, jsAccountInfo_Destroy>;
using JsPubAckPtr = NatsPtr<jsPubAck, jsPubAck_Destroy>;
using JsMsgMetaDataPtr = NatsPtr<jsMsgMetaData, jsMsgMetaData_Destroy>;

// A natsMsgList (a struct filled in place) whose messages are destroyed with it.
struct NatsMsgListHolder {
  natsMsgList list{};
  NatsMsgListHolder() = default;
  NatsMsgListHolder(const NatsMsgListHolder&) = delete;
  NatsMsgListHolder& operator=(const NatsMsgListHolder&) = delete;
  ~NatsMsgListHolder() { natsMsgList_Destroy(&list); }
};

// `what` failed with `s`: a Status with the status text, this thread's last nats.c error and,
// when the server sent one, the JetStream error code.
inline Status NatsError(const std::string& what, natsStatus s, jsErrCode jerr = jsErrCode(0)) {
  std::string m = "nats: " + what + ": " + natsStatus_GetText(s);
  const char* last = nats_GetLastError(nullptr);
  if (last != nullptr && *last != '\0') m += " (" + std::string(last) + ")";
  if (jerr != 0) m += " [JetStream error " + std::to_string(static_cast<int>(jerr)) + "]";
  return Status::Unavailable(m);
}

// ---- Streams as a test sees them ---------------------------------------------------------------

// Credentials, for a server's config and for its clients: user and password, or a token (all
// empty: none).
struct NatsAuth {
  std::string user;
  std::string password;
  std::string token;
  std::string ca_file;  // clients: trust this CA (PEM) for a server with TLS
};

using NatsHeaders = std::map<std::string, std::string>;  // name -> (first) value

// One message of a stream.
struct StreamMessage {
  uint64_t seq = 0;  // stream sequence
  std::string subject;
  std::string data;
  NatsHeaders headers;
};

// What CreateStream makes: a file-backed stream with limits retention.
struct StreamSpec {
  std::string name;
  std::vector<std::string> subjects;
  int replicas = 1;
  int64_t max_bytes = -1;  // -1: no limit
  int64_t max_msgs = -1;   // -1: no limit
  bool discard_new = false;  // true: a full stream refuses new messages (else drops old ones)
  int64_t duplicate_window_ns = 0;  // 0: the server's (2 minutes)
};

// A stream's configuration and state (js_GetStreamInfo).
struct StreamState {
  std::vector<std::string> subjects;  // configured
  int64_t replicas = 0;
  int64_t max_bytes = -1;
  uint64_t messages = 0;
  uint64_t bytes = 0;
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;
  uint64_t deleted = 0;  // sequences inside first..last that are gone
  std::string leader;    // cluster: the server that leads the stream ("" on a single server)
  std::map<std::string, uint64_t> messages_by_subject;  // subjects that hold messages
};

// `s` cut at each `sep` ("a,b" -> {"a", "b"}).
inline std::vector<std::string> SplitOn(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string part; std::getline(in, part, sep);) out.push_back(part);
  return out;
}

// The message's headers, each name with its first value.
inline NatsHeaders HeadersOf(natsMsg* msg) {
  NatsHeaders out;
  const char** keys = nullptr;
  int count = 0;
  if (natsMsgHeader_Keys(msg, &keys, &count) != NATS_OK) return out;  // NATS_NOT_FOUND: none
  for (int i = 0; i < count; ++i) {
    const char* value = nullptr;
    if (natsMsgHeader_Get(msg, keys[i], &value) == NATS_OK) out[keys[i]] = value ? value : "";
  }
  std::free(static_cast<void*>(keys));
  return out;
}

// ---- NatsClient --------------------------------------------------------------------------------

// A nats.c connection to `urls` (comma-separated) and its JetStream context. It reconnects by
// itself (every 50 ms, for up to a minute) when its server goes away; JetStream calls wait
// `api_wait` for an answer. Movable, not copyable.
class NatsClient {
 public:
  static StatusOr<NatsClient> Connect(const std::string& urls, const NatsAuth& auth = {},
                                      std::chrono::milliseconds api_wait = std::chrono::seconds(5));

  natsConnection* connection() const { return conn_.get(); }
  jsCtx* js() const { return js_.get(); }

  // Publishes and waits for the stream's ack; returns the stream sequence. A duplicate (the same
  // Nats-Msg-Id within the stream's window) answers the sequence it was first stored under.
  StatusOr<uint64_t> Publish(const std::string& subject, const std::string& data,
                             const NatsHeaders& headers = {});
  // Publish, tried again after each failure until `timeout` passes (a cluster electing a new
  // leader refuses or times out for a while). Give the message a Nats-Msg-Id: a try whose ack
  // was lost may have been stored, and only the id keeps the retry from storing it twice.
  StatusOr<uint64_t> PublishRetrying(const std::string& subject, const std::string& data,
                                     const NatsHeaders& headers,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(20));

  // OK once JetStream answers for this account (js_GetAccountInfo; in a cluster: there is a
  // meta leader).
  Status AccountInfo();
  StatusOr<StreamState> GetStreamState(const std::string& stream);
  Status CreateStream(const StreamSpec& spec);
  Status PurgeStream(const std::string& stream);
  Status DeleteStream(const std::string& stream);

  // Every message of the stream up to its last sequence when the call starts, in stream order,
  // deleted sequences left out (for a stream that nothing trims or deletes from meanwhile).
  // Reads through an ephemeral pull consumer (no acks, in memory, deleted at the end) in batches
  // of 1 000: 100 000 messages in 1-2 s; js_GetMsg, a request per message, takes ten times as
  // long.
  StatusOr<std::vector<StreamMessage>> ReadStream(const std::string& stream);

 private:
  NatsConnectionPtr conn_;
  JsCtxPtr js_;
  int64_t api_wait_ms_ = 5000;
};

inline StatusOr<NatsClient> NatsClient::Connect(const std::string& urls, const NatsAuth& auth,
                                                std::chrono::milliseconds api_wait) {
  natsOptions* raw_opts = nullptr;
  natsStatus s = natsOptions_Create(&raw_opts);
  NatsOptionsPtr opts(raw_opts);
  // natsOptions_SetURL takes one URL (only natsConnection_ConnectTo splits at commas).
  const std::vector<std::string> list = SplitOn(urls, ',');
  std::vector<const char*> servers;
  for (const auto& u : list) servers.push_back(u.c_str());
  if (s == NATS_OK) {
    s = natsOptions_SetServers(opts.get(), servers.data(), static_cast<int>(servers.size()));
  }
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts.get(), 2000);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts.get(), 50);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts.get(), 1200);
  if (s == NATS_OK && !auth.user.empty()) {
    s = natsOptions_SetUserInfo(opts.get(), auth.user.c_str(), auth.password.c_str());
  }
  if (s == NATS_OK && !auth.token.empty()) s = natsOptions_SetToken(opts.get(), auth.token.c_str());
  if (s == NATS_OK && !auth.ca_file.empty()) s = natsOptions_SetSecure(opts.get(), true);
  if (s == NATS_OK && !auth.ca_file.empty()) {
    s = natsOptions_LoadCATrustedCertificates(opts.get(), auth.ca_file.c_str());
  }
  if (s != NATS_OK) return NatsError("options for " + urls, s);

  NatsClient c;
  natsConnection* nc = nullptr;
  s = natsConnection_Connect(&nc, opts.get());
  c.conn_.reset(nc);
  if (s != NATS_OK) return NatsError("connect to " + urls, s);
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = api_wait.count();
  c.api_wait_ms_ = api_wait.count();
  jsCtx* js = nullptr;
  s = natsConnection_JetStream(&js, nc, &jo);
  c.js_.reset(js);
  if (s != NATS_OK) return NatsError("JetStream context", s);
  return c;
}

inline StatusOr<uint64_t> NatsClient::Publish(const std::string& subject, const std::string& data,
                                              const NatsHeaders& headers) {
  natsMsg* raw = nullptr;
  natsStatus s = natsMsg_Create(&raw, subject.c_str(), nullptr, data.data(),
                                static_cast<int>(data.size()));
  NatsMsgPtr msg(raw);
  for (auto it = headers.begin(); s == NATS_OK && it != headers.end(); ++it) {
    s = natsMsgHeader_Set(msg.get(), it->first.c_str(), it->second.c_str());
  }
  if (s != NATS_OK) return NatsError("message for " + subject, s);
  jsPubAck* raw_ack = nullptr;
  jsErrCode jerr = jsErrCode(0);
  s = js_PublishMsg(&raw_ack, js_.get(), msg.get(), nullptr, &jerr);
  JsPubAckPtr ack(raw_ack);
  if (s != NATS_OK) return NatsError("publish to " + subject, s, jerr);
  return ack->Sequence;
}

inline StatusOr<uint64_t> NatsClient::PublishRetrying(const std::string& subject,
                                                      const std::string& data,
                                                      const NatsHeaders& headers,
                                                      std::chrono::milliseconds timeout) {
  StatusOr<uint64_t> r = Status::Unavailable("not tried");
  WaitFor(
      [&] {
        r = Publish(subject, data, headers);
        return r.ok();
      },
      timeout);
  return r;
}

inline Status NatsClient::AccountInfo() {
  jsAccountInfo* raw = nullptr;
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_GetAccountInfo(&raw, js_.get(), nullptr, &jerr);
  JsAccountInfoPtr info(raw);
  return s == NATS_OK ? Status::OK() : NatsError("account info", s, jerr);
}

inline StatusOr<StreamState> NatsClient::GetStreamState(const std::string& stream) {
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = api_wait_ms_;
  jo.Stream.Info.SubjectsFilter = ">";  // also the messages of each subject
  jsStreamInfo* raw = nullptr;
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_GetStreamInfo(&raw, js_.get(), stream.c_str(), &jo, &jerr);
  JsStreamInfoPtr si(raw);
  if (s != NATS_OK) return NatsError("stream info of " + stream, s, jerr);
  StreamState st;
  for (int i = 0; i < si->Config->SubjectsLen; ++i) st.subjects.push_back(si->Config->Subjects[i]);
  st.replicas = si->Config->Replicas;
  st.max_bytes = si->Config->MaxBytes;
  st.messages = si->State.Msgs;
  st.bytes = si->State.Bytes;
  st.first_seq = si->State.FirstSeq;
  st.last_seq = si->State.LastSeq;
  st.deleted = si->State.NumDeleted;
  if (si->Cluster != nullptr && si->Cluster->Leader != nullptr) st.leader = si->Cluster->Leader;
  if (si->State.Subjects != nullptr) {
    for (int i = 0; i < si->State.Subjects->Count; ++i) {
      const jsStreamStateSubject& subject = si->State.Subjects->List[i];
      st.messages_by_subject[subject.Subject] = subject.Msgs;
    }
  }
  return st;
}

inline Status NatsClient::CreateStream(const StreamSpec& spec) {
  std::vector<const char*> subjects;
  for (const auto& subject : spec.subjects) subjects.push_back(subject.c_str());
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = spec.name.c_str();
  cfg.Subjects = subjects.data();
  cfg.SubjectsLen = static_cast<int>(subjects.size());
  cfg.Storage = js_FileStorage;
  cfg.Replicas = spec.replicas;
  cfg.MaxBytes = spec.max_bytes;
  cfg.MaxMsgs = spec.max_msgs;
  cfg.Discard = spec.discard_new ? js_DiscardNew : js_DiscardOld;
  cfg.Duplicates = spec.duplicate_window_ns;
  jsStreamInfo* raw = nullptr;
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_AddStream(&raw, js_.get(), &cfg, nullptr, &jerr);
  JsStreamInfoPtr si(raw);
  return s == NATS_OK ? Status::OK() : NatsError("create stream " + spec.name, s, jerr);
}

inline Status NatsClient::PurgeStream(const std::string& stream) {
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_PurgeStream(js_.get(), stream.c_str(), nullptr, &jerr);
  return s == NATS_OK ? Status::OK() : NatsError("purge stream " + stream, s, jerr);
}

inline Status NatsClient::DeleteStream(const std::string& stream) {
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_DeleteStream(js_.get(), stream.c_str(), nullptr, &jerr);
  return s == NATS_OK ? Status::OK() : NatsError("delete stream " + stream, s, jerr);
}

inline StatusOr<std::vector<StreamMessage>> NatsClient::ReadStream(const std::string& stream) {
  auto state = GetStreamState(stream);
  if (!state.ok()) return state.status();
  std::vector<StreamMessage> out;
  if (state->messages == 0) return out;
  out.reserve(state->messages);

  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.DeliverPolicy = js_DeliverAll;
  cc.AckPolicy = js_AckNone;
  cc.MemoryStorage = true;
  cc.Replicas = 1;
  cc.InactiveThreshold = 30LL * 1000 * 1000 * 1000;  // gone 30 s after a test that died reading
  jsConsumerInfo* raw_ci = nullptr;
  jsErrCode jerr = jsErrCode(0);
  natsStatus s = js_AddConsumer(&raw_ci, js_.get(), stream.c_str(), &cc, nullptr, &jerr);
  JsConsumerInfoPtr ci(raw_ci);
  if (s != NATS_OK) return NatsError("reader consumer on " + stream, s, jerr);
  const std::string consumer = ci->Name;
  struct DeleteConsumer {
    jsCtx* js;
    const std::string& stream;
    const std::string& consumer;
    ~DeleteConsumer() { js_DeleteConsumer(js, stream.c_str(), consumer.c_str(), nullptr, nullptr); }
  } delete_consumer{js_.get(), stream, consumer};

  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = stream.c_str();
  so.Consumer = consumer.c_str();
  so.Config.MemoryStorage = true;  // nats.c checks the bound consumer's config against this
  natsSubscription* raw_sub = nullptr;
  s = js_PullSubscribe(&raw_sub, js_.get(), nullptr, nullptr, nullptr, &so, &jerr);
  NatsSubscriptionPtr sub(raw_sub);
  if (s != NATS_OK) return NatsError("pull subscription on " + stream, s, jerr);

  // Done at the last sequence of the snapshot, or with as many messages as it counted (its last
  // sequences deleted). Not the NumPending of a message: in a cluster it can say 0 one message
  // early.
  bool done = false;
  for (uint64_t seq = 0; !done;) {
    NatsMsgListHolder batch;
    s = natsSubscription_Fetch(&batch.list, sub.get(), 1000, api_wait_ms_, &jerr);
    if (s != NATS_OK) {
      return NatsError("fetch from " + stream + " after seq " + std::to_string(seq) + " of " +
                           std::to_string(state->last_seq),
                       s, jerr);
    }
    for (int i = 0; i < batch.list.Count && !done; ++i) {
      natsMsg* m = batch.list.Msgs[i];
      jsMsgMetaData* raw_meta = nullptr;
      s = natsMsg_GetMetaData(&raw_meta, m);
      JsMsgMetaDataPtr meta(raw_meta);
      if (s != NATS_OK) return NatsError("metadata of a message of " + stream, s);
      seq = meta->Sequence.Stream;
      if (seq > state->last_seq) {  // published after the call started
        done = true;
        break;
      }
      done = seq == state->last_seq || out.size() + 1 == state->messages;
      StreamMessage sm;
      sm.seq = seq;
      sm.subject = natsMsg_GetSubject(m);
      const int size = natsMsg_GetDataLength(m);
      if (size > 0) sm.data.assign(natsMsg_GetData(m), static_cast<size_t>(size));
      sm.headers = HeadersOf(m);
      out.push_back(std::move(sm));
    }
  }
  natsSubscription_Unsubscribe(sub.get());
  return out;
}

// The NatsClient calls on a connection made for the one call: `call(client)`'s result, or why
// the connection failed.
template <typename Call>
auto OnNewConnection(const std::string& urls, const NatsAuth& auth, Call call)
    -> decltype(call(std::declval<NatsClient&>())) {
  auto c = NatsClient::Connect(urls, auth);
  if (!c.ok()) return c.status();
  return call(*c);
}
inline StatusOr<std::vector<StreamMessage>> ReadStream(const std::string& urls,
                                                       const std::string& stream,
                                                       const NatsAuth& auth = {}) {
  return OnNewConnection(urls, auth, [&](NatsClient& c) { return c.ReadStream(stream); });
}
inline StatusOr<StreamState> GetStreamState(const std::string& urls, const std::string& stream,
                                            const NatsAuth& auth = {}) {
  return OnNewConnection(urls, auth, [&](NatsClient& c) { return c.GetStreamState(stream); });
}
inline Status CreateStream(const std::string& urls, const StreamSpec& spec,
                           const NatsAuth& auth = {}) {
  return OnNewConnection(urls, auth, [&](NatsClient& c) { return c.CreateStream(spec); });
}
// CreateStream with the common settings: `replicas` copies, at most `max_bytes` (-1: no limit;
// when full, old messages make room).
inline Status CreateStream(const std::string& urls, const std::string& name,
                           const std::vector<std::string>& subjects, int replicas = 1,
                           int64_t max_bytes = -1, const NatsAuth& auth = {}) {
  StreamSpec spec;
  spec.name = name;
  spec.subjects = subjects;
  spec.replicas = replicas;
  spec.max_bytes = max_bytes;
  return CreateStream(urls, spec, auth);
}
inline Status PurgeStream(const std::string& urls, const std::string& stream,
                          const NatsAuth& auth = {}) {
  return OnNewConnection(urls, auth, [&](NatsClient& c) { return c.PurgeStream(stream); });
}
inline Status DeleteStream(const std::string& urls, const std::string& stream,
                           const NatsAuth& auth = {}) {
  return OnNewConnection(urls, auth, [&](NatsClient& c) { return c.DeleteStream(stream); });
}

// ---- NatsServer --------------------------------------------------------------------------------

// The nats-server binary: $WSB_NATS_SERVER, else the first nats-server in /usr/sbin (where
// Debian's package puts it), /usr/bin, /usr/local/bin or on $PATH.
inline std::string NatsServerBin() {
  const char* env = std::getenv("WSB_NATS_SERVER");
  if (env != nullptr && *env != '\0') return env;
  std::vector<std::string> dirs = {"/usr/sbin", "/usr/bin", "/usr/local/bin"};
  const char* path = std::getenv("PATH");
  for (const auto& d : SplitOn(path != nullptr ? path : "", ':')) dirs.push_back(d);
  for (const auto& d : dirs) {
    const std::string bin = d + "/nats-server";
    if (::access(bin.c_str(), X_OK) == 0) return bin;
  }
  return "nats-server";  // not found: the child exits 127
}

// How a NatsServer is set up. NatsCluster fills the cluster fields.
struct NatsServerOptions {
  std::string name = "nats";  // server_name; also names its files in the directory
  NatsAuth auth;              // clients must give these (routes between servers need none)
  int64_t max_store_bytes = 0;  // > 0: JetStream's max_file_store (the disk it may use)
  // Cluster membership: a cluster block when cluster_name is set.
  std::string cluster_name;
  int cluster_port = 0;          // 0: chosen by the OS when the server is made
  std::vector<int> route_ports;  // every member's cluster port (its own may be among them)
  // true: the server does not tell clients the other members' URLs, so a client uses only the
  // URLs it was given (say, a fault proxy's) and cannot go around them.
  bool no_advertise = false;
  // TLS for clients (PEM files): url() is then tls://; clients trust auth.ca_file.
  std::string tls_cert_file;
  std::string tls_key_file;
};

// One nats-server with JetStream on 127.0.0.1. Made with its ports (client, monitoring,
// cluster: from the OS) and its config file <dir>/<name>.conf; its store is <dir>/<name>-store,
// its log <dir>/<name>.err (appended across restarts). Not started until Start().
class NatsServer {
 public:
  NatsServer(std::string dir, NatsServerOptions options)
      : dir_(std::move(dir)), options_(std::move(options)) {
    port_ = FreePort();
    monitor_port_ = FreePort();
    if (!options_.cluster_name.empty() && options_.cluster_port == 0) {
      options_.cluster_port = FreePort();
    }
    WriteConfig();
  }
  explicit NatsServer(std::string dir) : NatsServer(std::move(dir), NatsServerOptions{}) {}
  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  // Launch() and WaitReady().
  Status Start(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    Launch();
    return WaitReady(timeout);
  }
  // Starts the process and returns at once (NatsCluster starts its members together).
  void Launch() {
    log_offset_ = ReadFileOrEmpty(log_path()).size();
    child_ = Child::Start({NatsServerBin(), "-c", config_path()}, dir_, options_.name);
  }
  // Waits until the server is ready: /healthz answers 200 (JetStream on; in a cluster: a meta
  // leader is known, this server is current with it and so is every stream it holds a copy of)
  // and a client with the server's auth gets JetStream account info through it. An error, with
  // the reason and the end of this run's log, when the process exits or `timeout` passes.
  Status WaitReady(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::string why = "not tried";
    bool exited = false;
    int exit_status = 0;
    const bool ready = WaitForEvery(
        std::chrono::milliseconds(50),
        [&] {
          if (child_.Exited(&exit_status)) return exited = true;
          const std::string health = HttpGet(monitor_port_, "/healthz");
          if (health.rfind("200 ", 0) != 0) {
            why = "/healthz: " + (health.empty() ? std::string("no answer") : health);
            return false;
          }
          auto client = NatsClient::Connect(url(), options_.auth, std::chrono::seconds(2));
          Status s = client.ok() ? client->AccountInfo() : client.status();
          why = s.ToString();
          return s.ok();
        },
        timeout);
    if (exited) {
      why = "nats-server exited with status " + std::to_string(exit_status) +
            (ExitedWith(exit_status, 127) ? " (could not run " + NatsServerBin() + ")" : "");
    }
    if (ready && !exited) return Status::OK();
    std::string log = ReadFileOrEmpty(log_path());
    log = log.size() > log_offset_ ? log.substr(log_offset_) : "";
    if (log.size() > 4000) log = "..." + log.substr(log.size() - 4000);
    return Status::Unavailable("nats-server " + options_.name + " on " + url() +
                               " not ready: " + why + "\n" + log);
  }

  // Sends `sig` and reaps the process (as Child::Kill); the store stays for Restart().
  int Kill(int sig = SIGKILL) { return child_.Kill(sig); }
  // A graceful stop (SIGTERM, reaped).
  void Stop() { child_.Kill(SIGTERM); }
  // Starts the server again on the same ports with the same store (SIGKILLs it first when it is
  // still running), and waits until it is ready.
  Status Restart(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    if (child_.running()) child_.Kill(SIGKILL);
    return Start(timeout);
  }

  std::string url() const {
    return (options_.tls_cert_file.empty() ? "nats://" : "tls://") + std::string("127.0.0.1:") +
           std::to_string(port_);
  }
  int port() const { return port_; }
  int monitor_port() const { return monitor_port_; }  // HTTP: /healthz, /jsz, /varz
  int cluster_port() const { return options_.cluster_port; }
  const std::string& name() const { return options_.name; }
  const NatsAuth& auth() const { return options_.auth; }
  std::string store_dir() const { return dir_ + "/" + options_.name + "-store"; }
  std::string config_path() const { return dir_ + "/" + options_.name + ".conf"; }
  std::string log_path() const { return dir_ + "/" + options_.name + ".err"; }
  std::string Log() const { return ReadFileOrEmpty(log_path()); }
  bool running() const { return child_.running(); }
  pid_t pid() const { return child_.pid(); }

 private:
  // WaitFor, with `cond` tried at most once a `period` (a server logs each failed health check).
  static bool WaitForEvery(std::chrono::milliseconds period, const std::function<bool()>& cond,
                           std::chrono::milliseconds timeout) {
    auto next = std::chrono::steady_clock::now();
    return WaitFor(
        [&] {
          auto now = std::chrono::steady_clock::now();
          if (now < next) return false;
          next = now + period;
          return cond();
        },
        timeout);
  }

  static std::string Quoted(const std::string& s) { return "\"" + s + "\""; }

  void WriteConfig() const {
    std::string conf;
    conf += "server_name: " + Quoted(options_.name) + "\n";
    conf += "listen: " + Quoted("127.0.0.1:" + std::to_string(port_)) + "\n";
    conf += "http: " + Quoted("127.0.0.1:" + std::to_string(monitor_port_)) + "\n";
    conf += "jetstream {\n  store_dir: " + Quoted(store_dir()) + "\n";
    if (options_.max_store_bytes > 0) {
      conf += "  max_file_store: " + std::to_string(options_.max_store_bytes) + "\n";
    }
    conf += "}\n";
    if (!options_.tls_cert_file.empty()) {
      conf += "tls {\n  cert_file: " + Quoted(options_.tls_cert_file) + "\n  key_file: " +
              Quoted(options_.tls_key_file) + "\n}\n";
    }
    const NatsAuth& a = options_.auth;
    if (!a.user.empty()) {
      conf += "authorization {\n  user: " + Quoted(a.user) + "\n  password: " +
              Quoted(a.password) + "\n}\n";
    } else if (!a.token.empty()) {
      conf += "authorization {\n  token: " + Quoted(a.token) + "\n}\n";
    }
    if (!options_.cluster_name.empty()) {
      conf += "cluster {\n  name: " + Quoted(options_.cluster_name) + "\n";
      conf += "  listen: " + Quoted("127.0.0.1:" + std::to_string(options_.cluster_port)) + "\n";
      conf += "  routes: [\n";
      for (int p : options_.route_ports) {
        conf += "    " + Quoted("nats-route://127.0.0.1:" + std::to_string(p)) + "\n";
      }
      conf += "  ]\n";
      if (options_.no_advertise) conf += "  no_advertise: true\n";
      conf += "}\n";
    }
    WriteFileBytes(config_path(), conf);
  }

  std::string dir_;
  NatsServerOptions options_;
  int port_ = 0;
  int monitor_port_ = 0;
  size_t log_offset_ = 0;  // the log's size when this run started
  Child child_;
};

// ---- NatsCluster -------------------------------------------------------------------------------

// Three NatsServers ("<name>-0" .. "<name>-2") in one JetStream cluster on loopback, each with
// routes to all three. Start() starts them together and returns once a replicas-3 stream can be
// made; one member can be killed and restarted while the other two keep serving.
class NatsCluster {
 public:
  static constexpr int kSize = 3;

  // `member`: what each server gets besides its name and cluster settings (auth, store limit,
  // no_advertise); `name` is the cluster's name and the prefix of its members' names.
  explicit NatsCluster(std::string dir, NatsServerOptions member = {},
                       const std::string& name = "wsb") {
    std::vector<int> cluster_ports;
    for (int i = 0; i < kSize; ++i) cluster_ports.push_back(FreePort());
    for (int i = 0; i < kSize; ++i) {
      NatsServerOptions o = member;
      o.name = name + "-" + std::to_string(i);
      o.cluster_name = name;
      o.cluster_port = cluster_ports[i];
      o.route_ports = cluster_ports;
      servers_.push_back(std::make_unique<NatsServer>(dir, o));
    }
  }

  // Starts the three, waits until each is ready (NatsServer::WaitReady) and then until the meta
  // leader accepts a replicas-3 stream (a probe stream, made and deleted).
  Status Start(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (auto& s : servers_) s->Launch();
    for (auto& s : servers_) {
      Status st = s->WaitReady(Left(deadline));
      if (!st.ok()) return st;
    }
    StreamSpec probe;
    probe.name = "WSB_HARNESS_PROBE";
    probe.subjects = {"wsb-harness-probe"};
    probe.replicas = kSize;
    Status made = Status::Unavailable("not tried");
    WaitFor(
        [&] {
          made = CreateStream(urls(), probe, auth());
          return made.ok();
        },
        Left(deadline));
    if (!made.ok()) return made;
    return DeleteStream(urls(), probe.name, auth());
  }

  NatsServer& server(int i) { return *servers_.at(static_cast<size_t>(i)); }
  int Kill(int i, int sig = SIGKILL) { return server(i).Kill(sig); }
  // Restarts member i on its ports and store; ready once it is current with the meta leader
  // and holds current copies of its streams again.
  Status Restart(int i, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    return server(i).Restart(timeout);
  }

  // "nats://127.0.0.1:P0,nats://127.0.0.1:P1,nats://127.0.0.1:P2", for a client.
  std::string urls() const {
    std::string out;
    for (const auto& s : servers_) out += (out.empty() ? "" : ",") + s->url();
    return out;
  }
  std::vector<std::string> url_list() const {
    std::vector<std::string> out;
    for (const auto& s : servers_) out.push_back(s->url());
    return out;
  }
  // urls() without member i's (a client that must not reach it).
  std::string UrlsExcept(int i) const {
    std::string out;
    for (int j = 0; j < kSize; ++j) {
      if (j != i) out += (out.empty() ? "" : ",") + servers_[static_cast<size_t>(j)]->url();
    }
    return out;
  }
  // The index of the member named `server_name` (as StreamState::leader names one), or -1.
  int IndexOf(const std::string& server_name) const {
    for (int i = 0; i < kSize; ++i) {
      if (servers_[static_cast<size_t>(i)]->name() == server_name) return i;
    }
    return -1;
  }
  const NatsAuth& auth() const { return servers_.front()->auth(); }

 private:
  static std::chrono::milliseconds Left(std::chrono::steady_clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    return std::max(left, std::chrono::milliseconds(0));
  }

  std::vector<std::unique_ptr<NatsServer>> servers_;
};

}  // namespace wsbridge::testing
