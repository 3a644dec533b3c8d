// Bounded inflation with zlib (inflate.h): Inflater (protocol.decompress) and DeflateStream
// (permessage-deflate). Both drive a ZInflate, one zlib stream of one format, through Pump(),
// which inflates into a 16 KiB chunk and appends it to the caller's string without letting the
// string grow past max_out. Once warm (streams initialised, *out's capacity reused), a call
// allocates nothing.
#define ZLIB_CONST  // next_in is `const Bytef*`
#include "bridge/protocol/inflate.h"

#include <zlib.h>

#include <algorithm>
#include <climits>

namespace wsbridge {
namespace {

constexpr size_t kChunk = 16 * 1024;  // zlib's output per inflate() call

enum class Pumped {
  kStreamEnd,  // the end of the deflate stream (BFINAL block; gzip/zlib: and its trailer)
  kNeedInput,  // all the input was consumed and the stream goes on
  kTooBig,     // the output would pass max_out (out holds max_out bytes)
  kError,      // zlib refused the data: ZInflate::ErrorText()
};

// Appends n bytes to *out. Its capacity grows geometrically but never past max_out, where
// std::string's own growth could double it past the bound (libstdc++ doubles even on reserve()).
// Callers ensure out->size() + n <= max_out.
void AppendBounded(std::string* out, const uint8_t* data, size_t n, size_t max_out) {
  const size_t need = out->size() + n;
  if (need > out->capacity()) {
    std::string bigger;
    bigger.reserve(std::min(std::max(need, 2 * out->capacity()), max_out));
    bigger.append(*out);
    out->swap(bigger);
  }
  out->append(reinterpret_cast<const char*>(data), n);
}

// One zlib inflate stream of one format (windowBits: 31 gzip, 15 zlib, -15 raw deflate),
// initialised at first use and then reset, never reallocated, for each new stream. zlib's state
// (~7 KiB, and the 32 KiB window it allocates at the first output) lives until destruction.
class ZInflate {
 public:
  ZInflate(int window_bits, const char* name) : window_bits_(window_bits), name_(name) {}
  ~ZInflate() {
    if (ready_) inflateEnd(&z_);
  }
  ZInflate(const ZInflate&) = delete;
  ZInflate& operator=(const ZInflate&) = delete;

  // Initialises the stream at first use; false with *error when zlib cannot allocate its state.
  bool Ready(std::string* error) {
    if (ready_) return true;
    const int ret = inflateInit2(&z_, window_bits_);
    ready_ = ret == Z_OK;
    if (!ready_) *error = Error(z_.msg != nullptr ? z_.msg : zError(ret));
    return ready_;
  }
  // Starts a new deflate stream (the window is forgotten). Keeps the pending input.
  void Reset() {
    if (ready_) inflateReset(&z_);
  }

  void SetInput(const uint8_t* data, size_t len) {
    z_.next_in = data;
    z_.avail_in = 0;
    beyond_avail_in_ = len;
  }
  // The input not consumed yet (after kStreamEnd: what follows the stream).
  const uint8_t* input() const { return z_.next_in; }
  size_t input_left() const { return z_.avail_in + beyond_avail_in_; }

  // Inflates the input, appending to *out, until one of the Pumped cases. out->size() never
  // exceeds max_out: each inflate() call may write at most one byte more than the room left,
  // into the chunk only, which tells "exactly max_out" from "more than max_out".
  Pumped Pump(uint8_t* chunk, size_t max_out, std::string* out) {
    for (;;) {
      if (z_.avail_in == 0 && beyond_avail_in_ > 0) {  // avail_in is 32 bits
        z_.avail_in = static_cast<uInt>(std::min<size_t>(beyond_avail_in_, UINT_MAX));
        beyond_avail_in_ -= z_.avail_in;
      }
      const size_t room = max_out > out->size() ? max_out - out->size() : 0;
      const uInt avail = static_cast<uInt>(room < kChunk ? room + 1 : kChunk);
      z_.next_out = chunk;
      z_.avail_out = avail;
      last_ret_ = inflate(&z_, Z_NO_FLUSH);
      const size_t produced = avail - z_.avail_out;
      if (produced > 0) AppendBounded(out, chunk, std::min(produced, room), max_out);
      if (produced > room) return Pumped::kTooBig;
      if (last_ret_ == Z_STREAM_END) return Pumped::kStreamEnd;
      // Z_BUF_ERROR: no progress possible, which with room in the chunk means no input left.
      if (last_ret_ != Z_OK && last_ret_ != Z_BUF_ERROR) return Pumped::kError;
      if (z_.avail_out > 0 && input_left() == 0) return Pumped::kNeedInput;
    }
  }

  // "gzip: invalid block type": the format's name, then `what`.
  std::string Error(const char* what) const { return std::string(name_) + ": " + what; }
  // After Pumped::kError: zlib's message, e.g. "gzip: incorrect data check".
  std::string ErrorText() const {
    if (z_.msg != nullptr) return Error(z_.msg);
    if (last_ret_ == Z_NEED_DICT) return Error("needs a preset dictionary");
    return Error(zError(last_ret_));
  }

 private:
  z_stream z_{};
  const int window_bits_;
  const char* const name_;
  bool ready_ = false;
  int last_ret_ = Z_OK;
  size_t beyond_avail_in_ = 0;  // input after the z_.avail_in bytes
};

constexpr char kTruncated[] = "truncated";
constexpr char kTrailing[] = "trailing bytes after the end of the stream";

bool IsGzipHeader(const uint8_t* p, size_t len) { return len >= 2 && p[0] == 0x1f && p[1] == 0x8b; }

// kAuto: gzip (1f 8b), zlib (CM 8, CINFO <= 7, FCHECK: the 16-bit header is a multiple of 31),
// else kNone.
Compression Detect(std::string_view in) {
  const auto* p = reinterpret_cast<const uint8_t*>(in.data());
  if (IsGzipHeader(p, in.size())) return Compression::kGzip;
  if (in.size() >= 2 && (p[0] & 0x0f) == 8 && (p[0] >> 4) <= 7 && ((p[0] << 8) | p[1]) % 31 == 0) {
    return Compression::kZlib;
  }
  return Compression::kNone;
}

}  // namespace

const char* ToString(Compression c) {
  switch (c) {
    case Compression::kNone:
      return "none";
    case Compression::kAuto:
      return "auto";
    case Compression::kGzip:
      return "gzip";
    case Compression::kZlib:
      return "zlib";
    case Compression::kDeflate:
      return "deflate";
  }
  return "?";
}

std::optional<Compression> ParseCompression(std::string_view text) {
  for (Compression c : {Compression::kNone, Compression::kAuto, Compression::kGzip,
                        Compression::kZlib, Compression::kDeflate}) {
    if (text == ToString(c)) return c;
  }
  return std::nullopt;
}

// ---- Inflater --------------------------------------------------------------------------------

struct Inflater::Impl {
  ZInflate gzip{16 + MAX_WBITS, "gzip"};
  ZInflate zlib{MAX_WBITS, "zlib"};
  ZInflate deflate{-MAX_WBITS, "deflate"};
  uint8_t chunk[kChunk];
};

Inflater::Inflater() : impl_(std::make_unique<Impl>()) {}
Inflater::~Inflater() = default;

InflateResult Inflater::Inflate(Compression format, std::string_view in, size_t max_out,
                                std::string* out, std::string* error) {
  out->clear();
  if (format == Compression::kAuto) format = Detect(in);
  ZInflate* z = format == Compression::kGzip      ? &impl_->gzip
                : format == Compression::kZlib    ? &impl_->zlib
                : format == Compression::kDeflate ? &impl_->deflate
                                                  : nullptr;
  if (z == nullptr) return InflateResult::kNotCompressed;  // kNone, or kAuto found no header
  if (!z->Ready(error)) return InflateResult::kCorrupt;
  z->Reset();
  z->SetInput(reinterpret_cast<const uint8_t*>(in.data()), in.size());
  for (;;) {
    switch (z->Pump(impl_->chunk, max_out, out)) {
      case Pumped::kTooBig:
        return InflateResult::kTooBig;
      case Pumped::kNeedInput:
        *error = z->Error(kTruncated);
        return InflateResult::kCorrupt;
      case Pumped::kError:
        *error = z->ErrorText();
        return InflateResult::kCorrupt;
      case Pumped::kStreamEnd:
        break;
    }
    if (z->input_left() == 0) return InflateResult::kOk;
    if (format != Compression::kGzip || !IsGzipHeader(z->input(), z->input_left())) {
      *error = z->Error(kTrailing);
      return InflateResult::kCorrupt;
    }
    z->Reset();  // the next gzip member
  }
}

// ---- DeflateStream ---------------------------------------------------------------------------

// After kTooBig or kCorrupt, the message is abandoned: the zlib stream is reset at once, and
// Append answers the same failure, inflating nothing, until Finish, which answers it once more
// and clears it. The window is lost either way (reset_context or not): a later message that
// refers to it fails. The link closes the connection on either failure; a new connection gets
// a new DeflateStream.
struct DeflateStream::Impl {
  ZInflate z{-MAX_WBITS, "permessage-deflate"};
  // Bytes of the current message went into the current deflate stream: Finish's 00 00 ff ff
  // then completes the empty stored block they end with. False when the message ended exactly
  // at the end of a final block (or was empty): the tail would start a stream of its own and
  // swallow the next message.
  bool fed = false;
  InflateResult failed = InflateResult::kOk;
  std::string failure;  // the error text of a kCorrupt failure
  uint8_t chunk[kChunk];
};

DeflateStream::DeflateStream() : impl_(std::make_unique<Impl>()) {}
DeflateStream::~DeflateStream() = default;

InflateResult DeflateStream::Append(const uint8_t* data, size_t len, size_t max_out,
                                    std::string* out, std::string* error) {
  Impl& m = *impl_;
  if (m.failed == InflateResult::kCorrupt) *error = m.failure;
  if (m.failed != InflateResult::kOk) return m.failed;
  if (!m.z.Ready(error)) return InflateResult::kCorrupt;
  m.z.SetInput(data, len);
  m.fed = m.fed || len > 0;
  for (;;) {
    const Pumped p = m.z.Pump(m.chunk, max_out, out);
    if (p == Pumped::kNeedInput) return InflateResult::kOk;
    if (p == Pumped::kStreamEnd) {  // a final block: what follows starts a new stream
      m.z.Reset();
      m.fed = m.z.input_left() > 0;
      if (!m.fed) return InflateResult::kOk;
      continue;
    }
    if (p == Pumped::kError) *error = m.failure = m.z.ErrorText();  // before Reset clears it
    m.failed = p == Pumped::kTooBig ? InflateResult::kTooBig : InflateResult::kCorrupt;
    m.z.Reset();
    return m.failed;
  }
}

InflateResult DeflateStream::Finish(bool reset_context, size_t max_out, std::string* out,
                                    std::string* error) {
  static constexpr uint8_t kTail[] = {0x00, 0x00, 0xff, 0xff};
  Impl& m = *impl_;
  InflateResult r = InflateResult::kOk;
  if (m.fed || m.failed != InflateResult::kOk) {  // a failure is answered once more
    r = Append(kTail, sizeof kTail, max_out, out, error);
  }
  if (reset_context) m.z.Reset();
  m.fed = false;
  m.failed = InflateResult::kOk;
  return r;
}

}  // namespace wsbridge
