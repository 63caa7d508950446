// The server with real models behind it (small, randomly initialised checkpoints served
// by ModelPredictor on 127.0.0.1), where test_server.cpp uses a fake predictor:
//   - every error class of product.md answers with its status, including the refusals
//     that come from the model itself (generate on a classifier, cot auto without bet
//     layers), never a 500;
//   - GET /openapi.json is a valid OpenAPI 3.0 document according to a real validator
//     (@apidevtools/swagger-parser via tests/openapi_check.js; tools/setup installs it
//     into build-tools/node), and real responses of every route conform to its schemas
//     with every returned field declared. In CI (env CI set) a missing validator fails
//     the test; elsewhere it is skipped with a message;
//   - the server's predictions equal what `betctl predict` prints for the same model,
//     inputs and ensemble options (argv[1] is the betctl binary, from tests/meson.build).
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/http_client.h"
#include "bet_config.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "platform/threads.h"
#include "model/bet_model.h"
#include "runtime/checkpoint/bet_format.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/inference/predictor.h"
#include "runtime/inference/uncertainty_signal.h"
#include "runtime/server/api.h"
#include "runtime/server/server.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/betctl_driver.h"


using namespace bet;
using namespace bet::server;
using bet::bench::HttpClient;
using bet::bench::HttpResponse;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

using bet::test::g_betctl;

const bet::test::ScratchDir g_scratch("bet_server_model");
fs::path scratch() { return g_scratch.path(); }

model::ModelConfig config(model::Task task, model::LayerKind layer) {
  model::ModelConfig c;
  c.task = task;
  c.layer = layer;
  c.pe = model::PosEncoding::Rope;
  c.vocab_size = 259;  // byte tokenizer
  c.d_model = 16;
  c.heads = 2;
  c.layers = 2;
  c.max_len = 24;
  c.k_permutations = 2;
  c.n_harmonics = 3;
  c.dropout = 0.1;  // so that mc_dropout members differ
  if (task == model::Task::Classify) {
    c.num_classes = 3;
    c.labels = {"neg", "neutral", "pos"};
  }
  return c;
}

// A freshly initialised model saved as a production checkpoint; the classifier head is
// scaled up so that its outputs depend visibly on the input.
std::string save_model(const model::ModelConfig& cfg, uint64_t seed, const std::string& name) {
  Generator g(seed);
  model::BetModel m(cfg, g);
  {
    autograd::NoGradGuard ng;
    if (m.head) m.head->weight.copy_(mul(m.head->weight, 8.0));
  }
  const std::string path = (scratch() / name).string();
  runtime::Checkpoint ck = runtime::make_checkpoint(m, nullptr, runtime::make_byte_tokenizer()->to_json(), "production");
  ck.card = {{"name", name}, {"version", "1.0.0"}};
  runtime::save_checkpoint(path, ck);
  return path;
}

const std::string& classifier_path() {
  static const std::string p = save_model(config(model::Task::Classify, model::LayerKind::Bet), 17, "clf.bet");
  return p;
}
const std::string& lm_path() {
  static const std::string p = save_model(config(model::Task::LM, model::LayerKind::Bet), 23, "lm.bet");
  return p;
}
const std::string& standard_lm_path() {
  static const std::string p = save_model(config(model::Task::LM, model::LayerKind::Standard), 29, "lm_std.bet");
  return p;
}

struct ModelServer {
  inference::ModelPredictor predictor;
  std::unique_ptr<HttpServer> server;
  std::thread thread;

  explicit ModelServer(const std::string& model, ServerConfig cfg = {}) : predictor(model) {
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.version = BET_VERSION;
    if (!cfg.log) cfg.log = [](std::string_view) {};
    server = std::make_unique<HttpServer>(cfg, predictor);
    server->bind();
    thread = std::thread([this] { server->run(); });
  }
  ~ModelServer() {
    server->stop();
    thread.join();
  }
  uint16_t port() const { return server->port(); }
};

json body_of(const std::optional<HttpResponse>& r) {
  REQUIRE(r.has_value());
  json j = json::parse(r->body, nullptr, false);
  REQUIRE(!j.is_discarded());
  return j;
}

void check_error(const std::optional<HttpResponse>& r, int status, const std::string& code = "") {
  REQUIRE(r.has_value());
  CAPTURE(r->body);
  CHECK(r->status == status);
  json j = body_of(r);
  REQUIRE(j.contains("error"));
  CHECK(j["error"]["code"].is_string());
  CHECK(!j["error"]["message"].get<std::string>().empty());
  if (!code.empty()) CHECK(j["error"]["code"] == code);
}

json ok_json(const std::optional<HttpResponse>& r) {
  REQUIRE(r.has_value());
  CAPTURE(r->body);
  REQUIRE(r->status == 200);
  return body_of(r);
}

// Runs argv with stdout to out_file (stderr to out_file + ".err"); returns the exit code.
int run(const std::vector<std::string>& args, const std::string& out_file) {
  return bet::test::run_process(args, out_file, out_file + ".err");
}

std::string write(const std::string& name, const std::string& text) {
  const std::string path = (scratch() / name).string();
  std::ofstream(path) << text;
  return path;
}

using bet::test::find_in_path;

// node and the validator's node_modules, or nullopt after failing (CI) or saying why
// the check is skipped (elsewhere).
struct Validator {
  std::string node, modules, script;
};
std::optional<Validator> find_validator() {
  Validator v;
  const char* env = std::getenv("BET_NODE_MODULES");
  v.modules = env && *env ? env : std::string(BET_SOURCE_DIR) + "/build-tools/node/node_modules";
  v.script = std::string(BET_SOURCE_DIR) + "/tests/openapi_check.js";
  auto node = find_in_path("node");
  std::string missing;
  if (!node) missing = "node is not installed";
  else if (!fs::exists(fs::path(v.modules) / "@apidevtools" / "swagger-parser" / "package.json"))
    missing = "@apidevtools/swagger-parser is not installed under " + v.modules;
  if (!missing.empty()) {
    if (std::getenv("CI")) FAIL("OpenAPI validator missing: " << missing << " (tools/setup installs it); required in CI");
    MESSAGE("SKIPPED the OpenAPI validator check: " << missing << " (run tools/setup; required in CI)");
    return std::nullopt;
  }
  v.node = *node;
  return v;
}

// Runs the validator; returns (exit code, its output).
std::pair<int, std::string> validate(const Validator& v, const std::string& doc,
                                     const std::vector<std::pair<std::string, json>>& samples) {
  std::vector<std::string> args = {v.node, v.script, v.modules, doc};
  int n = 0;
  for (const auto& [schema, body] : samples)
    args.push_back(schema + "=" + write("sample_" + std::to_string(n++) + ".json", body.dump()));
  const std::string out = (scratch() / "validator.out").string();
  int rc = run(args, out);
  return {rc, bet::test::read_text(out) + bet::test::read_text(out + ".err")};
}

// Largest difference between two JSON values of the same structure (relative above 1);
// infinity when the structures differ. Non-numbers compare exactly.
double json_diff(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) {
    const double x = a.get<double>(), y = b.get<double>();
    return std::fabs(x - y) / std::max({1.0, std::fabs(x), std::fabs(y)});
  }
  if (a.type() != b.type()) return INFINITY;
  if (a.is_object() || a.is_array()) {
    if (a.size() != b.size()) return INFINITY;
    double d = 0;
    if (a.is_object()) {
      for (auto it = a.begin(); it != a.end(); ++it) {
        if (!b.contains(it.key())) return INFINITY;
        d = std::max(d, json_diff(it.value(), b[it.key()]));
      }
    } else {
      for (size_t i = 0; i < a.size(); ++i) d = std::max(d, json_diff(a[i], b[i]));
    }
    return d;
  }
  return a == b ? 0.0 : INFINITY;
}

// Labelled texts for the classifier's labels, one JSONL line each.
std::string labelled_data(const std::string& name, int n) {
  std::string lines;
  const std::vector<std::string> labels = {"neg", "neutral", "pos"};
  for (int i = 0; i < n; ++i)
    lines += json{{"text", "example text number " + std::to_string(i * 7919 % 97)}, {"label", labels[size_t(i) % 3]}}
                 .dump() +
             "\n";
  return write(name, lines);
}

// The classifier after `betctl calibrate --uncertainty auto --signals 2` on 24 labelled
// texts: its checkpoint stores the chosen signal (metrics.calibration.uncertainty).
const std::string& calibrated_path() {
  static const std::string p = [] {
    REQUIRE_MESSAGE(!g_betctl.empty(), "pass the betctl binary as the first argument");
    const std::string out = (scratch() / "calibrated.bet").string();
    const int rc = run({g_betctl, "calibrate", "--model", classifier_path(), "--data", labelled_data("calib.jsonl", 24),
                        "--out", out, "--uncertainty", "auto", "--signals", "2", "--json"},
                       out + ".json");
    INFO(bet::test::read_text(out + ".json.err"));
    REQUIRE(rc == 0);
    return out;
  }();
  return p;
}

}  // namespace

TEST_CASE("a real model behind the server: every error class answers with the status of product.md") {
  ServerConfig cfg;
  cfg.max_text_bytes = 200;
  cfg.max_batch_items = 4;
  cfg.max_body_bytes = 8192;
  ModelServer clf(classifier_path(), cfg);
  HttpClient c("127.0.0.1", clf.port());
  REQUIRE(c.connected());

  // 200, and a text longer than the model's max length is truncated and says so.
  json r = ok_json(c.request("POST", "/v1/predict", R"({"text": "short"})"));
  CHECK(r["truncated"] == false);
  r = ok_json(c.request("POST", "/v1/predict", json{{"text", std::string(100, 'x')}}.dump()));
  CHECK(r["truncated"] == true);

  // 400: malformed JSON, wrong types (bad_request); out-of-range fields, refused by the
  // one request check the CLI shares (bad_field), never an error inside a 200.
  constexpr int kMaxMembers = inference::RequestLimits::kMaxMembers;
  for (std::string b : {std::string("{"), std::string(R"({"text": 5})"), std::string(R"({"chunks": "a"})"),
                        std::string(R"({"text": "a", "return_uncertainty": "x"})")}) {
    CAPTURE(b);
    check_error(c.request("POST", "/v1/predict", b), 400, "bad_request");
  }
  for (std::string b : {std::string(R"({"text": "a", "temperature": 0})"),
                        std::string(R"({"text": "a", "temperature": 1e-310})"),
                        json{{"text", "a"}, {"permutations", kMaxMembers + 1}}.dump(),
                        json{{"text", "a"}, {"mc_dropout", kMaxMembers + 1}}.dump()}) {
    CAPTURE(b);
    check_error(c.request("POST", "/v1/predict", b), 400, "bad_field");
  }
  check_error(c.request("POST", "/v1/predict/batch", R"({"texts": ["a", 1]})"), 400);
  // The model's largest ensemble is answered.
  r = ok_json(c.request("POST", "/v1/predict",
                        json{{"text", "a"}, {"permutations", kMaxMembers}, {"mc_dropout", 2}}.dump()));
  CHECK(r["uncertainty"]["members"] == kMaxMembers);

  // 422: empty text (also as chunks or a batch item), text over --max-text-bytes.
  check_error(c.request("POST", "/v1/predict", R"({"text": ""})"), 422, "empty_text");
  check_error(c.request("POST", "/predict", R"({"chunks": ["", ""]})"), 422, "empty_text");
  check_error(c.request("POST", "/v1/predict/batch", R"({"texts": ["a", ""]})"), 422, "empty_text");
  check_error(c.request("POST", "/v1/predict", json{{"text", std::string(201, 'a')}}.dump()), 422, "text_too_long");

  // 413: too many batch items; a body over --max-body.
  check_error(c.request("POST", "/batch-predict", R"({"texts": ["a", "b", "c", "d", "e"]})"), 413, "too_many_items");
  {
    HttpClient big("127.0.0.1", clf.port());
    big.send("POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: 9000\r\n\r\n");
    check_error(big.read(), 413, "payload_too_large");
  }

  // 400: generation asked of a classifier.
  check_error(c.request("POST", "/v1/generate", R"({"prompt": "hi", "max_tokens": 2})"), 400, "not_a_language_model");
  check_error(c.request("POST", "/v1/generate", R"({"prompt": ""})"), 400, "not_a_language_model");
  // 404, 405.
  check_error(c.request("GET", "/v2/predict"), 404, "not_found");
  check_error(c.request("GET", "/v1/predict/batch"), 405, "method_not_allowed");

  // A language model without bet layers has no optimal length: "cot": "auto" is an input
  // error of the model (an InputError from the worker thread), answered 400, not 500.
  ModelServer std_lm(standard_lm_path());
  HttpClient s("127.0.0.1", std_lm.port());
  check_error(s.request("POST", "/v1/generate", R"({"prompt": "once", "cot": "auto"})"), 400, "bad_field");
  check_error(s.request("POST", "/v1/generate", R"({"prompt": ""})"), 422, "empty_text");
  check_error(s.request("POST", "/v1/generate", R"({"prompt": "once", "temperature": 1e-310})"), 400, "bad_field");
  r = ok_json(s.request("POST", "/v1/generate", R"({"prompt": "once", "max_tokens": 3, "seed": 1})"));
  CHECK(r["tokens"].get<int>() <= 3);
  CHECK(r["cot_budget"].is_null());
  r = ok_json(s.request("POST", "/v1/predict", R"({"text": "once"})"));
  CHECK(r["cot_length"].is_null());  // no bet layers
  CHECK(!r["uncertainty"].contains("beta"));
  // The connection that saw the refusals still serves.
  CHECK(ok_json(c.request("GET", "/v1/model"))["version"] == "1.0.0");
}

TEST_CASE("/openapi.json passes an OpenAPI 3.0 validator, and real responses conform to it") {
  ModelServer clf(classifier_path());
  ModelServer lm(lm_path());
  ModelServer calibrated(calibrated_path());  // a stored uncertainty signal, with its measurement
  ModelServer overridden(classifier_path());  // as `serve --uncertainty mc_dropout:epistemic@2`
  REQUIRE(!overridden.predictor.override_uncertainty(inference::UncertaintySignal::parse("mc_dropout:epistemic@2")));
  HttpClient c("127.0.0.1", clf.port()), l("127.0.0.1", lm.port()), cal("127.0.0.1", calibrated.port()),
      o("127.0.0.1", overridden.port());
  auto doc = c.request("GET", "/openapi.json");
  REQUIRE(doc);
  REQUIRE(doc->status == 200);
  const std::string doc_path = write("openapi.json", doc->body);

  // One response of each shape the server returns.
  std::vector<std::pair<std::string, json>> samples = {
      {"PredictResponse", ok_json(c.request("POST", "/v1/predict", R"({"text": "plain"})"))},
      {"PredictResponse", ok_json(c.request("POST", "/v1/predict", R"({"text": "ordered", "permutations": 3})"))},
      {"PredictResponse", ok_json(c.request("POST", "/predict", R"({"chunks": ["a b", "c"], "mc_dropout": 2})"))},
      {"PredictResponse", ok_json(c.request("POST", "/v1/predict", R"({"text": "x", "return_uncertainty": false})"))},
      {"PredictResponse", ok_json(c.request("POST", "/v1/predict", json{{"text", std::string(80, 'y')}}.dump()))},
      {"PredictResponse", ok_json(l.request("POST", "/v1/predict", R"({"text": "next", "permutations": 2})"))},
      {"BatchPredictResponse", ok_json(c.request("POST", "/v1/predict/batch", R"({"texts": ["a", "bb"], "permutations": 2})"))},
      {"BatchPredictResponse", ok_json(l.request("POST", "/batch-predict", R"({"texts": ["a"]})"))},
      {"ModelInfo", ok_json(c.request("GET", "/v1/model"))},
      {"ModelInfo", ok_json(l.request("GET", "/model-info"))},
      {"ModelInfo", ok_json(cal.request("GET", "/v1/model"))},
      {"PredictResponse", ok_json(cal.request("POST", "/v1/predict", R"({"text": "signal"})"))},
      {"PredictResponse", ok_json(o.request("POST", "/v1/predict", R"({"text": "no score", "mc_dropout": 0})"))},
      {"ModelInfo", ok_json(o.request("GET", "/v1/model"))},
      {"GenerateResponse", ok_json(l.request("POST", "/v1/generate", R"({"prompt": "go", "max_tokens": 3, "seed": 2})"))},
      {"GenerateResponse", ok_json(l.request("POST", "/v1/generate", R"({"prompt": "go", "cot": "auto", "top_p": 0.9})"))},
      {"Status", ok_json(c.request("GET", "/health"))},
      {"Status", ok_json(c.request("GET", "/ready"))},
  };
  for (auto [path, body, status] : std::vector<std::tuple<std::string, std::string, int>>{
           {"/v1/predict", "{", 400}, {"/v1/predict", R"({"text": ""})", 422}, {"/nope", "", 404}}) {
    auto e = c.request(path == "/nope" ? "GET" : "POST", path, body);
    REQUIRE(e);
    CHECK(e->status == status);
    samples.emplace_back("Error", body_of(e));
  }
  // Sanity of the samples themselves: the fields the tests below rely on vary.
  CHECK(samples[0].second["uncertainty"]["order_dispersion"].is_null());
  CHECK(samples[1].second["uncertainty"]["order_dispersion"].is_number());
  CHECK(samples[0].second["cot_length"].is_number_float());
  CHECK(samples[15].second["cot_budget"].is_number_integer());
  CHECK(samples[0].second["uncertainty"]["score"].is_number());
  CHECK(samples[10].second["uncertainty"]["source"] == "calibration");
  CHECK(samples[10].second["uncertainty"].contains("aurc"));
  CHECK(samples[12].second["uncertainty"]["score"].is_null());
  CHECK(samples[13].second["uncertainty"]["source"] == "command line");

  auto v = find_validator();
  if (!v) return;
  auto [rc, out] = validate(*v, doc_path, samples);
  INFO(out);
  CHECK(rc == 0);
  if (rc == 0) MESSAGE(out);

  // The check has teeth: a wrong type, a missing required field, an undeclared field
  // and an invalid document are each caught.
  json wrong_type = samples[0].second;
  wrong_type["cot_length"] = "long";
  json missing = samples[6].second;
  missing.erase("latency_ms");
  json undeclared = samples[14].second;
  undeclared["surprise"] = 1;
  for (const auto& [schema, body] : std::vector<std::pair<std::string, json>>{
           {"PredictResponse", wrong_type}, {"BatchPredictResponse", missing}, {"GenerateResponse", undeclared}}) {
    auto [bad_rc, bad_out] = validate(*v, doc_path, {{schema, body}});
    CAPTURE(bad_out);
    CHECK(bad_rc == 1);
  }
  json broken = json::parse(doc->body);
  broken["components"]["schemas"]["Prediction"]["properties"]["confidence"]["type"] = "float";
  auto [broken_rc, broken_out] = validate(*v, write("broken.json", broken.dump()), {});
  CAPTURE(broken_out);
  CHECK(broken_rc == 1);
  CHECK(broken_out.find("not a valid OpenAPI document") != std::string::npos);
}

TEST_CASE("the server's predictions equal `betctl predict`'s for the same model, inputs and options") {
  REQUIRE_MESSAGE(!g_betctl.empty(), "pass the betctl binary as the first argument");
  // Plain lines, JSONL texts and chunked documents, one over the max length.
  const std::vector<json> inputs = {
      {{"text", "the first text"}},
      {{"text", "another, longer piece of writing"}},
      {{"chunks", {"one chunk ", "then another ", "and a third"}}},
      {{"text", std::string(60, 'q') + " past the model's max length"}},
      {{"text", "z"}},
  };
  std::string file;
  for (size_t i = 0; i < inputs.size(); ++i)
    file += (i == 0 ? inputs[i]["text"].get<std::string>() : inputs[i].dump()) + "\n";  // line 1 as plain text
  const std::string input_path = write("inputs.txt", file);
  const int threads = platform::num_threads();

  struct Options {
    int permutations, mc_dropout;
    double temperature;  // 0: the model's
  };
  ModelServer srv(classifier_path());
  HttpClient c("127.0.0.1", srv.port());
  for (const Options& o : {Options{1, 0, 0}, Options{4, 0, 0}, Options{3, 2, 0.7}, Options{1, 3, 0}}) {
    CAPTURE(o.permutations);
    CAPTURE(o.mc_dropout);
    std::vector<std::string> args = {g_betctl, "predict", "--model", classifier_path(), "--input", input_path,
                                     "--permutations", std::to_string(o.permutations), "--mc-dropout",
                                     std::to_string(o.mc_dropout), "--threads", std::to_string(threads)};
    if (o.temperature > 0) {
      args.push_back("--temperature");
      args.push_back(std::to_string(o.temperature));
    }
    const std::string out = (scratch() / "predict.jsonl").string();
    const int rc = run(args, out);
    INFO(bet::test::read_text(out + ".err"));
    REQUIRE(rc == 0);
    std::vector<json> cli;
    std::istringstream lines(bet::test::read_text(out));
    for (std::string line; std::getline(lines, line);) cli.push_back(json::parse(line));
    REQUIRE(cli.size() == inputs.size());

    json options = {{"permutations", o.permutations}, {"mc_dropout", o.mc_dropout}};
    if (o.temperature > 0) options["temperature"] = o.temperature;
    json texts = json::array();
    for (size_t i = 0; i < inputs.size(); ++i) {
      CAPTURE(i);
      json req = options;
      req.update(inputs[i]);
      json got = ok_json(c.request("POST", i % 2 ? "/predict" : "/v1/predict", req.dump()));
      CHECK(got["latency_ms"].is_number());
      got.erase("latency_ms");
      // One request alone runs the same computation as the command, on the same
      // number of threads: the same bytes.
      CHECK(got.dump() == cli[i].dump());
      if (inputs[i].contains("text")) texts.push_back(inputs[i]["text"]);
    }
    // A batch pads its members together; the answers agree to float rounding.
    json req = options;
    req["texts"] = texts;
    json batch = ok_json(c.request("POST", "/v1/predict/batch", req.dump()));
    REQUIRE(batch["predictions"].size() == texts.size());
    for (size_t i = 0, t = 0; i < inputs.size(); ++i) {
      if (!inputs[i].contains("text")) continue;
      CAPTURE(i);
      CHECK(json_diff(batch["predictions"][t++], cli[i]) < 1e-5);
    }
  }
}

TEST_CASE("`betctl predict`: --text more than once, and out-of-range options refused before any work") {
  REQUIRE_MESSAGE(!g_betctl.empty(), "pass the betctl binary as the first argument");
  const std::string out = (scratch() / "predict_texts.jsonl").string();
  // Two texts, one JSON line each, in order; a text that starts with '{' is a text.
  int rc = run({g_betctl, "predict", "--model", classifier_path(), "--text", "the first", "--text", "{not json"}, out);
  INFO(bet::test::read_text(out + ".err"));
  REQUIRE(rc == 0);
  std::vector<json> got;
  std::istringstream lines(bet::test::read_text(out));
  for (std::string line; std::getline(lines, line);) got.push_back(json::parse(line));
  REQUIRE(got.size() == 2);
  rc = run({g_betctl, "predict", "--model", classifier_path(), "--text", "{not json"}, out);
  REQUIRE(rc == 0);
  CHECK(json::parse(bet::test::read_text(out)).dump() == got[1].dump());

  // Regression: --temperature 1e-310 printed null probabilities. Now a usage error.
  for (const char* t : {"1e-310", "0.001", "101", "nan", "-1"}) {
    CAPTURE(t);
    rc = run({g_betctl, "predict", "--model", classifier_path(), "--text", "x", "--temperature", t}, out);
    CHECK(rc == 2);
    CHECK(bet::test::read_text(out + ".err").find("--temperature") != std::string::npos);
  }
  rc = run({g_betctl, "generate", "--model", lm_path(), "--prompt", "x", "--temperature", "1e-310"}, out);
  CHECK(rc == 2);
  // In range: the answer is finite.
  rc = run({g_betctl, "predict", "--model", classifier_path(), "--text", "x", "--temperature", "0.01"}, out);
  REQUIRE(rc == 0);
  const json low = json::parse(bet::test::read_text(out));
  for (const auto& [label, p] : low["probabilities"].items()) CHECK(std::isfinite(p.get<double>()));
  // A JSONL line is decoded as the server decodes a body, with the same messages.
  const std::string bad = write("bad_line.jsonl", "{\"text\": \"a\", \"permutations\": 2.5}\n");
  rc = run({g_betctl, "predict", "--model", classifier_path(), "--input", bad}, out);
  CHECK(rc == 1);
  CHECK(bet::test::read_text(out + ".err").find("bad_line.jsonl:1: field 'permutations' must be an integer") != std::string::npos);
}

TEST_CASE("SIGHUP with a checkpoint past the config bounds: the old model keeps serving, the log says why") {
  // Regression: a .bet with valid checksums and layers 1e9 killed a live server on
  // SIGHUP (std::bad_alloc, then an allocation while unwinding), and a failed reload
  // never logged its reason.
  const std::string path = save_model(config(model::Task::Classify, model::LayerKind::Bet), 37, "reload_me.bet");
  std::mutex mu;
  std::vector<std::string> log;
  ServerConfig cfg;
  cfg.log = [&](std::string_view line) {
    std::lock_guard lock(mu);
    log.emplace_back(line);
  };
  ModelServer srv(path, cfg);
  HttpClient c("127.0.0.1", srv.port());
  const json before = ok_json(c.request("POST", "/v1/predict", R"({"text": "reload"})"));

  runtime::Checkpoint ck = runtime::load_checkpoint(path);
  json header = runtime::checkpoint_header(ck);
  header["config"]["layers"] = int64_t(1000000000);
  runtime::write_bet_file(path, header, runtime::checkpoint_tensors(ck));
  srv.server->request_reload();
  std::string reason;
  for (int i = 0; i < 500 && reason.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::lock_guard lock(mu);
    for (const auto& l : log)
      if (l.find("reload failed") != std::string::npos) reason = l;
  }
  CAPTURE(reason);
  CHECK(reason.find(path) != std::string::npos);
  CHECK(reason.find("config.layers") != std::string::npos);
  json after = ok_json(c.request("POST", "/v1/predict", R"({"text": "reload"})"));
  after.erase("latency_ms");
  json expected = before;
  expected.erase("latency_ms");
  CHECK(after.dump() == expected.dump());
  auto m = c.request("GET", "/metrics");
  REQUIRE(m);
  CHECK(m->body.find("bet_model_reloads_total{result=\"failure\"} 1") != std::string::npos);
}

TEST_CASE("`betctl eval`: uncertainty signals ranked (--signals), and a deep ensemble of several models") {
  REQUIRE_MESSAGE(!g_betctl.empty(), "pass the betctl binary as the first argument");
  std::string lines;
  const std::vector<std::string> labels = {"neg", "neutral", "pos"};
  for (int i = 0; i < 24; ++i)
    lines += json{{"text", "example text number " + std::to_string(i * 7919 % 97)}, {"label", labels[size_t(i) % 3]}}
                 .dump() +
             "\n";
  const std::string data = write("eval.jsonl", lines);
  const std::string other = save_model(config(model::Task::Classify, model::LayerKind::Standard), 41, "clf_b.bet");
  const std::string out = (scratch() / "eval.json").string();

  int rc = run({g_betctl, "eval", "--model", classifier_path(), "--data", data, "--signals", "3", "--json"}, out);
  INFO(bet::test::read_text(out + ".err"));
  REQUIRE(rc == 0);
  json r = json::parse(bet::test::read_text(out));
  std::set<std::string> settings;
  for (const auto& row : r["signals"]) {
    settings.insert(row["setting"].get<std::string>());
    CHECK(row["aurc"].get<double>() >= 0.0);
    CHECK(row["ece"].get<double>() >= 0.0);
    CHECK(row["brier"].get<double>() >= 0.0);
    // One member, the same probabilities as the plain evaluation: the same ECE and Brier.
    if (row["setting"] == "single") {
      CHECK(row["ece"].get<double>() == doctest::Approx(r["ece"].get<double>()).epsilon(1e-5));
      CHECK(row["brier"].get<double>() == doctest::Approx(r["brier"].get<double>()).epsilon(1e-5));
    }
  }
  CHECK(settings == std::set<std::string>{"single", "orderings", "mc_dropout", "both"});

  // The same model twice: its members agree, so the ensemble's epistemic part is 0 for
  // every text, a score that ranks nothing (AURC = the error rate).
  rc = run({g_betctl, "eval", "--model", classifier_path(), "--model", classifier_path(), "--data", data, "--json"},
           out);
  REQUIRE(rc == 0);
  r = json::parse(bet::test::read_text(out));
  CHECK(r["members"].size() == 2);
  bool saw = false;
  for (const auto& row : r["signals"]) {
    CHECK(row["setting"] == "deep_ensemble");
    CHECK(row["ece"].get<double>() == doctest::Approx(r["ece"].get<double>()));
    CHECK(row["brier"].get<double>() == doctest::Approx(r["brier"].get<double>()));
    if (row["signal"] != "epistemic") continue;
    saw = true;
    CHECK(row["aurc"].get<double>() == doctest::Approx(1.0 - r["accuracy"].get<double>()));
  }
  CHECK(saw);
  // Two different models: a real ensemble, with its own accuracy and NLL.
  rc = run({g_betctl, "eval", "--model", classifier_path(), "--model", other, "--data", data, "--json"}, out);
  REQUIRE(rc == 0);
  r = json::parse(bet::test::read_text(out));
  CHECK(r["examples"] == 24);
  CHECK(r["nll"].get<double>() > 0.0);
  // Members must share their labels.
  const std::string lm = lm_path();
  rc = run({g_betctl, "eval", "--model", classifier_path(), "--model", lm, "--data", data}, out);
  CHECK(rc == 1);
}

TEST_CASE("`betctl eval --adapt-prior`: calibrate stores the training prior; eval re-weights to the estimated one") {
  REQUIRE_MESSAGE(!g_betctl.empty(), "pass the betctl binary as the first argument");
  // calibrated_path() was calibrated on 24 texts, 8 of each class: a uniform prior.
  runtime::Checkpoint ck = runtime::load_checkpoint(calibrated_path());
  const json& prior = ck.metrics.at("calibration").at("class_prior");
  REQUIRE(prior.size() == 3);
  for (const auto& v : prior) CHECK(v.get<double>() == doctest::Approx(1.0 / 3));
  // Deployment data where one class dominates.
  std::string lines;
  for (int i = 0; i < 30; ++i)
    lines += json{{"text", "example text number " + std::to_string(i * 31 % 97)}, {"label", i % 5 ? "pos" : "neg"}}
                 .dump() +
             "\n";
  const std::string data = write("shifted.jsonl", lines);
  const std::string out = (scratch() / "adapted.json").string();
  int rc = run({g_betctl, "eval", "--model", calibrated_path(), "--data", data, "--adapt-prior", "--json"}, out);
  INFO(bet::test::read_text(out + ".err"));
  REQUIRE(rc == 0);
  json r = json::parse(bet::test::read_text(out));
  REQUIRE(r.contains("prior_shift"));
  const json& shift = r["prior_shift"];
  CHECK(shift["training_prior"].size() == 3);
  CHECK(shift["shift_z"].size() == 3);
  CHECK(shift["threshold"].get<double>() > 2.0);
  // Re-weighted exactly when the test saw a shift, and then the report says from what.
  CHECK(shift["adapted"] == shift["shifted"]);
  if (shift["adapted"].get<bool>()) {
    REQUIRE(r.contains("before_prior_shift"));
    double total = 0;
    for (const auto& v : shift["estimated_prior"]) total += v.get<double>();
    CHECK(total == doctest::Approx(1.0));
  }
  ck = runtime::load_checkpoint(calibrated_path());
  CHECK(ck.metrics.at("calibration").at("examples") == 24);
  CHECK(ck.metrics.at("calibration").at("mean_prediction").size() == 3);
  CHECK(r["examples"] == 30);
  // The fixture model is barely trained, so the estimate itself is not checked here
  // (tests/test_prior_shift.cpp checks EM against known priors); the report is.
  CHECK(r["nll"].get<double>() > 0.0);
  // Refused: a model calibrated before class priors were stored (none here: an
  // uncalibrated one), several models, and --signals.
  rc = run({g_betctl, "eval", "--model", classifier_path(), "--data", data, "--adapt-prior"}, out);
  CHECK(rc == 1);
  CHECK(bet::test::read_text(out + ".err").find("calibrate this model first") != std::string::npos);
  rc = run({g_betctl, "eval", "--model", calibrated_path(), "--model", calibrated_path(), "--data", data,
            "--adapt-prior"},
           out);
  CHECK(rc == 2);
  CHECK(bet::test::read_text(out + ".err").find("--adapt-prior") != std::string::npos);
  rc = run({g_betctl, "eval", "--model", calibrated_path(), "--data", data, "--adapt-prior", "--signals", "2"}, out);
  CHECK(rc == 2);
}

TEST_CASE("a request over the work bound is 413, on a model trained for long texts") {
  // Regression: a model with --max-len 8192 took 23 s and 4.4 GB for one text.
  auto cfg = config(model::Task::Classify, model::LayerKind::Bet);
  cfg.max_len = 8192;
  cfg.heads = 4;
  const std::string path = save_model(cfg, 31, "clf_long.bet");
  ServerConfig sc;
  sc.max_text_bytes = 1u << 20;
  ModelServer srv(path, sc);
  HttpClient c("127.0.0.1", srv.port());
  auto r = c.request("POST", "/v1/predict", json{{"text", std::string(8000, 'a')}}.dump());
  check_error(r, 413, "too_much_work");
  json ok = ok_json(c.request("POST", "/v1/predict", json{{"text", "a short text"}}.dump()));
  CHECK(ok.contains("probabilities"));
  // --max-request-gflop: a tiny budget refuses what the default admits.
  ServerConfig tight;
  tight.max_request_gflop = 1e-6;
  ModelServer small(classifier_path(), tight);
  HttpClient s("127.0.0.1", small.port());
  check_error(s.request("POST", "/v1/predict", R"({"text": "hello"})"), 413, "too_much_work");
}

TEST_CASE("--device on the command line: one clear error without a GPU; an emulated cuda:0 answers as the CPU") {
  REQUIRE_MESSAGE(!g_betctl.empty(), "pass the betctl binary as the first argument");
  const std::string out = (scratch() / "device.out").string();
  const std::vector<std::string> predict = {g_betctl, "predict", "--model", classifier_path(), "--text",
                                            "some text", "--permutations", "3", "--threads", "1"};
  auto with = [](std::vector<std::string> args, std::initializer_list<std::string> more) {
    args.insert(args.end(), more);
    return args;
  };
  REQUIRE(run(with(predict, {"--device", "cpu"}), out) == 0);
  const std::string on_cpu = bet::test::read_text(out);
  if (!bet::cuda_available()) {  // a real GPU would accept the flag
    CHECK(run(with(predict, {"--device", "cuda"}), out) == 2);
    CHECK(bet::test::read_text(out + ".err").find("no CUDA device available") != std::string::npos);
  }
  CHECK(run(with(predict, {"--device", "gpu"}), out) == 2);
  CHECK(bet::test::read_text(out + ".err").find("expected cpu, cuda or cuda:N") != std::string::npos);

  // Children see BET_EMULATE_CUDA; this process never asks for a device, so it is unaffected.
  ::setenv("BET_EMULATE_CUDA", "1", 1);
  const int rc_predict = run(with(predict, {"--device", "cuda:0"}), out);
  const std::string on_gpu = bet::test::read_text(out), predict_err = bet::test::read_text(out + ".err");
  const std::string dir = (scratch() / "device_train").string();
  const int rc_train = run({g_betctl, "train", "--device", "cuda", "--precision", "bf16", "--steps", "4", "--d-model",
                            "16", "--heads", "2", "--layers", "1", "--seq-len", "12", "--max-len", "16",
                            "--batch-size", "4", "--threads", "1", "--out", dir, "--quiet"},
                           out);
  const std::string train_err = bet::test::read_text(out + ".err");
  ::unsetenv("BET_EMULATE_CUDA");
  INFO(predict_err);
  CHECK(rc_predict == 0);
  CHECK(on_gpu == on_cpu);  // emulated: the CPU's kernels, so the same bytes
  INFO(train_err);
  REQUIRE(rc_train == 0);
  // The device-trained checkpoint serves on the CPU.
  const std::string ckpt = dir + "/checkpoints/training/step-00000004.bet";
  CHECK(run({g_betctl, "predict", "--model", ckpt, "--text", "0101", "--device", "cpu"}, out) == 0);
  CHECK(json::parse(bet::test::read_text(out)).contains("top_tokens"));
}

TEST_CASE("--uncertainty: calibrate stores a signal; serve and predict report it and its score; overrides win") {
  REQUIRE_MESSAGE(!g_betctl.empty(), "pass the betctl binary as the first argument");
  using inference::UncertaintySignal;
  const std::string out = (scratch() / "uncertainty.out").string();
  const std::string threads = std::to_string(platform::num_threads());
  auto lines_of = [&](const std::string& file) {
    std::vector<json> got;
    std::istringstream lines(bet::test::read_text(file));
    for (std::string line; std::getline(lines, line);) got.push_back(json::parse(line));
    return got;
  };
  // The score an answer carries is the value its signal names in the same answer.
  auto check_score = [](const json& answer, const std::string& signal) {
    CAPTURE(answer.dump());
    const UncertaintySignal s = UncertaintySignal::parse(signal);
    CHECK(answer["uncertainty"]["signal"] == signal);
    CHECK(answer["uncertainty"]["members"] == std::max(s.permutations(), s.mc_dropout()));
    const std::optional<double> named = inference::read_signal(s.kind, answer);
    REQUIRE(named);
    REQUIRE(answer["uncertainty"]["score"].is_number());
    CHECK(answer["uncertainty"]["score"].get<double>() == *named);
  };

  // calibrate --uncertainty auto stored a signal the model offers, with its measurement.
  runtime::Checkpoint ck = runtime::load_checkpoint(calibrated_path());
  const json stored = ck.metrics["calibration"]["uncertainty"];
  CAPTURE(stored.dump());
  const std::string signal = stored["signal"].get<std::string>();
  CHECK(stored["chosen"] == "auto");
  CHECK(stored["examples"] == 24);
  CHECK(stored["candidates"].get<int>() >= 10);
  CHECK(stored["aurc"].is_number());
  CHECK((stored["error_auroc"].is_number() || stored.contains("note")));
  const UncertaintySignal chosen = UncertaintySignal::parse(signal);
  CHECK(chosen.members == (chosen.setting == inference::EnsembleSetting::kSingle ? 1 : 2));  // --signals 2
  CHECK(ck.metrics["calibration"]["temperature"].is_number());
  {
    const std::string json_out = bet::test::read_text(calibrated_path() + ".json");
    CHECK(json::parse(json_out)["uncertainty"] == stored);
  }

  // predict reports it, running its members for inputs that name none.
  const std::string input = write("signal_inputs.jsonl", "plain text line\n{\"text\": \"a json line\"}\n");
  int rc = run({g_betctl, "predict", "--model", calibrated_path(), "--input", input, "--threads", threads}, out);
  INFO(bet::test::read_text(out + ".err"));
  REQUIRE(rc == 0);
  const std::vector<json> cli = lines_of(out);
  REQUIRE(cli.size() == 2);
  for (const json& a : cli) check_score(a, signal);

  // serve reports it in /v1/model and in every answer: the same bytes as predict.
  {
    ModelServer srv(calibrated_path());
    HttpClient c("127.0.0.1", srv.port());
    const json info = ok_json(c.request("GET", "/v1/model"));
    CHECK(info["uncertainty"]["signal"] == signal);
    CHECK(info["uncertainty"]["source"] == "calibration");
    CHECK(info["uncertainty"]["aurc"] == stored["aurc"]);
    json got = ok_json(c.request("POST", "/v1/predict", R"({"text": "plain text line"})"));
    got.erase("latency_ms");
    CHECK(got.dump() == cli[0].dump());
    const json batch = ok_json(c.request("POST", "/v1/predict/batch", R"({"texts": ["plain text line", "b"]})"));
    for (const json& a : batch["predictions"]) check_score(a, signal);
    CHECK(json_diff(batch["predictions"][0], cli[0]) < 1e-5);
  }

  // --uncertainty on the command line wins over the checkpoint's choice.
  rc = run({g_betctl, "predict", "--model", calibrated_path(), "--text", "plain text line", "--uncertainty",
            "orderings:order_dispersion@3"},
           out);
  REQUIRE(rc == 0);
  check_score(json::parse(bet::test::read_text(out)), "orderings:order_dispersion@3");
  // Members given on the command line win over the signal's; the score is null when
  // they cannot give it.
  rc = run({g_betctl, "predict", "--model", calibrated_path(), "--text", "plain text line", "--uncertainty",
            "mc_dropout:epistemic@3", "--mc-dropout", "0"},
           out);
  REQUIRE(rc == 0);
  json a = json::parse(bet::test::read_text(out));
  CHECK(a["uncertainty"]["members"] == 1);
  CHECK(a["uncertainty"]["signal"] == "mc_dropout:epistemic@3");
  CHECK(a["uncertainty"]["score"].is_null());

  // A model whose checkpoint stores no choice reports single:1-confidence.
  rc = run({g_betctl, "predict", "--model", classifier_path(), "--text", "plain text line"}, out);
  REQUIRE(rc == 0);
  check_score(json::parse(bet::test::read_text(out)), "single:1-confidence");
  {
    ModelServer srv(classifier_path());
    HttpClient c("127.0.0.1", srv.port());
    CHECK(ok_json(c.request("GET", "/v1/model"))["uncertainty"] ==
          json{{"signal", "single:1-confidence"}, {"source", "default"}});
    check_score(ok_json(c.request("POST", "/v1/predict", R"({"text": "x"})")), "single:1-confidence");
  }

  // calibrate with a named signal stores that one, measured; without the flag, none.
  const std::string data = labelled_data("calib_named.jsonl", 12);
  const std::string named = (scratch() / "named.bet").string();
  rc = run({g_betctl, "calibrate", "--model", classifier_path(), "--data", data, "--out", named, "--uncertainty",
            "both:total@2"},
           out);
  INFO(bet::test::read_text(out + ".err"));
  REQUIRE(rc == 0);
  CHECK(bet::test::read_text(out).find("uncertainty signal both:total@2") != std::string::npos);
  json again = runtime::load_checkpoint(named).metrics["calibration"]["uncertainty"];
  CHECK(again["signal"] == "both:total@2");
  CHECK(again["chosen"] == "given");
  CHECK(again["examples"] == 12);
  CHECK(again["aurc"].is_number());
  rc = run({g_betctl, "calibrate", "--model", named, "--data", data, "--out", named}, out);
  REQUIRE(rc == 0);
  CHECK(!runtime::load_checkpoint(named).metrics["calibration"].contains("uncertainty"));

  // Refusals are usage errors (exit 2) naming the flag, before any work: a bad name, a
  // signal the model does not offer, --signals without auto.
  const std::string standard = save_model(config(model::Task::Classify, model::LayerKind::Standard), 43, "std.bet");
  const std::string port_file = (scratch() / "never.out").string();
  const std::vector<std::pair<std::vector<std::string>, std::string>> refused = {
      {{"predict", "--model", classifier_path(), "--text", "x", "--uncertainty", "mc_dropout:epistemic@1"},
       "members after '@'"},
      {{"predict", "--model", classifier_path(), "--text", "x", "--uncertainty", "epistemic"}, "SETTING:SIGNAL"},
      {{"predict", "--model", standard, "--text", "x", "--uncertainty", "single:beta_posterior_variance"},
       "layers are standard"},
      {{"serve", "--model", classifier_path(), "--port", "0", "--uncertainty", "single:epistemic"},
       "has no signal 'epistemic'"},
      {{"serve", "--model", standard, "--port", "0", "--uncertainty", "single:attention_dispersion"},
       "layers are standard"},
      {{"calibrate", "--model", classifier_path(), "--data", data, "--out", port_file, "--uncertainty", "best"},
       "no ':'"},
      {{"calibrate", "--model", standard, "--data", data, "--out", port_file, "--uncertainty",
        "single:beta_posterior_variance"},
       "layers are standard"},
  };
  for (const auto& [args, why] : refused) {
    std::vector<std::string> argv = {g_betctl};
    argv.insert(argv.end(), args.begin(), args.end());
    CAPTURE(args[0]);
    CAPTURE(why);
    rc = bet::test::run_process(argv, out, out + ".err", std::chrono::seconds(60));
    const std::string err = bet::test::read_text(out + ".err");
    CAPTURE(err);
    CHECK(rc == 2);
    CHECK(err.find("--uncertainty") != std::string::npos);
    CHECK(err.find(why) != std::string::npos);
  }
  rc = run({g_betctl, "calibrate", "--model", classifier_path(), "--data", data, "--out", port_file, "--signals", "4"},
           out);
  CHECK(rc == 2);
  CHECK(bet::test::read_text(out + ".err").find("--signals: only with --uncertainty auto") != std::string::npos);
  CHECK(!fs::exists(port_file));
}

int main(int argc, char** argv) { return bet::test::run_with_betctl_arg(argc, argv); }
