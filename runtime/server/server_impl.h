// Internals of HttpServer shared by server.cpp (event loop, setup, drain, reload),
// server_connections.cpp (sockets, buffers, timers) and
// server_routes.cpp (request dispatch and responses). Not a public header.
#pragma once
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
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

inline constexpr size_t kReadChunk = 16 * 1024;  // one recv() into the loop's read buffer
inline constexpr auto kMinTrimInterval = std::chrono::seconds(1);  // between malloc_trim calls

inline std::string sys_error(const std::string& what) { return what + ": " + std::strerror(errno); }

enum TimerKind : int8_t { kNoTimer = -1, kIdleTimer = 0, kHeaderTimer = 1 };

struct Connection;

// A connection's membership of one deadline list (TimerList): intrusive links, so
// joining and leaving a list never allocates.
struct TimerLink {
  Connection* prev = nullptr;
  Connection* next = nullptr;
  Clock::time_point deadline;
};

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

  // The header or idle deadline: membership of Impl::timers_[tlist].
  TimerLink timer;
  int8_t tlist = kNoTimer;

  // The whole-request deadline (ServerConfig::request_timeout), from a request's first
  // byte to its complete body: membership of Impl::request_timers_, kept apart from the
  // list above because it runs alongside the header and idle timers.
  TimerLink request_timer;
  bool request_timed = false;

  size_t pool_index = 0;  // in Impl::pool_
  size_t held_bytes = 0;  // its buffers' heap bytes, as last counted in Impl::buffered_bytes_
  size_t job_body_bytes = 0;  // of Impl::body_budget_, held by the body its in-flight job took
};

// Connections waiting for a deadline, linked through the TimerLink member `link`. Every
// entry gets the same duration at insertion, so appending keeps the list sorted by
// deadline and the head is always the next to expire.
struct TimerList {
  Connection* head = nullptr;
  Connection* tail = nullptr;
  Clock::duration duration{};

  void push_back(Connection* c, TimerLink Connection::*link) {
    TimerLink& l = c->*link;
    l.deadline = Clock::now() + duration;
    l.prev = tail;
    l.next = nullptr;
    if (tail) (tail->*link).next = c;
    else head = c;
    tail = c;
  }
  void unlink(Connection* c, TimerLink Connection::*link) {
    TimerLink& l = c->*link;
    if (l.prev) (l.prev->*link).next = l.next;
    else head = l.next;
    if (l.next) (l.next->*link).prev = l.prev;
    else tail = l.prev;
    l.prev = l.next = nullptr;
  }
};

struct HttpServer::Impl {
  Impl(ServerConfig config, inference::Predictor& predictor);
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
  void refuse_busy(Connection* c);
  void account(Connection* c);
  void maybe_trim();
  void request_timer_start(Connection* c);
  void request_timer_stop(Connection* c);
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
  void decode_job(InferenceJob& job) const;  // on the intake thread
  void respond(Connection* c, int status, std::string_view content_type, std::string_view body,
               std::string_view extra_headers = {});
  void respond_error(Connection* c, int status, std::string_view code, std::string_view message,
                     std::string_view extra_headers = {});
  prom::Counter& request_counter(size_t route, int status);

  ServerConfig cfg_;
  inference::Predictor& predictor_;
  ApiKeys keys_;
  RateLimiter limiter_;
  // Requests with a missing or wrong API key, per peer address: once a peer's bucket is
  // empty every /v1 request from it gets 429 before its key is looked at, so keys
  // cannot be guessed faster than the rate limit. (Not all requests per address: behind
  // a load balancer every client shares one.)
  RateLimiter auth_failures_;
  ApiLimits api_limits_;
  ParserLimits parser_limits_;
  // Shared by every connection's parser; declared before pool_ so that it outlives the
  // parsers, which give their bytes back when destroyed.
  BodyBudget body_budget_;

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
  TimerList request_timers_;  // linked through Connection::request_timer
  size_t buffered_bytes_ = 0;  // sum of Connection::held_bytes over pool_
  size_t trim_high_water_ = 0;  // most buffered bytes (with bodies) since the last trim
  Clock::time_point last_trim_{};
  bool trim_pending_ = false;  // a trim is due but waits for its rate limit
  std::unique_ptr<char[]> read_buf_;  // every recv lands here; connections keep only what is unparsed
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
  prom::Gauge* buffered_bytes_gauge_ = nullptr;
  prom::Gauge* body_bytes_gauge_ = nullptr;
  prom::Gauge* pooled_gauge_ = nullptr;
  prom::Counter* accepted_ = nullptr;
  prom::Gauge* model_ready_ = nullptr;
  prom::Counter* reload_ok_ = nullptr;
  prom::Counter* reload_failed_ = nullptr;
  BatchQueueMetrics queue_metrics_;
};

}  // namespace bet::server
