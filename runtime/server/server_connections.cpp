// Connections and their timers: accepting, reading, parsing, writing, lingering after
// a refusal, the buffers each connection holds (and gives back), and the header, idle
// and whole-request deadlines. The loop that drives them is in server.cpp.
#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "runtime/server/server_impl.h"

namespace bet::server {

namespace {

constexpr size_t kMaxPendingInput = 64 * 1024;   // unparsed bytes held while a request is busy
constexpr size_t kOutSoftLimit = 256 * 1024;     // stop parsing pipelined requests above this
// What a connection keeps of its buffers between requests: enough for ordinary
// requests and responses, so keep-alive traffic stops allocating, while the storage an
// unusual request grew is freed once it is answered rather than held for the
// connection's life.
constexpr size_t kIdleBufferCapacity = 16 * 1024;
// Memory handed back to the system (maybe_trim) once buffers hold this much less than
// at their peak, at most once per kMinTrimInterval.
constexpr size_t kTrimDrop = 32u << 20;
constexpr int kMaxAcceptsPerWake = 128;
constexpr int kMaxRoundsPerWake = 16;

}  // namespace

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
  c->timer = TimerLink{};
  c->request_timed = false;
  c->request_timer = TimerLink{};
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
  c->tlist = k;
  timers_[k].push_back(c, &Connection::timer);
}

void HttpServer::Impl::timer_remove(Connection* c) {
  if (c->tlist == kNoTimer) return;
  timers_[c->tlist].unlink(c, &Connection::timer);
  c->tlist = kNoTimer;
}

void HttpServer::Impl::request_timer_start(Connection* c) {
  if (c->request_timed) return;
  c->request_timed = true;
  request_timers_.push_back(c, &Connection::request_timer);
}

void HttpServer::Impl::request_timer_stop(Connection* c) {
  if (!c->request_timed) return;
  request_timers_.unlink(c, &Connection::request_timer);
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
    while (t.head && t.head->timer.deadline <= now_) {
      Connection* c = t.head;
      timer_remove(c);
      on_timeout(c);
    }
  }
  while (request_timers_.head && request_timers_.head->request_timer.deadline <= now_) {
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

}  // namespace bet::server
