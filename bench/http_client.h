// A small blocking HTTP/1.1 client for talking to `betctl serve`: keep-alive, raw
// writes (for pipelining or byte-by-byte tests) and response reading with
// Content-Length or close-delimited bodies (framing by bench/http_response_parser.h).
// Test and bench support (the server tests, `betctl bench serve`), not part of the
// product library; not a general-purpose client (no TLS, no redirects, no chunked
// responses).
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "bench/http_response_parser.h"

namespace bet::bench {

class HttpClient {
 public:
  // Connects to host:port (numeric IPv4/IPv6 or a name); connected() says whether it worked.
  // Every read and write gives up after `timeout`.
  HttpClient(const std::string& host, uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  bool send(std::string_view bytes);
  // One write per byte, pausing now and then so the pieces really arrive apart.
  bool send_bytewise(std::string_view bytes);

  // Reads the next final response (1xx responses are skipped). For a HEAD request
  // pass head_request: such a response has a Content-Length but no body. nullopt on
  // EOF, timeout or a malformed response (a close-delimited body ends at EOF or timeout).
  std::optional<HttpResponse> read(bool head_request = false);

  // Sends "METHOD path HTTP/1.1" with Host and Content-Length (for bodies and POST)
  // plus extra_headers (complete "Name: value\r\n" lines), then reads the response.
  std::optional<HttpResponse> request(const std::string& method, const std::string& path,
                                      const std::string& body = "", const std::string& extra_headers = "");

  // True when the server has closed the connection (EOF or reset) and nothing is buffered.
  bool closed_by_peer();
  // Bytes received and not yet returned in a response.
  std::string_view buffered() const { return parser_.pending(); }

  // The request text request() would send.
  static std::string format_request(const std::string& method, const std::string& path, const std::string& body = "",
                                    const std::string& extra_headers = "");

 private:
  bool fill();
  int fd_ = -1;
  HttpResponseParser parser_;
};

}  // namespace bet::bench
