// The load generator of `betctl bench serve`: its percentile rule, and that it counts
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
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

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
