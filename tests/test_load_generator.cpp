// The load generator of `betctl bench serve`: its percentile rule, the HTTP response
// parser it shares with HttpClient (bench/http_response_parser.h), and that it counts
// what it sees correctly against a real HttpServer and a scripted raw-socket server
// (2xx vs non-2xx, transport errors, Connection: close, close-delimited bodies). No
// timing is asserted.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench/http_response_parser.h"
#include "bench/load_generator.h"
#include "runtime/server/server.h"

using namespace bet::bench;

namespace {

class NullPredictor : public bet::inference::Predictor {
 public:
  bool ready() override { return true; }
  nlohmann::json model_info() override { return {{"version", "0"}}; }
  std::vector<bet::inference::PredictOutcome> predict_batch(const std::vector<bet::inference::PredictRequest>& r) override {
    return std::vector<bet::inference::PredictOutcome>(r.size(), {nlohmann::json{{"label", "x"}}, std::nullopt});
  }
};

struct RealServer {
  NullPredictor pred;
  std::unique_ptr<bet::server::HttpServer> server;
  std::thread thread;
  RealServer() {
    bet::server::ServerConfig cfg;
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.log = [](std::string_view) {};
    server = std::make_unique<bet::server::HttpServer>(cfg, pred);
    server->bind();
    thread = std::thread([this] { server->run(); });
  }
  ~RealServer() {
    server->stop();
    thread.join();
  }
};

// Answers every request on a connection with `response` (read until the blank line),
// closing after each answer when `close_after`.
struct ScriptedServer {
  int fd = -1;
  uint16_t port = 0;
  std::string response;
  bool close_after = false;
  int delay_ms = 0;
  std::atomic<bool> stop{false};
  std::thread thread;
  ScriptedServer(std::string resp, bool close, int delay = 0)
      : response(std::move(resp)), close_after(close), delay_ms(delay) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    ::listen(fd, 64);
    thread = std::thread([this] { loop(); });
  }
  void loop() {
    while (!stop) {
      timeval tv{0, 50000};
      fd_set rd;
      FD_ZERO(&rd);
      FD_SET(fd, &rd);
      if (select(fd + 1, &rd, nullptr, nullptr, &tv) <= 0) continue;
      int c = ::accept(fd, nullptr, nullptr);
      if (c < 0) continue;
      timeval rt{0, 100000};
      setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &rt, sizeof rt);
      std::string in;
      char buf[4096];
      while (!stop) {
        ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n == 0) break;
        if (n < 0) continue;  // timeout: check stop
        in.append(buf, size_t(n));
        bool closed = false;
        size_t end;
        while ((end = in.find("\r\n\r\n")) != std::string::npos) {
          in.erase(0, end + 4);
          if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
          ::send(c, response.data(), response.size(), MSG_NOSIGNAL);
          if (close_after) {
            closed = true;
            break;
          }
        }
        if (closed) break;
      }
      ::close(c);
    }
  }
  ~ScriptedServer() {
    stop = true;
    thread.join();
    ::close(fd);
  }
};

// Feeds `chunks` one after the other, taking responses out after each (heads[k]: the
// k-th response answers a HEAD), then finish() as at EOF. On a parse error the last
// element is a response with status -1 and the error as its body.
std::vector<HttpResponse> parse_chunks(const std::vector<std::string>& chunks, const std::vector<bool>& heads = {},
                                       HttpResponseParser::Options opts = {}) {
  HttpResponseParser p(opts);
  std::vector<HttpResponse> out;
  auto head = [&] { return out.size() < heads.size() && heads[out.size()]; };
  auto drain = [&](bool eof) {
    while (auto r = eof ? p.finish(head()) : p.next(head())) out.push_back(std::move(*r));
  };
  for (const auto& c : chunks) {
    p.feed(c);
    drain(false);
    if (p.failed()) break;
  }
  if (!p.failed()) drain(true);
  if (p.failed()) {
    HttpResponse err;
    err.status = -1;
    err.body = p.error();
    out.push_back(err);
  }
  return out;
}

std::vector<HttpResponse> parse_one_piece(const std::string& s, const std::vector<bool>& heads = {}) {
  return parse_chunks({s}, heads);
}

bool same(const std::vector<HttpResponse>& a, const std::vector<HttpResponse>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].status != b[i].status || a[i].status_line != b[i].status_line || a[i].headers != b[i].headers ||
        a[i].body != b[i].body || a[i].keep_alive != b[i].keep_alive)
      return false;
  return true;
}

LoadOptions quick(uint16_t port, std::vector<std::string> reqs, int conns = 1) {
  LoadOptions o;
  o.port = port;
  o.connections = conns;
  o.requests = std::move(reqs);
  o.warmup_s = 0.05;
  o.duration_s = 0.3;
  o.max_requests = 400;
  o.request_timeout_s = 2;
  return o;
}

}  // namespace

TEST_CASE("percentile: nearest rank") {
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  CHECK(percentile(v, 50) == 50);
  CHECK(percentile(v, 99) == 99);
  CHECK(percentile(v, 100) == 100);
  CHECK(percentile(v, 0) == 1);
  CHECK(percentile(v, 0.5) == 1);
  CHECK(percentile(v, 1.5) == 2);
  CHECK(percentile({1, 2, 3, 4}, 50) == 2);
  CHECK(percentile({1, 2, 3, 4}, 75) == 3);
  CHECK(percentile({1, 2, 3, 4}, 76) == 4);
  CHECK(percentile({7}, 99) == 7);
  // p99 of 1000 values is the 990th, not the largest.
  std::vector<double> w;
  for (int i = 1; i <= 1000; ++i) w.push_back(i);
  CHECK(percentile(w, 99) == 990);
  CHECK(std::isnan(percentile({}, 50)));
}

TEST_CASE("HttpResponseParser: pipelined responses, split at every byte boundary, parse the same") {
  // An interim 100, a 200 with a body, a HEAD answer (Content-Length, no body), a 204, a
  // 304 with a Content-Length, a 404, and last a close-delimited HTTP/1.0 answer.
  const std::string stream =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\": true}"
      "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n"
      "HTTP/1.1 204 No Content\r\nX-Empty:\r\n\r\n"
      "HTTP/1.1 304 Not Modified\r\ncontent-length: 100\r\n\r\n"
      "HTTP/1.1 404 Not Found\r\nCONTENT-LENGTH:   4  \r\nConnection: keep-alive\r\n\r\nnope"
      "HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil\r\n\r\nthe close";
  const std::vector<bool> heads = {false, true};
  const auto whole = parse_one_piece(stream, heads);
  REQUIRE(whole.size() == 6);
  CHECK(whole[0].status == 200);
  CHECK(whole[0].status_line == "HTTP/1.1 200 OK");
  CHECK(whole[0].header("content-type") == "application/json");
  CHECK(whole[0].body == "{\"a\": true}");
  CHECK(whole[0].keep_alive);
  CHECK(whole[1].status == 200);
  CHECK(whole[1].header("content-length") == "15");
  CHECK(whole[1].body.empty());
  CHECK(whole[2].status == 204);
  CHECK(whole[2].headers.count("x-empty") == 1);
  CHECK(whole[2].body.empty());
  CHECK(whole[3].status == 304);
  CHECK(whole[3].body.empty());
  CHECK(whole[4].status == 404);
  CHECK(whole[4].header("content-length") == "4");
  CHECK(whole[4].body == "nope");
  CHECK(whole[4].keep_alive);
  CHECK(whole[5].status == 200);
  CHECK(whole[5].body == "until\r\n\r\nthe close");
  CHECK(!whole[5].keep_alive);
  CHECK(whole[5].header("server") == "x");

  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    CAPTURE(cut);
    CHECK(same(parse_chunks({stream.substr(0, cut), stream.substr(cut)}, heads), whole));
  }
  for (size_t a = 1; a < stream.size(); a += 7)
    for (size_t b = a; b <= stream.size(); b += 5) {
      CAPTURE(a);
      CAPTURE(b);
      CHECK(same(parse_chunks({stream.substr(0, a), stream.substr(a, b - a), stream.substr(b)}, heads), whole));
    }
  std::vector<std::string> bytes;
  for (char ch : stream) bytes.emplace_back(1, ch);
  CHECK(same(parse_chunks(bytes, heads), whole));

  // Errors, too, do not depend on the split.
  const std::string bad = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: x1\r\n\r\n";
  const auto bad_whole = parse_one_piece(bad);
  REQUIRE(bad_whole.size() == 2);
  CHECK(bad_whole[0].body == "ok");
  CHECK(bad_whole[1].status == -1);
  for (size_t cut = 0; cut <= bad.size(); ++cut) {
    CAPTURE(cut);
    CHECK(same(parse_chunks({bad.substr(0, cut), bad.substr(cut)}), bad_whole));
  }
}

TEST_CASE("HttpResponseParser: 1xx interim responses are skipped") {
  const auto r = parse_one_piece(
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX-Interim: 1\r\n\r\n"
      "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
  REQUIRE(r.size() == 1);
  CHECK(r[0].status == 201);
  CHECK(r[0].body == "ok");
  CHECK(r[0].headers.count("x-interim") == 0);
  CHECK(r[0].headers.count("link") == 0);

  HttpResponseParser p;
  p.feed("HTTP/1.1 100 Continue\r\n\r\n");
  CHECK(!p.next());
  CHECK(!p.failed());
  CHECK(p.buffered() == 0);  // the interim response is consumed
  CHECK(!p.finish());        // a close after it is a clean one
  CHECK(!p.failed());
}

TEST_CASE("HttpResponseParser: Content-Length garbage, conflicts and mismatches are errors") {
  for (const char* v : {"abc", "-1", "+5", "1 2", "0x10", "1.5", "", "5,5", "99999999999999999999"}) {
    CAPTURE(v);
    HttpResponseParser p;
    p.feed(std::string("HTTP/1.1 200 OK\r\nContent-Length: ") + v + "\r\n\r\n12345");
    CHECK(!p.next());
    CHECK(p.failed());
    CHECK(p.error().find("Content-Length") != std::string::npos);
  }
  {
    HttpResponseParser p;
    p.feed("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd");
    CHECK(!p.next());
    CHECK(p.error().find("Content-Length") != std::string::npos);
  }
  {  // the same value twice is fine
    const auto r = parse_one_piece("HTTP/1.1 200 OK\r\nContent-Length: 4\r\ncontent-length: 4\r\n\r\nabcd");
    REQUIRE(r.size() == 1);
    CHECK(r[0].body == "abcd");
  }
  {  // fewer bytes than announced, then the close
    HttpResponseParser p;
    p.feed("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
    CHECK(!p.next());
    CHECK(!p.failed());
    CHECK(!p.awaiting_close());
    CHECK(!p.finish());
    CHECK(p.failed());
    CHECK(p.error() == "connection closed before the response was complete");
  }
  {  // more bytes than announced: the rest is not a response
    HttpResponseParser p;
    p.feed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokay\r\n\r\n");
    auto r = p.next();
    REQUIRE(r);
    CHECK(r->body == "ok");
    CHECK(p.pending() == "ay\r\n\r\n");
    CHECK(!p.next());
    CHECK(p.failed());
    CHECK(p.error().find("malformed status line") != std::string::npos);
    CHECK(!p.next());  // errors are sticky
    p.reset();
    CHECK(!p.failed());
    CHECK(p.buffered() == 0);
    p.feed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    CHECK(p.next());
  }
}

TEST_CASE("HttpResponseParser: HEAD responses have no body, whatever Content-Length says") {
  HttpResponseParser get, p;
  get.feed("HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n");
  CHECK(!get.next(false));  // as a GET answer it waits for 15 bytes
  CHECK(!get.failed());
  p.feed("HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n");
  auto r = p.next(true);
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("content-length") == "15");
  CHECK(r->body.empty());
  CHECK(p.buffered() == 0);
  // Without Content-Length a HEAD answer is not close-delimited either.
  p.feed("HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  r = p.next(true);
  REQUIRE(r);
  CHECK(r->keep_alive);
  r = p.next(false);
  REQUIRE(r);
  CHECK(r->body == "ok");
}

TEST_CASE("HttpResponseParser: close-delimited bodies end at EOF; keep-alive by version and Connection") {
  HttpResponseParser p;
  p.feed("HTTP/1.1 503 Busy\r\nConnection: close\r\n\r\nbu");
  CHECK(!p.next());
  CHECK(p.awaiting_close());
  p.feed("sy");
  CHECK(!p.next());
  auto r = p.finish();
  REQUIRE(r);
  CHECK(r->status == 503);
  CHECK(r->body == "busy");
  CHECK(!r->keep_alive);
  CHECK(p.buffered() == 0);
  CHECK(!p.finish());
  CHECK(!p.failed());

  // An empty close-delimited body, and a close-delimited body after another coding.
  auto v = parse_one_piece("HTTP/1.1 200 OK\r\n\r\n");
  REQUIRE(v.size() == 1);
  CHECK(v[0].body.empty());
  v = parse_one_piece("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\nabc");
  REQUIRE(v.size() == 1);
  CHECK(v[0].body == "abc");

  auto keep_alive = [](const std::string& head) {
    auto rs = parse_one_piece(head + "Content-Length: 0\r\n\r\n");
    REQUIRE(rs.size() == 1);
    return rs[0].keep_alive;
  };
  CHECK(keep_alive("HTTP/1.1 200 OK\r\n"));
  CHECK(!keep_alive("HTTP/1.1 200 OK\r\nConnection: close\r\n"));
  CHECK(!keep_alive("HTTP/1.1 200 OK\r\nConnection: Upgrade, Close\r\n"));
  CHECK(!keep_alive("HTTP/1.0 200 OK\r\n"));
  CHECK(keep_alive("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n"));
  CHECK(keep_alive("HTTP/1.1 200 OK\r\nConnection: closed-not\r\n"));  // tokens, not substrings
}

TEST_CASE("HttpResponseParser: pipelined responses in one buffer") {
  HttpResponseParser p;
  p.feed("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nbb"
         "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nccc");
  std::vector<std::string> bodies;
  std::vector<int> statuses;
  while (auto r = p.next()) {
    bodies.push_back(r->body);
    statuses.push_back(r->status);
  }
  CHECK(bodies == std::vector<std::string>{"a", "bb", "ccc"});
  CHECK(statuses == std::vector<int>{200, 404, 200});
  CHECK(!p.failed());
  CHECK(p.buffered() == 0);
  // A partial fourth stays pending (head included) until it is complete.
  p.feed("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndd");
  CHECK(!p.next());
  CHECK(p.pending() == "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndd");
  p.feed("dd");
  auto r = p.next();
  REQUIRE(r);
  CHECK(r->body == "dddd");
}

TEST_CASE("HttpResponseParser: malformed input, chunked, oversized heads; framing-only mode") {
  auto error_of = [](const std::string& s) {
    auto r = parse_one_piece(s);
    REQUIRE(!r.empty());
    return r.back().status == -1 ? r.back().body : std::string();
  };
  for (const char* bad : {"HTTP/9 what\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n",
                          "HTTP/1.x 200 OK\r\n\r\n", "HTTP/1.1  200 OK\r\n\r\n", "ICY 200 OK\r\n\r\n",
                          "HTTP/1.1 abc OK\r\n\r\n", "\r\n\r\n"}) {
    CAPTURE(bad);
    CHECK(error_of(bad).find("malformed status line") != std::string::npos);
  }
  CHECK(error_of("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n").find("malformed header") != std::string::npos);
  CHECK(error_of("HTTP/1.1 200 OK\r\n: empty name\r\n\r\n").find("malformed header") != std::string::npos);
  CHECK(error_of("HTTP/1.1 200 OK\r\nBad Name: v\r\n\r\n").find("malformed header") != std::string::npos);
  CHECK(error_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
            .find("chunked") != std::string::npos);
  CHECK(error_of("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n").find("closed before") != std::string::npos);
  CHECK(parse_one_piece("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").at(0).status == 200);  // no reason phrase

  HttpResponseParser::Options small;
  small.max_header_bytes = 64;
  const std::string big = "HTTP/1.1 200 OK\r\nX-Big: " + std::string(100, 'x') + "\r\n\r\n";
  auto r = parse_chunks({big}, {}, small);
  CHECK(r.back().body == "response header block too large");
  r = parse_chunks({big.substr(0, 80)}, {}, small);  // detected before the block ends
  CHECK(r.back().body == "response header block too large");
  std::string fits = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: ";
  fits += std::string(64 - fits.size(), 'y');
  std::vector<std::string> bytes;
  for (char ch : fits + "\r\n\r\n") bytes.emplace_back(1, ch);
  r = parse_chunks(bytes, {}, small);  // exactly at the limit, fed byte by byte
  REQUIRE(r.size() == 1);
  CHECK(r[0].status == 200);

  HttpResponseParser::Options framing;
  framing.keep_headers = framing.keep_body = false;
  r = parse_chunks({"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"}, {}, framing);
  REQUIRE(r.size() == 1);
  CHECK(r[0].status == 404);
  CHECK(r[0].status_line == "HTTP/1.1 404 Not Found");
  CHECK(r[0].headers.empty());
  CHECK(r[0].body.empty());
  CHECK(!r[0].keep_alive);
}

TEST_CASE("run_load: HEAD requests expect no body") {
  RealServer s;
  LoadResult r = run_load(quick(s.server->port(), {http_request("HEAD", "/health"), http_request("GET", "/health")}));
  REQUIRE(r.responses > 10);
  CHECK(r.ok == r.responses);
  CHECK(r.transport_errors == 0);
}

TEST_CASE("http_request: framing") {
  CHECK(http_request("GET", "/health") == "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  const std::string p = http_request("POST", "/v1/predict", "{\"text\":\"ab\"}");
  CHECK(p.find("Content-Length: 13\r\n") != std::string::npos);
  CHECK(p.find("Content-Type: application/json\r\n") != std::string::npos);
  CHECK(p.substr(p.size() - 17) == "\r\n\r\n{\"text\":\"ab\"}");
}

TEST_CASE("run_load: non-2xx responses are errors, 2xx are not") {
  RealServer s;
  // One connection alternates the two requests, so the window holds both about equally.
  LoadResult r = run_load(quick(s.server->port(), {http_request("GET", "/health"), http_request("GET", "/nope")}));
  REQUIRE(r.responses > 10);
  CHECK(r.responses == r.ok + r.non_2xx);
  CHECK(r.transport_errors == 0);
  CHECK(r.status_counts[200] == r.ok);
  CHECK(r.status_counts[404] == r.non_2xx);
  CHECK(r.errors() == r.non_2xx);
  CHECK(std::abs(r.ok - r.non_2xx) <= 1);
  CHECK(r.first_error.find("404") != std::string::npos);
  CHECK(r.latencies_ms.size() == size_t(r.responses));
  CHECK(std::is_sorted(r.latencies_ms.begin(), r.latencies_ms.end()));
  CHECK(r.p50_ms == percentile(r.latencies_ms, 50));
  CHECK(r.p99_ms == percentile(r.latencies_ms, 99));
  CHECK(r.p50_ms <= r.p99_ms);
  CHECK(r.p99_ms <= r.max_ms);
  CHECK(r.requests_per_s == doctest::Approx(double(r.ok) / r.seconds));
  CHECK(!r.aborted);
}

TEST_CASE("run_load: every connection is used and max_requests bounds the count") {
  RealServer s;
  LoadOptions o = quick(s.server->port(), {http_request("GET", "/health")}, 8);
  o.max_requests = 50;
  o.duration_s = 30;  // the request bound must end it, not the clock
  LoadResult r = run_load(o);
  CHECK(r.responses == 50);
  CHECK(r.ok == 50);
  CHECK(r.errors() == 0);
  CHECK(r.seconds < 30);
}

TEST_CASE("run_load: a slow server gets its window extended to min_requests") {
  ScriptedServer s("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 5);
  LoadOptions o = quick(s.port, {http_request("GET", "/")});
  o.warmup_s = 0;
  o.duration_s = 0.01;  // about 2 answers of 5 ms
  o.min_requests = 12;
  o.max_duration_s = 20;
  LoadResult r = run_load(o);
  CHECK(r.responses >= 12);
  CHECK(r.ok == r.responses);
  CHECK(r.seconds < 20);
  // Without it the window ends on time, with fewer answers.
  o.min_requests = 0;
  r = run_load(o);
  CHECK(r.responses < 12);
}

TEST_CASE("run_load: Connection: close and close-delimited bodies are answers, not errors") {
  SUBCASE("Connection: close") {
    ScriptedServer s("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", true);
    LoadResult r = run_load(quick(s.port, {http_request("GET", "/")}));
    CHECK(r.ok > 0);
    CHECK(r.transport_errors == 0);
    CHECK(r.reconnects >= r.ok);
  }
  SUBCASE("no Content-Length: the body ends at close") {
    ScriptedServer s("HTTP/1.1 503 Busy\r\nConnection: close\r\n\r\nbusy", true);
    LoadResult r = run_load(quick(s.port, {http_request("GET", "/")}));
    CHECK(r.responses > 0);
    CHECK(r.ok == 0);
    CHECK(r.non_2xx == r.responses);
    CHECK(r.status_counts[503] == r.responses);
    CHECK(r.transport_errors == 0);
  }
  SUBCASE("keep-alive 204 without a body") {
    ScriptedServer s("HTTP/1.1 204 No Content\r\n\r\n", false);
    LoadResult r = run_load(quick(s.port, {http_request("GET", "/")}));
    CHECK(r.ok > 0);
    CHECK(r.reconnects == 0);
    CHECK(r.errors() == 0);
  }
}

TEST_CASE("run_load: malformed responses and dead ports are transport errors") {
  SUBCASE("garbage status line") {
    ScriptedServer s("HTTP/9 what\r\n\r\n", true);
    LoadResult r = run_load(quick(s.port, {http_request("GET", "/")}));
    CHECK(r.ok == 0);
    CHECK(r.responses == 0);
    CHECK(r.transport_errors > 0);
    CHECK(r.first_error.find("malformed") != std::string::npos);
  }
  SUBCASE("closed mid-body") {
    ScriptedServer s("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", true);
    LoadResult r = run_load(quick(s.port, {http_request("GET", "/")}));
    CHECK(r.ok == 0);
    CHECK(r.transport_errors > 0);
  }
  SUBCASE("chunked") {
    ScriptedServer s("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false);
    LoadResult r = run_load(quick(s.port, {http_request("GET", "/")}));
    CHECK(r.ok == 0);
    CHECK(r.transport_errors > 0);
  }
  SUBCASE("nothing listening") {
    uint16_t port;
    {
      ScriptedServer s("", false);
      port = s.port;
    }  // closed: connects are refused
    LoadOptions o = quick(port, {http_request("GET", "/")}, 4);
    o.duration_s = 30;
    LoadResult r = run_load(o);
    CHECK(r.aborted);
    CHECK(r.ok == 0);
    CHECK(r.transport_errors > 0);
  }
}

TEST_CASE("run_load: refuses bad options and non-loopback hosts") {
  LoadOptions o = quick(1, {http_request("GET", "/")});
  o.host = "10.0.0.1";
  CHECK_THROWS_AS(run_load(o), std::invalid_argument);
  o.host = "localhost";  // numeric addresses only
  CHECK_THROWS_AS(run_load(o), std::invalid_argument);
  o = quick(1, {});
  CHECK_THROWS_AS(run_load(o), std::invalid_argument);
  o = quick(1, {http_request("GET", "/")}, 0);
  CHECK_THROWS_AS(run_load(o), std::invalid_argument);
  o = quick(1, {http_request("GET", "/")});
  o.duration_s = 0;
  CHECK_THROWS_AS(run_load(o), std::invalid_argument);
}
