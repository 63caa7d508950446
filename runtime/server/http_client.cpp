#include "runtime/server/http_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <thread>

namespace bet::server {

std::string HttpResponse::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

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
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }
}

std::optional<HttpResponse> HttpClient::read(bool head_request) {
  if (fd_ < 0) return std::nullopt;
  while (true) {
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos)
      if (!fill()) return std::nullopt;
    std::string_view head(buf_.data(), end);
    size_t eol = head.find("\r\n");
    std::string_view status_line = head.substr(0, eol);
    if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1.") return std::nullopt;
    HttpResponse r;
    auto [p, ec] = std::from_chars(status_line.data() + 9, status_line.data() + 12, r.status);
    if (ec != std::errc() || p != status_line.data() + 12) return std::nullopt;
    std::string_view rest = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
    while (!rest.empty()) {
      size_t line_end = rest.find("\r\n");
      std::string_view line = rest.substr(0, line_end);
      rest = line_end == std::string_view::npos ? std::string_view() : rest.substr(line_end + 2);
      size_t colon = line.find(':');
      if (colon == std::string_view::npos) return std::nullopt;
      std::string name(line.substr(0, colon));
      for (char& c : name) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
      r.headers[name] = std::string(value);
    }
    buf_.erase(0, end + 4);
    if (r.status >= 100 && r.status < 200) continue;
    bool no_body = head_request || r.status == 204 || r.status == 304;
    auto cl = r.headers.find("content-length");
    if (no_body) {
      // nothing to read
    } else if (cl != r.headers.end()) {
      size_t len = 0;
      auto [q, ec2] = std::from_chars(cl->second.data(), cl->second.data() + cl->second.size(), len);
      if (ec2 != std::errc() || q != cl->second.data() + cl->second.size()) return std::nullopt;
      while (buf_.size() < len)
        if (!fill()) return std::nullopt;
      r.body = buf_.substr(0, len);
      buf_.erase(0, len);
    } else {
      while (fill()) {
      }
      r.body.swap(buf_);
    }
    return r;
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
  if (!buf_.empty() || fd_ < 0) return fd_ < 0;
  char c;
  while (true) {
    ssize_t n = ::recv(fd_, &c, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 1) buf_.push_back(c);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }
}

}  // namespace bet::server
