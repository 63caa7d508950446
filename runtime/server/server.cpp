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

constexpr int kMaxEvents = 256;

// Tags for the two non-connection descriptors in epoll's data.ptr.
char kListenTag;
char kWakeTag;

// The request limits a ServerConfig sets: the server decodes bodies against them and
// hands them to its predictor (Predictor::set_limits), which checks every request.
inference::RequestLimits request_limits(const ServerConfig& config) {
  inference::RequestLimits r;
  r.max_text_bytes = config.max_text_bytes;
  r.max_batch_items = config.max_batch_items;
  r.default_mc_dropout = config.default_mc_dropout;
  r.max_request_gflop = config.max_request_gflop;
  return r;
}

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
  qo.prepare_worker = cfg_.reserve_worker_memory;
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
    if (t.head) next = std::min(next, t.head->timer.deadline);
  if (request_timers_.head) next = std::min(next, request_timers_.head->request_timer.deadline);
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
// Public face


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
