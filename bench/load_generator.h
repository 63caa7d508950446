// A closed-loop HTTP/1.1 load generator for `betctl bench serve`: N keep-alive
// connections on one epoll thread, each sending its next request as soon as the
// answer to the previous one is complete, for a bounded time and request count. It
// only talks to loopback addresses: it is a benchmark of a server on this machine, not
// a tool to point at other hosts.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bet::bench {

struct LoadOptions {
  std::string host = "127.0.0.1";  // a numeric loopback IPv4 address (127.x.y.z)
  uint16_t port = 0;
  int connections = 1;
  // Raw requests (see http_request); connection i sends requests[(i + j) % size] as its
  // j-th request, so a mix of requests spreads over the connections.
  std::vector<std::string> requests;
  double warmup_s = 0.2;           // responses completed before this are not counted
  double duration_s = 2.0;         // the measured window, at most
  int64_t max_requests = 100000;   // measured responses, at most
  // A slow server may answer little within duration_s: the window then goes on until
  // min_requests responses were measured, up to max_duration_s (if larger).
  int64_t min_requests = 0;
  double max_duration_s = 0;
  double request_timeout_s = 10.0; // no complete response by then: a transport error
};

struct LoadResult {
  int64_t responses = 0;         // complete responses in the window, any status
  int64_t ok = 0;                // 2xx
  int64_t non_2xx = 0;           // complete responses with another status
  int64_t transport_errors = 0;  // failed connects, resets, timeouts, malformed responses
  int64_t reconnects = 0;        // connections re-opened (after an error or Connection: close)
  std::map<int, int64_t> status_counts;
  double seconds = 0;         // length of the measured window
  double requests_per_s = 0;  // ok / seconds
  // Every response of the window (any status), ascending; latency = from the request's
  // first byte written to its response's last byte read.
  std::vector<double> latencies_ms;
  double p50_ms = 0, p99_ms = 0, mean_ms = 0, max_ms = 0;  // NaN without responses
  std::string first_error;  // the first transport error or non-2xx status line seen
  bool aborted = false;     // gave up early: nothing could connect

  int64_t errors() const { return non_2xx + transport_errors; }
};

// Percentile q (0..100) of an ascending vector by the nearest-rank rule: the smallest
// element with at least q% of the elements <= it (q = 0: the first). NaN when empty.
double percentile(const std::vector<double>& sorted, double q);

// "METHOD path HTTP/1.1" with Host, Content-Length (when there is a body or for POST),
// Content-Type: application/json for a body, and extra_headers ("Name: value\r\n" lines).
std::string http_request(const std::string& method, const std::string& path, const std::string& body = "",
                         const std::string& extra_headers = "");

// Runs the load and returns when the window is over (or max_requests were measured);
// requests still in flight then are dropped. Responses are framed by HttpResponseParser
// (bench/http_response_parser.h): Content-Length, or delimited by the server closing the
// connection, no body for HEAD, 204 and 304, 1xx skipped; chunked responses count as
// malformed.
// Throws std::invalid_argument for no requests, connections outside 1..4096, a
// non-loopback host or a non-positive duration.
LoadResult run_load(const LoadOptions& opts);

}  // namespace bet::bench
