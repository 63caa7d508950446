#include "bench/http_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

namespace bet::bench {

HttpClient::HttpClient(const std::string& host, uint16_t port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return;
  for (addrinfo* ai = res; ai && fd_ < 0; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) fd_ = fd;
    else ::close(fd);
  }
  freeaddrinfo(res);
}

HttpClient::~HttpClient() {
  if (fd_ >= 0) ::close(fd_);
}

bool HttpClient::send(std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    s.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool HttpClient::send_bytewise(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (!send(s.substr(i, 1))) return false;
    if (i % 16 == 15) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

bool HttpClient::fill() {
  char tmp[16384];
  while (true) {
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    parser_.feed(std::string_view(tmp, static_cast<size_t>(n)));
    return true;
  }
}

std::optional<HttpResponse> HttpClient::read(bool head_request) {
  if (fd_ < 0) return std::nullopt;
  while (true) {
    if (auto r = parser_.next(head_request)) return r;
    if (parser_.failed()) return std::nullopt;
    if (!fill()) {
      // A close-delimited body ends here (EOF, or the timeout); anything else is cut short
      // and stays buffered.
      if (parser_.awaiting_close()) return parser_.finish(head_request);
      return std::nullopt;
    }
  }
}

std::string HttpClient::format_request(const std::string& method, const std::string& path, const std::string& body,
                                       const std::string& extra_headers) {
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: localhost\r\n" + extra_headers;
  if (!body.empty() || method == "POST" || method == "PUT")
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n";
  req += body;
  return req;
}

std::optional<HttpResponse> HttpClient::request(const std::string& method, const std::string& path,
                                                const std::string& body, const std::string& extra_headers) {
  if (!send(format_request(method, path, body, extra_headers))) return std::nullopt;
  return read(method == "HEAD");
}

bool HttpClient::closed_by_peer() {
  if (parser_.buffered() > 0 || fd_ < 0) return fd_ < 0;
  char c;
  while (true) {
    ssize_t n = ::recv(fd_, &c, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 1) parser_.feed(std::string_view(&c, 1));
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }
}

}  // namespace bet::bench
