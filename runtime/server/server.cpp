// The event loop: one epoll instance, edge-triggered connection sockets (registered
// once for reading and writing, so the steady state makes no epoll_ctl calls), a
// level-triggered listening socket and an eventfd through which stop(), reload and
// the inference worker wake the loop.
#include "runtime/server/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "runtime/server/openapi.h"
#include "runtime/server/server_impl.h"

namespace bet::server {

namespace {

constexpr size_t kReadChunk = 16 * 1024;
constexpr size_t kMaxPendingInput = 64 * 1024;   // unparsed bytes held while a request is busy
constexpr size_t kOutSoftLimit = 256 * 1024;     // stop parsing pipelined requests above this
// What a connection keeps of its buffers between requests: enough for ordinary
// requests and responses, so keep-alive traffic stops allocating, while the storage an
// unusual request grew is freed once it is answered rather than held for the
// connection's life.
constexpr size_t kIdleBufferCapacity = 16 * 1024;
// Memory handed back to the system (maybe_trim) once buffers hold this much less than
// at their peak, at most once per interval.
constexpr size_t kTrimDrop = 32u << 20;
constexpr auto kMinTrimInterval = std::chrono::seconds(1);
constexpr int kMaxEvents = 256;
constexpr int kMaxAcceptsPerWake = 128;
constexpr int kMaxRoundsPerWake = 16;

// Tags for the two non-connection descriptors in epoll's data.ptr.
char kListenTag;
char kWakeTag;

std::string sys_error(const std::string& what) { return what + ": " + std::strerror(errno); }

}  // namespace

// ---------------------------------------------------------------------------------------
// Setup and teardown

HttpServer::Impl::Impl(ServerConfig config, inference::Predictor& predictor)
    : cfg_(std::move(config)),
      predictor_(predictor),
      keys_(cfg_.api_keys),
      limiter_(cfg_.rate_limit),
      auth_failures_(cfg_.rate_limit) {
  // One limit per thing: a batch the item limit admits must never be refused for its
  // size by the queue (it would get 503 or 200 depending on what else is queued).
  if (cfg_.max_batch_items == 0 || cfg_.max_batch_items > cfg_.max_queue_items)
    throw std::invalid_argument("max_batch_items must be in [1, max_queue_items = " +
                                std::to_string(cfg_.max_queue_items) + "], got " +
                                std::to_string(cfg_.max_batch_items));
  if (!(cfg_.max_request_gflop > 0))
    throw std::invalid_argument("max_request_gflop must be positive");
  api_limits_.request = request_limits(cfg_);
  predictor_.set_limits(api_limits_.request);
  parser_limits_.max_header_bytes = cfg_.max_header_bytes;
  parser_limits_.max_body_bytes = cfg_.max_body_bytes;
  body_budget_ = BodyBudget(cfg_.max_buffered_body_bytes);
  timers_[kIdleTimer].duration = cfg_.idle_timeout;
  timers_[kHeaderTimer].duration = cfg_.header_timeout;
  request_timers_.duration = cfg_.request_timeout;
  read_buf_ = std::make_unique<char[]>(kReadChunk);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::runtime_error(sys_error("eventfd"));
  OpenApiOptions oa;
  oa.version = cfg_.version;
  oa.max_batch_items = cfg_.max_batch_items;
  oa.max_text_bytes = cfg_.max_text_bytes;
  oa.api_keys = keys_.enabled();
  openapi_body_ = dump_json(openapi_document(oa));
  setup_metrics();
}

HttpServer::Impl::~Impl() {
  if (queue_) queue_->stop();
  if (reload_thread_.joinable()) reload_thread_.join();
  for (Connection* c : conns_)
    if (c->fd >= 0) ::close(c->fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (spare_fd_ >= 0) ::close(spare_fd_);
}

void HttpServer::Impl::log(std::string_view line) const {
  if (cfg_.log) cfg_.log(line);
  else std::fprintf(stderr, "betctl serve: %.*s\n", static_cast<int>(line.size()), line.data());
}

void HttpServer::Impl::bind() {
  if (listen_fd_ >= 0) return;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port = std::to_string(cfg_.port);
  std::string where = cfg_.host + ":" + port;
  int rc = getaddrinfo(cfg_.host.empty() ? nullptr : cfg_.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) throw std::runtime_error(where + ": " + gai_strerror(rc));
  std::string last_error = where + ": no usable address";
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_error = sys_error(where + ": socket");
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
      last_error = sys_error(where);
      ::close(fd);
      continue;
    }
    listen_fd_ = fd;
    break;
  }
  freeaddrinfo(res);
  if (listen_fd_ < 0) throw std::runtime_error(last_error);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

void HttpServer::Impl::wake() {
  uint64_t one = 1;
  // write() is async-signal-safe; a full counter (EAGAIN) already means "wake up".
  ssize_t r = ::write(wake_fd_, &one, sizeof one);
  (void)r;
}

void HttpServer::Impl::stop() {
  stop_requested_.store(true);
  wake();
}

void HttpServer::Impl::request_reload() {
  reload_requested_.store(true);
  wake();
}

// ---------------------------------------------------------------------------------------
// The loop

void HttpServer::Impl::run() {
  bind();
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw std::runtime_error(sys_error("epoll_create1"));
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &kListenTag;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) != 0) throw std::runtime_error(sys_error("epoll_ctl"));
  ev.data.ptr = &kWakeTag;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) throw std::runtime_error(sys_error("epoll_ctl"));

  BatchQueueOptions qo;
  qo.max_batch = cfg_.max_batch;
  qo.max_wait = cfg_.max_wait;
  qo.max_queue_items = cfg_.max_queue_items;
  qo.decode = [this](InferenceJob& job) { decode_job(job); };
  queue_ = std::make_unique<BatchQueue>(
      predictor_, qo,
      [this](std::unique_ptr<InferenceJob> job) {
        {
          std::lock_guard lock(done_mu_);
          done_.push_back(std::move(job));
        }
        wake();
      },
      queue_metrics_);
  update_model_info();
  log("listening on " + cfg_.host + ":" + std::to_string(port_));

  epoll_event events[kMaxEvents];
  while (true) {
    int n = epoll_wait(epoll_fd_, events, kMaxEvents, next_timeout_ms());
    if (n < 0 && errno != EINTR) throw std::runtime_error(sys_error("epoll_wait"));
    now_ = Clock::now();
    for (int i = 0; i < n; ++i) {
      void* tag = events[i].data.ptr;
      uint32_t e = events[i].events;
      if (tag == &kListenTag) {
        accept_all();
      } else if (tag == &kWakeTag) {
        on_wake();
      } else {
        auto* c = static_cast<Connection*>(tag);
        if (c->closed) continue;
        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) c->readable = true;
        pump(c);
      }
    }
    if (!ready_.empty()) {
      ready_swap_.swap(ready_);
      for (Connection* c : ready_swap_) {
        c->queued_ready = false;
        if (!c->closed) pump(c);
      }
      ready_swap_.clear();
    }
    now_ = Clock::now();
    expire_timers();
    for (Connection* c : graveyard_) release(c);
    graveyard_.clear();
    maybe_trim();
    if (draining_) {
      if (conns_.empty() && inflight_jobs_ == 0) break;
      if (now_ >= drain_deadline_) {
        log("drain timeout: closing " + std::to_string(conns_.size()) + " connections");
        while (!conns_.empty()) close_conn(conns_.back());
        break;
      }
    }
  }
  // The worker finishes what it holds; answers nobody waits for are dropped.
  queue_->stop();
  if (reload_thread_.joinable()) reload_thread_.join();
  for (Connection* c : graveyard_) release(c);
  graveyard_.clear();
  log("stopped");
}

int HttpServer::Impl::next_timeout_ms() const {
  Clock::time_point next = Clock::time_point::max();
  for (const TimerList& t : timers_)
    if (t.head) next = std::min(next, t.head->deadline);
  if (request_timers_.head) next = std::min(next, request_timers_.head->request_deadline);
  if (draining_) next = std::min(next, drain_deadline_);
  // A trim put off by its rate limit must still happen if the traffic stops.
  if (trim_pending_) next = std::min(next, last_trim_ + kMinTrimInterval);
  if (!ready_.empty()) return 0;
  if (next == Clock::time_point::max()) return -1;
  auto now = Clock::now();
  if (next <= now) return 0;
  // Round up so we do not wake a moment early and spin.
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(next - now).count();
  return static_cast<int>(std::min<int64_t>(ms, 60'000));
}

void HttpServer::Impl::on_wake() {
  uint64_t v;
  while (::read(wake_fd_, &v, sizeof v) > 0) {
  }
  if (stop_requested_.exchange(false) && !draining_) begin_drain();
  if (reload_requested_.exchange(false)) start_reload();
  {
    std::lock_guard lock(done_mu_);
    done_local_.swap(done_);
  }
  for (auto& job : done_local_) {
    auto* c = static_cast<Connection*>(job->owner);
    body_budget_.give_back(c->job_body_bytes);  // the job's body is answered
    c->job_body_bytes = 0;
    finish_job(std::move(job));
  }
  done_local_.clear();
  body_bytes_gauge_->set(static_cast<double>(body_budget_.used()));
}

void HttpServer::Impl::begin_drain() {
  draining_ = true;
  drain_deadline_ = now_ + cfg_.drain_timeout;
  log("stopping: draining " + std::to_string(conns_.size()) + " connections");
  if (listen_fd_ >= 0) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
  // Idle connections go now; the others finish the request they are on.
  std::vector<Connection*> idle;
  for (Connection* c : conns_)
    if (!c->inflight && c->out.empty() && !c->parser.started() && c->in.empty()) idle.push_back(c);
  for (Connection* c : idle) close_conn(c);
}

void HttpServer::Impl::start_reload() {
  if (reload_busy_.exchange(true)) {
    log("reload already in progress; ignoring SIGHUP");
    return;
  }
  if (reload_thread_.joinable()) reload_thread_.join();
  log("reloading the model");
  reload_thread_ = std::thread([this] {
    bool ok = false;
    std::string why;
    try {
      ok = predictor_.reload(&why);
    } catch (const std::exception& e) {
      why = e.what();
    }
    (ok ? reload_ok_ : reload_failed_)->inc();
    log(ok ? std::string("reload done")
           : "reload failed (the previous model keeps serving): " + (why.empty() ? std::string("no reason given") : why));
    update_model_info();
    reload_busy_.store(false);
  });
}

// ---------------------------------------------------------------------------------------
// Connections

Connection* HttpServer::Impl::acquire() {
  if (free_.empty()) {
    pool_.push_back(std::make_unique<Connection>());
    pool_.back()->pool_index = pool_.size() - 1;
    pool_.back()->parser.set_body_budget(&body_budget_);
    free_.push_back(pool_.back().get());
  }
  Connection* c = free_.back();
  free_.pop_back();
  pooled_gauge_->set(static_cast<double>(free_.size()));
  return c;
}

void HttpServer::Impl::release(Connection* c) {
  // A spare keeps no buffers: it serves nobody until its next accept, which costs far
  // more than growing them again. This also gives back the body's budget.
  c->in.clear();
  c->out.clear();
  c->in.shrink_to(0);
  c->out.shrink_to(0);
  c->parser.release_storage();
  c->fd = -1;
  c->inflight = c->close_after_write = c->lingering = c->linger = c->peer_eof = false;
  c->readable = c->sent_continue = c->closed = c->queued_ready = false;
  c->tlist = kNoTimer;
  c->tprev = c->tnext = nullptr;
  c->request_timed = false;
  c->rprev = c->rnext = nullptr;
  account(c);
  if (free_.size() < cfg_.max_spare_connections) {
    free_.push_back(c);
  } else {
    // Enough spares: free this one, so that the objects a burst of connections needed
    // do not stay allocated after it.
    size_t i = c->pool_index;
    pool_[i].swap(pool_.back());
    pool_[i]->pool_index = i;
    pool_.pop_back();  // destroys c
  }
  pooled_gauge_->set(static_cast<double>(free_.size()));
}

void HttpServer::Impl::maybe_trim() {
  // malloc keeps what is freed for reuse instead of returning it, so after a burst of
  // large bodies the process would stay at its peak size although the buffers are gone
  // (free() of a large block returns it only while it is above the adaptive mmap
  // threshold, which the first such free raises). Once the buffers (bodies waiting for
  // the model included) have dropped well below their peak, return the free pages.
  size_t held = buffered_bytes_ + body_budget_.used();
  trim_high_water_ = std::max(trim_high_water_, held);
  trim_pending_ = trim_high_water_ - held >= kTrimDrop;
  if (!trim_pending_ || now_ - last_trim_ < kMinTrimInterval) return;  // next_timeout_ms() comes back
#ifdef __GLIBC__
  malloc_trim(0);
#endif
  last_trim_ = now_;
  trim_high_water_ = held;
  trim_pending_ = false;
}

void HttpServer::Impl::account(Connection* c) {
  // Recounted from the buffers themselves (not tracked at each allocation), so the
  // total cannot drift from what is really held.
  size_t held = c->in.capacity() + c->out.capacity() + c->parser.heap_bytes();
  buffered_bytes_ = buffered_bytes_ - c->held_bytes + held;
  c->held_bytes = held;
  buffered_bytes_gauge_->set(static_cast<double>(buffered_bytes_));
  body_bytes_gauge_->set(static_cast<double>(body_budget_.used()));
}

void HttpServer::Impl::accept_all() {
  for (int i = 0; i < kMaxAcceptsPerWake && listen_fd_ >= 0; ++i) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if ((errno == EMFILE || errno == ENFILE) && spare_fd_ >= 0) {
        // Out of descriptors: free the spare one to accept and close the connection,
        // or the level-triggered listener would wake us forever.
        ::close(spare_fd_);
        int tmp = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (tmp >= 0) ::close(tmp);
        spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) log(sys_error("accept"));
      return;
    }
    if (conns_.size() >= cfg_.max_connections) {
      ::close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Connection* c = acquire();
    c->fd = fd;
    c->generation = next_generation_++;
    c->parser.set_limits(parser_limits_);
    if (ss.ss_family == AF_INET)
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, c->peer, sizeof c->peer);
    else if (ss.ss_family == AF_INET6)
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, c->peer, sizeof c->peer);
    else
      std::snprintf(c->peer, sizeof c->peer, "local");
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = c;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::close(fd);
      release(c);
      continue;
    }
    c->index = conns_.size();
    conns_.push_back(c);
    accepted_->inc();
    open_connections_->inc();
    timer_insert(c, kIdleTimer);
  }
}

void HttpServer::Impl::close_conn(Connection* c) {
  if (c->closed) return;
  c->closed = true;
  timer_remove(c);
  request_timer_stop(c);
  if (c->queued_ready) {
    std::erase(ready_, c);
    c->queued_ready = false;
  }
  ::close(c->fd);  // also removes it from the epoll set
  c->fd = -1;
  Connection* last = conns_.back();
  conns_[c->index] = last;
  last->index = c->index;
  conns_.pop_back();
  open_connections_->dec();
  // With a job in flight the object stays until the worker's answer comes back.
  if (!c->inflight) graveyard_.push_back(c);
}

bool HttpServer::Impl::read_some(Connection* c) {
  bool got = false;
  while (c->readable && !c->peer_eof && c->in.size() < kMaxPendingInput) {
    // Read into the loop's buffer and keep only what arrived: a connection whose
    // requests are small then holds a small buffer, not a whole read chunk.
    ssize_t n = ::recv(c->fd, read_buf_.get(), kReadChunk, 0);
    if (n > 0) {
      c->in.append(read_buf_.get(), static_cast<size_t>(n));
      got = true;
    } else if (n == 0) {
      c->peer_eof = true;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      c->readable = false;  // edge-triggered: the next EPOLLIN sets it again
    } else {
      close_conn(c);
      return false;
    }
  }
  return got;
}

void HttpServer::Impl::discard_input(Connection* c) {
  // While lingering, swallow what the client still sends so that our close does not
  // reset the connection before it has read the response; its EOF ends the linger.
  char sink[4096];
  while (c->readable) {
    ssize_t n = ::recv(c->fd, sink, sizeof sink, 0);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      c->readable = false;
      return;
    }
    close_conn(c);
    return;
  }
}

void HttpServer::Impl::pump(Connection* c) {
  bool progress = false;
  for (int round = 0; !c->closed; ++round) {
    if (c->lingering) {
      discard_input(c);
      break;
    }
    if (round == kMaxRoundsPerWake) {
      // A client that keeps the socket full must not starve the others: come back
      // after the next epoll_wait (which then does not block).
      if (!c->queued_ready) {
        c->queued_ready = true;
        ready_.push_back(c);
      }
      break;
    }
    bool got = read_some(c);
    if (c->closed) return;
    size_t out_before = c->out.size();
    process_input(c);
    if (c->closed) return;
    flush(c);
    if (c->closed) return;
    progress = progress || got || c->out.size() != out_before;
    if (c->peer_eof && !c->inflight && c->out.empty() && !c->lingering) {
      // Everything asked before the half-close is answered; a request cut off
      // mid-way can never complete.
      close_conn(c);
      return;
    }
    // Go round again only while the socket may hold more and there is room for it;
    // each round either reads, or learns EAGAIN/EOF, so this ends.
    if (!(c->readable && !c->peer_eof && c->in.size() < kMaxPendingInput)) break;
  }
  c->in.shrink_to(kIdleBufferCapacity);  // only when everything read was parsed
  update_timer(c, progress);
  account(c);
}

void HttpServer::Impl::process_input(Connection* c) {
  while (!c->closed && !c->inflight && !c->close_after_write && !c->lingering && c->out.size() < kOutSoftLimit &&
         !c->in.empty()) {
    size_t n = c->parser.feed(c->in.data(), c->in.size());
    c->in.consume(n);
    switch (c->parser.status()) {
      case ParseStatus::kNeedMore:
        // HTTP/1.0 clients do not know 100 Continue (RFC 9110 10.1.1).
        if (c->parser.headers_complete() && c->parser.request().expect_continue && !c->sent_continue &&
            c->parser.request().version_minor >= 1 && c->parser.body_received() == 0) {
          c->out.append("HTTP/1.1 100 Continue\r\n\r\n");
          c->sent_continue = true;
        }
        break;
      case ParseStatus::kComplete: {
        request_timer_stop(c);  // the next request gets its own deadline
        size_t body_bytes = c->parser.body_reserved();
        handle_request(c);
        if (c->inflight) {
          // The body went with the job (dispatch_job moves it and resets the parser,
          // which gave its bytes back): count them again until the job is answered, so
          // that bodies waiting for the model are bounded by the same budget.
          body_budget_.take(body_bytes);
          c->job_body_bytes = body_bytes;
        }
        break;
      }
      case ParseStatus::kError:
        request_timer_stop(c);
        if (c->parser.error_status() == 503) refuse_busy(c);
        else handle_parse_error(c);
        break;
    }
  }
}

void HttpServer::Impl::flush(Connection* c) {
  while (!c->out.empty()) {
    ssize_t n = ::send(c->fd, c->out.data(), c->out.size(), MSG_NOSIGNAL);
    if (n > 0) {
      c->out.consume(static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;  // EPOLLOUT will tell us when there is room
    } else {
      close_conn(c);
      return;
    }
  }
  c->out.shrink_to(kIdleBufferCapacity);
  if (c->close_after_write && !c->inflight && !c->lingering) start_linger(c);
}

void HttpServer::Impl::refuse_busy(Connection* c) {
  // The body budget is spent (the parser refused the body before reading any of it):
  // 503, then close, lingering because the client may already be sending the body.
  c->route = routes().size();
  c->head = false;
  c->keep_alive = false;
  c->http10 = c->parser.request().version_minor == 0;
  c->started = Clock::now();
  c->in.clear();
  c->linger = true;
  respond_error(c, 503, "overloaded", c->parser.error_message(), "Retry-After: 1\r\n");
  c->close_after_write = true;
}

void HttpServer::Impl::start_linger(Connection* c) {
  // A complete exchange with nothing unread closes at once. After a refusal (or with
  // pipelined input we will not answer) the client may still be sending: closing now
  // would reset the connection and could destroy the response before it is read.
  if (c->peer_eof || (!c->linger && c->in.empty())) {
    close_conn(c);
    return;
  }
  ::shutdown(c->fd, SHUT_WR);
  c->lingering = true;
  c->in.clear();
  timer_insert(c, kHeaderTimer);
}

// ---------------------------------------------------------------------------------------
// Timers

void HttpServer::Impl::timer_insert(Connection* c, TimerKind k) {
  timer_remove(c);
  TimerList& t = timers_[k];
  c->tlist = k;
  c->deadline = Clock::now() + t.duration;
  c->tprev = t.tail;
  c->tnext = nullptr;
  if (t.tail) t.tail->tnext = c;
  else t.head = c;
  t.tail = c;
}

void HttpServer::Impl::timer_remove(Connection* c) {
  if (c->tlist == kNoTimer) return;
  TimerList& t = timers_[c->tlist];
  if (c->tprev) c->tprev->tnext = c->tnext;
  else t.head = c->tnext;
  if (c->tnext) c->tnext->tprev = c->tprev;
  else t.tail = c->tprev;
  c->tprev = c->tnext = nullptr;
  c->tlist = kNoTimer;
}

void HttpServer::Impl::request_timer_start(Connection* c) {
  if (c->request_timed) return;
  TimerList& t = request_timers_;
  c->request_timed = true;
  c->request_deadline = Clock::now() + t.duration;
  c->rprev = t.tail;
  c->rnext = nullptr;
  if (t.tail) t.tail->rnext = c;
  else t.head = c;
  t.tail = c;
}

void HttpServer::Impl::request_timer_stop(Connection* c) {
  if (!c->request_timed) return;
  TimerList& t = request_timers_;
  if (c->rprev) c->rprev->rnext = c->rnext;
  else t.head = c->rnext;
  if (c->rnext) c->rnext->rprev = c->rprev;
  else t.tail = c->rprev;
  c->rprev = c->rnext = nullptr;
  c->request_timed = false;
}

void HttpServer::Impl::update_timer(Connection* c, bool progress) {
  if (c->closed) return;
  // The whole-request deadline runs while a request is being received, from its first
  // byte (the first pump that saw it) to its last, whatever the other timers do: the
  // idle timer restarts with every byte, so alone it lets a trickled body live forever.
  bool receiving = !c->lingering && !c->inflight && c->parser.started() &&
                   c->parser.status() == ParseStatus::kNeedMore;
  if (receiving) request_timer_start(c);
  else request_timer_stop(c);
  if (c->lingering) {
    if (c->tlist != kHeaderTimer) timer_insert(c, kHeaderTimer);
  } else if (c->inflight) {
    timer_remove(c);
  } else if (c->parser.started() && !c->parser.headers_complete() && c->out.empty()) {
    // The header deadline runs from the request's first byte and is never extended:
    // trickling bytes does not buy time.
    if (c->tlist != kHeaderTimer) timer_insert(c, kHeaderTimer);
  } else if (progress || c->tlist != kIdleTimer) {
    // Idle keep-alive, a body arriving, or a response waiting for the reader: each
    // gets the idle timeout from its last progress.
    timer_insert(c, kIdleTimer);
  }
}

void HttpServer::Impl::expire_timers() {
  for (TimerList& t : timers_) {
    while (t.head && t.head->deadline <= now_) {
      Connection* c = t.head;
      timer_remove(c);
      on_timeout(c);
    }
  }
  while (request_timers_.head && request_timers_.head->request_deadline <= now_) {
    Connection* c = request_timers_.head;
    request_timer_stop(c);
    timer_remove(c);
    on_timeout(c);
  }
}

void HttpServer::Impl::on_timeout(Connection* c) {
  if (c->lingering || !c->out.empty() || !c->parser.started()) {
    close_conn(c);
    return;
  }
  // A request that started but did not finish in time.
  c->route = routes().size();
  c->head = false;
  c->http10 = c->parser.request().version_minor == 0;
  c->keep_alive = false;
  c->started = now_;
  c->in.clear();
  c->linger = true;
  respond_error(c, 408, "request_timeout", "the request did not arrive in time");
  c->close_after_write = true;
  pump(c);
}

// ---------------------------------------------------------------------------------------
// Public face

inference::RequestLimits request_limits(const ServerConfig& config) {
  inference::RequestLimits r;
  r.max_text_bytes = config.max_text_bytes;
  r.max_batch_items = config.max_batch_items;
  r.default_mc_dropout = config.default_mc_dropout;
  r.max_request_gflop = config.max_request_gflop;
  return r;
}

HttpServer::HttpServer(ServerConfig config, inference::Predictor& predictor)
    : impl_(std::make_unique<Impl>(std::move(config), predictor)) {}
HttpServer::~HttpServer() = default;
void HttpServer::bind() { impl_->bind(); }
uint16_t HttpServer::port() const { return impl_->port_; }
void HttpServer::run() { impl_->run(); }
void HttpServer::stop() { impl_->stop(); }
void HttpServer::request_reload() { impl_->request_reload(); }
prom::Registry& HttpServer::metrics() { return impl_->registry_; }

namespace {
std::atomic<HttpServer*> g_signal_server{nullptr};

extern "C" void bet_server_signal(int sig) {
  int saved = errno;
  if (HttpServer* s = g_signal_server.load()) {
    if (sig == SIGHUP) s->request_reload();
    else s->stop();
  }
  errno = saved;
}
}  // namespace

void install_signal_handlers(HttpServer& server) {
  g_signal_server.store(&server);
  struct sigaction sa{};
  sa.sa_handler = bet_server_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

}  // namespace bet::server
