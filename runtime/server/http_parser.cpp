#include "runtime/server/http_parser.h"

#include <algorithm>
#include <array>

namespace bet::server {

namespace {

// RFC 9110 token characters: the only bytes allowed in methods and header names.
constexpr std::array<bool, 256> make_tchar() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr std::array<bool, 256> kTchar = make_tchar();

// field-vchar / obs-text plus SP and HTAB: what a header value may contain.
constexpr std::array<bool, 256> make_value_char() {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 256; ++c) t[c] = c != 0x7f;
  t['\t'] = true;
  return t;
}
constexpr std::array<bool, 256> kValueChar = make_value_char();

inline bool is_tchar(char c) { return kTchar[static_cast<unsigned char>(c)]; }
inline bool is_value_char(char c) { return kValueChar[static_cast<unsigned char>(c)]; }
inline char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

inline int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Calls f(token) for each element of a comma-separated list, empty elements skipped.
template <typename F>
bool for_each_list_item(std::string_view list, F&& f) {
  while (true) {
    size_t comma = list.find(',');
    std::string_view item = trim(list.substr(0, comma));
    if (!item.empty() && !f(item)) return false;
    if (comma == std::string_view::npos) return true;
    list.remove_prefix(comma + 1);
  }
}

constexpr size_t kMaxMethod = 32;
// Smallest step a body grows by: small enough that a client declaring a large body and
// then stalling pins little, large enough that ordinary bodies grow in a few steps.
constexpr size_t kMinBodyStep = 16 * 1024;

// Bytes a string holds on the heap (none while its text fits in the string object).
size_t heap_of(const std::string& s) {
  const char* d = s.data();
  const char* self = reinterpret_cast<const char*>(&s);
  if (d >= self && d < self + sizeof s) return 0;
  return s.capacity() + 1;
}

void free_string(std::string& s) { std::string().swap(s); }

}  // namespace

std::string_view HttpRequest::path() const {
  std::string_view t(target);
  // absolute-form ("http://host:port/path?q"), which servers must accept: drop the
  // scheme and authority.
  if (!t.empty() && t.front() != '/') {
    size_t scheme = t.find("://");
    if (scheme != std::string_view::npos) {
      size_t slash = t.find('/', scheme + 3);
      t = slash == std::string_view::npos ? std::string_view("/") : t.substr(slash);
    }
  }
  return t.substr(0, t.find('?'));
}

std::string_view HttpRequest::query() const {
  std::string_view t(target);
  size_t q = t.find('?');
  return q == std::string_view::npos ? std::string_view() : t.substr(q + 1);
}

const std::string* HttpRequest::header(std::string_view lower_name) const {
  for (size_t i = 0; i < header_count; ++i)
    if (headers[i].name == lower_name) return &headers[i].value;
  return nullptr;
}

void HttpRequest::clear() {
  method.clear();
  target.clear();
  version_minor = 1;
  keep_alive = true;
  chunked = false;
  expect_continue = false;
  has_content_length = false;
  content_length = 0;
  if (body.capacity() > HttpParser::kKeepCapacity) free_string(body);
  body.clear();
  header_count = 0;
}

HttpParser::HttpParser(ParserLimits limits) : limits_(limits) {}

HttpParser::~HttpParser() { give_back_body(); }

void HttpParser::set_body_budget(BodyBudget* budget) {
  give_back_body();
  budget_ = budget;
}

void HttpParser::give_back_body() {
  if (budget_) budget_->give_back(body_reserved_);
  body_reserved_ = 0;
}

size_t HttpParser::heap_bytes() const {
  size_t n = heap_of(req_.method) + heap_of(req_.target) + heap_of(req_.body) + heap_of(version_) +
             heap_of(trailer_scratch_.name) + heap_of(trailer_scratch_.value);
  n += req_.headers.capacity() * sizeof(HttpHeader);
  for (const HttpHeader& h : req_.headers) n += heap_of(h.name) + heap_of(h.value);
  return n;
}

void HttpParser::release_storage() {
  reset();
  free_string(req_.method);
  free_string(req_.target);
  free_string(req_.body);
  free_string(version_);
  free_string(trailer_scratch_.name);
  free_string(trailer_scratch_.value);
  std::vector<HttpHeader>().swap(req_.headers);
}

void HttpParser::reset() {
  give_back_body();
  req_.clear();
  // Header slots keep their strings for the next message, but a series of requests each
  // with one long header in a different slot would otherwise pile up the longest of each.
  if (heap_bytes() - heap_of(req_.body) > kKeepCapacity) {
    free_string(req_.method);
    free_string(req_.target);
    free_string(trailer_scratch_.name);
    free_string(trailer_scratch_.value);
    std::vector<HttpHeader>().swap(req_.headers);
  }
  state_ = kStart;
  status_ = ParseStatus::kNeedMore;
  error_status_ = 0;
  error_message_ = "";
  started_ = false;
  in_trailers_ = false;
  head_bytes_ = 0;
  host_count_ = 0;
  has_transfer_encoding_ = false;
  version_.clear();
  body_remaining_ = 0;
  chunk_size_ = 0;
  chunk_digits_ = 0;
  chunk_line_bytes_ = 0;
  conn_close_ = conn_keep_alive_ = false;
}

bool HttpParser::fail(int status, const char* message) {
  state_ = kFailed;
  status_ = ParseStatus::kError;
  error_status_ = status;
  error_message_ = message;
  return false;
}

HttpHeader& HttpParser::next_header_slot() {
  if (in_trailers_) {
    trailer_scratch_.name.clear();
    trailer_scratch_.value.clear();
    return trailer_scratch_;
  }
  if (req_.headers.size() <= req_.header_count) req_.headers.emplace_back();
  HttpHeader& h = req_.headers[req_.header_count];
  h.name.clear();
  h.value.clear();
  return h;
}

HttpHeader& HttpParser::current_header() {
  return in_trailers_ ? trailer_scratch_ : req_.headers[req_.header_count];
}

bool HttpParser::finish_request_line() {
  if (version_ == "HTTP/1.1") {
    req_.version_minor = 1;
  } else if (version_ == "HTTP/1.0") {
    req_.version_minor = 0;
  } else if (version_.size() == 8 && version_.compare(0, 5, "HTTP/") == 0 && version_[5] >= '0' &&
             version_[5] <= '9' && version_[6] == '.' && version_[7] >= '0' && version_[7] <= '9') {
    return fail(505, "HTTP version not supported");
  } else {
    return fail(400, "malformed request line");
  }
  return true;
}

bool HttpParser::process_header(const HttpHeader& h) {
  const std::string& n = h.name;
  if (n == "content-length") {
    std::string_view v(h.value);
    if (v.empty()) return fail(400, "empty Content-Length");
    uint64_t value = 0;
    for (char c : v) {
      if (c < '0' || c > '9') return fail(400, "malformed Content-Length");
      if (value > (UINT64_MAX - 9) / 10) return fail(413, "request body too large");
      value = value * 10 + static_cast<uint64_t>(c - '0');
    }
    if (req_.has_content_length && value != req_.content_length)
      return fail(400, "conflicting Content-Length headers");
    req_.has_content_length = true;
    req_.content_length = value;
  } else if (n == "transfer-encoding") {
    has_transfer_encoding_ = true;
    bool ok = for_each_list_item(h.value, [&](std::string_view coding) {
      if (req_.chunked) return fail(400, "chunked must be the final transfer coding");
      // Parameters (";q=...") are not defined for chunked; any other coding is unsupported.
      if (iequals(coding, "chunked")) {
        req_.chunked = true;
        return true;
      }
      return fail(501, "unsupported transfer coding");
    });
    if (!ok) return false;
  } else if (n == "connection") {
    for_each_list_item(h.value, [&](std::string_view opt) {
      if (iequals(opt, "close")) conn_close_ = true;
      else if (iequals(opt, "keep-alive")) conn_keep_alive_ = true;
      return true;
    });
  } else if (n == "expect") {
    if (iequals(trim(h.value), "100-continue")) req_.expect_continue = true;
  } else if (n == "host") {
    ++host_count_;
  }
  return true;
}

bool HttpParser::end_header_line() {
  HttpHeader& h = current_header();
  while (!h.value.empty() && (h.value.back() == ' ' || h.value.back() == '\t')) h.value.pop_back();
  if (in_trailers_) return true;
  ++req_.header_count;
  return process_header(h);
}

bool HttpParser::finish_headers() {
  if (req_.version_minor == 1 && host_count_ == 0) return fail(400, "missing Host header");
  if (host_count_ > 1) return fail(400, "more than one Host header");
  if (has_transfer_encoding_) {
    // Both framings at once is the classic request-smuggling vector: refuse it.
    if (req_.has_content_length) return fail(400, "both Transfer-Encoding and Content-Length");
    if (req_.version_minor == 0) return fail(400, "Transfer-Encoding in an HTTP/1.0 request");
    if (!req_.chunked) return fail(400, "chunked must be the final transfer coding");
  }
  req_.keep_alive = req_.version_minor >= 1 ? !conn_close_ : (conn_keep_alive_ && !conn_close_);
  if (req_.chunked) {
    state_ = kChunkSize;
    chunk_size_ = 0;
    chunk_digits_ = 0;
    chunk_line_bytes_ = 0;
    return true;
  }
  if (req_.content_length > limits_.max_body_bytes) return fail(413, "request body too large");
  if (req_.content_length == 0) {
    state_ = kDone;
    status_ = ParseStatus::kComplete;
    return true;
  }
  // The whole declared length is taken from the budget now, before any body byte is
  // read, so an overloaded server refuses the request rather than part of its body. The
  // storage itself grows as bytes arrive (append_body): a client that declares a large
  // body and then stalls pins little memory.
  if (budget_ && !budget_->try_take(req_.content_length, 0))
    return fail(503, "too many request bodies are being received at once; retry later");
  body_reserved_ = req_.content_length;
  body_remaining_ = req_.content_length;
  state_ = kBody;
  return true;
}

bool HttpParser::end_chunk_size_line() {
  if (chunk_size_ == 0) {
    in_trailers_ = true;
    head_bytes_ = 0;
    state_ = kHeaderLineStart;
    return true;
  }
  if (chunk_size_ > limits_.max_body_bytes || req_.body.size() + chunk_size_ > limits_.max_body_bytes)
    return fail(413, "request body too large");
  body_remaining_ = chunk_size_;
  state_ = kChunkData;
  return true;
}

// Grows the body by hand rather than through std::string, whose growth (at least
// doubling) would overshoot: the capacity never passes the declared Content-Length (or
// max_body_bytes when chunked), so what the budget accounts for bounds the memory.
bool HttpParser::append_body(const char* p, size_t n) {
  std::string& b = req_.body;
  size_t need = b.size() + n;
  if (need > b.capacity()) {
    uint64_t limit = req_.chunked ? limits_.max_body_bytes : req_.content_length;
    size_t want = std::max({need, 2 * b.capacity(), kMinBodyStep});
    want = std::max<size_t>(need, static_cast<size_t>(std::min<uint64_t>(want, limit)));
    // A Content-Length body took its whole length when its headers ended; a chunked one,
    // whose length nobody knows up front, takes each step as it grows.
    if (req_.chunked && want > body_reserved_) {
      size_t more = want - body_reserved_;
      if (budget_ && !budget_->try_take(more, body_reserved_))
        return fail(503, "too many request bodies are being received at once; retry later");
      body_reserved_ += more;
    }
    std::string grown;
    grown.reserve(want);
    grown.append(b);
    b.swap(grown);
  }
  b.append(p, n);
  return true;
}

size_t HttpParser::feed(const char* data, size_t len) {
  if (status_ != ParseStatus::kNeedMore) return 0;
  const char* p = data;
  const char* const end = data + len;
#define BET_FAIL(status, msg)     \
  do {                            \
    fail(status, msg);            \
    return static_cast<size_t>(p - data); \
  } while (0)
#define BET_TRY(expr)                                      \
  do {                                                     \
    if (!(expr)) return static_cast<size_t>(p - data);     \
  } while (0)

  while (p < end) {
    // Body bytes are copied in runs, not byte by byte.
    if (state_ == kBody || state_ == kChunkData) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(static_cast<uint64_t>(end - p), body_remaining_));
      BET_TRY(append_body(p, n));
      p += n;
      body_remaining_ -= n;
      if (body_remaining_ == 0) {
        if (state_ == kBody) {
          state_ = kDone;
          status_ = ParseStatus::kComplete;
          return static_cast<size_t>(p - data);
        }
        state_ = kChunkDataCR;
      }
      continue;
    }

    const char c = *p++;
    if (state_ < kHeadersDone && ++head_bytes_ > limits_.max_header_bytes) {
      if (in_trailers_) BET_FAIL(431, "trailers too large");
      BET_FAIL(431, "request header fields too large");
    }
    if (state_ >= kChunkSize && state_ <= kChunkSizeLF && ++chunk_line_bytes_ > limits_.max_chunk_line)
      BET_FAIL(400, "chunk size line too long");

    switch (state_) {
      case kStart:
        // RFC 9112 2.2: blank lines before a request line are ignored.
        if (c == '\r' || c == '\n') break;
        if (!is_tchar(c)) BET_FAIL(400, "malformed request line");
        started_ = true;
        req_.method.push_back(c);
        state_ = kMethod;
        break;
      case kMethod:
        if (c == ' ') {
          state_ = kTarget;
        } else if (is_tchar(c)) {
          if (req_.method.size() >= kMaxMethod) BET_FAIL(400, "method too long");
          req_.method.push_back(c);
        } else {
          BET_FAIL(400, "malformed request line");
        }
        break;
      case kTarget:
        if (c == ' ') {
          if (req_.target.empty()) BET_FAIL(400, "empty request target");
          state_ = kVersion;
        } else if (static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7f) {
          req_.target.push_back(c);
        } else {
          BET_FAIL(400, "malformed request target");
        }
        break;
      case kVersion:
        if (c == '\r' || c == '\n') {
          BET_TRY(finish_request_line());
          state_ = c == '\r' ? kRequestLineLF : kHeaderLineStart;
        } else {
          if (version_.size() >= 8) BET_FAIL(400, "malformed HTTP version");
          version_.push_back(c);
        }
        break;
      case kRequestLineLF:
        if (c != '\n') BET_FAIL(400, "malformed request line");
        state_ = kHeaderLineStart;
        break;
      case kHeaderLineStart:
        if (c == '\r') {
          state_ = kHeadersEndLF;
        } else if (c == '\n') {
          goto headers_end;
        } else if (is_tchar(c)) {
          if (!in_trailers_ && req_.header_count >= limits_.max_headers)
            BET_FAIL(431, "too many header fields");
          next_header_slot().name.push_back(lower(c));
          state_ = kHeaderName;
        } else if (c == ' ' || c == '\t') {
          BET_FAIL(400, "obsolete header line folding");
        } else {
          BET_FAIL(400, "malformed header field");
        }
        break;
      case kHeaderName:
        if (c == ':') {
          state_ = kHeaderValueLeadingWS;
        } else if (is_tchar(c)) {
          current_header().name.push_back(lower(c));
        } else {
          BET_FAIL(400, "malformed header field name");
        }
        break;
      case kHeaderValueLeadingWS:
        if (c == ' ' || c == '\t') break;
        state_ = kHeaderValue;
        [[fallthrough]];
      case kHeaderValue:
        if (c == '\r') {
          state_ = kHeaderLF;
        } else if (c == '\n') {
          BET_TRY(end_header_line());
          state_ = kHeaderLineStart;
        } else if (is_value_char(c)) {
          // Take the rest of the run of value bytes at once.
          const char* run = p;
          while (run < end && is_value_char(*run)) ++run;
          size_t extra = static_cast<size_t>(run - p);
          if (head_bytes_ + extra > limits_.max_header_bytes) {
            if (in_trailers_) BET_FAIL(431, "trailers too large");
            BET_FAIL(431, "request header fields too large");
          }
          head_bytes_ += extra;
          std::string& v = current_header().value;
          v.push_back(c);
          v.append(p, extra);
          p = run;
        } else {
          BET_FAIL(400, "invalid character in header value");
        }
        break;
      case kHeaderLF:
        if (c != '\n') BET_FAIL(400, "malformed header line ending");
        BET_TRY(end_header_line());
        state_ = kHeaderLineStart;
        break;
      case kHeadersEndLF:
        if (c != '\n') BET_FAIL(400, "malformed header block ending");
      headers_end:
        if (in_trailers_) {
          state_ = kDone;
          status_ = ParseStatus::kComplete;
          return static_cast<size_t>(p - data);
        }
        BET_TRY(finish_headers());
        if (status_ == ParseStatus::kComplete) return static_cast<size_t>(p - data);
        break;
      case kChunkSize: {
        int v = hex_value(c);
        if (v >= 0) {
          if (chunk_digits_ >= 15) BET_FAIL(400, "chunk size too long");
          chunk_size_ = chunk_size_ * 16 + static_cast<uint64_t>(v);
          ++chunk_digits_;
          break;
        }
        if (chunk_digits_ == 0) BET_FAIL(400, "malformed chunk size");
        if (c == ';') state_ = kChunkExt;
        else if (c == ' ' || c == '\t') state_ = kChunkSizeWS;
        else if (c == '\r') state_ = kChunkSizeLF;
        else if (c == '\n') BET_TRY(end_chunk_size_line());
        else BET_FAIL(400, "malformed chunk size");
        break;
      }
      case kChunkSizeWS:
        if (c == ' ' || c == '\t') break;
        if (c == ';') state_ = kChunkExt;
        else if (c == '\r') state_ = kChunkSizeLF;
        else if (c == '\n') BET_TRY(end_chunk_size_line());
        else BET_FAIL(400, "malformed chunk size");
        break;
      case kChunkExt:
        // Extensions carry nothing we use; they are only bounded and checked for CTLs.
        if (c == '\r') state_ = kChunkSizeLF;
        else if (c == '\n') BET_TRY(end_chunk_size_line());
        else if (!is_value_char(c)) BET_FAIL(400, "malformed chunk extension");
        break;
      case kChunkSizeLF:
        if (c != '\n') BET_FAIL(400, "malformed chunk size line");
        BET_TRY(end_chunk_size_line());
        break;
      case kChunkDataCR:
        if (c == '\r') state_ = kChunkDataLF;
        else if (c == '\n') goto next_chunk;
        else BET_FAIL(400, "chunk data longer than its size");
        break;
      case kChunkDataLF:
        if (c != '\n') BET_FAIL(400, "malformed chunk ending");
      next_chunk:
        state_ = kChunkSize;
        chunk_size_ = 0;
        chunk_digits_ = 0;
        chunk_line_bytes_ = 0;
        break;
      case kHeadersDone:
      case kBody:
      case kChunkData:
      case kDone:
      case kFailed:
        return static_cast<size_t>(p - data - 1);
    }
  }
#undef BET_FAIL
#undef BET_TRY
  return static_cast<size_t>(p - data);
}

}  // namespace bet::server
