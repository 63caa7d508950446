// Incremental HTTP/1.1 request parser. Bytes are fed as they arrive, in pieces of any
// size (one byte at a time works); the parser keeps its position in the grammar between
// calls and copies the parts it keeps into a reusable HttpRequest, so the caller never
// has to hold on to unparsed input. It stops right after a complete message, which is
// how pipelined requests are separated: the caller resets and feeds the rest.
//
// Every limit is enforced while parsing, so no input makes it buffer without bound:
// the request line plus headers (and, separately, the trailers) may take at most
// max_header_bytes (else 431), a declared Content-Length over max_body_bytes is refused
// as soon as the headers end (413, before any body byte is read), and a chunked body is
// refused once its running total passes the same limit. Anything malformed gives 400.
//
// Memory: the body grows in steps it accounts for, never past the declared
// Content-Length (or max_body_bytes for chunked bodies), and a parser given a BodyBudget
// takes its body's bytes from it first, so that many connections together cannot hold
// more than the budget's limit (503 when a body would exceed it). reset() keeps only
// small buffers for the next message; release_storage() frees them all.
//
// Depends only on the standard library so the fuzz target builds it on its own.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bet::server {

struct HttpHeader {
  std::string name;  // lower-cased: header names are case-insensitive
  std::string value; // as sent, surrounding whitespace removed
};

struct HttpRequest {
  std::string method;  // case-sensitive, as sent ("GET", "POST", ...)
  std::string target;  // request-target as sent, query string included
  int version_minor = 1;  // HTTP/1.<minor>; 0 or 1
  bool keep_alive = true;
  bool chunked = false;
  bool expect_continue = false;
  bool has_content_length = false;
  uint64_t content_length = 0;
  std::string body;  // de-chunked

  // Entries past header_count are stale storage kept for reuse.
  std::vector<HttpHeader> headers;
  size_t header_count = 0;

  std::string_view path() const;   // target without the query string
  std::string_view query() const;  // after '?', empty when none
  // The first header with this (lower-case) name, or nullptr.
  const std::string* header(std::string_view lower_name) const;
  void clear();  // keeps the storage
};

enum class ParseStatus { kNeedMore, kComplete, kError };

// The bytes of request bodies held at once by every parser that shares it (a server has
// one for all its connections): each body is bounded by max_body_bytes, but many slow
// ones together would not be. Parsers take bytes before their body grows and give
// them back on reset. Not thread-safe (one event loop uses it).
class BodyBudget {
 public:
  explicit BodyBudget(size_t limit = 0) : limit_(limit) {}  // 0: no limit, only counting

  // Takes n more bytes for a body that already holds `mine`. Refused when they do not
  // fit, unless no other body holds any: then a limit below max_body_bytes still lets
  // one body at a time through instead of refusing it forever.
  bool try_take(size_t n, size_t mine) {
    bool others = used_ > mine;
    if (limit_ && others && (used_ > limit_ || n > limit_ - used_)) return false;
    used_ += n;
    return true;
  }
  // Takes n bytes whatever the limit: for bytes that are already held and were counted
  // until a moment ago (a body handed from its parser to someone else).
  void take(size_t n) { used_ += n; }
  void give_back(size_t n) { used_ -= n; }
  size_t used() const { return used_; }
  size_t limit() const { return limit_; }

 private:
  size_t limit_;
  size_t used_ = 0;
};

struct ParserLimits {
  size_t max_header_bytes = 16 * 1024;  // request line + headers; also trailers
  size_t max_body_bytes = 4u << 20;
  size_t max_headers = 100;
  size_t max_chunk_line = 4096;  // chunk-size line including extensions
};

class HttpParser {
 public:
  explicit HttpParser(ParserLimits limits = {});
  ~HttpParser();
  // A parser may hold bytes of a BodyBudget, which a copy would give back twice.
  HttpParser(const HttpParser&) = delete;
  HttpParser& operator=(const HttpParser&) = delete;

  // Consumes from [data, data+len) up to and including the end of one message and
  // returns how many bytes it took. After kComplete or kError it consumes nothing
  // until reset().
  size_t feed(const char* data, size_t len);
  size_t feed(std::string_view s) { return feed(s.data(), s.size()); }

  ParseStatus status() const { return status_; }
  // After kError: 400 malformed, 413 body too large, 431 headers too large,
  // 501 unsupported transfer coding, 503 body budget exhausted (only with a budget),
  // 505 unsupported HTTP version.
  int error_status() const { return error_status_; }
  const char* error_message() const { return error_message_; }

  // True once any byte of the current message (leading blank lines aside) arrived.
  bool started() const { return started_; }
  bool headers_complete() const { return state_ > kHeadersDone; }
  // Body bytes received so far (after de-chunking) for the current message.
  size_t body_received() const { return req_.body.size(); }

  HttpRequest& request() { return req_; }
  const HttpRequest& request() const { return req_; }
  const ParserLimits& limits() const { return limits_; }
  void set_limits(const ParserLimits& l) { limits_ = l; }
  // Bodies take their bytes from `budget` (nullptr: none); gives back what the current
  // message holds of the previous one. The budget must outlive the parser's use of it.
  void set_body_budget(BodyBudget* budget);
  // Bytes the current message holds of the budget (its Content-Length once the headers
  // ended, the body's capacity for a chunked one).
  size_t body_reserved() const { return body_reserved_; }

  // Prepares for the next message, giving back the body's budget. Keeps the buffers of
  // an ordinary request so a keep-alive connection stops allocating, but frees those
  // an unusual one grew (above kKeepCapacity in all).
  void reset();
  // reset(), then frees every buffer: for a parser set aside (a pooled connection).
  void release_storage();
  // Heap bytes held by the parser's strings and header table, for memory accounting.
  size_t heap_bytes() const;

  static constexpr size_t kKeepCapacity = 16 * 1024;

 private:
  enum State : uint8_t {
    kStart,
    kMethod,
    kTarget,
    kVersion,
    kRequestLineLF,
    kHeaderLineStart,
    kHeaderName,
    kHeaderValueLeadingWS,
    kHeaderValue,
    kHeaderLF,
    kHeadersEndLF,
    kHeadersDone,  // boundary: states after this one have all headers
    kBody,
    kChunkSize,
    kChunkSizeWS,
    kChunkExt,
    kChunkSizeLF,
    kChunkData,
    kChunkDataCR,
    kChunkDataLF,
    kDone,
    kFailed,
  };

  bool fail(int status, const char* message);
  bool end_header_line();
  bool finish_request_line();
  bool finish_headers();
  bool process_header(const HttpHeader& h);
  bool end_chunk_size_line();
  bool append_body(const char* p, size_t n);
  void give_back_body();
  HttpHeader& next_header_slot();
  HttpHeader& current_header();

  ParserLimits limits_;
  HttpRequest req_;
  State state_ = kStart;
  ParseStatus status_ = ParseStatus::kNeedMore;
  int error_status_ = 0;
  const char* error_message_ = "";

  bool started_ = false;
  bool in_trailers_ = false;
  size_t head_bytes_ = 0;  // bytes of the current head (request line+headers, or trailers)
  size_t host_count_ = 0;
  bool has_transfer_encoding_ = false;
  bool conn_close_ = false;
  bool conn_keep_alive_ = false;
  std::string version_;
  HttpHeader trailer_scratch_;  // trailers are checked for syntax, then dropped
  uint64_t body_remaining_ = 0;
  uint64_t chunk_size_ = 0;
  size_t chunk_digits_ = 0;
  size_t chunk_line_bytes_ = 0;
  BodyBudget* budget_ = nullptr;
  size_t body_reserved_ = 0;  // of budget_, for the current message
};

}  // namespace bet::server
