#include "bench/http_response_parser.h"

#include <algorithm>
#include <utility>

namespace bet::bench {

std::string HttpResponse::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? std::string() : it->second;
}

namespace {

constexpr uint64_t kMaxContentLength = uint64_t(1) << 40;

char lower(char c) { return c >= 'A' && c <= 'Z' ? char(c + 32) : c; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool iequals(std::string_view a, std::string_view lower_b) {
  if (a.size() != lower_b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower_b[i]) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Whether a comma-separated header value lists `lower_token` (case-insensitive).
bool has_token(std::string_view value, std::string_view lower_token) {
  while (true) {
    const size_t comma = value.find(',');
    if (iequals(trim(value.substr(0, comma)), lower_token)) return true;
    if (comma == std::string_view::npos) return false;
    value.remove_prefix(comma + 1);
  }
}

std::string quoted(std::string_view s) {  // the first 80 bytes, for an error message
  std::string q(1, '\'');
  q.append(s.substr(0, 80));
  q.push_back('\'');
  return q;
}

}  // namespace

void HttpResponseParser::feed(std::string_view bytes) {
  if (pos_ > 0 && (pos_ == buf_.size() || pos_ >= 4096)) {  // drop what was returned
    buf_.erase(0, pos_);
    scan_ -= std::min(scan_, pos_);
    body_start_ -= std::min(body_start_, pos_);
    pos_ = 0;
  }
  buf_.append(bytes);
}

void HttpResponseParser::reset() {
  buf_.clear();
  pos_ = scan_ = body_start_ = 0;
  content_length_ = 0;
  error_.clear();
  have_head_ = close_delimited_ = false;
  cur_ = HttpResponse();
}

bool HttpResponseParser::fail(std::string what) {
  error_ = std::move(what);
  return false;
}

bool HttpResponseParser::parse_head(bool head_request) {
  while (!have_head_) {
    // The terminator may straddle the previous feed: look again from 3 bytes back.
    const size_t from = std::max(pos_, scan_ >= 3 ? scan_ - 3 : size_t(0));
    const size_t end = buf_.find("\r\n\r\n", from);
    if (end == std::string::npos) {
      scan_ = buf_.size();
      // Too large only once no terminator can begin within the limit, so the verdict
      // does not depend on how the bytes were split.
      if (buf_.size() - pos_ > opts_.max_header_bytes + 3) return fail("response header block too large");
      return false;
    }
    if (end - pos_ > opts_.max_header_bytes) return fail("response header block too large");
    const std::string_view head(buf_.data() + pos_, end - pos_);
    const size_t eol = head.find("\r\n");
    const std::string_view status_line = head.substr(0, eol);
    const std::string_view s = status_line;
    if (s.size() < 12 || s.substr(0, 7) != "HTTP/1." || !is_digit(s[7]) || s[8] != ' ' || !is_digit(s[9]) ||
        !is_digit(s[10]) || !is_digit(s[11]) || (s.size() > 12 && s[12] != ' '))
      return fail("malformed status line: " + quoted(status_line));
    HttpResponse r;
    r.status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    r.status_line.assign(status_line);
    const bool http10 = s[7] == '0';
    bool has_length = false, other_coding = false, conn_close = false, conn_keep_alive = false;
    uint64_t length = 0;
    std::string_view rest = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
    while (!rest.empty()) {
      const size_t line_end = rest.find("\r\n");
      const std::string_view line = rest.substr(0, line_end);
      rest = line_end == std::string_view::npos ? std::string_view() : rest.substr(line_end + 2);
      const size_t colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) return fail("malformed header line: " + quoted(line));
      const std::string_view name = line.substr(0, colon);
      if (name.find_first_of(" \t") != std::string_view::npos)
        return fail("malformed header line: " + quoted(line));
      const std::string_view value = trim(line.substr(colon + 1));
      if (iequals(name, "content-length")) {
        uint64_t v = 0;
        bool ok = !value.empty();
        for (char ch : value) {
          if (!is_digit(ch) || v > kMaxContentLength) {
            ok = false;
            break;
          }
          v = v * 10 + uint64_t(ch - '0');
        }
        if (!ok) return fail("bad Content-Length: " + quoted(value));
        if (has_length && v != length) return fail("conflicting Content-Length values");
        has_length = true;
        length = v;
      } else if (iequals(name, "transfer-encoding")) {
        if (has_token(value, "chunked")) return fail("chunked response (not supported)");
        other_coding = true;
      } else if (iequals(name, "connection")) {
        if (has_token(value, "close")) conn_close = true;
        if (has_token(value, "keep-alive")) conn_keep_alive = true;
      }
      if (opts_.keep_headers) {
        std::string lname(name);
        for (char& c : lname) c = lower(c);
        r.headers[std::move(lname)] = std::string(value);
      }
    }
    if (r.status >= 100 && r.status < 200) {  // interim: skip it, the final one follows
      pos_ = end + 4;
      scan_ = pos_;
      continue;
    }
    r.keep_alive = http10 ? conn_keep_alive && !conn_close : !conn_close;
    body_start_ = end + 4;
    close_delimited_ = false;
    content_length_ = 0;
    if (head_request || r.status == 204 || r.status == 304) {
      // no body
    } else if (other_coding || !has_length) {
      close_delimited_ = true;
      r.keep_alive = false;
    } else {
      content_length_ = length;
    }
    cur_ = std::move(r);
    have_head_ = true;
  }
  return true;
}

HttpResponse HttpResponseParser::take(size_t body_len) {
  if (opts_.keep_body) cur_.body.assign(buf_, body_start_, body_len);
  pos_ = body_start_ + body_len;
  scan_ = pos_;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = scan_ = 0;
  }
  have_head_ = close_delimited_ = false;
  body_start_ = 0;
  content_length_ = 0;
  HttpResponse r = std::move(cur_);
  cur_ = HttpResponse();
  return r;
}

std::optional<HttpResponse> HttpResponseParser::next(bool head_request) {
  if (failed() || !parse_head(head_request) || close_delimited_) return std::nullopt;
  if (buf_.size() - body_start_ < content_length_) return std::nullopt;
  return take(size_t(content_length_));
}

std::optional<HttpResponse> HttpResponseParser::finish(bool head_request) {
  if (auto r = next(head_request)) return r;
  if (failed()) return std::nullopt;
  if (have_head_ && close_delimited_) return take(buf_.size() - body_start_);
  if (buffered() > 0) fail("connection closed before the response was complete");
  return std::nullopt;
}

}  // namespace bet::bench
