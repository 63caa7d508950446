#include "bench/load_generator.h"

#include "bench/http_response_parser.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string_view>

namespace bet::bench {

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return NAN;
  const double n = double(sorted.size());
  // Nearest rank: ceil(q/100 * n), 1-based; the small epsilon keeps 99% of 100 from
  // rounding up to rank 100 through floating-point error.
  double rank = std::ceil(q / 100.0 * n - 1e-9);
  rank = std::clamp(rank, 1.0, n);
  return sorted[size_t(rank) - 1];
}

std::string http_request(const std::string& method, const std::string& path, const std::string& body,
                         const std::string& extra_headers) {
  std::string r = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  if (!body.empty()) r += "Content-Type: application/json\r\n";
  if (!body.empty() || method == "POST") r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  r += extra_headers;
  r += "\r\n";
  r += body;
  return r;
}

namespace {

using Clock = std::chrono::steady_clock;

HttpResponseParser::Options parser_options() {
  HttpResponseParser::Options o;
  o.max_header_bytes = 64 * 1024;
  o.keep_headers = false;  // framing only: the generator counts statuses and times
  o.keep_body = false;
  return o;
}

struct Conn {
  int fd = -1;
  bool connecting = false;
  bool busy = false;      // a request is outstanding
  bool want_out = false;  // registered for EPOLLOUT
  size_t next = 0;        // requests sent on this slot so far (picks the next one)
  const std::string* req = nullptr;
  size_t sent = 0;
  Clock::time_point started;
  bool head = false;  // the outstanding request is a HEAD: its response has no body
  HttpResponseParser in{parser_options()};
};

class Runner {
 public:
  explicit Runner(const LoadOptions& o) : o_(o), conns_(size_t(o.connections)) {
    if (inet_pton(AF_INET, o.host.c_str(), &addr_.sin_addr) != 1)
      throw std::invalid_argument("load generator: host must be a numeric IPv4 address, got '" + o.host + "'");
    if ((ntohl(addr_.sin_addr.s_addr) >> 24) != 127)
      throw std::invalid_argument("load generator: only loopback addresses (127.x.y.z), got '" + o.host + "'");
    addr_.sin_family = AF_INET;
    addr_.sin_port = htons(o.port);
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) throw std::runtime_error(std::string("load generator: epoll_create1: ") + std::strerror(errno));
  }
  ~Runner() {
    for (auto& c : conns_)
      if (c.fd >= 0) ::close(c.fd);
    if (ep_ >= 0) ::close(ep_);
  }

  LoadResult run() {
    const auto t0 = Clock::now();
    measure_start_ = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.warmup_s));
    const auto end = measure_start_ + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(o_.duration_s));
    const auto hard_end = std::max(end, measure_start_ + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(o_.max_duration_s)));
    const auto timeout = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o_.request_timeout_s));
    r_.latencies_ms.reserve(size_t(std::min<int64_t>(o_.max_requests, 1 << 20)));
    now_ = t0;
    for (size_t i = 0; i < conns_.size(); ++i) {
      conns_[i].next = i;
      open(i);
    }
    epoll_event events[256];
    auto last_scan = now_;
    auto stop_at = end;
    while (!aborted_) {
      now_ = Clock::now();
      if (now_ >= end && (r_.responses >= o_.min_requests || now_ >= hard_end)) {
        stop_at = now_;
        break;
      }
      if (r_.responses >= o_.max_requests) {
        stop_at = last_response_;
        break;
      }
      if (!pending_.empty()) {
        pending_swap_.swap(pending_);
        for (size_t i : pending_swap_)
          if (!aborted_) open(i);
        pending_swap_.clear();
      }
      const auto left_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               (now_ < end ? end : hard_end) - now_).count();
      const int wait_ms = pending_.empty() ? int(std::clamp<int64_t>(left_ms, 0, 5)) : 0;
      int n = epoll_wait(ep_, events, 256, wait_ms);
      if (n < 0 && errno != EINTR) {
        error_all(std::string("epoll_wait: ") + std::strerror(errno));
        break;
      }
      now_ = Clock::now();
      for (int e = 0; e < n && !aborted_; ++e) {
        const size_t i = size_t(events[e].data.u64);
        Conn& c = conns_[i];
        if (c.fd < 0) continue;
        if (c.connecting) {
          if (events[e].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) finish_connect(i);
          continue;
        }
        if (events[e].events & EPOLLOUT) send_some(i);
        if (c.fd >= 0 && (events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) read_some(i);
      }
      if (now_ - last_scan >= std::chrono::milliseconds(10)) {
        last_scan = now_;
        for (size_t i = 0; i < conns_.size(); ++i) {
          Conn& c = conns_[i];
          if (c.fd >= 0 && (c.busy || c.connecting) && now_ - c.started > timeout)
            fail(i, c.connecting ? "connect timed out" : "no complete response within the timeout");
        }
      }
    }
    if (stop_at > now_) stop_at = now_;  // aborted early
    r_.aborted = aborted_;
    r_.seconds = std::max(0.0, std::chrono::duration<double>(stop_at - measure_start_).count());
    r_.requests_per_s = r_.seconds > 0 ? double(r_.ok) / r_.seconds : 0.0;
    auto& L = r_.latencies_ms;
    std::sort(L.begin(), L.end());
    r_.p50_ms = percentile(L, 50);
    r_.p99_ms = percentile(L, 99);
    r_.max_ms = L.empty() ? NAN : L.back();
    double sum = 0;
    for (double v : L) sum += v;
    r_.mean_ms = L.empty() ? NAN : sum / double(L.size());
    return std::move(r_);
  }

 private:
  void watch(size_t i, bool out) {
    Conn& c = conns_[i];
    epoll_event ev{};
    ev.events = EPOLLIN | (out ? EPOLLOUT : 0u);
    ev.data.u64 = i;
    epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
    c.want_out = out;
  }

  void open(size_t i) {
    Conn& c = conns_[i];
    c.in.reset();
    c.busy = false;
    c.started = now_;
    c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) {
      note_error(std::string("socket: ") + std::strerror(errno));
      aborted_ = true;  // out of descriptors: more tries would fail alike
      return;
    }
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = i;
    epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev);
    c.want_out = true;
    if (::connect(c.fd, reinterpret_cast<const sockaddr*>(&addr_), sizeof addr_) == 0) {
      c.connecting = false;
      start_request(i);
    } else if (errno == EINPROGRESS) {
      c.connecting = true;
    } else {
      fail(i, std::string("connect: ") + std::strerror(errno));
    }
  }

  void finish_connect(size_t i) {
    Conn& c = conns_[i];
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      fail(i, std::string("connect: ") + std::strerror(err));
      return;
    }
    c.connecting = false;
    start_request(i);
  }

  void start_request(size_t i) {
    Conn& c = conns_[i];
    c.req = &o_.requests[c.next % o_.requests.size()];
    ++c.next;
    c.sent = 0;
    c.busy = true;
    c.head = c.req->compare(0, 5, "HEAD ") == 0;
    c.started = Clock::now();
    send_some(i);
  }

  void send_some(size_t i) {
    Conn& c = conns_[i];
    if (!c.busy || c.sent >= c.req->size()) {
      if (c.want_out) watch(i, false);
      return;
    }
    while (c.sent < c.req->size()) {
      ssize_t n = ::send(c.fd, c.req->data() + c.sent, c.req->size() - c.sent, MSG_NOSIGNAL);
      if (n > 0) {
        c.sent += size_t(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!c.want_out) watch(i, true);
        return;
      } else {
        fail(i, std::string("send: ") + (n < 0 ? std::strerror(errno) : "nothing written"));
        return;
      }
    }
    if (c.want_out) watch(i, false);
  }

  void read_some(size_t i) {
    Conn& c = conns_[i];
    char buf[65536];
    bool eof = false;
    std::string recv_error;
    while (true) {
      ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
      if (n > 0) {
        c.in.feed(std::string_view(buf, size_t(n)));
        if (size_t(n) < sizeof buf) break;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      eof = true;  // EOF or a reset
      if (n < 0) recv_error = std::string("recv: ") + std::strerror(errno);
      break;
    }
    parse(i, eof, recv_error);
  }

  // Parses what has arrived; completes the response when it is all there. At EOF (or a
  // reset) a close-delimited body ends; an idle connection the server closed is re-opened.
  void parse(size_t i, bool eof, const std::string& recv_error) {
    Conn& c = conns_[i];
    if (!c.busy) {
      if (eof) reopen(i);  // an idle connection the server closed: not an error
      else if (c.in.buffered() > 0) fail(i, "bytes from the server with no request outstanding");
      return;
    }
    std::optional<HttpResponse> r = c.in.next(c.head);
    if (!r && eof && !c.in.failed()) {
      r = c.in.finish(c.head);  // a close-delimited body ends here
      if (!r) {                 // cut short, or nothing came at all
        fail(i, recv_error.empty() ? "connection closed before the response was complete" : recv_error);
        return;
      }
    }
    if (!r) {
      if (c.in.failed()) fail(i, c.in.error());  // malformed
      return;                                     // more to come
    }
    if (c.in.buffered() > 0) {
      fail(i, "bytes beyond the response body");
      return;
    }
    complete(i, *r, eof);
  }

  void complete(size_t i, const HttpResponse& resp, bool eof) {
    Conn& c = conns_[i];
    const auto t = Clock::now();
    fail_streak_ = 0;
    if (t >= measure_start_ && r_.responses < o_.max_requests) {
      ++r_.responses;
      ++r_.status_counts[resp.status];
      if (resp.status >= 200 && resp.status < 300) {
        ++r_.ok;
      } else {
        ++r_.non_2xx;
        if (r_.first_error.empty()) r_.first_error = resp.status_line;
      }
      r_.latencies_ms.push_back(std::chrono::duration<double, std::milli>(t - c.started).count());
      last_response_ = t;
    }
    c.busy = false;
    c.in.reset();
    if (!resp.keep_alive || eof) reopen(i);
    else start_request(i);
  }

  void note_error(const std::string& what) {
    ++r_.transport_errors;
    if (r_.first_error.empty()) r_.first_error = what;
  }

  void close_fd(size_t i) {
    Conn& c = conns_[i];
    if (c.fd >= 0) {
      epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
      ::close(c.fd);
    }
    c.fd = -1;
    c.busy = c.connecting = c.want_out = false;
    c.in.reset();
  }

  void reopen(size_t i) {
    close_fd(i);
    ++r_.reconnects;
    open(i);
  }

  // A transport error: counted, the connection re-opened. Errors with no success in
  // between, many per connection, mean nothing is listening: give up.
  void fail(size_t i, const std::string& what) {
    note_error(what);
    if (++fail_streak_ > std::max<int64_t>(64, 8 * int64_t(conns_.size()))) {
      close_fd(i);
      aborted_ = true;
      return;
    }
    // Re-opened from the loop, not from here: a connect that fails at once would
    // otherwise recurse.
    close_fd(i);
    ++r_.reconnects;
    pending_.push_back(i);
  }

  void error_all(const std::string& what) {
    note_error(what);
    aborted_ = true;
  }

  const LoadOptions& o_;
  std::vector<Conn> conns_;
  sockaddr_in addr_{};
  int ep_ = -1;
  LoadResult r_;
  Clock::time_point now_, measure_start_, last_response_;
  std::vector<size_t> pending_, pending_swap_;  // connections to re-open
  int64_t fail_streak_ = 0;
  bool aborted_ = false;
};

}  // namespace

LoadResult run_load(const LoadOptions& opts) {
  if (opts.requests.empty()) throw std::invalid_argument("load generator: no requests to send");
  if (opts.connections < 1 || opts.connections > 4096)
    throw std::invalid_argument("load generator: connections must be in 1..4096, got " +
                                std::to_string(opts.connections));
  if (!(opts.duration_s > 0) || !(opts.warmup_s >= 0) || !(opts.request_timeout_s > 0) || opts.max_requests < 1)
    throw std::invalid_argument("load generator: duration, timeout and max_requests must be positive");
  Runner r(opts);
  return r.run();
}

}  // namespace bet::bench
