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

struct ParserLimits {
  size_t max_header_bytes = 16 * 1024;  // request line + headers; also trailers
  size_t max_body_bytes = 4u << 20;
  size_t max_headers = 100;
  size_t max_chunk_line = 4096;  // chunk-size line including extensions
};

class HttpParser {
 public:
  explicit HttpParser(ParserLimits limits = {});

  // Consumes from [data, data+len) up to and including the end of one message and
  // returns how many bytes it took. After kComplete or kError it consumes nothing
  // until reset().
  size_t feed(const char* data, size_t len);
  size_t feed(std::string_view s) { return feed(s.data(), s.size()); }

  ParseStatus status() const { return status_; }
  // After kError: 400 malformed, 413 body too large, 431 headers too large,
  // 501 unsupported transfer coding, 505 unsupported HTTP version.
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

  // Prepares for the next message; keeps buffers.
  void reset();

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
};

}  // namespace bet::server
