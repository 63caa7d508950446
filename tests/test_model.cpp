// The whole model and its layers: parameter names, the properties model.md says must
// hold (causality, exchangeability with pe=none, padding, batching), gradients, the loss
// helper and the temperature.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "model/bet_model.h"
#include "tests/gradcheck.h"

using namespace bet;
using namespace bet::model;
using namespace bet::testing;

namespace {

ModelConfig config(Task task, LayerKind layer, PosEncoding pe, int64_t k = 2, int64_t L = 2) {
  ModelConfig c;
  c.task = task;
  c.layer = layer;
  c.pe = pe;
  c.k_permutations = k;
  c.layers = L;
  c.d_model = 8;
  c.heads = 2;
  c.max_len = 16;
  c.vocab_size = 12;
  c.num_classes = 3;
  c.n_harmonics = 3;
  c.dropout = 0.1;
  // model.md's layer as written (the properties below are its; tests/test_bet_variants.cpp
  // covers the alternatives the defaults use).
  c.branch_init = BranchInit::Spec;
  c.stats_features = StatsFeatures::Counts;
  return c;
}

std::shared_ptr<BetModel> make(const ModelConfig& c, uint64_t seed = 1) {
  Generator g(seed);
  auto m = std::make_shared<BetModel>(c, g, DType::F64);
  m->eval();
  return m;
}

// Token ids [B, S]: random content tokens at valid positions, `pad` elsewhere.
std::vector<int64_t> random_ids(const std::vector<int64_t>& lengths, int64_t S, uint64_t seed, int64_t V,
                                int64_t pad = 0) {
  Generator g(seed);
  std::vector<int64_t> ids;
  for (int64_t n : lengths)
    for (int64_t t = 0; t < S; ++t) ids.push_back(t < n ? 3 + int64_t(g.randint(uint64_t(V - 3))) : pad);
  return ids;
}

Tensor ids_tensor(const std::vector<int64_t>& ids, int64_t B, int64_t S) {
  return Tensor::from_vector<int64_t>(ids, {B, S});
}

ForwardOutput run(const BetModel& m, const std::vector<int64_t>& ids, const std::vector<int64_t>& lengths, int64_t S) {
  SeqContext ctx = SeqContext::from_lengths(lengths, S, m.cfg.causal(), DType::F64);
  return m.forward(ids_tensor(ids, int64_t(lengths.size()), S), ctx);
}

// Row b (classify) or the valid positions of row b (lm) of the logits, flattened.
std::vector<double> valid_logits(const ForwardOutput& o, int64_t b, int64_t n) {
  Tensor row = select(o.logits, 0, b);
  if (o.logits.dim() == 3) row = slice(row, 0, 0, n);
  return row.contiguous().to_vector<double>();
}

double vec_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

const PosEncoding kAllPe[] = {PosEncoding::Rope, PosEncoding::Sinusoidal, PosEncoding::Learned, PosEncoding::None};
const LayerKind kKinds[] = {LayerKind::Bet, LayerKind::Standard};

std::set<std::string> names_of(const BetModel& m) {
  std::set<std::string> s;
  for (auto& [n, t] : m.named_parameters()) CHECK(s.insert(n).second);
  return s;
}

}  // namespace

TEST_CASE("parameter names are model.md's state_dict names") {
  ModelConfig c = config(Task::Classify, LayerKind::Bet, PosEncoding::Learned);
  auto m = make(c);
  const int64_t ms = std::max<int64_t>(3, int64_t(std::floor(std::log(double(c.d_model)))));
  std::set<std::string> expect = {"embed.weight", "pos.weight", "head.weight", "head.bias", "temperature"};
  auto wb = [&](const std::string& p) {
    expect.insert(p + ".weight");
    expect.insert(p + ".bias");
  };
  for (int64_t i = 0; i < c.layers; ++i) {
    const std::string L = "layers." + std::to_string(i) + ".";
    for (int64_t j = 0; j < ms; ++j)
      for (const char* s : {"0", "2"}) wb(L + "stats.moment." + std::to_string(j) + "." + s);
    for (const char* s : {"stats.count", "stats.beta_head", "stats.proj", "attn.q", "attn.k", "attn.v", "attn.o",
                          "cot.entropy.0", "cot.entropy.2", "cot.ratio.0", "cot.ratio.2", "cot_gate", "stats_gate",
                          "debias.detector.0", "debias.detector.2", "debias.gate", "norm1", "norm2", "norm3", "ffn.0",
                          "ffn.3"})
      wb(L + s);
    for (const char* s : {"stats.prior", "attn.lam", "attn.gamma", "debias.harmonic_weights", "debias.basis.weight"})
      expect.insert(L + s);
  }
  CHECK(names_of(*m) == expect);

  std::map<std::string, Shape> shapes;
  for (auto& [n, t] : m->named_parameters()) shapes[n] = t.shape();
  CHECK(shapes["temperature"] == Shape{});
  CHECK(shapes["layers.0.attn.lam"] == Shape{});
  CHECK(shapes["layers.0.attn.gamma"] == Shape{});
  CHECK(shapes["layers.1.stats.prior"] == Shape{2});
  CHECK(shapes["layers.0.stats.count.weight"] == Shape{ms, 8});
  CHECK(shapes["layers.0.stats.proj.weight"] == Shape{8, 2 * ms + 2});
  CHECK(shapes["layers.0.cot_gate.weight"] == Shape{8, 10});
  CHECK(shapes["layers.0.stats_gate.weight"] == Shape{1, 8});
  CHECK(shapes["layers.0.debias.basis.weight"] == Shape{8, 6});
  CHECK(shapes["layers.0.ffn.0.weight"] == Shape{32, 8});
  CHECK(shapes["layers.0.ffn.3.weight"] == Shape{8, 32});
  CHECK(shapes["pos.weight"] == Shape{16, 8});
  CHECK(shapes["head.weight"] == Shape{3, 8});

  // Standard layers, lm, tied: no head at all, no pos for rope.
  ModelConfig s = config(Task::LM, LayerKind::Standard, PosEncoding::Rope, 2, 1);
  s.tie_embeddings = true;
  std::set<std::string> expect_s = {"embed.weight", "temperature"};
  for (const char* p : {"attn.q", "attn.k", "attn.v", "attn.o", "norm1", "norm2", "ffn.0", "ffn.3"}) {
    expect_s.insert(std::string("layers.0.") + p + ".weight");
    expect_s.insert(std::string("layers.0.") + p + ".bias");
  }
  CHECK(names_of(*make(s)) == expect_s);
  s.tie_embeddings = false;
  expect_s.insert("head.weight");
  expect_s.insert("head.bias");
  CHECK(names_of(*make(s)) == expect_s);
}

TEST_CASE("temperature: stored, applied, overridable, never trained") {
  auto m = make(config(Task::Classify, LayerKind::Bet, PosEncoding::Rope));
  auto tp = m->trainable_parameters();
  CHECK(tp.size() + 1 == m->named_parameters().size());
  for (auto& [n, t] : tp) CHECK(n != "temperature");
  CHECK_FALSE(m->temperature.requires_grad());
  CHECK(m->temperature_value() == 1.0);

  const std::vector<int64_t> lengths = {5, 3};
  auto ids = random_ids(lengths, 5, 3, 12);
  auto base = run(*m, ids, lengths, 5).logits.to_vector<double>();
  m->set_temperature(2.0);
  auto half = run(*m, ids, lengths, 5).logits.to_vector<double>();
  for (size_t i = 0; i < base.size(); ++i) CHECK(half[i] == doctest::Approx(base[i] / 2).epsilon(1e-12));
  SeqContext ctx = SeqContext::from_lengths(lengths, 5, false, DType::F64);
  ForwardOptions opt;
  opt.temperature = 0.5;
  auto twice = m->forward(ids_tensor(ids, 2, 5), ctx, opt).logits.to_vector<double>();
  for (size_t i = 0; i < base.size(); ++i) CHECK(twice[i] == doctest::Approx(base[i] * 2).epsilon(1e-12));

  ForwardOutput o = m->forward(ids_tensor(ids, 2, 5), ctx);
  model_loss(o, Tensor::from_vector<int64_t>({0, 2}, {2}), ctx, Task::Classify, 0.1).loss.backward();
  CHECK_FALSE(m->temperature.grad().defined());
  CHECK(m->embed->weight.grad().defined());
}

TEST_CASE("causal models never read later tokens") {
  for (LayerKind kind : kKinds)
    for (PosEncoding pe : kAllPe) {
      auto m = make(config(Task::LM, kind, pe, 3));
      const std::vector<int64_t> lengths = {7, 4};
      const int64_t S = 7, V = 12;
      auto ids = random_ids(lengths, S, 5, V);
      auto base = run(*m, ids, lengths, S).logits.to_vector<double>();
      for (int64_t u = 1; u < S; ++u) {
        auto changed_ids = ids;
        for (int64_t b = 0; b < 2; ++b) changed_ids[size_t(b * S + u)] = 3 + (ids[size_t(b * S + u)] - 3 + 4) % (V - 3);
        auto changed = run(*m, changed_ids, lengths, S).logits.to_vector<double>();
        double before = 0, after = 0;
        for (int64_t b = 0; b < 2; ++b)
          for (int64_t t = 0; t < lengths[size_t(b)]; ++t)
            for (int64_t v = 0; v < V; ++v) {
              const size_t e = size_t((b * S + t) * V + v);
              (t < u ? before : after) = std::max(t < u ? before : after, std::abs(changed[e] - base[e]));
            }
        INFO("layer " << to_string(kind) << " pe " << to_string(pe) << " changed token " << u);
        CHECK(before < 1e-12);
        CHECK(after > 1e-8);
      }
    }
}

TEST_CASE("bidirectional models with pe=none are invariant to permuting the valid tokens") {
  for (LayerKind kind : kKinds) {
    auto m = make(config(Task::Classify, kind, PosEncoding::None, 3, 2));
    const std::vector<int64_t> lengths = {6, 4};
    const int64_t S = 6;
    auto ids = random_ids(lengths, S, 8, 12);
    auto base = run(*m, ids, lengths, S);
    for (uint64_t seed : {1u, 2u, 3u}) {
      auto perm_ids = ids;
      for (int64_t b = 0; b < 2; ++b) {
        auto p = Generator(seed * 10 + uint64_t(b)).permutation(lengths[size_t(b)]);
        for (int64_t t = 0; t < lengths[size_t(b)]; ++t) perm_ids[size_t(b * S + t)] = ids[size_t(b * S + p[size_t(t)])];
      }
      auto out = run(*m, perm_ids, lengths, S);
      CHECK(max_abs_diff(out.logits, base.logits) < 1e-12);
      if (kind == LayerKind::Bet) {
        CHECK(max_abs_diff(at_last_valid(out.layers[1].alpha, SeqContext::from_lengths(lengths, S, false, DType::F64)),
                           at_last_valid(base.layers[1].alpha, SeqContext::from_lengths(lengths, S, false, DType::F64))) <
              1e-12);
      }
    }
    // Not vacuous: with rope the same permutation does change the logits.
    auto r = make(config(Task::Classify, kind, PosEncoding::Rope, 3, 2));
    auto rev = ids;
    for (int64_t b = 0; b < 2; ++b)
      std::reverse(rev.begin() + b * S, rev.begin() + b * S + lengths[size_t(b)]);
    CHECK(max_abs_diff(run(*r, rev, lengths, S).logits, run(*r, ids, lengths, S).logits) > 1e-9);
  }
}

TEST_CASE("padding changes nothing; a sequence gives the same output alone and in any batch") {
  for (Task task : {Task::Classify, Task::LM})
    for (LayerKind kind : kKinds)
      for (PosEncoding pe : kAllPe) {
        INFO("task " << to_string(task) << " layer " << to_string(kind) << " pe " << to_string(pe));
        auto m = make(config(task, kind, pe, 3));
        const std::vector<int64_t> lengths = {3, 6, 1, 5};
        const int64_t S = 6;
        auto ids = random_ids(lengths, S, 11, 12);
        ForwardOutput batched = run(*m, ids, lengths, S);
        // The same batch padded further, with junk in the padding.
        const int64_t S2 = 9;
        std::vector<int64_t> ids2;
        for (int64_t b = 0; b < 4; ++b)
          for (int64_t t = 0; t < S2; ++t) ids2.push_back(t < lengths[size_t(b)] ? ids[size_t(b * S + t)] : 3 + (t + b) % 9);
        ForwardOutput padded = run(*m, ids2, lengths, S2);
        for (int64_t b = 0; b < 4; ++b) {
          const int64_t n = lengths[size_t(b)];
          std::vector<int64_t> one(ids.begin() + b * S, ids.begin() + b * S + n);
          ForwardOutput alone = run(*m, one, {n}, n);
          CHECK(vec_diff(valid_logits(alone, 0, n), valid_logits(batched, b, n)) < 1e-10);
          CHECK(vec_diff(valid_logits(padded, b, n), valid_logits(batched, b, n)) < 1e-10);
          CHECK(alone.attention_dispersion.item() ==
                doctest::Approx(batched.attention_dispersion.to_vector<double>()[size_t(b)]).epsilon(1e-9));
        }
      }
}

TEST_CASE("forward diagnostics: one entry per layer, model.md's shapes") {
  auto m = make(config(Task::LM, LayerKind::Bet, PosEncoding::Rope, 3, 2));
  const std::vector<int64_t> lengths = {4, 2};
  ForwardOutput o = run(*m, random_ids(lengths, 4, 2, 12), lengths, 4);
  CHECK(o.logits.shape() == Shape({2, 4, 12}));
  REQUIRE(o.layers.size() == 2u);
  for (auto& d : o.layers) {
    for (const Tensor* t : {&d.alpha, &d.beta, &d.posterior_mean, &d.posterior_variance, &d.optimal_length,
                            &d.reasoning_entropy})
      CHECK(t->shape() == Shape({2, 4}));
    CHECK(d.order_dispersion.shape() == Shape{2});
    CHECK(d.artifact_magnitude.shape() == Shape{2});
    CHECK(d.correction_magnitude.shape() == Shape{2});
    CHECK(d.order_dispersion.to_vector<double>()[0] > 0);  // rope, k = 3, 4 tokens: paths differ
  }
  CHECK(o.attention_dispersion.shape() == Shape{2});
  auto s = make(config(Task::Classify, LayerKind::Standard, PosEncoding::Rope, 3, 2));
  ForwardOutput os = run(*s, random_ids(lengths, 4, 2, 12), lengths, 4);
  CHECK(os.logits.shape() == Shape({2, 3}));
  CHECK_FALSE(os.layers[0].alpha.defined());
  CHECK(os.attention_dispersion.to_vector<double>() == std::vector<double>{0, 0});
}

TEST_CASE("model_loss: lm counts valid positions only; classify uses the labels") {
  auto m = make(config(Task::LM, LayerKind::Bet, PosEncoding::Rope));
  const std::vector<int64_t> lengths = {5, 2};
  const int64_t S = 5, V = 12;
  auto ids = random_ids(lengths, S, 21, V);
  SeqContext ctx = SeqContext::from_lengths(lengths, S, true, DType::F64);
  ForwardOutput o = m->forward(ids_tensor(ids, 2, S), ctx);
  auto targets = random_ids(lengths, S, 22, V, 7);  // padding targets are real class ids
  MDLLossOutput l = model_loss(o, ids_tensor(targets, 2, S), ctx, Task::LM, 0.0);
  CHECK(l.n == 7);
  auto lg = o.logits.to_vector<double>();
  double ce = 0;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < lengths[size_t(b)]; ++t) {
      const double* row = &lg[size_t((b * S + t) * V)];
      double mx = *std::max_element(row, row + V), z = 0;
      for (int64_t v = 0; v < V; ++v) z += std::exp(row[v] - mx);
      ce += mx + std::log(z) - row[targets[size_t(b * S + t)]];
    }
  CHECK(l.loss.item() == doctest::Approx(ce / 7).epsilon(1e-10));
  for (int64_t t = 2; t < S; ++t) targets[size_t(S + t)] = 3;
  CHECK(model_loss(o, ids_tensor(targets, 2, S), ctx, Task::LM, 0.0).loss.item() == doctest::Approx(ce / 7).epsilon(1e-12));

  auto c = make(config(Task::Classify, LayerKind::Standard, PosEncoding::None));
  SeqContext cc = SeqContext::from_lengths(lengths, S, false, DType::F64);
  ForwardOutput oc = c->forward(ids_tensor(ids, 2, S), cc);
  MDLLossOutput lc = model_loss(oc, Tensor::from_vector<int64_t>({2, 0}, {2}), cc, Task::Classify, 0.0);
  CHECK(lc.n == 2);
  auto lgc = oc.logits.to_vector<double>();
  double cec = 0;
  for (int64_t b = 0; b < 2; ++b) {
    const double* row = &lgc[size_t(b * 3)];
    double z = std::exp(row[0]) + std::exp(row[1]) + std::exp(row[2]);
    cec += std::log(z) - row[b == 0 ? 2 : 0];
  }
  CHECK(lc.loss.item() == doctest::Approx(cec / 2).epsilon(1e-10));
}

TEST_CASE("dropout: deterministic for a (seed, offset), different masks elsewhere, off in eval") {
  auto m = make(config(Task::Classify, LayerKind::Bet, PosEncoding::Rope));
  const std::vector<int64_t> lengths = {5, 3};
  auto ids = ids_tensor(random_ids(lengths, 5, 4, 12), 2, 5);
  SeqContext ctx = SeqContext::from_lengths(lengths, 5, false, DType::F64);
  Tensor eval = m->forward(ids, ctx).logits;
  uint64_t offset = 0;
  ctx.training = true;
  ctx.seed = 3;
  ctx.dropout_offset = &offset;
  Tensor a = m->forward(ids, ctx).logits;
  const uint64_t used = offset;
  CHECK(used > 0);
  offset = 0;
  Tensor b = m->forward(ids, ctx).logits;
  CHECK(max_abs_diff(a, b) == 0);
  Tensor c = m->forward(ids, ctx).logits;  // continues the stream
  CHECK(max_abs_diff(a, c) > 1e-6);
  CHECK(max_abs_diff(a, eval) > 1e-6);
}

TEST_CASE("tied lm head: logits are hidden @ embed^T") {
  ModelConfig c = config(Task::LM, LayerKind::Standard, PosEncoding::Sinusoidal);
  c.tie_embeddings = true;
  auto m = make(c);
  const std::vector<int64_t> lengths = {4};
  ForwardOutput o = run(*m, random_ids(lengths, 4, 6, 12), lengths, 4);
  CHECK(max_abs_diff(o.logits, matmul(o.hidden, transpose(m->embed->weight, 0, 1))) < 1e-12);
}

TEST_CASE("sinusoidal table: model.md's formula") {
  Tensor t = sinusoidal_table(5, 6, DType::F64);
  auto v = t.to_vector<double>();
  for (int64_t p = 0; p < 5; ++p)
    for (int64_t i = 0; i < 3; ++i) {
      const double ang = double(p) / std::pow(10000.0, 2.0 * double(i) / 6.0);
      CHECK(v[size_t(p * 6 + 2 * i)] == doctest::Approx(std::sin(ang)));
      CHECK(v[size_t(p * 6 + 2 * i + 1)] == doctest::Approx(std::cos(ang)));
    }
}

TEST_CASE("finite-difference gradients of a whole layer (bet and standard, both modes)") {
  for (bool causal : {false, true})
    for (PosEncoding pe : {PosEncoding::Rope, PosEncoding::Sinusoidal}) {
      ModelConfig c = config(causal ? Task::LM : Task::Classify, LayerKind::Bet, pe, 2, 1);
      c.dropout = 0.0;
      SeqContext ctx = SeqContext::from_lengths({4, 3}, 4, causal, DType::F64);
      Tensor x = leaf(rand64({2, 4, 8}, 31));
      {
        Generator g(32);
        BetLayer layer(c, 0, g, DType::F64);
        auto f = [&](const std::vector<Tensor>& in) { return layer.forward(in[0], ctx).out; };
        CHECK_GRAD(f, (std::vector<Tensor>{x, layer.attn->lam, layer.attn->gamma, layer.attn->q->weight,
                                           layer.stats->prior, layer.cot_gate->weight, layer.stats_gate->bias,
                                           layer.debias->basis->weight, layer.norm2->weight, layer.ffn->fc1->bias}));
      }
      {
        Generator g(33);
        StandardLayer layer(c, 0, g, DType::F64);
        auto f = [&](const std::vector<Tensor>& in) { return layer.forward(in[0], ctx).out; };
        CHECK_GRAD(f, (std::vector<Tensor>{x, layer.attn->k->weight, layer.attn->o->bias, layer.norm1->bias,
                                           layer.ffn->fc2->weight}));
      }
    }
  // Training mode: dropout at every site, relabellings from training keys.
  ModelConfig c = config(Task::LM, LayerKind::Bet, PosEncoding::Rope, 2, 1);
  c.dropout = 0.2;
  SeqContext ctx = SeqContext::from_lengths({4, 2}, 4, true, DType::F64);
  uint64_t offset = 0;
  ctx.training = true;
  ctx.seed = 9;
  ctx.dropout_offset = &offset;
  Generator g(34);
  BetLayer layer(c, 0, g, DType::F64);
  Tensor x = leaf(rand64({2, 4, 8}, 35));
  auto f = [&](const std::vector<Tensor>& in) {
    offset = 0;
    return layer.forward(in[0], ctx).out;
  };
  CHECK_GRAD(f, (std::vector<Tensor>{x, layer.attn->v->weight, layer.ffn->fc2->bias}));
}

TEST_CASE("finite-difference gradients through the whole model") {
  for (Task task : {Task::Classify, Task::LM}) {
    ModelConfig c = config(task, LayerKind::Bet, PosEncoding::Learned, 2, 1);
    c.vocab_size = 6;
    c.tie_embeddings = task == Task::LM;
    auto m = make(c, 40);
    const std::vector<int64_t> lengths = {3, 2};
    SeqContext ctx = SeqContext::from_lengths(lengths, 3, task == Task::LM, DType::F64);
    Tensor ids = ids_tensor(random_ids(lengths, 3, 41, 6), 2, 3);
    auto f = [&](const std::vector<Tensor>&) { return m->forward(ids, ctx).logits; };
    std::vector<Tensor> params;
    for (const auto& [name, t] : m->trainable_parameters())
      if (name == "embed.weight" || name == "pos.weight" || name == "head.weight") params.push_back(t);
    REQUIRE(params.size() == (m->head ? 3u : 2u));
    CHECK_GRAD(f, params);
  }
}

// ---------------- parity with the PyTorch reference (tests/reference/gen_model_reference.py) ----------------

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bet_config.h"

namespace {

using nlohmann::json;

Tensor json_tensor(const json& j, DType dt = DType::F64) {
  return Tensor::from_vector<double>(j.at("data").get<std::vector<double>>(), j.at("shape").get<Shape>()).to(dt);
}

ModelConfig json_config(const json& c) {
  ModelConfig m;
  m.task = parse_task(c.at("task").get<std::string>());
  m.layer = parse_layer(c.at("layer").get<std::string>());
  m.pe = parse_pe(c.at("pe").get<std::string>());
  m.vocab_size = c.at("vocab_size");
  m.d_model = c.at("d_model");
  m.heads = c.at("n_heads");
  m.layers = c.at("n_layers");
  m.max_len = c.at("max_len");
  m.k_permutations = c.at("k_permutations");
  m.n_harmonics = c.at("n_harmonics");
  if (!c.at("n_classes").is_null()) m.num_classes = c.at("n_classes");
  m.tie_embeddings = c.at("tie_embeddings");
  m.dropout = c.at("dropout");
  m.branch_init = BranchInit::Spec;  // the reference implements model.md's layer
  m.stats_features = StatsFeatures::Counts;
  return m;
}

// Compares `got` with the reference tensor; with `per_token` the leading [B, S] dims
// are token rows and only valid ones count (padding values are unspecified).
void check_close(const std::string& what, const Tensor& got, const json& ref, const std::vector<int64_t>& lengths,
                 bool per_token, double atol, double rtol) {
  const Shape shape = ref.at("shape").get<Shape>();
  INFO(what);
  REQUIRE(got.shape() == shape);
  auto g = got.to_vector<double>();
  auto r = ref.at("data").get<std::vector<double>>();
  const int64_t B = int64_t(lengths.size());
  const int64_t S = per_token ? shape[1] : 1;
  const size_t inner = g.size() / size_t(per_token ? B * S : 1);
  double worst = 0;
  std::string where;
  for (size_t e = 0; e < g.size(); ++e) {
    if (per_token) {
      const int64_t row = int64_t(e / inner);
      if (row % S >= lengths[size_t(row / S)]) continue;
    }
    const double err = std::abs(g[e] - r[e]), tol = atol + rtol * std::abs(r[e]);
    if (err > tol && err - tol > worst) {
      worst = err - tol;
      where = "element " + std::to_string(e) + ": got " + std::to_string(g[e]) + ", reference " + std::to_string(r[e]);
    }
  }
  INFO(where);
  CHECK(where.empty());
}

void run_parity(const std::filesystem::path& file, DType dt) {
  std::ifstream in(file);
  const json doc = json::parse(in);
  const std::string name = doc.at("case");
  INFO("case " << name << (dt == DType::F64 ? " f64" : " f32"));
  REQUIRE(doc.at("schema") == "bet-model-reference/1");
  const ModelConfig cfg = json_config(doc.at("config"));
  Generator g(0);
  BetModel m(cfg, g, dt);
  m.eval();
  NamedTensors params;
  for (auto& [n, t] : doc.at("params").items()) params.emplace_back(n, json_tensor(t, dt));
  m.load_parameters(params);
  CHECK(m.named_parameters().size() == params.size());  // no name the reference lacks

  const json& inputs = doc.at("inputs");
  const auto lengths = inputs.at("lengths").get<std::vector<int64_t>>();
  const Shape ids_shape = inputs.at("ids").at("shape").get<Shape>();
  const int64_t S = ids_shape[1];
  SeqContext ctx = SeqContext::from_lengths(lengths, S, cfg.causal(), dt);
  Tensor ids = Tensor::from_vector<int64_t>(inputs.at("ids").at("data").get<std::vector<int64_t>>(), ids_shape);
  Tensor perm = Tensor::from_vector<int64_t>(inputs.at("perm_pos").at("data").get<std::vector<int64_t>>(),
                                             inputs.at("perm_pos").at("shape").get<Shape>());
  std::vector<Tensor> perm_ids;
  for (int64_t l = 0; l < cfg.layers; ++l) perm_ids.push_back(select(perm, 0, l).contiguous());

  const bool f64 = dt == DType::F64;
  const double atol = f64 ? 1e-8 : 1e-4, rtol = f64 ? 1e-6 : 1e-4;
  ForwardOptions opt;
  opt.perm_ids = &perm_ids;
  opt.keep_intermediates = true;
  ForwardOutput out = m.forward(ids, ctx, opt);
  const json& ro = doc.at("outputs");
  check_close("embedded", out.embedded, ro.at("embedded"), lengths, true, atol, rtol);
  check_close("logits", out.logits, ro.at("logits"), lengths, cfg.causal(), atol, rtol);
  for (int64_t l = 0; l < cfg.layers; ++l) {
    const json& rl = ro.at("layers").at(size_t(l));
    const std::string L = "layer " + std::to_string(l) + " ";
    check_close(L + "hidden", out.layer_outputs[size_t(l)], rl.at("hidden"), lengths, true, atol, rtol);
    // The attention alone, on the reference's own input.
    const MartingaleAwareAttention& attn =
        cfg.layer == LayerKind::Bet ? *m.bet_layers[size_t(l)]->attn : *m.standard_layers[size_t(l)]->attn;
    {
      autograd::NoGradGuard ng;
      AttentionOutput a = attn.forward(json_tensor(rl.at("attn_in"), dt), ctx, perm_ids[size_t(l)]);
      check_close(L + "attn_out", a.out, rl.at("attn_out"), lengths, true, atol, rtol);
      if (rl.contains("w")) check_close(L + "w", attn.path_weight(ctx), rl.at("w"), lengths, true, atol, rtol);
    }
    if (cfg.layer != LayerKind::Bet) continue;
    const LayerDiagnostics& d = out.layers[size_t(l)];
    check_close(L + "alpha", d.alpha, rl.at("alpha"), lengths, true, atol, rtol);
    check_close(L + "beta", d.beta, rl.at("beta"), lengths, true, atol, rtol);
    check_close(L + "posterior_mean", d.posterior_mean, rl.at("posterior_mean"), lengths, true, atol, rtol);
    check_close(L + "posterior_variance", d.posterior_variance, rl.at("posterior_variance"), lengths, true, atol, rtol);
    check_close(L + "order_dispersion", d.order_dispersion, rl.at("order_dispersion"), lengths, false, atol, rtol);
    check_close(L + "optimal_length", d.optimal_length, rl.at("optimal_length"), lengths, true, atol, rtol);
    check_close(L + "reasoning_entropy", d.reasoning_entropy, rl.at("reasoning_entropy"), lengths, true, atol, rtol);
    if (!rl.at("artifact_magnitude").is_null()) {
      check_close(L + "artifact_magnitude", d.artifact_magnitude, rl.at("artifact_magnitude"), lengths, false, atol, rtol);
      check_close(L + "correction_magnitude", d.correction_magnitude, rl.at("correction_magnitude"), lengths, false,
                  atol, rtol);
    }
  }

  const json& rloss = doc.at("loss");
  const json& rin = inputs.at("targets");
  Tensor targets = Tensor::from_vector<int64_t>(rin.at("data").get<std::vector<int64_t>>(), rin.at("shape").get<Shape>());
  MDLLossOutput loss = model_loss(out, targets, ctx, cfg.task, doc.at("config").at("mdl_beta"));
  CHECK(loss.n == rloss.at("n_targets").get<int64_t>());
  CHECK(loss.mdl_active == rloss.at("mdl_active").get<bool>());
  auto near = [&](double got, const char* key) {
    const double r = rloss.at(key);
    INFO(key << ": got " << got << ", reference " << r);
    CHECK(std::abs(got - r) <= atol + rtol * std::abs(r));
  };
  near(loss.loss.item(), "loss");
  near(loss.standard_loss, "standard_loss");
  near(loss.mdl_penalty, "mdl_penalty");
  near(loss.optimal_complexity, "optimal_complexity");
  near(loss.actual_complexity, "actual_complexity");

  out.embedded.retain_grad();
  for (auto& h : out.layer_outputs) h.retain_grad();
  loss.loss.backward();
  // Gradients: f32 sums differ from f64 ones by more than forward values do.
  const double gatol = f64 ? 1e-8 : 2e-4, grtol = f64 ? 1e-6 : 1e-3;
  check_close("grad_embedded", out.embedded.grad(), ro.at("grad_embedded"), lengths, true, gatol, grtol);
  for (int64_t l = 0; l < cfg.layers; ++l)
    check_close("layer " + std::to_string(l) + " grad_hidden", out.layer_outputs[size_t(l)].grad(),
                ro.at("layers").at(size_t(l)).at("grad_hidden"), lengths, true, gatol, grtol);
  const json& grads = doc.at("grads");
  for (auto& [n, p] : m.trainable_parameters()) {
    REQUIRE(grads.contains(n));
    Tensor gp = p.grad().defined() ? p.grad() : Tensor::zeros(p.shape(), dt);
    check_close("grad " + n, gp, grads.at(n), lengths, false, gatol, grtol);
  }
  CHECK(grads.size() == m.trainable_parameters().size());
}

}  // namespace

TEST_CASE("parity with the PyTorch reference (forward, diagnostics, loss, gradients)") {
  const std::filesystem::path dir = std::filesystem::path(BET_SOURCE_DIR) / "tests" / "reference" / "model";
  std::vector<std::filesystem::path> files;
  for (auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".json") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 10);
  for (auto& f : files) {
    SUBCASE(f.stem().string().c_str()) {
      run_parity(f, DType::F64);
      run_parity(f, DType::F32);
    }
  }
}
