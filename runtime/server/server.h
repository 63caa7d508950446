// `betctl serve`: a non-blocking HTTP/1.1 server on one epoll event-loop thread, with
// inference on a worker thread behind the batching queue. See product.md "Server".
//
//   HttpServer server(config, predictor);
//   server.bind();                       // throws on a bad address or a busy port
//   install_signal_handlers(server);     // SIGTERM/SIGINT: drain and stop, SIGHUP: reload
//   server.run();                        // returns after stop() has drained
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/inference/predictor_interface.h"
#include "runtime/server/prometheus.h"

namespace bet::server {

struct ServerConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;  // 0: an ephemeral port, see HttpServer::port()

  // Request limits.
  size_t max_header_bytes = 16 * 1024;  // -> 431
  size_t max_body_bytes = 4u << 20;     // --max-body -> 413
  size_t max_text_bytes = 1u << 20;     // --max-text-bytes -> 422
  // Bytes of request bodies held at once, over all connections (--max-buffered-body).
  // Each body takes its declared Content-Length (a chunked one, what it has grown to)
  // before it is read and holds it until its request is answered; one that does not
  // fit gets 503 with Retry-After and is not read. A body is always admitted when no
  // other is held, so a value below max_body_bytes means one at a time. 0: no limit.
  size_t max_buffered_body_bytes = 256u << 20;
  size_t max_batch_items = 64;          // --max-batch-items -> 413; at most max_queue_items
  double max_request_gflop = 500;       // --max-request-gflop: estimated work per request -> 413

  // Batching queue.
  size_t max_batch = 32;                       // --max-batch: items per forward pass
  std::chrono::microseconds max_wait{2000};    // --max-wait-us
  size_t max_queue_items = 4096;               // beyond: 503
  int default_mc_dropout = 0;                  // --default-mc-dropout
  // The inference worker reserves, before its first request, the memory of the largest
  // request it admits (Predictor::prepare_worker; ModelPredictor: its arena), so
  // steady-state serving makes no system allocation for tensors. Off: only to measure
  // what it saves (tests, `betctl bench serve`).
  bool reserve_worker_memory = true;

  // Auth and rate limiting of the /v1 routes and their aliases.
  std::vector<std::string> api_keys;  // empty: no key needed (see ApiKeys::load_file)
  double rate_limit = 0;              // requests/s per key (per peer address without keys); 0: off

  // Timeouts (configurable so tests can use short ones).
  std::chrono::milliseconds header_timeout{10000};  // first byte to end of headers -> 408
  std::chrono::milliseconds idle_timeout{60000};    // idle keep-alive; also a stalled body or reader
  // First byte to complete body (--request-timeout-ms) -> 408. Never extended, so a body
  // trickled a byte at a time, each within idle_timeout, still ends.
  std::chrono::milliseconds request_timeout{60000};
  std::chrono::milliseconds drain_timeout{30000};   // stop(): longest wait for in-flight work

  size_t max_connections = 10000;
  // Closed connections' objects kept for reuse; those beyond are freed, so a burst of
  // connections does not keep its memory afterwards.
  size_t max_spare_connections = 64;
  std::string version = "0.0.0";  // reported in /openapi.json

  // One line per event worth logging (startup, reload, errors); default: stderr.
  std::function<void(std::string_view)> log;
};

class HttpServer {
 public:
  // Throws std::invalid_argument for limits that contradict each other.
  HttpServer(ServerConfig config, inference::Predictor& predictor);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens. Throws std::runtime_error naming the address on failure.
  void bind();
  uint16_t port() const;  // the bound port (after bind())

  // Runs the event loop on the calling thread until stop() has drained. Binds first if
  // bind() was not called.
  void run();

  // Async-signal-safe and thread-safe: stop accepting, finish in-flight requests, close
  // idle connections, and make run() return.
  void stop();
  // Async-signal-safe and thread-safe: call predictor.reload() on a background thread.
  void request_reload();

  prom::Registry& metrics();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// SIGTERM and SIGINT call server.stop(), SIGHUP server.request_reload(); SIGPIPE is
// ignored. One server per process.
void install_signal_handlers(HttpServer& server);

}  // namespace bet::server
