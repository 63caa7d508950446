// The HTTP server end to end: a real server on 127.0.0.1 (ephemeral port) run on a
// thread of the test, a fake predictor, and raw-socket clients. The pieces it is made
// of have their own tests in test_server_parts.cpp.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/http_client.h"
#include "runtime/server/api.h"
#include "runtime/server/router.h"
#include "runtime/server/server.h"
#include "tests/alloc_hooks.h"
#include "tests/betctl_driver.h"
#include "tests/prometheus_check.h"

using namespace bet::server;
using bet::bench::HttpClient;
using bet::bench::HttpResponse;
using bet::inference::GenerateRequest;
using bet::inference::PredictOutcome;
using bet::inference::PredictRequest;
using bet::inference::Predictor;
namespace inference = bet::inference;
using nlohmann::json;
using namespace std::chrono_literals;
using bet::test::g_counted_allocs;
using bet::test::g_counted_thread;


namespace {

// Labels a text "odd" or "even" by its length, and echoes what the server passed on.
class FakePredictor : public Predictor {
  inference::RequestLimits limits_;

 public:
  std::atomic<bool> is_ready{true};
  std::atomic<int> reloads{0};
  std::atomic<bool> reload_result{true};
  std::atomic<int> delay_ms{0};
  std::atomic<int> predict_calls{0};
  std::mutex mu;
  std::vector<size_t> batch_sizes;

  void set_limits(const inference::RequestLimits& l) override { limits_ = l; }
  bool ready() override { return is_ready; }
  json model_info() override {
    return {{"version", "1.2.3"}, {"name", "fake \"model\""}, {"parameters", 42}, {"reloads", reloads.load()}};
  }
  std::vector<PredictOutcome> predict_batch(const std::vector<PredictRequest>& reqs) override {
    {
      std::lock_guard lock(mu);
      batch_sizes.push_back(reqs.size());
    }
    ++predict_calls;
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms.load()));
    std::vector<PredictOutcome> out;
    for (const PredictRequest& r : reqs) {
      std::string text = r.text;
      for (const auto& c : r.chunks) text += c;
      if (text == "boom") throw std::runtime_error("the fake model exploded");
      // Inputs the model cannot answer get an issue in their slot, as ModelPredictor
      // does (the shared request checks, a text with no tokens, one its tokenizer refuses).
      if (auto issue = inference::check_predict(r, limits_)) {
        out.push_back({json(), issue});
        continue;
      }
      if (text == "no-tokens") {
        out.push_back({json(), inference::InputIssue{inference::InputIssueKind::kEmptyText, "text: has no tokens"}});
        continue;
      }
      if (text == "bad-item") {
        out.push_back(
            {json(), inference::InputIssue{inference::InputIssueKind::kBadField, "text: the tokenizer refuses it"}});
        continue;
      }
      json j;
      j["label"] = text.size() % 2 ? "odd" : "even";
      j["length"] = text.size();
      j["probabilities"] = {0.25, 0.75};
      j["return_uncertainty"] = r.return_uncertainty;
      j["mc_dropout"] = r.mc_dropout;
      j["permutations"] = r.permutations ? json(*r.permutations) : json(nullptr);
      j["temperature"] = r.temperature ? json(*r.temperature) : json(nullptr);
      out.push_back({j, std::nullopt});
    }
    return out;
  }
  bool can_generate() override { return true; }
  json generate(const GenerateRequest& g) override {
    if (auto issue = inference::check_generate(g, limits_)) throw inference::InputError(*issue);
    if (g.prompt == "no-cot")
      throw inference::InputError(inference::InputIssueKind::kBadField, "cot: \"auto\" needs a model with bet layers");
    if (g.prompt == "boom") throw std::runtime_error("the fake model exploded");
    return {{"text", g.prompt + "!"}, {"tokens", g.max_tokens.value_or(-1)}, {"cot_budget", g.cot_auto ? 7 : 0}};
  }
  bool reload(std::string* why) override {
    ++reloads;
    if (!reload_result && why) *why = "the fake model file is bad";
    return reload_result;
  }
  size_t max_batch_seen() {
    std::lock_guard lock(mu);
    size_t m = 0;
    for (size_t b : batch_sizes) m = std::max(m, b);
    return m;
  }
};

struct TestServer {
  FakePredictor pred;
  std::unique_ptr<HttpServer> server;
  std::thread thread;
  std::atomic<bool> finished{false};

  explicit TestServer(ServerConfig cfg = {}) {
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    if (!cfg.log) cfg.log = [](std::string_view) {};
    server = std::make_unique<HttpServer>(cfg, pred);
    server->bind();
    thread = std::thread([this] {
      server->run();
      finished = true;
    });
  }
  ~TestServer() { shutdown(); }
  void shutdown() {
    if (thread.joinable()) {
      server->stop();
      thread.join();
    }
  }
  uint16_t port() const { return server->port(); }
};

struct Client : HttpClient {
  explicit Client(uint16_t port) : HttpClient("127.0.0.1", port) {}
};

std::string post(const std::string& path, const std::string& body) {
  return HttpClient::format_request("POST", path, body);
}

void check_error(const std::optional<HttpResponse>& r, int status, const std::string& code = "") {
  REQUIRE(r.has_value());
  CHECK(r->status == status);
  CHECK(r->header("content-type") == "application/json");
  json j = json::parse(r->body, nullptr, false);
  REQUIRE(j.is_object());
  REQUIRE(j.contains("error"));
  CHECK(j["error"]["code"].is_string());
  CHECK(j["error"]["message"].is_string());
  CHECK(!j["error"]["message"].get<std::string>().empty());
  if (!code.empty()) CHECK(j["error"]["code"] == code);
}

template <typename F>
bool wait_until(F&& f, std::chrono::milliseconds limit = 5000ms) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return f();
}

}  // namespace

TEST_CASE("routes: health, ready, model, predict, batch, generate and aliases") {
  TestServer ts;
  Client c(ts.port());
  REQUIRE(c.connected());

  auto r = c.request("GET", "/health");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(json::parse(r->body)["status"] == "ok");
  CHECK(!r->header("date").empty());

  r = c.request("HEAD", "/health");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("content-length") == "15");
  CHECK(c.buffered().empty());  // no body after the head

  r = c.request("GET", "/ready");
  REQUIRE(r);
  CHECK(r->status == 200);

  for (const char* path : {"/v1/model", "/model-info"}) {
    r = c.request("GET", path);
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(json::parse(r->body)["version"] == "1.2.3");
  }

  for (const char* path : {"/v1/predict", "/predict"}) {
    r = c.request("POST", path, R"({"text": "abc", "permutations": 4, "mc_dropout": 2, "temperature": 1.5})");
    REQUIRE(r);
    CHECK(r->status == 200);
    json j = json::parse(r->body);
    CHECK(j["label"] == "odd");
    CHECK(j["permutations"] == 4);
    CHECK(j["mc_dropout"] == 2);
    CHECK(j["temperature"] == 1.5);
    CHECK(j["latency_ms"].is_number());
    CHECK(j["latency_ms"].get<double>() >= 0);
  }
  r = c.request("POST", "/v1/predict", R"({"chunks": ["ab", "cd"], "return_uncertainty": false})");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(json::parse(r->body)["label"] == "even");
  CHECK(json::parse(r->body)["length"] == 4);
  CHECK(json::parse(r->body)["return_uncertainty"] == false);
  CHECK(json::parse(r->body)["permutations"].is_null());  // absent: the model's default

  for (const char* path : {"/v1/predict/batch", "/batch-predict"}) {
    r = c.request("POST", path, R"({"texts": ["a", "bb", "ccc"], "mc_dropout": 3})");
    REQUIRE(r);
    CHECK(r->status == 200);
    json j = json::parse(r->body);
    REQUIRE(j["predictions"].size() == 3);
    for (int i = 0; i < 3; ++i) {
      CHECK(j["predictions"][i]["length"] == i + 1);
      CHECK(j["predictions"][i]["mc_dropout"] == 3);
    }
    CHECK(j["latency_ms"].is_number());
  }

  r = c.request("POST", "/v1/generate", R"({"prompt": "hi", "max_tokens": 5, "seed": 3})");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(json::parse(r->body)["text"] == "hi!");
  CHECK(json::parse(r->body)["tokens"] == 5);
  r = c.request("POST", "/v1/generate", R"({"prompt": "hi", "cot": "auto"})");
  REQUIRE(r);
  CHECK(json::parse(r->body)["cot_budget"] == 7);
}

TEST_CASE("every error class gets its status and a JSON body") {
  ServerConfig cfg;
  cfg.max_text_bytes = 100;
  cfg.max_body_bytes = 4096;
  cfg.max_batch_items = 4;
  cfg.max_header_bytes = 2048;
  TestServer ts(cfg);
  Client c(ts.port());

  // 400: malformed JSON and bodies of the wrong shape (bad_request), fields out of range
  // (bad_field, from the request checks the predictor shares with the CLI); the
  // connection stays usable.
  for (const char* body : {"{not json", "[1, 2]", R"({"text": 5})", R"({"text": "a", "chunks": ["b"]})",
                           R"({})", R"({"text": "a", "permutations": 2.5})",
                           R"({"text": "a", "return_uncertainty": "yes"})", R"({"chunks": "a"})",
                           R"({"text": "a", "text": "b"})"}) {
    std::string b = body;
    CAPTURE(b);
    check_error(c.request("POST", "/v1/predict", b), 400, "bad_request");
  }
  for (const char* body : {R"({"text": "a", "permutations": 0})", R"({"text": "a", "temperature": -1})",
                           R"({"text": "a", "temperature": 1e-310})", R"({"text": "a", "mc_dropout": 100000})"}) {
    std::string b = body;
    CAPTURE(b);
    check_error(c.request("POST", "/v1/predict", b), 400, "bad_field");
  }
  check_error(c.request("POST", "/v1/predict", std::string(100, '[') + std::string(100, ']')), 400);
  check_error(c.request("POST", "/v1/predict/batch", R"({"texts": "abc"})"), 400);
  check_error(c.request("POST", "/v1/predict/batch", R"({"texts": []})"), 400);
  check_error(c.request("POST", "/v1/predict/batch", R"({"texts": ["a", 1]})"), 400);
  check_error(c.request("POST", "/v1/generate", R"({"prompt": "a", "cot": "auto", "max_tokens": 3})"), 400);
  check_error(c.request("POST", "/v1/generate", R"({"prompt": "a", "top_p": 0})"), 400);
  check_error(c.request("POST", "/v1/generate", R"({"prompt": "a", "seed": -1})"), 400);

  // 404 and 405 with Allow.
  check_error(c.request("GET", "/nope"), 404, "not_found");
  auto r = c.request("GET", "/v1/predict");
  check_error(r, 405, "method_not_allowed");
  CHECK(r->header("allow") == "POST");
  r = c.request("POST", "/health", "{}");
  check_error(r, 405);
  CHECK(r->header("allow") == "GET, HEAD");

  // 422: empty text, text over --max-text-bytes.
  check_error(c.request("POST", "/v1/predict", R"({"text": ""})"), 422, "empty_text");
  check_error(c.request("POST", "/v1/predict", R"({"chunks": ["", ""]})"), 422, "empty_text");
  check_error(c.request("POST", "/v1/predict", json{{"text", std::string(101, 'a')}}.dump()), 422, "text_too_long");
  r = c.request("POST", "/v1/predict", json{{"text", std::string(100, 'a')}}.dump());
  REQUIRE(r);
  CHECK(r->status == 200);  // exactly at the limit passes
  check_error(c.request("POST", "/v1/predict/batch", R"({"texts": ["a", ""]})"), 422);
  check_error(c.request("POST", "/v1/generate", R"({"prompt": ""})"), 422);

  // 413: too many batch items (connection stays open), then a declared body too large.
  check_error(c.request("POST", "/v1/predict/batch", R"({"texts": ["a","b","c","d","e"]})"), 413, "too_many_items");
  r = c.request("GET", "/health");
  REQUIRE(r);
  CHECK(r->status == 200);

  // 500: the predictor throws.
  check_error(c.request("POST", "/v1/predict", R"({"text": "boom"})"), 500, "internal_error");

  {
    Client big(ts.port());
    // Only the headers: the 413 must come without the body being sent.
    big.send("POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: 5000000\r\n\r\n");
    auto e = big.read();
    check_error(e, 413, "payload_too_large");
    CHECK(e->header("connection") == "close");
    CHECK(big.closed_by_peer());
  }
  {
    Client chunked(ts.port());
    std::string req = "POST /v1/predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 5; ++i) req += "400\r\n" + std::string(1024, 'x') + "\r\n";
    chunked.send(req);
    check_error(chunked.read(), 413);
  }
  {
    Client hdr(ts.port());
    hdr.send("GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(3000, 'h') + "\r\n\r\n");
    check_error(hdr.read(), 431, "headers_too_large");
    CHECK(hdr.closed_by_peer());
  }
  {
    Client bad(ts.port());
    bad.send("BLAH\r\n\r\n");
    check_error(bad.read(), 400);
    CHECK(bad.closed_by_peer());
  }
  {
    Client v2(ts.port());
    v2.send("GET /health HTTP/2.0\r\nHost: t\r\n\r\n");
    check_error(v2.read(), 505);
  }

  // 503: not ready.
  ts.pred.is_ready = false;
  check_error(c.request("GET", "/ready"), 503, "not_ready");
  check_error(c.request("GET", "/v1/model"), 503);
  check_error(c.request("POST", "/v1/predict", R"({"text": "a"})"), 503);
  r = c.request("GET", "/health");
  REQUIRE(r);
  CHECK(r->status == 200);  // liveness does not depend on the model
}

TEST_CASE("inputs the predictor refuses get 422 or 400, never 500 or a 200 with an error inside") {
  TestServer ts;
  Client c(ts.port());
  check_error(c.request("POST", "/v1/predict", R"({"text": "no-tokens"})"), 422, "empty_text");
  check_error(c.request("POST", "/predict", R"({"text": "bad-item"})"), 400, "bad_field");
  check_error(c.request("POST", "/v1/predict", R"({"chunks": ["no-", "tokens"]})"), 422, "empty_text");
  // A batch answers as a whole, naming the item at fault.
  auto r = c.request("POST", "/v1/predict/batch", R"({"texts": ["fine", "no-tokens", "bad-item"]})");
  check_error(r, 422, "empty_text");
  CHECK(json::parse(r->body)["error"]["message"].get<std::string>().rfind("texts[1]: ", 0) == 0);
  r = c.request("POST", "/batch-predict", R"({"texts": ["fine", "bad-item"]})");
  check_error(r, 400, "bad_field");
  CHECK(json::parse(r->body)["error"]["message"].get<std::string>().rfind("texts[1]: ", 0) == 0);
  // Generation: an InputError gets its kind's status; any other failure is a 500.
  check_error(c.request("POST", "/v1/generate", R"({"prompt": "no-cot", "cot": "auto"})"), 400, "bad_field");
  check_error(c.request("POST", "/v1/generate", R"({"prompt": "boom"})"), 500, "internal_error");
  // Ensembles larger than the shared limit: refused by the request checks (400).
  constexpr int kMax = inference::RequestLimits::kMaxMembers;
  check_error(c.request("POST", "/v1/predict", json{{"text", "a"}, {"permutations", kMax + 1}}.dump()), 400,
              "bad_field");
  check_error(c.request("POST", "/v1/predict", json{{"text", "a"}, {"mc_dropout", kMax + 1}}.dump()), 400,
              "bad_field");
  r = c.request("POST", "/v1/predict", json{{"text", "a"}, {"permutations", kMax}}.dump());
  REQUIRE(r);
  CHECK(r->status == 200);
  // The connection stays usable after every refusal, and the statuses are counted.
  auto m = c.request("GET", "/metrics");
  REQUIRE(m);
  bet::test::prom::ExpositionReport mc = bet::test::prom::check_exposition(m->body);
  CHECK(mc.samples["bet_http_requests_total{route=\"/v1/predict\",status=\"422\"}"] == 2);
  CHECK(mc.samples["bet_http_requests_total{route=\"/v1/generate\",status=\"400\"}"] == 1);
  CHECK(mc.samples["bet_http_requests_total{route=\"/v1/generate\",status=\"500\"}"] == 1);
}

TEST_CASE("API keys: 401 without or with a wrong key; open routes need none; 429 with Retry-After") {
  ServerConfig cfg;
  cfg.api_keys = {"secret-one", "secret-two"};
  cfg.rate_limit = 3;
  TestServer ts(cfg);
  Client c(ts.port());

  auto r = c.request("POST", "/v1/predict", R"({"text": "a"})");
  check_error(r, 401, "unauthorized");
  CHECK(r->header("www-authenticate") == "Bearer");
  check_error(c.request("POST", "/v1/predict", R"({"text": "a"})", "Authorization: Bearer secret-onE\r\n"), 401);
  check_error(c.request("POST", "/v1/predict", R"({"text": "a"})", "Authorization: Basic c2VjcmV0LW9uZQ==\r\n"), 401);
  // Regression: wrong keys were never rate-limited. Failed attempts take tokens from
  // the peer address's bucket (3/s, burst 3); once it is empty every /v1 request from
  // that address is 429 before its key is looked at, a right key included, so a
  // guesser learns nothing faster than the rate limit.
  r = c.request("GET", "/model-info");
  check_error(r, 429, "rate_limited");
  CHECK(std::atoi(r->header("retry-after").c_str()) >= 1);
  check_error(c.request("GET", "/v1/model", "", "Authorization: Bearer secret-one\r\n"), 429, "rate_limited");
  for (const char* open : {"/health", "/ready", "/metrics", "/openapi.json"}) {
    r = c.request("GET", open);
    REQUIRE(r);
    CHECK(r->status == 200);
  }
  // The bucket refills at the rate: a second later the address may try again.
  std::this_thread::sleep_for(1100ms);
  // Rate limit: 3/s per key with a burst of 3: the fourth immediate request is refused,
  // while the other key still has its own bucket.
  int ok = 0;
  std::optional<HttpResponse> limited;
  for (int i = 0; i < 4; ++i) {
    r = c.request("POST", "/v1/predict", R"({"text": "a"})", "Authorization: bearer secret-two\r\n");
    REQUIRE(r);
    if (r->status == 200) ++ok;
    else limited = r;
  }
  CHECK(ok == 3);
  check_error(limited, 429, "rate_limited");
  CHECK(std::atoi(limited->header("retry-after").c_str()) >= 1);
  r = c.request("GET", "/v1/model", "", "Authorization: Bearer secret-one\r\n");
  REQUIRE(r);
  CHECK(r->status == 200);
}

TEST_CASE("keep-alive, HTTP/1.0 and Connection: close") {
  TestServer ts;
  {
    Client c(ts.port());
    for (int i = 0; i < 5; ++i) {
      auto r = c.request("GET", "/health");
      REQUIRE(r);
      CHECK(r->status == 200);
      CHECK(r->header("connection").empty());
    }
  }
  {
    Client c(ts.port());
    c.send("GET /health HTTP/1.0\r\n\r\n");
    auto r = c.read();
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->header("connection") == "close");
    CHECK(c.closed_by_peer());
  }
  {
    Client c(ts.port());
    for (int i = 0; i < 3; ++i) {
      c.send("GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
      auto r = c.read();
      REQUIRE(r);
      CHECK(r->header("connection") == "keep-alive");
    }
  }
  {
    Client c(ts.port());
    auto r = c.request("GET", "/health", "", "Connection: close\r\n");
    REQUIRE(r);
    CHECK(r->header("connection") == "close");
    CHECK(c.closed_by_peer());
  }
  {
    // A half-closed client still gets the answers to what it sent.
    Client c(ts.port());
    c.send("GET /health HTTP/1.1\r\nHost: t\r\n\r\n" + post("/v1/predict", R"({"text": "xy"})"));
    ::shutdown(c.fd(), SHUT_WR);
    auto a = c.read();
    auto b = c.read();
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->status == 200);
    CHECK(json::parse(b->body)["label"] == "even");
    CHECK(c.closed_by_peer());
  }
}

TEST_CASE("pipelined requests are answered in order") {
  TestServer ts;
  Client c(ts.port());
  std::string batch = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n" + post("/v1/predict", R"({"text": "a"})") +
                      "GET /v1/model HTTP/1.1\r\nHost: t\r\n\r\n" + post("/v1/predict", R"({"text": "ab"})") +
                      post("/v1/predict/batch", R"({"texts": ["abc", "abcd"]})") + "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n" +
                      post("/v1/predict", R"({"text": "abcde"})");
  REQUIRE(c.send(batch));
  auto r1 = c.read(), r2 = c.read(), r3 = c.read(), r4 = c.read(), r5 = c.read(), r6 = c.read(), r7 = c.read();
  REQUIRE((r1 && r2 && r3 && r4 && r5 && r6 && r7));
  CHECK(json::parse(r1->body)["status"] == "ok");
  CHECK(json::parse(r2->body)["length"] == 1);
  CHECK(json::parse(r3->body)["version"] == "1.2.3");
  CHECK(json::parse(r4->body)["length"] == 2);
  CHECK(json::parse(r5->body)["predictions"][1]["length"] == 4);
  CHECK(r6->status == 404);
  CHECK(json::parse(r7->body)["length"] == 5);

  // A flood of pipelined requests written without reading: the server stops reading
  // while its output is backed up, and still answers every one.
  const int n = 3000;
  std::string many;
  for (int i = 0; i < n; ++i) many += "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
  std::thread writer([&] { c.send(many); });
  int got = 0;
  for (int i = 0; i < n; ++i) {
    auto r = c.read();
    if (!r || r->status != 200) break;
    ++got;
  }
  writer.join();
  CHECK(got == n);
}

TEST_CASE("keep-alive /health makes no allocation per request on the event loop") {
  TestServer ts;
  Client c(ts.port());
  const std::string req = "GET /health HTTP/1.1\r\nHost: t\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n";
  for (int i = 0; i < 50; ++i) REQUIRE(c.request("GET", "/health"));  // warm up buffers and metrics
  for (int i = 0; i < 50; ++i) {
    REQUIRE(c.send(req));
    REQUIRE(c.read());
  }
  g_counted_allocs = 0;
  g_counted_thread = ts.thread.get_id();
  for (int i = 0; i < 1000; ++i) {
    REQUIRE(c.send(req));
    auto r = c.read();
    REQUIRE(r);
    REQUIRE(r->status == 200);
  }
  uint64_t hot = g_counted_allocs.load();
  MESSAGE("event-loop allocations over 1000 /health requests: " << hot);
  CHECK(hot < 10);
  // The counter does see the loop's allocations: an error response builds its JSON.
  REQUIRE(c.request("GET", "/no-such-route"));
  g_counted_thread = std::thread::id();
  CHECK(g_counted_allocs.load() > hot);
}

TEST_CASE("request bodies are decoded off the event loop, in time linear in their size") {
  // Regression: a body holding one object with 65k small child objects took 27.6 s to
  // parse (nlohmann's callback parser rescans the parent after each child), on the
  // event-loop thread, and /health on another connection timed out meanwhile.
  TestServer ts;
  auto body_with = [](size_t objects) {
    std::string b = R"({"text": "abc", "x": [)";
    for (size_t i = 0; i < objects; ++i) b += i ? ",{}" : "{}";
    return b + "]}";
  };
  Client warm(ts.port());
  for (int i = 0; i < 5; ++i) REQUIRE(warm.request("POST", "/v1/predict", body_with(10)));

  // Counted, not timed: the event loop's allocations for a request do not grow with
  // the number of values in its body (decoding 20k values allocates at least 20k times).
  auto loop_allocs = [&](size_t objects) {
    const std::string b = body_with(objects);
    g_counted_allocs = 0;
    g_counted_thread = ts.thread.get_id();
    auto r = warm.request("POST", "/v1/predict", b);
    g_counted_thread = std::thread::id();
    REQUIRE(r);
    CHECK(r->status == 200);
    return g_counted_allocs.load();
  };
  const uint64_t small = loop_allocs(10), large = loop_allocs(20000);
  MESSAGE("event-loop allocations: " << small << " for 10 values, " << large << " for 20000");
  CHECK(large < small + 200);

  // The attack itself: 65k empty objects while another connection asks for /health.
  Client attacker(ts.port());
  const std::string bomb = body_with(65000);
  REQUIRE(attacker.send(HttpClient::format_request("POST", "/v1/predict", bomb)));
  Client probe(ts.port());
  auto h = probe.request("GET", "/health");  // the client gives up after 10 s
  REQUIRE(h);
  CHECK(h->status == 200);
  auto r = attacker.read();
  REQUIRE(r);
  CHECK(r->status == 200);
}

TEST_CASE("bodies split into many small writes, chunked bodies and Expect: 100-continue") {
  TestServer ts;
  Client c(ts.port());
  std::string text(300, 'z');
  std::string body = json{{"text", text}}.dump();
  REQUIRE(c.send_bytewise(post("/v1/predict", body)));
  auto r = c.read();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(json::parse(r->body)["length"] == 300);

  std::string chunked = "POST /v1/predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
  std::string b = R"({"text": "chunked body"})";
  chunked += "5;ext=\"x\"\r\n" + b.substr(0, 5) + "\r\n";
  chunked += "3\r\n" + b.substr(5, 3) + "\r\n";
  char hex[16];
  std::snprintf(hex, sizeof hex, "%zX", b.size() - 8);
  chunked += std::string(hex) + "\r\n" + b.substr(8) + "\r\n0\r\nX-Checksum: none\r\n\r\n";
  for (bool bytewise : {false, true}) {
    REQUIRE((bytewise ? c.send_bytewise(chunked) : c.send(chunked)));
    r = c.read();
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(json::parse(r->body)["length"] == 12);
  }

  c.send("POST /v1/predict HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n");
  char interim[64] = {};
  ssize_t n = ::recv(c.fd(), interim, sizeof interim - 1, 0);
  REQUIRE(n > 0);
  CHECK(std::string(interim).rfind("HTTP/1.1 100 Continue\r\n\r\n", 0) == 0);
  c.send(body);
  r = c.read();
  REQUIRE(r);
  CHECK(r->status == 200);
}

TEST_CASE("many concurrent clients, and requests arriving together share a batch") {
  ServerConfig cfg;
  cfg.max_batch = 8;
  cfg.max_wait = std::chrono::microseconds(50000);
  TestServer ts(cfg);
  const int clients = 72, per_client = 6;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      Client c(ts.port());
      if (!c.connected()) return;
      for (int i = 0; i < per_client; ++i) {
        std::string text(static_cast<size_t>(t + i + 1), 'q');
        auto r = i % 2 ? c.request("GET", "/health") : c.request("POST", "/v1/predict", json{{"text", text}}.dump());
        if (!r || r->status != 200) return;
        if (i % 2 == 0 && json::parse(r->body)["length"] != static_cast<int>(text.size())) return;
        ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(ok == clients * per_client);
  size_t biggest = ts.pred.max_batch_seen();
  CHECK(biggest > 1);
  CHECK(biggest <= 8);
}

TEST_CASE("a slow client gets 408 without stalling the others; idle keep-alive closes") {
  ServerConfig cfg;
  cfg.header_timeout = 300ms;
  cfg.idle_timeout = 600ms;
  TestServer ts(cfg);

  Client slow(ts.port());
  auto t0 = std::chrono::steady_clock::now();
  slow.send("GET /health HTTP/1.1\r\nHo");
  Client fast(ts.port());
  for (int i = 0; i < 20; ++i) {
    auto r = fast.request("GET", "/health");
    REQUIRE(r);
    CHECK(r->status == 200);
  }
  // Trickling bytes does not extend the header deadline.
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(50ms);
    slow.send("s");
  }
  auto r = slow.read();
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  check_error(r, 408, "request_timeout");
  CHECK(waited >= 0.25);
  CHECK(slow.closed_by_peer());

  // A body that stops arriving also ends with 408 (after the idle timeout).
  Client stalled(ts.port());
  stalled.send("POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n{\"te");
  check_error(stalled.read(), 408);

  // An idle keep-alive connection is closed without a response.
  Client idle(ts.port());
  auto ok = idle.request("GET", "/health");
  REQUIRE(ok);
  CHECK(idle.closed_by_peer());
  CHECK(idle.buffered().empty());
}

TEST_CASE("stop() drains in-flight requests, closes idle connections and stops accepting") {
  TestServer ts;
  ts.pred.delay_ms = 400;
  Client idle(ts.port());
  REQUIRE(idle.request("GET", "/health"));
  Client busy(ts.port());
  busy.send(post("/v1/predict", R"({"text": "slow"})"));
  REQUIRE(wait_until([&] { return ts.pred.predict_calls.load() > 0; }));
  ts.server->stop();
  auto r = busy.read();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(json::parse(r->body)["length"] == 4);
  CHECK(r->header("connection") == "close");
  CHECK(idle.closed_by_peer());
  REQUIRE(wait_until([&] { return ts.finished.load(); }));
  ts.thread.join();
  Client late(ts.port());
  CHECK(!late.connected());
}

TEST_CASE("reload hook and signals") {
  TestServer ts;
  ts.server->request_reload();
  REQUIRE(wait_until([&] { return ts.pred.reloads.load() == 1; }));
  Client c(ts.port());
  auto has_reload_metric = [&](const std::string& line) {
    auto m = c.request("GET", "/metrics");
    return m && m->body.find(line) != std::string::npos;
  };
  CHECK(wait_until([&] { return has_reload_metric("bet_model_reloads_total{result=\"success\"} 1\n"); }));

  ts.pred.reload_result = false;
  install_signal_handlers(*ts.server);
  ::raise(SIGHUP);
  REQUIRE(wait_until([&] { return ts.pred.reloads.load() == 2; }));
  CHECK(wait_until([&] { return has_reload_metric("bet_model_reloads_total{result=\"failure\"} 1\n"); }));
  auto r = c.request("GET", "/health");  // still serving
  REQUIRE(r);
  CHECK(r->status == 200);

  ::raise(SIGTERM);
  CHECK(wait_until([&] { return ts.finished.load(); }));
  ts.thread.join();
  signal(SIGTERM, SIG_DFL);
  signal(SIGHUP, SIG_DFL);
  signal(SIGINT, SIG_DFL);
}

using bet::test::find_in_path;

TEST_CASE("/metrics: well-formed exposition with the server's metrics (and promtool, if installed)") {
  TestServer ts;
  Client c(ts.port());
  for (int i = 0; i < 3; ++i) REQUIRE(c.request("GET", "/health"));
  REQUIRE(c.request("POST", "/v1/predict/batch", R"({"texts": ["a", "b"]})"));
  REQUIRE(c.request("GET", "/nope"));
  auto r = c.request("GET", "/metrics");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("content-type").rfind("text/plain; version=0.0.4", 0) == 0);
  bet::test::prom::ExpositionReport mc = bet::test::prom::check_exposition(r->body);
  for (const auto& p : mc.problems) FAIL_CHECK(p);
  CHECK(mc.samples["bet_http_requests_total{route=\"/health\",status=\"200\"}"] == 3);
  CHECK(mc.samples["bet_http_requests_total{route=\"other\",status=\"404\"}"] == 1);
  CHECK(mc.samples["bet_http_request_duration_seconds_count{route=\"/health\"}"] == 3);
  CHECK(mc.samples["bet_inference_batch_size_count{}"] == 1);
  CHECK(mc.samples["bet_inference_batch_size_sum{}"] == 2);
  CHECK(mc.samples.count("bet_inference_queue_depth{}"));
  CHECK(mc.samples["bet_model_info{version=\"1.2.3\",name=\"fake \\\"model\\\"\"}"] == 1);
  CHECK(mc.samples["bet_http_open_connections{}"] >= 1);

  if (auto promtool = find_in_path("promtool")) {
    std::string file = (std::filesystem::temp_directory_path() / ("bet_metrics_" + std::to_string(::getpid()))).string();
    std::ofstream(file) << r->body;
    int rc = std::system((*promtool + " check metrics < " + file + " > " + file + ".out 2>&1").c_str());
    std::ifstream out(file + ".out");
    std::string report((std::istreambuf_iterator<char>(out)), std::istreambuf_iterator<char>());
    CAPTURE(report);
    CHECK(rc == 0);
    std::filesystem::remove(file);
    std::filesystem::remove(file + ".out");
  } else if (std::getenv("CI")) {
    FAIL("promtool not installed (Debian package prometheus; tools/setup installs it): required in CI");
  } else {
    MESSAGE("promtool not installed (Debian package prometheus): skipping `promtool check metrics` (required in CI)");
  }
}

TEST_CASE("/openapi.json: OpenAPI 3.0 with every route") {
  TestServer ts;
  Client c(ts.port());
  auto r = c.request("GET", "/openapi.json");
  REQUIRE(r);
  CHECK(r->status == 200);
  json doc = json::parse(r->body, nullptr, false);
  REQUIRE(doc.is_object());
  CHECK(doc["openapi"].get<std::string>().rfind("3.0.", 0) == 0);
  CHECK(doc["info"]["title"].is_string());
  CHECK(doc["info"]["version"].is_string());
  for (const Route& route : routes()) {
    std::string method = route.method == "GET" ? "get" : "post";
    CAPTURE(route.path);
    REQUIRE(doc["paths"].contains(std::string(route.path)));
    CHECK(doc["paths"][std::string(route.path)].contains(method));
    CHECK(doc["paths"][std::string(route.path)][method]["responses"].contains("200"));
  }
  CHECK(doc["paths"].size() == routes().size());
  // Every $ref points at a schema that exists.
  std::vector<const json*> stack = {&doc};
  int refs = 0;
  while (!stack.empty()) {
    const json* j = stack.back();
    stack.pop_back();
    if (j->is_object()) {
      for (auto it = j->begin(); it != j->end(); ++it) {
        if (it.key() == "$ref") {
          ++refs;
          std::string ref = it.value().get<std::string>();
          REQUIRE(ref.rfind("#/", 0) == 0);
          CHECK(doc.contains(json::json_pointer(ref.substr(1))));
        } else {
          stack.push_back(&it.value());
        }
      }
    } else if (j->is_array()) {
      for (const auto& v : *j) stack.push_back(&v);
    }
  }
  CHECK(refs > 10);
}

