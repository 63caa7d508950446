// Inference: the uncertainty decomposition on hand-computable cases, then a small
// randomly initialised model saved to a checkpoint and served by ModelPredictor:
// normalised outputs, batch independence, member orderings (invariance where the model
// is exchangeable, dispersion where it is not, chunks moved whole), Monte Carlo dropout,
// truncation, temperature, input errors, thread counts, reload and lm generation.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "engine/autograd.h"
#include "engine/random.h"
#include "platform/threads.h"
#include "model/bet_model.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/inference/forward.h"
#include "runtime/inference/predictor.h"
#include "runtime/inference/signal_report.h"
#include "runtime/inference/uncertainty.h"
#include "runtime/tokenizer/tokenizer.h"

using namespace bet;
using namespace bet::inference;
using nlohmann::json;
namespace fs = std::filesystem;
using inference::PredictRequest;
constexpr int kMaxMembers = inference::RequestLimits::kMaxMembers;

// The answers of a batch; fails the test on any item the predictor refused.
std::vector<json> answers(const std::vector<inference::PredictOutcome>& outs) {
  std::vector<json> r;
  for (const auto& o : outs) {
    REQUIRE(o.ok());
    r.push_back(o.answer);
  }
  return r;
}

namespace {

// ---------------------------------------------------------------- helpers

std::vector<double> random_distribution(Generator& g, size_t C) {
  std::vector<double> p(C);
  double z = 0;
  for (auto& v : p) z += (v = -std::log(1.0 - g.uniform({1}, 0, 1, DType::F64).item()));  // Dirichlet(1)
  for (auto& v : p) v /= z;
  return p;
}

std::string tmp_path(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("bet_infer_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

model::ModelConfig small_config(model::Task task = model::Task::Classify, model::PosEncoding pe = model::PosEncoding::Rope,
                                model::LayerKind layer = model::LayerKind::Bet, double dropout = 0.1) {
  model::ModelConfig c;
  c.task = task;
  c.layer = layer;
  c.pe = pe;
  c.vocab_size = 259;  // byte tokenizer
  c.d_model = 16;
  c.heads = 2;
  c.layers = 2;
  c.max_len = 24;
  c.k_permutations = 2;
  c.n_harmonics = 3;
  c.dropout = dropout;
  if (task == model::Task::Classify) {
    c.num_classes = 3;
    c.labels = {"neg", "neutral", "pos"};
  }
  return c;
}

// Saves a freshly initialised model (weights drawn from `seed`) and returns the path.
// The random init leaves a classifier nearly uniform, so the head is scaled up to
// make the outputs depend visibly on the input.
std::string save_model(const model::ModelConfig& cfg, uint64_t seed, const std::string& name, DType dt = DType::F32) {
  Generator g(seed);
  model::BetModel m(cfg, g, dt);
  {
    autograd::NoGradGuard ng;
    if (m.head) m.head->weight.copy_(mul(m.head->weight, 8.0));
  }
  const std::string path = tmp_path(name);
  runtime::save_checkpoint(path, runtime::make_checkpoint(m, nullptr, runtime::make_byte_tokenizer()->to_json(), "production"));
  return path;
}

PredictRequest text_req(const std::string& text, int perms = 1, int mc = 0) {
  PredictRequest r;
  r.text = text;
  r.permutations = perms;
  r.mc_dropout = mc;
  return r;
}

// Largest difference between two JSON values of the same structure, relative for
// numbers above 1 (alpha and beta grow with the length; float32 keeps ~7 digits), exact
// for everything else; infinity when the structures differ.
double json_diff(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) {
    const double x = a.get<double>(), y = b.get<double>();
    return std::fabs(x - y) / std::max({1.0, std::fabs(x), std::fabs(y)});
  }
  if (a.type() != b.type()) return INFINITY;
  if (a.is_object()) {
    if (a.size() != b.size()) return INFINITY;
    double d = 0;
    for (auto it = a.begin(); it != a.end(); ++it) {
      if (!b.contains(it.key())) return INFINITY;
      d = std::max(d, json_diff(it.value(), b[it.key()]));
    }
    return d;
  }
  if (a.is_array()) {
    if (a.size() != b.size()) return INFINITY;
    double d = 0;
    for (size_t i = 0; i < a.size(); ++i) d = std::max(d, json_diff(a[i], b[i]));
    return d;
  }
  return a == b ? 0.0 : INFINITY;
}

std::vector<double> probs_of(const json& r, const std::vector<std::string>& labels) {
  std::vector<double> p;
  for (const auto& l : labels) p.push_back(r["probabilities"][l].get<double>());
  return p;
}

std::string code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return std::string(e.code());
  }
  return "";
}

// A byte string of length n with varied content.
std::string text_of(size_t n, int salt = 0) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s.push_back(char('a' + (i * 7 + size_t(salt) * 3 + i * i) % 26));
  return s;
}

}  // namespace

// ---------------------------------------------------------------- the decomposition

TEST_CASE("entropy and softmax") {
  CHECK(entropy({1.0, 0.0, 0.0}) == 0.0);
  CHECK(entropy({0.25, 0.25, 0.25, 0.25}) == doctest::Approx(std::log(4.0)).epsilon(1e-14));
  CHECK(entropy({0.5, 0.5}) == doctest::Approx(std::log(2.0)).epsilon(1e-14));
  auto p = softmax({1000.0, 1000.0, -1000.0});  // no overflow
  CHECK(p[0] == doctest::Approx(0.5));
  CHECK(p[2] == 0.0);
  auto q = softmax({0.3, -1.2, 2.0}, 2.5), r = softmax({0.3 / 2.5, -1.2 / 2.5, 2.0 / 2.5});
  double s = 0;
  for (size_t i = 0; i < 3; ++i) {
    CHECK(q[i] == doctest::Approx(r[i]).epsilon(1e-14));
    s += q[i];
  }
  CHECK(s == doctest::Approx(1.0).epsilon(1e-14));
  CHECK(std::log(r[0] / r[1]) == doctest::Approx((0.3 + 1.2) / 2.5).epsilon(1e-12));
}

TEST_CASE("identical members carry no epistemic uncertainty") {
  const std::vector<double> p = {0.7, 0.2, 0.1};
  for (int K : {1, 2, 5}) {
    EnsembleSummary s = summarize_members(std::vector<std::vector<double>>(size_t(K), p), true);
    CHECK(s.members == K);
    CHECK(s.epistemic == 0.0);
    CHECK(s.total == doctest::Approx(entropy(p)).epsilon(1e-14));
    CHECK(s.aleatoric == doctest::Approx(entropy(p)).epsilon(1e-14));
    CHECK(s.argmax == 0);
    CHECK(s.confidence == doctest::Approx(0.7));
    if (K == 1)
      CHECK(!s.order_dispersion.has_value());
    else
      CHECK(*s.order_dispersion == doctest::Approx(0.0).epsilon(1e-15));
  }
}

TEST_CASE("two opposite confident members: high epistemic, low aleatoric") {
  EnsembleSummary s = summarize_members({{0.99, 0.01}, {0.01, 0.99}}, true);
  const double h = -(0.99 * std::log(0.99) + 0.01 * std::log(0.01));
  CHECK(s.pbar[0] == doctest::Approx(0.5));
  CHECK(s.total == doctest::Approx(std::log(2.0)).epsilon(1e-12));
  CHECK(s.aleatoric == doctest::Approx(h).epsilon(1e-12));
  CHECK(s.epistemic == doctest::Approx(std::log(2.0) - h).epsilon(1e-12));
  CHECK(s.epistemic > 10 * s.aleatoric);
  CHECK(*s.order_dispersion == doctest::Approx(0.49).epsilon(1e-12));  // population std of {0.99, 0.01}
  // Without orderings there is no order dispersion to report.
  CHECK(!summarize_members({{0.99, 0.01}, {0.01, 0.99}}, false).order_dispersion.has_value());
}

TEST_CASE("order dispersion is the population std of the members' probability of argmax pbar") {
  // pbar = (0.5, 0.5 - ...) : class 1 wins on average although member 0 prefers class 0.
  EnsembleSummary s = summarize_members({{0.6, 0.4}, {0.2, 0.8}, {0.3, 0.7}}, true);
  CHECK(s.argmax == 1);
  const double mu = (0.4 + 0.8 + 0.7) / 3;
  const double sd = std::sqrt(((0.4 - mu) * (0.4 - mu) + (0.8 - mu) * (0.8 - mu) + (0.7 - mu) * (0.7 - mu)) / 3);
  CHECK(*s.order_dispersion == doctest::Approx(sd).epsilon(1e-12));
  CHECK(s.confidence == doctest::Approx(mu).epsilon(1e-12));
}

TEST_CASE("total = aleatoric + epistemic, epistemic >= 0, on random ensembles") {
  Generator g(7);
  for (int trial = 0; trial < 50; ++trial) {
    const size_t K = 1 + size_t(g.randint(6)), C = 2 + size_t(g.randint(5));
    std::vector<std::vector<double>> m;
    for (size_t k = 0; k < K; ++k) m.push_back(random_distribution(g, C));
    EnsembleSummary s = summarize_members(m, true);
    CHECK(s.epistemic >= 0.0);
    CHECK(s.total == doctest::Approx(s.aleatoric + s.epistemic).epsilon(1e-12));
    double sum = 0;
    for (double v : s.pbar) sum += v;
    CHECK(sum == doctest::Approx(1.0).epsilon(1e-12));
  }
}

TEST_CASE("utf8_safe keeps valid text and replaces stray bytes") {
  CHECK(utf8_safe("caf\xC3\xA9") == "caf\xC3\xA9");
  CHECK(utf8_safe("a\xC3") == "a\xEF\xBF\xBD");
  CHECK(utf8_safe("\xFF\xE2\x82\xACx") == "\xEF\xBF\xBD\xE2\x82\xACx");
}

TEST_CASE("beta summary and JSON field names") {
  BetaSummary b = summarize_beta(3.0, 1.0, 0.75, 3.0 / (16.0 * 5.0));
  CHECK(b.epistemic == b.posterior_variance);
  CHECK(b.aleatoric == doctest::Approx(0.75 * 0.25));
  json j = beta_json(b);
  for (const char* k : {"alpha", "beta", "posterior_mean", "posterior_variance", "epistemic", "aleatoric"})
    CHECK(j.contains(k));
  json e = ensemble_json(summarize_members({{0.5, 0.5}}, false));
  CHECK(e["order_dispersion"].is_null());
  CHECK(e["members"] == 1);
  for (const char* k : {"total", "aleatoric", "epistemic"}) CHECK(e[k].is_number());
}

// ---------------------------------------------------------------- a model behind the predictor

TEST_CASE("classify responses: fields, normalisation, beta and cot for bet layers only") {
  for (auto layer : {model::LayerKind::Bet, model::LayerKind::Standard}) {
    auto cfg = small_config(model::Task::Classify, model::PosEncoding::Rope, layer);
    ModelPredictor pred(save_model(cfg, 3, "fields.bet"));
    CHECK(pred.ready());
    CHECK(!pred.can_generate());
    CHECK(pred.model_info()["task"] == "classify");
    for (int K : {1, 3}) {
      json r = pred.predict(text_req("the quick brown fox", K));
      auto p = probs_of(r, cfg.labels);
      double sum = 0, mx = 0;
      size_t arg = 0;
      for (size_t i = 0; i < p.size(); ++i) {
        sum += p[i];
        if (p[i] > mx) mx = p[i], arg = i;
      }
      CHECK(sum == doctest::Approx(1.0).epsilon(1e-9));
      CHECK(r["label"] == cfg.labels[arg]);
      CHECK(r["confidence"].get<double>() == doctest::Approx(mx).epsilon(1e-12));
      CHECK(r["truncated"] == false);
      const json& u = r["uncertainty"];
      CHECK(u["members"] == K);
      CHECK(u["total"].get<double>() == doctest::Approx(u["aleatoric"].get<double>() + u["epistemic"].get<double>()));
      CHECK(u["total"].get<double>() == doctest::Approx(entropy(p)).epsilon(1e-9));
      CHECK(r["attention_dispersion"].is_number());
      if (K == 1) {
        CHECK(u["epistemic"] == 0.0);
        CHECK(u["order_dispersion"].is_null());
      } else {
        CHECK(u["order_dispersion"].is_number());
      }
      if (layer == model::LayerKind::Bet) {
        const json& b = u["beta"];
        const double a = b["alpha"], bb = b["beta"], mu = b["posterior_mean"];
        // bidirectional: alpha + beta = alpha0 + beta0 + n, with priors initialised to 1
        CHECK(a + bb == doctest::Approx(2.0 + 19.0).epsilon(1e-5));
        CHECK(mu == doctest::Approx(a / (a + bb)).epsilon(1e-5));
        CHECK(b["epistemic"] == b["posterior_variance"]);
        CHECK(b["aleatoric"].get<double>() == doctest::Approx(mu * (1 - mu)));
        CHECK(r["cot_length"].get<double>() >= 1.0);
      } else {
        CHECK(!u.contains("beta"));
        CHECK(r["cot_length"].is_null());
      }
      PredictRequest quiet = text_req("the quick brown fox", K);
      quiet.return_uncertainty = false;
      json q = pred.predict(quiet);
      CHECK(!q.contains("uncertainty"));
      CHECK(json_diff(q["probabilities"], r["probabilities"]) == 0.0);
    }
  }
}

TEST_CASE("a request gives the same answer alone and in any batch") {
  auto cfg = small_config();
  ModelPredictor pred(save_model(cfg, 5, "batch.bet"));
  std::vector<PredictRequest> reqs = {text_req(text_of(3)), text_req(text_of(17, 1), 3), text_req(text_of(9, 2), 1, 3),
                                      text_req(text_of(24, 3), 4, 2), text_req(text_of(1, 4)), text_req(text_of(12, 5), 2)};
  PredictRequest chunked;
  chunked.chunks = {"abc", "de", "fghij"};
  chunked.permutations = 3;
  reqs.push_back(chunked);
  std::vector<json> alone;
  for (const auto& r : reqs) alone.push_back(pred.predict(r));
  std::vector<json> together = answers(pred.predict_batch(reqs));
  REQUIRE(together.size() == reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) CHECK(json_diff(alone[i], together[i]) < 1e-6);
  // Reversed order, and each request beside a copy of itself.
  std::vector<PredictRequest> rev(reqs.rbegin(), reqs.rend());
  std::vector<json> back = answers(pred.predict_batch(rev));
  for (size_t i = 0; i < reqs.size(); ++i) CHECK(json_diff(alone[i], back[reqs.size() - 1 - i]) < 1e-6);
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto two = answers(pred.predict_batch({reqs[i], reqs[(i + 1) % reqs.size()]}));
    CHECK(json_diff(alone[i], two[0]) < 1e-6);
  }
}

TEST_CASE("orderings: invariance without positions, dispersion with rope, members read the drawn orders") {
  const std::string text = text_of(14, 7);
  SUBCASE("bidirectional pe=none is exchangeable: the K orderings agree") {
    auto cfg = small_config(model::Task::Classify, model::PosEncoding::None);
    ModelPredictor pred(save_model(cfg, 11, "none.bet"));
    json one = pred.predict(text_req(text, 1)), many = pred.predict(text_req(text, 6));
    CHECK(many["uncertainty"]["members"] == 6);
    CHECK(many["uncertainty"]["order_dispersion"].get<double>() < 1e-6);
    CHECK(many["uncertainty"]["epistemic"].get<double>() < 1e-6);
    CHECK(json_diff(one["probabilities"], many["probabilities"]) < 1e-6);
  }
  SUBCASE("rope sees order: dispersion > 0, and each member is the drawn ordering of the tokens") {
    auto cfg = small_config();
    ModelPredictor pred(save_model(cfg, 11, "rope.bet"));
    const int K = 5;
    json many = pred.predict(text_req(text, K));
    CHECK(many["uncertainty"]["order_dispersion"].get<double>() > 1e-4);
    CHECK(many["uncertainty"]["epistemic"].get<double>() > 0.0);
    // pbar is the mean of single predictions of the permuted texts.
    std::vector<double> pbar(3, 0.0);
    for (int k = 0; k < K; ++k) {
      auto order = member_ordering(cfg.inference_seed, k, int64_t(text.size()));
      std::string t;
      for (int64_t i : order) t.push_back(text[size_t(i)]);
      if (k > 0) CHECK(t != text);
      auto p = probs_of(pred.predict(text_req(t)), cfg.labels);
      for (size_t c = 0; c < 3; ++c) pbar[c] += p[c] / K;
    }
    auto got = probs_of(many, cfg.labels);
    for (size_t c = 0; c < 3; ++c) CHECK(got[c] == doctest::Approx(pbar[c]).epsilon(1e-5));
  }
}

TEST_CASE("chunks are permuted as whole chunks") {
  auto cfg = small_config();
  ModelPredictor pred(save_model(cfg, 13, "chunks.bet"));
  const std::vector<std::string> chunks = {"aaaa", "bcdefg", "xyz", "", "qq"};
  const std::vector<std::string> nonempty = {"aaaa", "bcdefg", "xyz", "qq"};
  PredictRequest r;
  r.chunks = chunks;
  const int K = 6;
  r.permutations = K;
  json got = pred.predict(r);
  std::vector<std::vector<double>> members;
  for (int k = 0; k < K; ++k) {
    auto order = member_ordering(cfg.inference_seed, k, int64_t(nonempty.size()));
    std::string t;
    for (int64_t i : order) t += nonempty[size_t(i)];
    members.push_back(probs_of(pred.predict(text_req(t)), cfg.labels));
  }
  EnsembleSummary want = summarize_members(members, true);
  auto p = probs_of(got, cfg.labels);
  for (size_t c = 0; c < 3; ++c) CHECK(p[c] == doctest::Approx(want.pbar[c]).epsilon(1e-5));
  CHECK(got["uncertainty"]["order_dispersion"].get<double>() == doctest::Approx(*want.order_dispersion).epsilon(1e-4));
  CHECK(got["uncertainty"]["epistemic"].get<double>() == doctest::Approx(want.epistemic).epsilon(1e-3));
  // The chunk request without permutations reads the chunks in the given order.
  r.permutations = 1;
  CHECK(json_diff(pred.predict(r)["probabilities"], pred.predict(text_req("aaaabcdefgxyzqq"))["probabilities"]) < 1e-6);
}

TEST_CASE("Monte Carlo dropout: members differ, answers repeat") {
  auto cfg = small_config(model::Task::Classify, model::PosEncoding::Rope, model::LayerKind::Bet, 0.3);
  ModelPredictor pred(save_model(cfg, 17, "mc.bet"));
  const std::string text = text_of(11, 3);
  json det = pred.predict(text_req(text));
  json a = pred.predict(text_req(text, 1, 4)), b = pred.predict(text_req(text, 1, 4));
  CHECK(a["uncertainty"]["members"] == 4);
  CHECK(a["uncertainty"]["epistemic"].get<double>() > 1e-6);
  CHECK(a["uncertainty"]["order_dispersion"].is_null());  // masks, not orderings
  CHECK(json_diff(a, b) == 0.0);
  CHECK(json_diff(a["probabilities"], det["probabilities"]) > 1e-6);
  // Both: K = max(permutations, mc_dropout).
  json both = pred.predict(text_req(text, 3, 5));
  CHECK(both["uncertainty"]["members"] == 5);
  CHECK(both["uncertainty"]["order_dispersion"].is_number());
  // Without dropout in the model, the masks change nothing.
  auto cfg0 = small_config(model::Task::Classify, model::PosEncoding::Rope, model::LayerKind::Bet, 0.0);
  ModelPredictor pred0(save_model(cfg0, 17, "mc0.bet"));
  json z = pred0.predict(text_req(text, 1, 4));
  CHECK(z["uncertainty"]["epistemic"].get<double>() < 1e-9);
  CHECK(json_diff(z["probabilities"], pred0.predict(text_req(text))["probabilities"]) < 1e-6);
}

TEST_CASE("truncation keeps the first max_len tokens and says so") {
  auto cfg = small_config();
  ModelPredictor pred(save_model(cfg, 19, "trunc.bet"));
  const std::string long_text = text_of(40, 1);
  json r = pred.predict(text_req(long_text));
  CHECK(r["truncated"] == true);
  json head = pred.predict(text_req(long_text.substr(0, size_t(cfg.max_len))));
  CHECK(head["truncated"] == false);
  CHECK(json_diff(r["probabilities"], head["probabilities"]) < 1e-6);
  CHECK(pred.predict(text_req(text_of(size_t(cfg.max_len))))["truncated"] == false);
}

TEST_CASE("temperature override divides the logits") {
  auto cfg = small_config();
  ModelPredictor pred(save_model(cfg, 23, "temp.bet"));
  PredictRequest r = text_req("calibrate me");
  auto p1 = probs_of(pred.predict(r), cfg.labels);
  r.temperature = 2.5;
  auto p2 = probs_of(pred.predict(r), cfg.labels);
  CHECK(std::log(p2[0] / p2[1]) == doctest::Approx(std::log(p1[0] / p1[1]) / 2.5).epsilon(1e-6));
  CHECK(std::log(p2[2] / p2[1]) == doctest::Approx(std::log(p1[2] / p1[1]) / 2.5).epsilon(1e-6));
}

TEST_CASE("input errors: empty text, fields out of range; a bad item does not fail its batch") {
  auto cfg = small_config();
  ModelPredictor pred(save_model(cfg, 29, "errors.bet"));
  CHECK(code_of([&] { pred.predict(text_req("")); }) == "empty_text");
  PredictRequest empty_chunks;
  empty_chunks.chunks = {"", ""};
  CHECK(code_of([&] { pred.predict(empty_chunks); }) == "empty_text");
  CHECK(code_of([&] { pred.predict(text_req("x", 0)); }) == "bad_field");
  CHECK(code_of([&] { pred.predict(text_req("x", kMaxMembers + 1)); }) == "bad_field");
  CHECK(code_of([&] { pred.predict(text_req("x", 1, -1)); }) == "bad_field");
  CHECK(code_of([&] { pred.predict(text_req("x", 1, kMaxMembers + 1)); }) == "bad_field");
  PredictRequest bad_t = text_req("x");
  bad_t.temperature = 0.0;
  CHECK(code_of([&] { pred.predict(bad_t); }) == "bad_field");
  try {
    pred.predict(text_req(""));
  } catch (const InputError& e) {
    CHECK(e.kind() == inference::InputIssueKind::kEmptyText);
  }
  CHECK(code_of([&] { pred.predict(text_req("x", kMaxMembers, kMaxMembers)); }) == "");

  auto out = pred.predict_batch({text_req("good one"), text_req(""), text_req("x", 99), text_req("another")});
  REQUIRE(out.size() == 4);
  REQUIRE(!out[1].ok());
  CHECK(out[1].issue->kind == inference::InputIssueKind::kEmptyText);
  REQUIRE(!out[2].ok());
  CHECK(out[2].issue->kind == inference::InputIssueKind::kBadField);
  CHECK(json_diff(out[0].answer, pred.predict(text_req("good one"))) < 1e-6);
  CHECK(json_diff(out[3].answer, pred.predict(text_req("another"))) < 1e-6);
}

TEST_CASE("answers do not depend on the thread count") {
  auto cfg = small_config(model::Task::Classify, model::PosEncoding::Rope, model::LayerKind::Bet, 0.2);
  ModelPredictor pred(save_model(cfg, 31, "threads.bet"));
  std::vector<PredictRequest> reqs = {text_req(text_of(20), 3), text_req(text_of(7, 2), 1, 3), text_req(text_of(24, 9))};
  const int saved = platform::num_threads();
  platform::set_num_threads(1);
  auto one = answers(pred.predict_batch(reqs));
  platform::set_num_threads(std::max(2, saved));
  auto many = answers(pred.predict_batch(reqs));
  platform::set_num_threads(saved);
  for (size_t i = 0; i < reqs.size(); ++i) CHECK(json_diff(one[i], many[i]) < 1e-6);
}

TEST_CASE("reload swaps the model; a bad file keeps the old one") {
  auto cfg = small_config();
  const std::string a = save_model(cfg, 37, "reload_a.bet"), b = save_model(cfg, 41, "reload_b.bet");
  ModelPredictor pred(a);
  const PredictRequest r = text_req("reload test");
  json before = pred.predict(r);
  CHECK_THROWS(pred.reload(tmp_path("does_not_exist.bet")));
  CHECK(json_diff(pred.predict(r), before) == 0.0);
  pred.reload(b);
  json after = pred.predict(r);
  CHECK(json_diff(after, before) > 1e-6);
  CHECK(json_diff(after, ModelPredictor(b).predict(r)) == 0.0);
  // SIGHUP path: the file is damaged on disk, the reload fails, the model keeps serving.
  {
    std::fstream f(b, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
    f.put('\x01');
  }
  std::string why;
  CHECK(pred.reload(&why) == false);
  CHECK(why.find(b) != std::string::npos);  // the reason names the file
  CHECK(json_diff(pred.predict(r), after) == 0.0);
  ModelPredictor none;
  CHECK(!none.ready());
}

TEST_CASE("lm: next-token distribution, uncertainty and generation") {
  auto cfg = small_config(model::Task::LM);
  ModelPredictor pred(save_model(cfg, 43, "lm.bet"));
  CHECK(pred.can_generate());
  json r = pred.predict(text_req("hello", 3));
  REQUIRE(r["top_tokens"].size() == size_t(kTopTokens));
  double prev = 1.0;
  for (const auto& t : r["top_tokens"]) {
    CHECK(t["probability"].get<double>() <= prev);
    prev = t["probability"].get<double>();
  }
  CHECK(r["confidence"] == r["top_tokens"][0]["probability"]);
  CHECK(r["token_id"] == r["top_tokens"][0]["id"]);
  CHECK(r["uncertainty"]["members"] == 3);
  CHECK(r["uncertainty"]["beta"].is_object());
  CHECK(r["cot_length"].get<double>() >= 1.0);
  CHECK_NOTHROW(r.dump());  // token texts are valid UTF-8 even for bytes >= 0x80
  // The next token depends on the end of a long prompt, which is what truncation keeps.
  const std::string long_text = text_of(60, 5);
  json lt = pred.predict(text_req(long_text));
  CHECK(lt["truncated"] == true);
  json tail = pred.predict(text_req(long_text.substr(long_text.size() - size_t(cfg.max_len - 1))));
  CHECK(tail["truncated"] == false);
  CHECK(json_diff(lt["top_tokens"], tail["top_tokens"]) < 1e-6);

  inference::GenerateRequest g;
  g.prompt = "once";
  g.max_tokens = 6;
  g.seed = 5;
  json x = pred.generate(g), y = pred.generate(g);
  CHECK(x == y);
  CHECK_NOTHROW(x.dump());
  CHECK(x["tokens"].get<int>() <= 6);
  CHECK(x["cot_budget"].is_null());
  g.temperature = 0.0;  // greedy
  g.top_k = 3;
  json greedy = pred.generate(g);
  g.seed = 99;
  CHECK(pred.generate(g) == greedy);  // the seed does not matter without sampling
  inference::GenerateRequest c;
  c.prompt = "once";
  c.cot_auto = true;
  c.top_p = 0.9;
  json cot = pred.generate(c);
  const double len = pred.predict(text_req("once"))["cot_length"];
  CHECK(cot["cot_budget"] == int(std::clamp(std::round(len), 1.0, 512.0)));
  CHECK(cot["tokens"].get<int>() <= cot["cot_budget"].get<int>());

  inference::GenerateRequest bad;
  bad.prompt = "x";
  bad.top_p = 0.0;
  CHECK(code_of([&] { pred.generate(bad); }) == "bad_field");
  ModelPredictor clf(save_model(small_config(), 3, "clf_gen.bet"));
  CHECK(code_of([&] { clf.generate(g); }) == "not_a_language_model");
  auto std_cfg = small_config(model::Task::LM, model::PosEncoding::Rope, model::LayerKind::Standard);
  ModelPredictor std_lm(save_model(std_cfg, 3, "std_lm.bet"));
  CHECK(code_of([&] { std_lm.generate(c); }) == "bad_field");
}

TEST_CASE("request cost: a request over the work bound is refused before any forward, with kTooMuchWork") {
  // Regression: a model trained with --max-len 8192 took 23 s and 4.4 GB for one text;
  // the only bound was max_len squared. The attention scores of one row cannot be split
  // across forwards, so a row over kMaxRowAttentionScores is refused outright.
  auto cfg = small_config();
  cfg.max_len = 16384;  // heads 2, 3 paths: 3 x 2 x 16384^2 = 1.6G scores for a full row
  ModelPredictor pred(save_model(cfg, 43, "long.bet"));
  const std::string long_text = text_of(16000);
  CHECK(code_of([&] { pred.predict(text_req(long_text)); }) == "too_much_work");
  try {
    pred.predict(text_req(long_text));
  } catch (const InputError& e) {
    CHECK(std::string(e.what()).find("attention scores") != std::string::npos);
  }
  CHECK(code_of([&] { pred.predict(text_req("a short text is fine")); }) == "");
  auto outs = pred.predict_batch({text_req("fine"), text_req(long_text)});
  CHECK(outs[0].ok());
  REQUIRE(!outs[1].ok());
  CHECK(outs[1].issue->kind == inference::InputIssueKind::kTooMuchWork);

  // The estimated work bound: members x tokens against max_request_gflop.
  auto small = small_config();
  ModelPredictor p2(save_model(small, 47, "gflop.bet"));
  inference::RequestLimits lim;
  const inference::ForwardCost one = inference::forward_cost(small, 1, 24);
  CHECK(one.gflop > 0);
  CHECK(inference::forward_cost(small, 8, 24).gflop == doctest::Approx(8 * one.gflop));
  lim.max_request_gflop = one.gflop * 4.5;  // 4 members of a full-length text, not 5
  p2.set_limits(lim);
  const std::string full = text_of(24);
  CHECK(code_of([&] { p2.predict(text_req(full, 4)); }) == "");
  CHECK(code_of([&] { p2.predict(text_req(full, 5)); }) == "too_much_work");
  CHECK(code_of([&] { p2.predict(text_req(full, 1, 5)); }) == "too_much_work");
}

TEST_CASE("temperature: the shared range, and a tiny temperature never yields NaN") {
  // Regression: "temperature": 1e-310 answered 200 with null probabilities.
  auto cfg = small_config();
  ModelPredictor pred(save_model(cfg, 53, "tiny_t.bet"));
  PredictRequest r = text_req("temperature");
  for (double t : {1e-310, 1e-3, 0.0, -1.0, 101.0, std::nan("")}) {
    CAPTURE(t);
    r.temperature = t;
    CHECK(code_of([&] { pred.predict(r); }) == "bad_field");
  }
  r.temperature = inference::RequestLimits::kMinTemperature;
  json low = pred.predict(r);
  for (const auto& l : cfg.labels) CHECK(std::isfinite(low["probabilities"][l].get<double>()));
  // The softmax itself is stable at any positive temperature (one-hot in the limit).
  std::vector<double> p = inference::softmax({1.0, 3.0, -2.0}, 1e-310);
  CHECK(p[0] == 0.0);
  CHECK(p[1] == 1.0);
  CHECK(p[2] == 0.0);
  p = inference::softmax({-1e300, 1e300}, 1e-10);
  CHECK(p[1] == 1.0);
  CHECK(!std::isnan(p[0]));
}

TEST_CASE("signal report: every setting and signal, ranks in range; a model blind to its input ranks nothing") {
  auto cfg = small_config();
  const std::vector<std::string> texts = {"alpha beta", "gamma", "delta epsilon zeta", "eta", "theta iota",
                                          "kappa", "lambda mu nu", "xi omicron", "pi rho", "sigma tau"};
  const std::vector<int64_t> labels = {0, 1, 2, 0, 1, 2, 0, 1, 2, 0};
  ModelPredictor pred(save_model(cfg, 59, "signals.bet"));
  const auto rows = inference::signal_report(pred, texts, labels, 4, 3);
  std::map<std::string, std::set<std::string>> seen;
  std::map<std::string, double> accuracy;
  for (const auto& r : rows) {
    CAPTURE(r.setting);
    CAPTURE(r.report.signal);
    seen[r.setting].insert(r.report.signal);
    if (accuracy.count(r.setting)) CHECK(accuracy[r.setting] == r.accuracy);  // one prediction per setting
    accuracy[r.setting] = r.accuracy;
    CHECK(r.report.aurc >= 0.0);
    CHECK(r.report.aurc <= 1.0);
    CHECK(r.nll > 0.0);
    if (!std::isnan(r.report.error_auroc)) {
      CHECK(r.report.error_auroc >= 0.0);
      CHECK(r.report.error_auroc <= 1.0);
    }
  }
  CHECK(seen["single"] == std::set<std::string>{"1-confidence", "total", "beta_posterior_variance",
                                                 "attention_dispersion"});
  CHECK(seen["orderings"] == std::set<std::string>{"1-confidence", "total", "aleatoric", "epistemic",
                                                    "order_dispersion"});
  CHECK(seen["mc_dropout"] == std::set<std::string>{"1-confidence", "total", "aleatoric", "epistemic"});
  CHECK(seen["both"].count("order_dispersion") == 1);
  // The single setting answers as predict() does.
  double correct = 0;
  for (size_t i = 0; i < texts.size(); ++i)
    correct += pred.predict(text_req(texts[i]))["label"] == cfg.labels[size_t(labels[i])] ? 1 : 0;
  CHECK(accuracy["single"] == doctest::Approx(correct / double(texts.size())));

  // Negative control: with the head's weights zero the logits are its bias, exactly the
  // same for every text, so confidence ranks errors at chance (0.5: all tied).
  Generator g(61);
  model::BetModel blind(cfg, g);
  {
    autograd::NoGradGuard ng;
    blind.head->weight.copy_(mul(blind.head->weight, 0.0));
    blind.head->bias.copy_(add(mul(blind.head->bias, 0.0), 0.3));
  }
  const std::string path = tmp_path("blind.bet");
  runtime::save_checkpoint(path, runtime::make_checkpoint(blind, nullptr, runtime::make_byte_tokenizer()->to_json(), "production"));
  ModelPredictor blind_pred(path);
  for (const auto& r : inference::signal_report(blind_pred, texts, labels, 2)) {
    if (r.setting != "single" || r.report.signal != "1-confidence") continue;
    CHECK(r.report.error_auroc == doctest::Approx(0.5));
    CHECK(r.report.aurc == doctest::Approx(1.0 - r.accuracy));
  }
}

// ---------------------------------------------------------------- the uncertainty signal

namespace {

// A freshly initialised model whose checkpoint stores `stored` as calibrate would
// (metrics.calibration.uncertainty); null stores no choice.
std::string save_with_signal(const model::ModelConfig& cfg, uint64_t seed, const std::string& name,
                             const json& stored) {
  Generator g(seed);
  model::BetModel m(cfg, g);
  {
    autograd::NoGradGuard ng;
    if (m.head) m.head->weight.copy_(mul(m.head->weight, 8.0));
  }
  runtime::Checkpoint ck =
      runtime::make_checkpoint(m, nullptr, runtime::make_byte_tokenizer()->to_json(), "production");
  if (!stored.is_null()) ck.metrics["calibration"] = {{"temperature", 1.0}, {"uncertainty", stored}};
  const std::string path = tmp_path(name);
  runtime::save_checkpoint(path, ck);
  return path;
}

// A request as a body that names no members decodes (PredictRequest::signal_members).
PredictRequest plain_req(const std::string& text) {
  PredictRequest r;
  InputIssue issue;
  REQUIRE(decode_predict(json{{"text", text}}, RequestLimits{}, &r, &issue));
  return r;
}

std::string load_error(const std::string& path) {
  try {
    ModelPredictor p(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("uncertainty signal: the checkpoint's choice, its members for a request that names none, its score") {
  const auto cfg = small_config();
  const std::string path =
      save_with_signal(cfg, 67, "with_signal.bet", {{"signal", "mc_dropout:epistemic@3"}, {"error_auroc", 0.75}});
  ModelPredictor pred(path);
  CHECK(pred.uncertainty_signal().to_string() == "mc_dropout:epistemic@3");
  json info = pred.model_info();
  CHECK(info["uncertainty"]["signal"] == "mc_dropout:epistemic@3");
  CHECK(info["uncertainty"]["source"] == "calibration");
  CHECK(info["uncertainty"]["error_auroc"] == 0.75);

  // A body without permutations or mc_dropout runs the signal's 3 dropout masks: the same
  // answer as asking for them, and the score is the epistemic part of that answer.
  const PredictRequest plain = plain_req("a text to score");
  CHECK(plain.signal_members);
  const json a = pred.predict(plain);
  CHECK(a["uncertainty"]["members"] == 3);
  CHECK(a["uncertainty"]["signal"] == "mc_dropout:epistemic@3");
  REQUIRE(a["uncertainty"]["score"].is_number());
  CHECK(a["uncertainty"]["score"].get<double>() == a["uncertainty"]["epistemic"].get<double>());
  CHECK(a["uncertainty"]["epistemic"].get<double>() > 0.0);  // the masks differ
  CHECK(a.dump() == pred.predict(text_req("a text to score", 1, 3)).dump());
  // In a batch too (each item inherits the body's options).
  std::vector<PredictRequest> batch;
  InputIssue issue;
  REQUIRE(decode_batch(json{{"texts", {"a text to score", "another"}}}, RequestLimits{}, &batch, &issue));
  auto outs = answers(pred.predict_batch(batch));
  CHECK(json_diff(outs[0], a) < 1e-6);
  CHECK(outs[1]["uncertainty"]["members"] == 3);

  // Members the request names win; the score is null when they cannot give the signal.
  json b = pred.predict(text_req("a text to score", 1, 0));  // mc_dropout 0 asked explicitly
  CHECK(b["uncertainty"]["members"] == 1);
  CHECK(b["uncertainty"]["signal"] == "mc_dropout:epistemic@3");
  CHECK(b["uncertainty"]["score"].is_null());
  CHECK(pred.predict(text_req("a text to score", 4, 0))["uncertainty"]["score"].is_null());  // orderings
  b = pred.predict(text_req("a text to score", 1, 5));  // more masks: the same signal, measured closer
  CHECK(b["uncertainty"]["score"].get<double>() == b["uncertainty"]["epistemic"].get<double>());
  // No uncertainty asked, no score; the prediction is still the signal's ensemble.
  PredictRequest quiet = plain;
  quiet.return_uncertainty = false;
  b = pred.predict(quiet);
  CHECK(!b.contains("uncertainty"));
  CHECK(b["probabilities"] == a["probabilities"]);

  // --default-mc-dropout wins over the signal's members: the body then counts as giving mc_dropout.
  RequestLimits server_default;
  server_default.default_mc_dropout = 2;
  PredictRequest d;
  REQUIRE(decode_predict(json{{"text", "a text to score"}}, server_default, &d, &issue));
  CHECK(!d.signal_members);
  CHECK(d.mc_dropout == 2);
  b = pred.predict(d);
  CHECK(b["uncertainty"]["members"] == 2);
  CHECK(b["uncertainty"]["score"].get<double>() == b["uncertainty"]["epistemic"].get<double>());
  REQUIRE(decode_predict(json{{"text", "x"}, {"permutations", 1}}, RequestLimits{}, &d, &issue));
  CHECK(!d.signal_members);
  REQUIRE(decode_predict(json{{"text", "x"}, {"mc_dropout", nullptr}}, RequestLimits{}, &d, &issue));
  CHECK(d.signal_members);  // null counts as absent

  // The signal's members are held to the request's work bound, and the refusal says whose they are.
  RequestLimits tight;
  const std::string full = text_of(24);
  tight.max_request_gflop = inference::forward_cost(cfg, 1, 24).gflop * 2.5;  // 2 members, not 3
  pred.set_limits(tight);
  CHECK(code_of([&] { pred.predict(text_req(full, 1, 2)); }) == "");
  try {
    pred.predict(plain_req(full));
    FAIL("the signal's 3 members were admitted over the bound");
  } catch (const InputError& e) {
    CHECK(e.kind() == InputIssueKind::kTooMuchWork);
    CHECK(std::string(e.what()).find("the members of uncertainty signal mc_dropout:epistemic@3") !=
          std::string::npos);
  }
  pred.set_limits(RequestLimits{});

  // An override (--uncertainty) wins over the checkpoint, for answers and /v1/model.
  REQUIRE(!pred.override_uncertainty(UncertaintySignal::parse("single:total")));
  CHECK(pred.uncertainty_signal().to_string() == "single:total");
  info = pred.model_info();
  CHECK(info["uncertainty"] == json{{"signal", "single:total"}, {"source", "command line"}});
  b = pred.predict(plain);
  CHECK(b["uncertainty"]["members"] == 1);
  CHECK(b["uncertainty"]["signal"] == "single:total");
  CHECK(b["uncertainty"]["score"].get<double>() == b["uncertainty"]["total"].get<double>());
  // A signal the model cannot give is refused, and the override in place stays.
  auto why = pred.override_uncertainty(UncertaintySignal::parse("mc_dropout:total@4"));
  CHECK(!why);
  ModelPredictor no_dropout(save_model(small_config(model::Task::Classify, model::PosEncoding::Rope,
                                                    model::LayerKind::Bet, 0.0),
                                       71, "no_dropout.bet"));
  why = no_dropout.override_uncertainty(UncertaintySignal::parse("mc_dropout:total@4"));
  REQUIRE(why);
  CHECK(why->find("dropout > 0") != std::string::npos);
  CHECK(no_dropout.uncertainty_signal() == default_uncertainty_signal());
}

TEST_CASE("uncertainty signal: a checkpoint without a choice reports single:1-confidence; a bad stored one fails") {
  const auto cfg = small_config();
  ModelPredictor pred(save_model(cfg, 73, "no_choice.bet"));
  CHECK(pred.uncertainty_signal() == default_uncertainty_signal());
  CHECK(pred.model_info()["uncertainty"] == json{{"signal", "single:1-confidence"}, {"source", "default"}});
  json a = pred.predict(plain_req("plain"));
  CHECK(a["uncertainty"]["members"] == 1);
  CHECK(a["uncertainty"]["signal"] == "single:1-confidence");
  CHECK(a["uncertainty"]["score"].get<double>() == 1.0 - a["confidence"].get<double>());
  // Any ensemble still has a confidence to read.
  a = pred.predict(text_req("plain", 3, 2));
  CHECK(a["uncertainty"]["score"].get<double>() == 1.0 - a["confidence"].get<double>());
  // A model wrapped in memory (no checkpoint) too.
  Generator g(79);
  auto m = std::make_shared<model::BetModel>(cfg, g);
  m->eval();
  ModelPredictor wrapped(wrap_model(m, runtime::make_byte_tokenizer()->to_json()));
  CHECK(wrapped.model_info()["uncertainty"]["signal"] == "single:1-confidence");

  // A stored choice the file cannot honour fails the load, naming the file and the field.
  const std::string bad_name = save_with_signal(cfg, 83, "bad_signal.bet", {{"signal", "single:epistemic"}});
  std::string e = load_error(bad_name);
  CHECK(e.find(bad_name) != std::string::npos);
  CHECK(e.find("metrics.calibration.uncertainty.signal") != std::string::npos);
  CHECK(e.find("has no signal 'epistemic'") != std::string::npos);
  auto std_cfg = small_config(model::Task::Classify, model::PosEncoding::Rope, model::LayerKind::Standard);
  e = load_error(save_with_signal(std_cfg, 89, "std_beta.bet", {{"signal", "single:beta_posterior_variance"}}));
  CHECK(e.find("layers are standard") != std::string::npos);
  e = load_error(save_with_signal(cfg, 97, "not_object.bet", "single:total"));
  CHECK(e.find("metrics.calibration.uncertainty: must be an object") != std::string::npos);

  // An override the reloaded model cannot give fails the reload; the old model serves on.
  const std::string bet_path = save_model(cfg, 101, "reload_bet.bet");
  ModelPredictor reloading(bet_path);
  REQUIRE(!reloading.override_uncertainty(UncertaintySignal::parse("single:beta_posterior_variance")));
  const std::string std_path = save_model(std_cfg, 103, "reload_std.bet");
  CHECK_THROWS_WITH_AS(reloading.reload(std_path), doctest::Contains("--uncertainty"), Error);
  CHECK(reloading.current()->path == bet_path);
  CHECK(reloading.predict(plain_req("still"))["uncertainty"]["score"].is_number());
}
