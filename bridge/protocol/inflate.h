// Inflation of compressed inbound frames, bounded (SPEC §9): protocol.decompress (whole frames
// compressed by the application: gzip, zlib or raw deflate) and permessage-deflate (RFC 7692,
// the WebSocket extension: raw deflate across the frames of a message, context kept between
// messages). Both use zlib (Debian zlib1g-dev).
//
// The bound: output stops at `max_out` bytes and the call answers kTooBig. Nothing bigger than
// max_out (plus one zlib output chunk, at most 16 KiB) is ever allocated, so a 1 KiB "bomb" that
// would inflate to a gigabyte costs max_out bytes of memory and a few milliseconds.
//
// Threading: not thread-safe; one object per thread (the upstream I/O thread owns the daemon's).
// Each object owns one zlib stream, reused (reset, not reallocated) from frame to frame.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace wsbridge {

enum class Compression { kNone, kAuto, kGzip, kZlib, kDeflate };

// "none", "auto", "gzip", "zlib", "deflate".
const char* ToString(Compression c);
std::optional<Compression> ParseCompression(std::string_view text);

enum class InflateResult {
  kOk,
  kNotCompressed,  // kAuto (or kNone): neither a gzip nor a zlib header; take the frame as received
  kTooBig,         // the output reached max_out before the end of the stream: stopped there
  kCorrupt,        // not a valid stream (bad data, bad checksum, truncated, or trailing garbage)
};

// One-shot inflation of whole frames (protocol.decompress).
class Inflater {
 public:
  Inflater();
  ~Inflater();
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  // Inflates all of `in`, in `format`, into *out (replaced). kAuto: gzip when it starts with
  // 1f 8b, zlib when its first two bytes are a valid zlib header (CM 8, FCHECK), else
  // kNotCompressed. gzip: one member (concatenated members are inflated too). A stream that
  // ends before its end marker is kCorrupt ("truncated"), so are bytes after its end (other
  // than a gzip member). On kCorrupt, *error holds one line, the format then zlib's message,
  // "truncated" or "trailing bytes after the end of the stream" ("gzip: incorrect data check");
  // *out is then unspecified. On kTooBig, *out holds the first max_out bytes.
  InflateResult Inflate(Compression format, std::string_view in, size_t max_out,
                        std::string* out, std::string* error);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// permessage-deflate (RFC 7692 §7.2.2): each message's frames are raw deflate data without the
// trailing 00 00 ff ff; the LZ77 window carries over from message to message unless the server
// resets it (server_no_context_takeover). A final block (BFINAL) ends the deflate stream: the
// bytes after it, in this message or the next, start a new stream (zlib's inflate would
// otherwise refuse them).
class DeflateStream {
 public:
  DeflateStream();
  ~DeflateStream();
  DeflateStream(const DeflateStream&) = delete;
  DeflateStream& operator=(const DeflateStream&) = delete;

  // Appends the inflation of the next `len` bytes of the current message to *out. kTooBig once
  // out->size() would exceed max_out (the message is then abandoned: the connection must be
  // closed with 1009); kCorrupt with *error on bad data.
  InflateResult Append(const uint8_t* data, size_t len, size_t max_out, std::string* out,
                       std::string* error);

  // The message's last frame was appended: inflates the 00 00 ff ff tail, then, when
  // `reset_context`, forgets the window (server_no_context_takeover). After a kTooBig or
  // kCorrupt, Append answers that again until Finish, which answers it once more and clears it:
  // the stream is then usable, but its window is lost (the link closes the connection anyway).
  InflateResult Finish(bool reset_context, size_t max_out, std::string* out, std::string* error);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace wsbridge
