// The pieces of the HTTP server on their own: the Prometheus writer and the exposition
// checker, request-body validation, API keys and rate limits, the batching queue and
// the OpenAPI document. The server end to end is in test_server.cpp.
#include <doctest/doctest.h>

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/server/api.h"
#include "runtime/server/auth.h"
#include "runtime/server/batch_queue.h"
#include "runtime/server/openapi.h"
#include "runtime/server/prometheus.h"
#include "runtime/server/router.h"
#include "runtime/server/server.h"
#include "tests/prometheus_check.h"

using namespace bet::server;
using bet::inference::GenerateRequest;
using bet::inference::PredictOutcome;
using bet::inference::PredictRequest;
using bet::inference::Predictor;
namespace inference = bet::inference;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Records batch sizes; labels by text length.
class FakePredictor : public Predictor {
 public:
  std::atomic<int> delay_ms{0};
  std::mutex mu;
  std::vector<size_t> batch_sizes;

  bool ready() override { return true; }
  json model_info() override { return json::object(); }
  std::vector<PredictOutcome> predict_batch(const std::vector<PredictRequest>& reqs) override {
    {
      std::lock_guard lock(mu);
      batch_sizes.push_back(reqs.size());
    }
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms.load()));
    std::vector<PredictOutcome> out;
    for (const PredictRequest& r : reqs) {
      if (r.text == "boom") throw std::runtime_error("exploded");
      out.push_back({json{{"length", r.text.size()}}, std::nullopt});
    }
    return out;
  }
};

}  // namespace

TEST_CASE("prometheus writer: escaping, types, cumulative buckets") {
  prom::Registry reg;
  reg.counter("x_requests_total", "Requests with \\ and\nnewline.", {{"path", "a\"b\\c\nd"}}).inc(2);
  reg.gauge("x_temperature", "A gauge.").set(-1.5);
  auto& h = reg.histogram("x_latency_seconds", "Latency.", {0.1, 0.5, 1});
  for (double v : {0.05, 0.1, 0.3, 0.7, 5.0}) h.observe(v);
  std::string text = reg.text();
  CHECK(text.find("# HELP x_requests_total Requests with \\\\ and\\nnewline.\n") != std::string::npos);
  CHECK(text.find("x_requests_total{path=\"a\\\"b\\\\c\\nd\"} 2\n") != std::string::npos);
  CHECK(text.find("# TYPE x_temperature gauge\nx_temperature -1.5\n") != std::string::npos);
  // 0.1 lands in le="0.1" (upper bounds are inclusive).
  CHECK(text.find("x_latency_seconds_bucket{le=\"0.1\"} 2\n") != std::string::npos);
  CHECK(text.find("x_latency_seconds_bucket{le=\"0.5\"} 3\n") != std::string::npos);
  CHECK(text.find("x_latency_seconds_bucket{le=\"1\"} 4\n") != std::string::npos);
  CHECK(text.find("x_latency_seconds_bucket{le=\"+Inf\"} 5\n") != std::string::npos);
  CHECK(text.find("x_latency_seconds_count 5\n") != std::string::npos);
  CHECK(bet::test::prom::check_exposition(text).problems.empty());

  CHECK_THROWS(reg.gauge("x_requests_total", "same name, other type"));
  CHECK_THROWS(reg.counter("x_requests_total", "other labels", {{"other", "v"}}));
  CHECK_THROWS(reg.counter("bad name", "h"));
  CHECK_THROWS(reg.counter("ok_total", "h", {{"__reserved", "v"}}));
  CHECK_THROWS(reg.histogram("h_seconds", "h", {1.0}, {{"le", "v"}}));
  CHECK_THROWS(prom::Histogram({1.0, 1.0}));
  CHECK(&reg.counter("x_requests_total", "", {{"path", "a\"b\\c\nd"}}) ==
        &reg.counter("x_requests_total", "", {{"path", "a\"b\\c\nd"}}));

  std::string num;
  prom::append_number(num, 1.0 / 0.0);
  num += ' ';
  prom::append_number(num, 0.1);
  CHECK(num == "+Inf 0.1");
}

TEST_CASE("auth pieces: constant-time compare, bearer parsing, key file, token bucket") {
  CHECK(constant_time_equal("abc", "abc"));
  CHECK(!constant_time_equal("abd", "abc"));
  CHECK(!constant_time_equal("ab", "abc"));
  CHECK(!constant_time_equal("abcd", "abc"));
  CHECK(!constant_time_equal("", "abc"));
  CHECK(!constant_time_equal("", ""));

  CHECK(ApiKeys::bearer_token("Bearer k1") == std::optional<std::string_view>("k1"));
  CHECK(ApiKeys::bearer_token("bEaReR   k1") == std::optional<std::string_view>("k1"));
  CHECK(!ApiKeys::bearer_token("Bearer"));
  CHECK(!ApiKeys::bearer_token("Bearer "));
  CHECK(!ApiKeys::bearer_token("Bearerk1"));
  CHECK(!ApiKeys::bearer_token("Basic k1"));

  std::string path = (std::filesystem::temp_directory_path() / ("bet_keys_" + std::to_string(::getpid()))).string();
  std::ofstream(path) << "# comment\n\n  key-one  \r\nkey-two\n";
  ApiKeys keys = ApiKeys::load_file(path);
  CHECK(keys.keys() == std::vector<std::string>{"key-one", "key-two"});
  CHECK(keys.find("key-one") == std::optional<size_t>(0));
  CHECK(keys.find("key-two") == std::optional<size_t>(1));
  CHECK(!keys.find("key-three"));
  std::ofstream(path) << "bad key\n";
  CHECK_THROWS_WITH(ApiKeys::load_file(path), doctest::Contains(":1:"));
  std::filesystem::remove(path);
  CHECK_THROWS(ApiKeys::load_file(path));

  using C = TokenBucket::Clock;
  C::time_point t0{};
  TokenBucket b(2.0, 2.0, t0);
  int retry = 0;
  CHECK(b.take(t0, &retry));
  CHECK(b.take(t0, &retry));
  CHECK(!b.take(t0, &retry));
  CHECK(retry == 1);
  CHECK(b.take(t0 + 500ms, &retry));  // half a second refills one token at 2/s
  CHECK(!b.take(t0 + 500ms, &retry));
  TokenBucket slow(0.1, 1.0, t0);
  CHECK(slow.take(t0, &retry));
  CHECK(!slow.take(t0, &retry));
  CHECK(retry == 10);

  RateLimiter limiter(1.0, 4);
  for (int i = 0; i < 100; ++i) CHECK(limiter.allow("client" + std::to_string(i), C::now(), &retry));
}

TEST_CASE("rate limit flag: N/s, N/m, N/h only; Retry-After stays in range; key files without keys refused") {
  std::string error;
  CHECK(parse_rate_limit("50/s", &error) == std::optional<double>(50.0));
  CHECK(parse_rate_limit("50/m", &error) == std::optional<double>(50.0 / 60));
  CHECK(parse_rate_limit("1.5/h", &error) == std::optional<double>(1.5 / 3600));
  CHECK(parse_rate_limit("1/h", &error) == std::optional<double>(1.0 / 3600));  // the slowest
  CHECK(parse_rate_limit("1000000/s", &error) == std::optional<double>(1e6));   // the fastest
  CHECK(parse_rate_limit("0.25/s", &error) == std::optional<double>(0.25));
  const std::vector<std::string> refused = {
      "50", "5abc", "5abc/s", "-5/s", "+5/s", "0/s", "0.0/m", "nan", "nan/s", "inf/s", "1e3/s", "1e-12/s", "0x10/s",
      "5/d", "5/S", "5/sec", "5/", "/s", "./s", "5./s", ".5/s", "1.2.3/s", " 5/s", "5/s ", "5 /s", "",
      "1000001/s",                           // over 1e6 per unit
      "0.5/h",                               // under one per hour
      "1" + std::string(400, '0') + "/s",    // beyond double's range
      "0." + std::string(400, '0') + "1/s",  // below it
  };
  for (const std::string& bad : refused) {
    CAPTURE(bad);
    error.clear();
    CHECK(!parse_rate_limit(bad, &error));
    // Names the value and the accepted forms.
    CHECK(error.find("'" + bad + "'") == 0);
    CHECK(error.find("expected N/s, N/m or N/h") != std::string::npos);
  }
  CHECK(!parse_rate_limit("5abc", nullptr));

  // Retry-After is whole seconds in [1, kMaxRetryAfterS] for any rate, with no
  // out-of-range double-to-int conversion on the way (UBSan would flag one).
  using C = TokenBucket::Clock;
  C::time_point t0{};
  for (double rate : {1e-300, 1e-12, 1.0 / 3600, 1.0 / 7200, 0.0, 1e6}) {
    CAPTURE(rate);
    TokenBucket b(rate, 1.0, t0);
    int retry = -1;
    CHECK(b.take(t0, &retry));
    CHECK(!b.take(t0, &retry));
    CHECK(retry >= 1);
    CHECK(retry <= kMaxRetryAfterS);
    if (rate < 1.0 / 3600) CHECK(retry == kMaxRetryAfterS);
  }
  TokenBucket hourly(1.0 / 3600, 1.0, t0);
  int retry = 0;
  CHECK(hourly.take(t0, &retry));
  CHECK(!hourly.take(t0 + 1800s, &retry));
  CHECK(retry == 1800);

  // A directory or a file of comments only would leave the /v1 routes open: refused.
  const auto dir = std::filesystem::temp_directory_path() / ("bet_keys_dir_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  CHECK_THROWS_WITH(ApiKeys::load_file(dir.string()), (dir.string() + ": is a directory").c_str());
  const std::string comments = (dir / "keys.txt").string();
  std::ofstream(comments) << "# no keys yet\n\n   \n";
  CHECK_THROWS_WITH(ApiKeys::load_file(comments), doctest::Contains("no API keys"));
  std::ofstream(comments) << "";
  CHECK_THROWS_WITH(ApiKeys::load_file(comments), doctest::Contains("no API keys"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("batch queue: groups jobs up to max_batch, splits oversized jobs, drains on stop") {
  FakePredictor pred;
  pred.delay_ms = 20;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<InferenceJob>> done;
  BatchQueueOptions opt;
  opt.max_batch = 4;
  opt.max_wait = std::chrono::microseconds(100000);
  opt.max_queue_items = 100;
  auto queue = std::make_unique<BatchQueue>(pred, opt, [&](std::unique_ptr<InferenceJob> j) {
    std::lock_guard lock(mu);
    done.push_back(std::move(j));
    cv.notify_all();
  });
  auto make = [](std::vector<std::string> texts, int tag) {
    auto j = std::make_unique<InferenceJob>();
    j->kind = texts.size() == 1 ? InferenceJob::Kind::kPredict : InferenceJob::Kind::kBatch;
    for (auto& t : texts) {
      j->items.emplace_back();
      j->items.back().text = t;
    }
    j->owner_generation = static_cast<uint64_t>(tag);
    return j;
  };
  for (int i = 0; i < 6; ++i) CHECK(queue->submit(make({std::string(static_cast<size_t>(i + 1), 'a')}, i)) == nullptr);
  CHECK(queue->submit(make(std::vector<std::string>(10, "abc"), 100)) == nullptr);
  // Over the queue limit: handed back.
  CHECK(queue->submit(make(std::vector<std::string>(95, "x"), 200)) != nullptr);
  queue->stop();  // runs everything already queued
  CHECK(queue->submit(make({"late"}, 300)) != nullptr);
  REQUIRE(done.size() == 7);
  for (auto& j : done) {
    CHECK(!j->error);
    REQUIRE(j->results.size() == j->items.size());
    if (j->owner_generation < 100) CHECK(j->results[0].answer["length"] == j->owner_generation + 1);
  }
  std::lock_guard lock(pred.mu);
  size_t total = 0;
  for (size_t b : pred.batch_sizes) {
    CHECK(b <= 4);
    total += b;
  }
  CHECK(total == 16);
  CHECK(pred.batch_sizes.front() == 4);  // the first six arrived together
}

TEST_CASE("exposition checker catches what promtool would reject") {
  auto problems = [](const std::string& text) { return bet::test::prom::check_exposition(text).problems.size(); };
  const std::string good =
      "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n"
      "# HELP h_seconds H.\n# TYPE h_seconds histogram\n"
      "h_seconds_bucket{le=\"0.1\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\nh_seconds_sum 0.3\nh_seconds_count 2\n";
  CHECK(problems(good) == 0);
  CHECK(problems("a_total 3\n") > 0);                                            // no TYPE
  CHECK(problems("# TYPE a gauge\na{x=\"1} 3\n") > 0);                            // unterminated label
  CHECK(problems("# TYPE a gauge\na{x=\"\\q\"} 3\n") > 0);                      // bad escape
  CHECK(problems("# TYPE a gauge\na 3x\n") > 0);                                  // bad value
  CHECK(problems("# TYPE a gauge\n# TYPE a gauge\na 1\n") > 0);                   // TYPE twice
  CHECK(problems("# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x=\"2\"} 1\n") > 0);  // not contiguous
  CHECK(problems("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n") > 0);
  CHECK(problems("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n") > 0);  // no +Inf
  CHECK(problems("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n") > 0);  // count differs
  CHECK(problems("# TYPE a gauge\na 1") > 0);                                       // no final newline
}

TEST_CASE("request bodies: decoding, the shared checks, and every refusal's status") {
  ApiLimits lim;
  lim.request.max_text_bytes = 10;
  lim.request.max_batch_items = 3;
  lim.request.default_mc_dropout = 5;
  ApiError err;

  PredictRequest p;
  REQUIRE(parse_predict(R"({"text": "hello"})", lim, &p, &err));
  CHECK(p.text == "hello");
  CHECK(p.mc_dropout == 5);  // --default-mc-dropout
  CHECK(!p.permutations);
  CHECK(!p.temperature);
  CHECK(p.return_uncertainty);
  REQUIRE(parse_predict(R"({"chunks": ["a", "b"], "permutations": 64, "temperature": null})", lim, &p, &err));
  CHECK(p.chunks == std::vector<std::string>{"a", "b"});
  CHECK(*p.permutations == 64);
  CHECK(!p.temperature);  // null counts as absent

  // What the body decoder refuses itself (shape, types, text sizes while parsing), and
  // what inference::check_predict refuses; each with the status of product.md.
  struct Bad {
    std::string body;
    int status;
    std::string code;
  };
  auto status_of = [&](const std::string& body) -> std::pair<int, std::string> {
    if (!parse_predict(body, lim, &p, &err)) return {err.status, err.code};
    if (auto issue = inference::check_predict(p, lim.request)) {
      ApiError e = api_error(*issue);
      return {e.status, e.code};
    }
    return {200, ""};
  };
  for (const Bad& b : std::vector<Bad>{{R"({"text": "12345678901"})", 422, "text_too_long"},
                                       {R"({"chunks": ["123456", "78901"]})", 422, "text_too_long"},
                                       {R"({"text": ""})", 422, "empty_text"},
                                       {R"({"chunks": []})", 422, "empty_text"},
                                       {R"({"permutations": 2})", 400, "bad_request"},
                                       {R"({"text": "a", "permutations": 65})", 400, "bad_field"},
                                       {R"({"text": "a", "mc_dropout": 65})", 400, "bad_field"},
                                       {R"({"text": "a", "permutations": 18446744073709551615})", 400, "bad_field"},
                                       {R"({"text": "a", "permutations": -1})", 400, "bad_field"},
                                       {R"({"text": "a", "mc_dropout": true})", 400, "bad_request"},
                                       {R"({"text": "a", "temperature": 0})", 400, "bad_field"},
                                       {R"({"text": "a", "temperature": 1e-310})", 400, "bad_field"},
                                       {R"({"text": "a", "temperature": 1000})", 400, "bad_field"},
                                       {R"({"text": "a", "temperature": "1"})", 400, "bad_request"},
                                       {R"({"text": "a", "text": "b"})", 400, "bad_request"},
                                       {R"({"text": ["a"]})", 400, "bad_request"},
                                       {R"("text")", 400, "bad_request"}}) {
    CAPTURE(b.body);
    auto [status, code] = status_of(b.body);
    CHECK(status == b.status);
    CHECK(code == b.code);
  }
  CHECK(status_of(R"({"text": "a", "temperature": 0.01})").first == 200);
  CHECK(status_of(R"({"text": "a", "temperature": 100})").first == 200);

  std::vector<PredictRequest> batch;
  REQUIRE(parse_batch(R"({"texts": ["a", "bb", "ccc"], "temperature": 2})", lim, &batch, &err));
  REQUIRE(batch.size() == 3);
  CHECK(batch[2].text == "ccc");
  CHECK(*batch[1].temperature == 2.0);
  CHECK(!parse_batch(R"({"texts": ["a", "b", "c", "d"]})", lim, &batch, &err));
  CHECK(err.status == 413);
  CHECK(err.code == "too_many_items");

  GenerateRequest g;
  REQUIRE(parse_generate(R"({"prompt": "p", "max_tokens": 4, "top_k": 3, "top_p": 0.5, "seed": 9})", lim, &g, &err));
  CHECK(*g.max_tokens == 4);
  CHECK(*g.top_k == 3);
  CHECK(*g.top_p == 0.5);
  CHECK(*g.seed == 9u);
  REQUIRE(parse_generate(R"({"prompt": "p", "cot": "auto", "temperature": 0})", lim, &g, &err));
  CHECK(g.cot_auto);
  CHECK(!inference::check_generate(g, lim.request));
  CHECK(!parse_generate(R"({"prompt": "p", "cot": "always"})", lim, &g, &err));
  CHECK(!parse_generate(R"({"max_tokens": 3})", lim, &g, &err));
  REQUIRE(parse_generate(R"({"prompt": "p", "top_p": 1.5})", lim, &g, &err));
  CHECK(inference::check_generate(g, lim.request));
  REQUIRE(parse_generate(R"({"prompt": "p", "temperature": 1e-310})", lim, &g, &err));
  CHECK(inference::check_generate(g, lim.request));

  // Malformed, too deep, too many values.
  CHECK(!parse_json_body("{\"text\": ", lim, false, &err));
  CHECK(!parse_json_body("{\"text\": \"\xff\"}", lim, false, &err));  // invalid UTF-8
  CHECK(!parse_json_body(std::string(65, '[') + std::string(65, ']'), lim, false, &err));
  CHECK(parse_json_body(std::string(64, '[') + std::string(64, ']'), lim, false, &err));
  CHECK(parse_json_body("[\"[[[[[[\"]", lim, false, &err));  // brackets inside strings do not count
  std::string wide = "[";
  for (int i = 0; i < 70000; ++i) wide += "0,";
  wide += "0]";
  CHECK(!parse_json_body(wide, lim, false, &err));
  CHECK(err.message.find("values") != std::string::npos);
}

TEST_CASE("batch limits: one limit, one status (413), whatever the body's size") {
  // Regression: with --max-batch-items above 4096 a batch of 65,535 texts was refused
  // with 400 by the JSON value cap, and 5000 texts got 503 or 200 depending on the queue.
  ApiLimits lim;
  lim.request.max_batch_items = 4096;
  ApiError err;
  std::vector<PredictRequest> batch;
  for (size_t n : {size_t(4097), size_t(5000), size_t(65535), size_t(200000)}) {
    CAPTURE(n);
    std::string body = "{\"texts\": [";
    for (size_t i = 0; i < n; ++i) body += i ? ",\"a\"" : "\"a\"";
    body += "]}";
    CHECK(!parse_batch(body, lim, &batch, &err));
    CHECK(err.status == 413);
    CHECK(err.code == "too_many_items");
  }
  std::string full = "{\"texts\": [";
  for (size_t i = 0; i < 4096; ++i) full += i ? ",\"a\"" : "\"a\"";
  full += "], \"permutations\": 2}";
  REQUIRE(parse_batch(full, lim, &batch, &err));
  CHECK(batch.size() == 4096);

  // A server cannot be configured with an item limit its queue would refuse.
  FakePredictor pred;
  ServerConfig cfg;
  cfg.max_queue_items = 100;
  cfg.max_batch_items = 101;
  CHECK_THROWS_AS(HttpServer(cfg, pred), std::invalid_argument);
  cfg.max_batch_items = 100;
  CHECK_NOTHROW(HttpServer(cfg, pred));
}

TEST_CASE("a JSON body with many small objects parses in linear time (no quadratic rescans)") {
  // Regression: 65k empty objects under one key took 27 s with nlohmann's callback
  // parser, which rescans the parent object after each child. Counted, not timed: the
  // same document at 8x the size must still parse, and the parser must refuse it by
  // value count (not hang) once it passes the cap.
  ApiLimits lim;
  ApiError err;
  auto objects = [](size_t n) {
    std::string s = "{\"x\": [";
    for (size_t i = 0; i < n; ++i) s += i ? ",{}" : "{}";
    return s + "]}";
  };
  CHECK(parse_json_body(objects(60000), lim, false, &err));
  lim.max_json_values = 1u << 20;
  auto big = parse_json_body(objects(500000), lim, false, &err);
  REQUIRE(big);
  CHECK((*big)["x"].size() == 500000);
  lim.max_json_values = 65536;
  CHECK(!parse_json_body(objects(500000), lim, false, &err));
  CHECK(err.status == 400);
}

TEST_CASE("OpenAPI document: 3.0, every route, limits filled in") {
  OpenApiOptions opt;
  opt.version = "9.9.9";
  opt.max_batch_items = 17;
  opt.api_keys = true;
  json doc = openapi_document(opt);
  CHECK(doc["openapi"] == "3.0.3");
  CHECK(doc["info"]["version"] == "9.9.9");
  CHECK(doc["components"]["schemas"]["BatchPredictRequest"]["allOf"][1]["properties"]["texts"]["maxItems"] == 17);
  for (const Route& r : routes()) {
    std::string method = r.method == "GET" ? "get" : "post";
    const json& op = doc["paths"][std::string(r.path)][method];
    CAPTURE(r.path);
    CHECK(op.contains("operationId"));
    CHECK(op["responses"].contains("200"));
    CHECK(op.contains("security") == r.needs_key);
  }
  CHECK(!openapi_document(OpenApiOptions{})["paths"]["/v1/predict"]["post"].contains("security"));
  // The documented ensemble bound is the one the API enforces.
  const json plain = openapi_document(OpenApiOptions{});
  const json& options = plain["components"]["schemas"]["PredictOptions"]["properties"];
  CHECK(options["permutations"]["maximum"] == inference::RequestLimits::kMaxMembers);
  CHECK(options["mc_dropout"]["maximum"] == inference::RequestLimits::kMaxMembers);
}
