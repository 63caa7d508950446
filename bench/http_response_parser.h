// An incremental HTTP/1.x response parser, shared by the blocking HttpClient
// (bench/http_client.h) and the load generator (bench/load_generator.h): feed it the
// bytes a connection delivers, in pieces of any size, and take complete responses out.
//
// Framing (RFC 9112 section 6.3, the subset a client of `betctl serve` meets):
// - 1xx interim responses are skipped: the final response follows them.
// - A response to HEAD, and any 204 or 304, has no body, whatever Content-Length says.
// - Otherwise Content-Length gives the body's length (digits only; garbage, or two
//   different values, is an error), and without it the body runs until the peer
//   closes the connection: call finish() at EOF to complete it.
// - Transfer-Encoding: chunked is not supported (an error); another transfer coding
//   makes the body close-delimited.
// Bytes after a complete response are kept: they begin the next one (pipelining).
// Errors are sticky until reset(): the connection's framing is lost.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace bet::bench {

struct HttpResponse {
  int status = 0;
  std::string status_line;                     // "HTTP/1.1 200 OK", without CRLF
  std::map<std::string, std::string> headers;  // lower-case names; the last of repeated ones
  std::string body;
  // False when the connection ends after this response: HTTP/1.0 without
  // "Connection: keep-alive", "Connection: close", or a close-delimited body.
  bool keep_alive = true;

  std::string header(const std::string& lower_name) const;  // "" when absent
};

class HttpResponseParser {
 public:
  struct Options {
    size_t max_header_bytes = 64 * 1024;  // a longer status line + header block is an error
    bool keep_headers = true;  // fill HttpResponse::headers (framing is parsed either way)
    bool keep_body = true;     // fill HttpResponse::body (else it is skipped)
  };

  HttpResponseParser() = default;
  explicit HttpResponseParser(Options opts) : opts_(opts) {}

  // Appends bytes received from the connection.
  void feed(std::string_view bytes);

  // The next complete final response, or nullopt when more bytes are needed or the
  // input is malformed (then failed() and error() say why). head_request: the response
  // answers a HEAD request; pass the same value until the response comes out.
  std::optional<HttpResponse> next(bool head_request = false);

  // The peer closed the connection: completes a close-delimited response (or one whose
  // last bytes came with the close). nullopt when nothing was pending (a clean close),
  // and an error ("connection closed before the response was complete") when a response
  // was cut short.
  std::optional<HttpResponse> finish(bool head_request = false);

  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }

  // The head of a response without Content-Length has been parsed: its body ends
  // only when the connection closes (see finish()).
  bool awaiting_close() const { return have_head_ && close_delimited_; }

  // Bytes fed and not yet returned in a response (the head of an unfinished response
  // included; skipped 1xx responses excluded).
  std::string_view pending() const { return std::string_view(buf_).substr(pos_); }
  size_t buffered() const { return buf_.size() - pos_; }

  // Forgets everything fed so far and any error (a new connection).
  void reset();

 private:
  bool parse_head(bool head_request);  // false: need more bytes, or an error
  HttpResponse take(size_t body_len);  // completes the current response
  bool fail(std::string what);

  Options opts_;
  std::string buf_;
  size_t pos_ = 0;   // start of the current response in buf_
  size_t scan_ = 0;  // where to resume looking for the end of the header block
  std::string error_;
  // The current response, once its head is parsed.
  bool have_head_ = false;
  bool close_delimited_ = false;
  size_t body_start_ = 0;  // offset in buf_
  uint64_t content_length_ = 0;
  HttpResponse cur_;
};

}  // namespace bet::bench
