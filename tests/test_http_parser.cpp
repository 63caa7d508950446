// The incremental HTTP/1.1 request parser: fields, framing (Content-Length, chunked
// with extensions and trailers), keep-alive rules, pipelining, limits and errors, and
// that any split of the input (down to single bytes) parses exactly like the whole,
// while random garbage never crashes it or makes it hold more than its limits.
#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

#include "runtime/server/http_parser.h"

using namespace bet::server;
using namespace std::string_literals;

namespace {

struct Parsed {
  ParseStatus status = ParseStatus::kNeedMore;
  int error = 0;
  size_t consumed = 0;
  std::string method, target, body;
  int minor = -1;
  bool keep_alive = false, chunked = false, expect_continue = false;
  std::vector<std::pair<std::string, std::string>> headers;

  bool operator==(const Parsed&) const = default;
};

Parsed snapshot(const HttpParser& p, size_t consumed) {
  Parsed r;
  r.status = p.status();
  r.error = p.error_status();
  r.consumed = consumed;
  const HttpRequest& q = p.request();
  if (r.status == ParseStatus::kComplete) {
    r.method = q.method;
    r.target = q.target;
    r.body = q.body;
    r.minor = q.version_minor;
    r.keep_alive = q.keep_alive;
    r.chunked = q.chunked;
    r.expect_continue = q.expect_continue;
    for (size_t i = 0; i < q.header_count; ++i) r.headers.emplace_back(q.headers[i].name, q.headers[i].value);
  }
  return r;
}

// Feeds `input` in pieces whose sizes come from `sizes` (cycled); stops at the end of
// the first message.
Parsed parse_split(const std::string& input, const std::vector<size_t>& sizes, ParserLimits limits = {}) {
  HttpParser p(limits);
  size_t at = 0, k = 0;
  while (at < input.size() && p.status() == ParseStatus::kNeedMore) {
    size_t n = std::min(sizes[k++ % sizes.size()], input.size() - at);
    size_t used = p.feed(input.data() + at, n);
    REQUIRE(used <= n);
    at += used;
    if (used < n) break;  // message ended (or failed) inside this piece
  }
  return snapshot(p, at);
}

Parsed parse_whole(const std::string& input, ParserLimits limits = {}) {
  return parse_split(input, {input.size() ? input.size() : 1}, limits);
}

const std::vector<std::string>& valid_requests() {
  static const std::vector<std::string> v = {
      "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
      "GET /v1/model?x=1&y=2 HTTP/1.1\r\nHost: a\r\nUser-Agent: test/1.0\r\nAccept: */*\r\n\r\n",
      "POST /v1/predict HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
      "{\"text\":\"abc\"}\n",
      "POST /v1/predict HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4;ext=1\r\nWiki\r\n5 ; name=\"quo;ted\"\r\npedia\r\nA\r\n in chunks\r\n0\r\nX-Trailer: yes\r\nY: z\r\n\r\n",
      "GET / HTTP/1.0\r\n\r\n",
      "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
      "\r\n\r\nGET /after-blank-lines HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
      "PUT /x HTTP/1.1\nHost: bare-lf\nContent-Length: 3\n\nabc",
      "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
      "GET /h HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Spaces:   padded value \t \r\nX-Obs: caf\xc3\xa9\r\n\r\n",
  };
  return v;
}

}  // namespace

TEST_CASE("parses request line, headers and Content-Length body") {
  Parsed r = parse_whole(valid_requests()[2]);
  REQUIRE(r.status == ParseStatus::kComplete);
  CHECK(r.consumed == valid_requests()[2].size());
  CHECK(r.method == "POST");
  CHECK(r.target == "/v1/predict");
  CHECK(r.minor == 1);
  CHECK(r.body == "{\"text\":\"abc\"}\n");
  CHECK(r.keep_alive);
  REQUIRE(r.headers.size() == 3);
  CHECK(r.headers[1] == std::pair<std::string, std::string>("content-type", "application/json"));

  HttpParser p;
  p.feed(valid_requests()[1]);
  REQUIRE(p.status() == ParseStatus::kComplete);
  CHECK(p.request().path() == "/v1/model");
  CHECK(p.request().query() == "x=1&y=2");
  REQUIRE(p.request().header("user-agent"));
  CHECK(*p.request().header("user-agent") == "test/1.0");
  CHECK(p.request().header("User-Agent") == nullptr);  // lookups take the lower-cased name

  HttpRequest abs;
  abs.target = "http://example.com:8080/v1/predict?x=1";
  CHECK(abs.path() == "/v1/predict");
  abs.target = "http://example.com";
  CHECK(abs.path() == "/");

  Parsed h = parse_whole(valid_requests()[9]);
  REQUIRE(h.status == ParseStatus::kComplete);
  CHECK(h.headers[1].second.empty());
  CHECK(h.headers[2].second == "padded value");
  CHECK(h.headers[3].second == "caf\xc3\xa9");
}

TEST_CASE("chunked bodies with extensions and trailers") {
  Parsed r = parse_whole(valid_requests()[3]);
  REQUIRE(r.status == ParseStatus::kComplete);
  CHECK(r.chunked);
  CHECK(r.body == "Wikipedia in chunks");
  CHECK(r.consumed == valid_requests()[3].size());
  // Trailers are checked and dropped, never merged into the headers.
  CHECK(r.headers.size() == 2);

  Parsed upper = parse_whole("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n1F\r\n" +
                             std::string(31, 'x') + "\r\n0\r\n\r\n");
  REQUIRE(upper.status == ParseStatus::kComplete);
  CHECK(upper.body.size() == 31);
}

TEST_CASE("keep-alive rules") {
  struct Case {
    std::string request;
    bool keep_alive;
  };
  std::vector<Case> cases = {
      {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
      {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false},
      {"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n", false},
      {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", true},
      {"GET / HTTP/1.0\r\n\r\n", false},
      {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
      {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false},
  };
  for (const auto& c : cases) {
    CAPTURE(c.request);
    Parsed r = parse_whole(c.request);
    REQUIRE(r.status == ParseStatus::kComplete);
    CHECK(r.keep_alive == c.keep_alive);
  }
}

TEST_CASE("every split of a valid request parses like the whole") {
  std::mt19937 rng(1234);
  for (const std::string& req : valid_requests()) {
    CAPTURE(req);
    Parsed whole = parse_whole(req);
    REQUIRE(whole.status == ParseStatus::kComplete);
    CHECK(parse_split(req, {1}) == whole);
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<size_t> sizes;
      for (int i = 0; i < 8; ++i) sizes.push_back(std::uniform_int_distribution<size_t>(1, 12)(rng));
      REQUIRE(parse_split(req, sizes) == whole);
    }
  }
}

TEST_CASE("pipelined requests in one buffer") {
  std::string all;
  for (const std::string& r : valid_requests()) all += r;
  // Every split of the concatenation yields the same sequence of messages.
  std::mt19937 rng(99);
  for (int trial = 0; trial < 50; ++trial) {
    HttpParser p;
    std::vector<Parsed> got;
    size_t at = 0;
    while (at < all.size()) {
      size_t n = trial == 0 ? all.size() - at : std::min<size_t>(all.size() - at, 1 + rng() % 40);
      size_t off = 0;
      while (off < n) {
        size_t offered = n - off;
        size_t used = p.feed(all.data() + at + off, offered);
        off += used;
        if (p.status() == ParseStatus::kComplete) {
          got.push_back(snapshot(p, 0));
          p.reset();
        } else {
          REQUIRE(p.status() == ParseStatus::kNeedMore);
          REQUIRE(used == offered);  // an unfinished message takes everything it is given
        }
      }
      at += n;
    }
    REQUIRE(got.size() == valid_requests().size());
    for (size_t i = 0; i < got.size(); ++i) {
      Parsed alone = parse_whole(valid_requests()[i]);
      alone.consumed = 0;
      CHECK(got[i] == alone);
    }
  }
}

TEST_CASE("after a complete message nothing more is consumed until reset") {
  HttpParser p;
  std::string two = valid_requests()[0] + valid_requests()[1];
  size_t used = p.feed(two);
  CHECK(used == valid_requests()[0].size());
  CHECK(p.feed(two.data() + used, two.size() - used) == 0);
  p.reset();
  CHECK(p.feed(two.data() + used, two.size() - used) == valid_requests()[1].size());
  CHECK(p.status() == ParseStatus::kComplete);
  CHECK(p.request().target == "/v1/model?x=1&y=2");
}

TEST_CASE("expect 100-continue: headers complete while the body is pending") {
  HttpParser p;
  std::string head = "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
  CHECK(p.feed(head) == head.size());
  CHECK(p.status() == ParseStatus::kNeedMore);
  CHECK(p.headers_complete());
  CHECK(p.request().expect_continue);
  CHECK(p.body_received() == 0);
  p.feed("h");
  CHECK(p.body_received() == 1);
  p.feed("i");
  CHECK(p.status() == ParseStatus::kComplete);
}

TEST_CASE("malformed requests give the right error status") {
  struct Case {
    std::string input;
    int status;
  };
  std::vector<Case> cases = {
      {"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400},
      {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
      {"GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400},
      {"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n", 400},
      {"GET /\r\n\r\n", 400},
      {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\n\r\n", 400},                              // no Host
      {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},                 // space before colon
      {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00" "b\r\n\r\n"s, 400},  // NUL in a value
      {"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400},       // bare CR
      {"GET / HTTP/1.1\r\nHost: a\rX\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12a\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400},
      {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n;x\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a\x01\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n bad trailer\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1111111111111111\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 413},
      {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400},  // a TLS ClientHello
  };
  for (const auto& c : cases) {
    CAPTURE(c.input);
    Parsed r = parse_whole(c.input);
    CHECK(r.status == ParseStatus::kError);
    CHECK(r.error == c.status);
    // The same verdict byte by byte.
    Parsed b = parse_split(c.input, {1});
    CHECK(b.status == ParseStatus::kError);
    CHECK(b.error == c.status);
  }
}

TEST_CASE("limits: header block, header count, body") {
  ParserLimits lim;
  lim.max_header_bytes = 1024;
  lim.max_body_bytes = 100;
  lim.max_headers = 10;

  std::string big_header = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(1100, 'v') + "\r\n\r\n";
  Parsed r = parse_whole(big_header, lim);
  CHECK(r.error == 431);
  CHECK(r.consumed <= lim.max_header_bytes + 1);  // refused as soon as the limit passed
  CHECK(parse_split(big_header, {1}, lim).error == 431);
  CHECK(parse_split(big_header, {7, 300}, lim).error == 431);

  std::string long_line = "GET /" + std::string(2000, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n";
  CHECK(parse_whole(long_line, lim).error == 431);

  std::string many = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 10; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  CHECK(parse_whole(many + "\r\n", lim).error == 431);

  // Just under the limits passes.
  std::string ok = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'b');
  CHECK(parse_whole(ok, lim).status == ParseStatus::kComplete);

  // A declared body over the limit fails when the headers end, before any body byte.
  std::string head = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n";
  Parsed over = parse_whole(head + std::string(101, 'b'), lim);
  CHECK(over.error == 413);
  CHECK(over.consumed == head.size());

  std::string chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 3; ++i) chunked += "28\r\n" + std::string(40, 'c') + "\r\n";
  chunked += "0\r\n\r\n";
  Parsed ch = parse_whole(chunked, lim);
  CHECK(ch.error == 413);
  CHECK(ch.consumed < chunked.size() - 40);  // refused at the third chunk's size line

  std::string trailers = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: " +
                         std::string(1100, 't') + "\r\n\r\n";
  CHECK(parse_whole(trailers, lim).error == 431);
}

TEST_CASE("garbage and mutated requests: no crash, bounded state") {
  ParserLimits lim;
  lim.max_header_bytes = 2048;
  lim.max_body_bytes = 4096;
  lim.max_headers = 20;
  std::mt19937 rng(7);
  auto check_bounds = [&](const HttpParser& p) {
    const HttpRequest& q = p.request();
    REQUIRE(q.method.size() <= 32);
    REQUIRE(q.target.size() <= lim.max_header_bytes);
    REQUIRE(q.body.size() <= lim.max_body_bytes);
    REQUIRE(q.header_count <= lim.max_headers);
    size_t header_bytes = 0;
    for (size_t i = 0; i < q.header_count; ++i) header_bytes += q.headers[i].name.size() + q.headers[i].value.size();
    REQUIRE(header_bytes <= lim.max_header_bytes);
    if (p.status() == ParseStatus::kError) {
      int s = p.error_status();
      REQUIRE((s == 400 || s == 413 || s == 431 || s == 501 || s == 505));
    }
  };
  auto run = [&](const std::string& input) {
    HttpParser p(lim);
    size_t at = 0;
    int messages = 0;
    while (at < input.size()) {
      size_t n = std::min<size_t>(input.size() - at, 1 + rng() % 64);
      size_t used = p.feed(input.data() + at, n);
      REQUIRE(used <= n);
      check_bounds(p);
      at += used;
      if (p.status() == ParseStatus::kComplete) {
        ++messages;
        p.reset();
      } else if (p.status() == ParseStatus::kError) {
        break;
      } else {
        REQUIRE(used == n);
      }
    }
    return messages;
  };
  const std::string alphabet = "GETPOSTHTTP/1.0 \r\n:;=,-\"chunkedContent-LengthTransfer-Encoding0123456789abcdef\t";
  for (int trial = 0; trial < 3000; ++trial) {
    std::string s;
    size_t len = rng() % 600;
    bool from_alphabet = trial % 2 == 0;
    for (size_t i = 0; i < len; ++i)
      s.push_back(from_alphabet ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng() & 0xff));
    run(s);
  }
  // Valid requests with a few bytes flipped, dropped or duplicated.
  for (int trial = 0; trial < 3000; ++trial) {
    std::string s = valid_requests()[rng() % valid_requests().size()];
    int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      size_t at = rng() % s.size();
      switch (rng() % 3) {
        case 0: s[at] = static_cast<char>(rng() & 0xff); break;
        case 1: s.erase(at, 1); break;
        default: s.insert(at, 1, s[at]); break;
      }
    }
    run(s + s);
  }
  // Unbounded streams are refused within the limits.
  CHECK(run("GET /" + std::string(100000, 'a')) == 0);
  CHECK(run("GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(100000, 'a')) == 0);
  CHECK(run(std::string(100000, '\n')) == 0);
}
