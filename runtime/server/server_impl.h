// Internals of HttpServer shared by server.cpp (event loop, sockets, timers) and
// server_routes.cpp (request dispatch and responses). Not a public header.
#pragma once
#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/server/api.h"
#include "runtime/server/auth.h"
#include "runtime/server/batch_queue.h"
#include "runtime/server/buffer.h"
#include "runtime/server/http_parser.h"
#include "runtime/server/http_response.h"
#include "runtime/server/router.h"
#include "runtime/server/server.h"

namespace bet::server {

using Clock = std::chrono::steady_clock;

enum TimerKind : int8_t { kNoTimer = -1, kIdleTimer = 0, kHeaderTimer = 1 };

struct Connection {
  int fd = -1;
  uint64_t generation = 0;
  size_t index = 0;  // in Impl::conns_
  HttpParser parser;
  Buffer in, out;
  char peer[48] = {};

  bool inflight = false;          // a job is with the inference worker
  bool close_after_write = false;
  bool linger = false;            // close via a linger (after refusing a request)
  bool lingering = false;         // response sent, write side shut, discarding input
  bool peer_eof = false;
  bool readable = false;          // no EAGAIN since the last EPOLLIN edge (edge-triggered)
  bool queued_ready = false;      // in Impl::ready_
  bool sent_continue = false;
  bool closed = false;            // fd closed; the object waits for its job or the pool

  // The request being answered.
  size_t route = 0;               // index into routes(); routes().size() means "other"
  bool head = false;
  bool keep_alive = true;
  bool http10 = false;
  Clock::time_point started;

  // Intrusive timer list membership; each list is sorted by deadline because all its
  // entries were given the same duration at insertion.
  Connection* tprev = nullptr;
  Connection* tnext = nullptr;
  int8_t tlist = kNoTimer;
  Clock::time_point deadline;
};

struct TimerList {
  Connection* head = nullptr;
  Connection* tail = nullptr;
  Clock::duration duration{};
};

struct HttpServer::Impl {
  Impl(ServerConfig config, Predictor& predictor);
  ~Impl();

  // server.cpp
  void bind();
  void run();
  void stop();
  void request_reload();
  void wake();
  void accept_all();
  void on_wake();
  bool read_some(Connection* c);
  void discard_input(Connection* c);
  void pump(Connection* c);
  void process_input(Connection* c);
  void flush(Connection* c);
  void start_linger(Connection* c);
  void close_conn(Connection* c);
  Connection* acquire();
  void release(Connection* c);
  void timer_insert(Connection* c, TimerKind k);
  void timer_remove(Connection* c);
  void update_timer(Connection* c, bool progress);
  void expire_timers();
  void on_timeout(Connection* c);
  int next_timeout_ms() const;
  void begin_drain();
  void start_reload();
  void log(std::string_view line) const;

  // server_routes.cpp
  void setup_metrics();
  void update_model_info();
  void handle_request(Connection* c);
  void handle_parse_error(Connection* c);
  void dispatch_job(Connection* c, std::unique_ptr<InferenceJob> job);
  void finish_job(std::unique_ptr<InferenceJob> job);
  void respond(Connection* c, int status, std::string_view content_type, std::string_view body,
               std::string_view extra_headers = {});
  void respond_error(Connection* c, int status, std::string_view code, std::string_view message,
                     std::string_view extra_headers = {});
  prom::Counter& request_counter(size_t route, int status);

  ServerConfig cfg_;
  Predictor& predictor_;
  ApiKeys keys_;
  RateLimiter limiter_;
  ApiLimits api_limits_;
  ParserLimits parser_limits_;

  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;   // eventfd: stop, reload, finished jobs
  int spare_fd_ = -1;  // released to accept-and-close when out of descriptors
  uint16_t port_ = 0;
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> reload_requested_{false};

  std::vector<std::unique_ptr<Connection>> pool_;
  std::vector<Connection*> free_;
  std::vector<Connection*> conns_;      // open connections
  std::vector<Connection*> graveyard_;  // closed this iteration, released at its end
  std::vector<Connection*> ready_;      // to pump again without waiting for an edge
  std::vector<Connection*> ready_swap_;
  uint64_t next_generation_ = 1;
  std::array<TimerList, 2> timers_;
  Clock::time_point now_;
  bool draining_ = false;
  Clock::time_point drain_deadline_;
  size_t inflight_jobs_ = 0;

  std::unique_ptr<BatchQueue> queue_;
  std::mutex done_mu_;
  std::vector<std::unique_ptr<InferenceJob>> done_;  // posted by the worker
  std::vector<std::unique_ptr<InferenceJob>> done_local_;

  std::thread reload_thread_;
  std::atomic<bool> reload_busy_{false};

  HttpDate date_;
  std::string openapi_body_;
  std::string scratch_;        // metrics text, header lines
  std::string extra_headers_;

  prom::Registry registry_;
  static constexpr size_t kRouteSlots = 12;  // routes() plus "other"
  std::array<std::array<prom::Counter*, 600>, kRouteSlots> req_counters_{};
  std::array<prom::Histogram*, kRouteSlots> latency_{};
  prom::Gauge* open_connections_ = nullptr;
  prom::Counter* accepted_ = nullptr;
  prom::Gauge* model_ready_ = nullptr;
  prom::Counter* reload_ok_ = nullptr;
  prom::Counter* reload_failed_ = nullptr;
  BatchQueueMetrics queue_metrics_;
};

}  // namespace bet::server
