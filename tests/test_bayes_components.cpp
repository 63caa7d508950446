// The four Bayesian components of model.md: SufficientStatsEncoder, OptimalCoTLayer,
// PositionalDebiasing, MDLRegularizedLoss. Forward values against an independent
// PyTorch implementation (tests/reference/bayes_components.py), gradients by finite
// differences, and every "Must hold" of model.md as a property a broken version fails.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "bet_config.h"
#include "model/mdl_loss.h"
#include "model/optimal_cot.h"
#include "model/positional_debiasing.h"
#include "model/sufficient_stats.h"
#include "tests/gradcheck.h"
#include "tests/reference_data.h"

using namespace bet;
using namespace bet::model;
using namespace bet::testing;
using nlohmann::json;

namespace {

const json& reference() { return reference_file("bayes_components.json"); }

Tensor from_json(const json& data, const Shape& shape) {
  return Tensor::from_vector<double>(data.get<std::vector<double>>(), shape);
}

NamedTensors params_from_json(const json& p) {
  NamedTensors out;
  for (auto& [name, v] : p.items()) out.emplace_back(name, from_json(v["data"], v["shape"].get<Shape>()));
  return out;
}

std::set<std::string> names_of(const Module& m) {
  std::set<std::string> s;
  for (auto& [n, t] : m.named_parameters()) s.insert(n);
  return s;
}

// Loads the reference parameters; the names must match PyTorch's state_dict both ways.
void load_reference(Module& m, const json& p) {
  std::set<std::string> ref;
  for (auto& [name, v] : p.items()) ref.insert(name);
  CHECK(names_of(m) == ref);
  m.load_parameters(params_from_json(p));
}

// Max |a - b| over the valid positions of [B, S, ...] tensors (padding is unspecified).
double valid_diff(const Tensor& a, const Tensor& b, const std::vector<int64_t>& lengths) {
  REQUIRE(a.shape() == b.shape());
  const int64_t B = a.size(0), S = a.size(1), inner = a.numel() / std::max<int64_t>(B * S, 1);
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double m = 0;
  for (int64_t i = 0; i < B; ++i)
    for (int64_t t = 0; t < lengths[size_t(i)]; ++t)
      for (int64_t k = 0; k < inner; ++k) {
        size_t e = size_t((i * S + t) * inner + k);
        m = std::max(m, std::abs(va[e] - vb[e]));
      }
  return m;
}

// Same as valid_diff but only positions t < t_end of every sequence (and valid).
double prefix_diff(const Tensor& a, const Tensor& b, const std::vector<int64_t>& lengths, int64_t t_end) {
  std::vector<int64_t> l = lengths;
  for (auto& n : l) n = std::min(n, t_end);
  return valid_diff(a, b, l);
}

// Every output of the module flattened into one vector, for gradcheck.
Tensor flat_all(const std::vector<Tensor>& ts) {
  std::vector<Tensor> f;
  for (const auto& t : ts) f.push_back(reshape(t, {-1}));
  return concat(f, 0);
}

std::vector<Tensor> stats_outputs(const StatsOutput& o) {
  return {o.stats, o.alpha, o.beta, o.posterior_mean, o.posterior_variance};
}
std::vector<Tensor> cot_outputs(const CoTOutput& o) { return {o.optimal_length, o.reasoning_entropy}; }
std::vector<Tensor> debias_outputs(const DebiasOutput& o) {
  return {o.out, o.artifact_scores, o.artifact_magnitude, o.correction_magnitude};
}

// A copy of x [B, S, D] with each sequence's valid tokens reordered by a seeded permutation.
Tensor permute_valid(const Tensor& x, const std::vector<int64_t>& lengths, uint64_t seed) {
  const int64_t B = x.size(0), S = x.size(1), D = x.size(2);
  auto v = x.to_vector<double>();
  std::vector<double> out = v;
  Generator g(seed);
  for (int64_t b = 0; b < B; ++b) {
    auto perm = g.permutation(lengths[size_t(b)]);
    for (int64_t t = 0; t < int64_t(perm.size()); ++t)
      for (int64_t d = 0; d < D; ++d) out[size_t((b * S + t) * D + d)] = v[size_t((b * S + perm[size_t(t)]) * D + d)];
  }
  return Tensor::from_vector<double>(out, x.shape()).to(x.dtype());
}

// A copy of x with position t0 of every sequence (or, if `padding_only`, every padding
// position instead) overwritten by large random values.
Tensor overwrite(const Tensor& x, const std::vector<int64_t>& lengths, int64_t t0, bool padding_only, uint64_t seed) {
  const int64_t B = x.size(0), S = x.size(1), D = x.size(2);
  auto v = x.to_vector<double>();
  auto noise = rand64({B, S, D}, seed, -50, 50).to_vector<double>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < S; ++t) {
      bool hit = padding_only ? t >= lengths[size_t(b)] : t == t0;
      if (!hit) continue;
      for (int64_t d = 0; d < D; ++d) v[size_t((b * S + t) * D + d)] = noise[size_t((b * S + t) * D + d)];
    }
  return Tensor::from_vector<double>(v, x.shape()).to(x.dtype());
}

// Sequence b alone, cut to its own length: [1, n_b, D].
Tensor alone(const Tensor& x, int64_t b, int64_t n) { return slice(slice(x, 0, b, b + 1), 1, 0, n).contiguous(); }

const std::vector<int64_t> kLengths = {5, 3};
constexpr int64_t kB = 2, kS = 5, kD = 8;

// Runs the generic "Must hold" set on a context-pooling component: `run(x, ctx)` returns
// its outputs, all [B, S, ...] (the debiasing diagnostics are checked separately).
template <typename Run>
void check_context_properties(Run run, bool causal, bool check_permutation) {
  Tensor x = rand64({kB, kS, kD}, 11);
  SeqContext ctx = SeqContext::from_lengths(kLengths, kS, causal, DType::F64);
  auto base = run(x, ctx);

  SUBCASE("padding changes nothing at valid positions") {
    auto o = run(overwrite(x, kLengths, -1, true, 12), ctx);
    for (size_t k = 0; k < base.size(); ++k) CHECK(valid_diff(o[k], base[k], kLengths) < 1e-12);
    // Nor does batching: each sequence alone, without padding, gives the same values.
    for (int64_t b = 0; b < kB; ++b) {
      const int64_t n = kLengths[size_t(b)];
      auto single = run(alone(x, b, n), SeqContext::from_lengths({n}, n, causal, DType::F64));
      for (size_t k = 0; k < base.size(); ++k) {
        Tensor mine = slice(slice(base[k], 0, b, b + 1), 1, 0, n);
        CHECK(max_abs_diff(single[k], mine) < 1e-12);
      }
    }
  }
  if (causal) {
    SUBCASE("causal outputs at t never see a later token") {
      for (int64_t t0 = 1; t0 < kS; ++t0) {
        auto o = run(overwrite(x, kLengths, t0, false, 13 + uint64_t(t0)), ctx);
        for (size_t k = 0; k < base.size(); ++k) {
          CHECK(prefix_diff(o[k], base[k], kLengths, t0) < 1e-12);
          // ... while the changed token itself does move its own output.
          CHECK(valid_diff(o[k], base[k], kLengths) > 1e-6);
        }
      }
    }
  } else if (check_permutation) {
    SUBCASE("bidirectional outputs are invariant to permuting the valid tokens") {
      for (uint64_t seed : {21u, 22u, 23u}) {
        auto o = run(permute_valid(x, kLengths, seed), ctx);
        for (size_t k = 0; k < base.size(); ++k) CHECK(valid_diff(o[k], base[k], kLengths) < 1e-12);
      }
      // Every valid position of a sequence holds the same value.
      for (size_t k = 0; k < base.size(); ++k) {
        Tensor first = expand(slice(base[k], 1, 0, 1), base[k].shape());
        CHECK(valid_diff(base[k], first, kLengths) < 1e-12);
      }
    }
  }
}

}  // namespace

// ------------------------------------------------------------ SufficientStatsEncoder

TEST_CASE("SufficientStatsEncoder: names, sizes and initial priors") {
  Generator g(1);
  SufficientStatsEncoder enc(kD, g, DType::F64);
  CHECK(enc.m == 3);
  CHECK(SufficientStatsEncoder::num_stats(128) == 4);
  CHECK(SufficientStatsEncoder::num_stats(2) == 3);
  auto names = names_of(enc);
  for (const char* n : {"prior", "moment.0.0.weight", "moment.2.2.bias", "count.weight", "count.bias",
                        "beta_head.weight", "beta_head.bias", "proj.weight", "proj.bias"})
    CHECK(names.count(n) == 1);
  CHECK(names.count("moment.3.0.weight") == 0);
  CHECK(enc.count->weight.shape() == Shape{3, kD});
  CHECK(enc.proj->weight.shape() == Shape{kD, 2 * 3 + 2});
  // softplus(a0) = 1: the uniform Beta(1, 1) prior.
  auto pr = softplus(enc.prior.detach()).to_vector<double>();
  CHECK(std::abs(pr[0] - 1.0) < 1e-12);
  CHECK(std::abs(pr[1] - 1.0) < 1e-12);
}

TEST_CASE("SufficientStatsEncoder matches the PyTorch reference") {
  const json& r = reference();
  Generator g(2);
  SufficientStatsEncoder enc(kD, g, DType::F64);
  load_reference(enc, r["stats"]["params"]);
  Tensor x = from_json(r["x"], {kB, kS, kD});
  for (bool causal : {true, false}) {
    CAPTURE(causal);
    const json& ref = r["stats"][causal ? "causal" : "bidirectional"];
    auto o = enc.forward(x, SeqContext::from_lengths(kLengths, kS, causal, DType::F64));
    CHECK(valid_diff(o.stats, from_json(ref["stats"], {kB, kS, kD}), kLengths) < 1e-10);
    CHECK(valid_diff(o.alpha, from_json(ref["alpha"], {kB, kS}), kLengths) < 1e-10);
    CHECK(valid_diff(o.beta, from_json(ref["beta"], {kB, kS}), kLengths) < 1e-10);
    CHECK(valid_diff(o.posterior_mean, from_json(ref["posterior_mean"], {kB, kS}), kLengths) < 1e-10);
    CHECK(valid_diff(o.posterior_variance, from_json(ref["posterior_variance"], {kB, kS}), kLengths) < 1e-10);
  }
}

TEST_CASE("SufficientStatsEncoder gradients (input and every parameter)") {
  Generator g(3);
  SufficientStatsEncoder enc(kD, g, DType::F64);
  init_normal(enc.prior, g, 0.3, 0.5);
  for (bool causal : {true, false}) {
    CAPTURE(causal);
    SeqContext ctx = SeqContext::from_lengths(kLengths, kS, causal, DType::F64);
    std::vector<Tensor> inputs = {leaf(rand64({kB, kS, kD}, 4))};
    for (auto& p : enc.parameters()) inputs.push_back(p);
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return flat_all(stats_outputs(enc.forward(in[0], ctx))); },
               inputs);
  }
}

TEST_CASE("SufficientStatsEncoder: model.md's Must hold") {
  Generator g(5);
  SufficientStatsEncoder enc(kD, g, DType::F64);
  auto run = [&](const Tensor& x, const SeqContext& c) { return stats_outputs(enc.forward(x, c)); };
  SUBCASE("causal") { check_context_properties(run, true, true); }
  SUBCASE("bidirectional") { check_context_properties(run, false, true); }
}

TEST_CASE("SufficientStatsEncoder: alpha + beta = alpha0 + beta0 + n(t)") {
  const std::vector<int64_t> lengths = {64, 40, 1};
  const int64_t S = 64;
  for (DType dt : {DType::F32, DType::F64}) {
    Generator g(6);
    SufficientStatsEncoder enc(kD, g, dt);
    init_normal(enc.prior, g, 0.0, 1.0);
    init_normal(enc.beta_head->weight, g, 0.0, 2.0);  // spread p over (0, 1)
    auto pr = softplus(enc.prior.detach()).to_vector<double>();
    Tensor x = g.normal({3, S, kD}, 0, 1, dt);
    for (bool causal : {true, false}) {
      CAPTURE(causal);
      SeqContext ctx = SeqContext::from_lengths(lengths, S, causal, dt);
      auto o = enc.forward(x, ctx);
      Tensor expect = add(ctx.n_ctx.to(DType::F64), pr[0] + pr[1]);
      Tensor got = add(o.alpha, o.beta).to(DType::F64);
      const double tol = dt == DType::F32 ? 1e-5 * (pr[0] + pr[1] + S) : 1e-12 * S;
      CHECK(valid_diff(got, expect, lengths) < tol);
      // The mean and variance are those of Beta(alpha, beta).
      Tensor a = o.alpha.to(DType::F64), b = o.beta.to(DType::F64), s = add(a, b);
      CHECK(valid_diff(o.posterior_mean.to(DType::F64), div(a, s), lengths) < (dt == DType::F32 ? 1e-6 : 1e-14));
    }
  }
}

TEST_CASE("SufficientStatsEncoder: long causal sequences use prefix sums") {
  // An S x S context matrix here would be 3.2 GB; prefix sums need O(S).
  const int64_t S = 20000;
  Generator g(7);
  SufficientStatsEncoder enc(kD, g, DType::F64);
  Tensor x = g.normal({1, S, kD}, 0, 1, DType::F64);
  autograd::NoGradGuard ng;
  auto causal = enc.forward(x, SeqContext::from_lengths({S}, S, true, DType::F64));
  auto bidir = enc.forward(x, SeqContext::from_lengths({S}, S, false, DType::F64));
  // At the last position the causal context is the whole sequence.
  Tensor last_c = slice(causal.stats, 1, S - 1, S), last_b = slice(bidir.stats, 1, S - 1, S);
  CHECK(max_abs_diff(last_c, last_b) < 1e-9);
  CHECK(std::abs(select(select(causal.alpha, 0, 0), 0, S - 1).item() - select(select(bidir.alpha, 0, 0), 0, 0).item()) < 1e-8);
}

// ------------------------------------------------------------ OptimalCoTLayer

TEST_CASE("OptimalCoTLayer matches the PyTorch reference") {
  const json& r = reference();
  Generator g(8);
  OptimalCoTLayer cot(kD, g, DType::F64);
  load_reference(cot, r["cot"]["params"]);
  Tensor x = from_json(r["x"], {kB, kS, kD});
  for (bool causal : {true, false}) {
    CAPTURE(causal);
    const json& ref = r["cot"][causal ? "causal" : "bidirectional"];
    auto o = cot.forward(x, SeqContext::from_lengths(kLengths, kS, causal, DType::F64));
    CHECK(valid_diff(o.optimal_length, from_json(ref["optimal_length"], {kB, kS}), kLengths) < 1e-9);
    CHECK(valid_diff(o.reasoning_entropy, from_json(ref["reasoning_entropy"], {kB, kS}), kLengths) < 1e-10);
  }
}

TEST_CASE("OptimalCoTLayer gradients (input and every parameter)") {
  Generator g(9);
  OptimalCoTLayer cot(kD, g, DType::F64);
  for (bool causal : {true, false}) {
    CAPTURE(causal);
    SeqContext ctx = SeqContext::from_lengths(kLengths, kS, causal, DType::F64);
    std::vector<Tensor> inputs = {leaf(rand64({kB, kS, kD}, 10))};
    for (auto& p : cot.parameters()) inputs.push_back(p);
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return flat_all(cot_outputs(cot.forward(in[0], ctx))); },
               inputs);
  }
}

TEST_CASE("OptimalCoTLayer: model.md's Must hold") {
  Generator g(9);
  OptimalCoTLayer cot(kD, g, DType::F64);
  auto run = [&](const Tensor& x, const SeqContext& c) { return cot_outputs(cot.forward(x, c)); };
  SUBCASE("causal") { check_context_properties(run, true, true); }
  SUBCASE("bidirectional") { check_context_properties(run, false, true); }
}

TEST_CASE("OptimalCoTLayer: length grows like sqrt(n) and stays in [1, 512]") {
  Generator g(11);
  OptimalCoTLayer cot(kD, g, DType::F64);
  // Identical tokens: z, H and R are the same at every position, so L(t) ~ sqrt(t + 1).
  Tensor row = g.normal({1, 1, kD}, 0, 1, DType::F64);
  Tensor x = expand(row, {1, 16, kD}).contiguous();
  auto o = cot.forward(x, SeqContext::from_lengths({16}, 16, true, DType::F64));
  auto L = o.optimal_length.to_vector<double>();
  auto H = o.reasoning_entropy.to_vector<double>();
  for (int64_t t = 1; t < 16; ++t) {
    CHECK(std::abs(H[size_t(t)] - H[0]) < 1e-12);
    if (L[0] > 1 && L[size_t(t)] < 512) CHECK(std::abs(L[size_t(t)] / L[0] - std::sqrt(double(t + 1))) < 1e-9);
  }
  // Huge and tiny H*R hit the clamps, and the clamp passes no gradient there.
  for (double bias : {-40.0, 40.0}) {
    OptimalCoTLayer c2(kD, g, DType::F64);
    c2.entropy->fc2->bias.fill_(bias);
    c2.ratio->fc2->bias.fill_(bias);
    Tensor xi = leaf(rand64({1, 4, kD}, 12));
    auto oo = c2.forward(xi, SeqContext::from_lengths({4}, 4, true, DType::F64));
    for (double v : oo.optimal_length.to_vector<double>()) CHECK(v == (bias < 0 ? 512.0 : 1.0));
    sum(oo.optimal_length).backward();
    if (xi.grad().defined()) CHECK(sum(abs(xi.grad())).item() == 0.0);
  }
}

// ------------------------------------------------------------ PositionalDebiasing

TEST_CASE("PositionalDebiasing: names and initialisation") {
  Generator g(13);
  PositionalDebiasing d(kD, 8, false, g, DType::F64);
  auto names = names_of(d);
  std::set<std::string> want = {"harmonic_weights", "detector.0.weight", "detector.0.bias", "detector.2.weight",
                                "detector.2.bias", "gate.weight", "gate.bias", "basis.weight"};
  CHECK(names == want);
  CHECK(d.basis->weight.shape() == Shape{kD, 16});
  CHECK(d.detector->fc2->weight.shape() == Shape{8, kD / 2});
  CHECK(d.harmonic_weights.to_vector<double>() == std::vector<double>(8, 1.0));
  auto u = d.basis->weight.to_vector<double>();
  double ss = 0;
  for (double v : u) ss += v * v;
  const double sd = std::sqrt(ss / double(u.size()));
  CHECK(sd > 0.01);
  CHECK(sd < 0.04);  // N(0, 0.02), not the default U(-1/4, 1/4) (sd 0.14)
  PositionalDebiasing ident(kD, 8, true, g, DType::F64);
  CHECK(names_of(ident) == want);  // registered even as the identity
  CHECK(PositionalDebiasing::period(0) == 4);
  CHECK(PositionalDebiasing::period(7) == 512);
}

TEST_CASE("PositionalDebiasing matches the PyTorch reference") {
  const json& r = reference();
  const int64_t nh = r["n_harmonics"].get<int64_t>();
  Generator g(14);
  PositionalDebiasing d(kD, nh, false, g, DType::F64);
  load_reference(d, r["debias"]["params"]);
  Tensor x = from_json(r["x"], {kB, kS, kD});
  for (int64_t offset : {0, 3}) {
    CAPTURE(offset);
    const json& ref = r["debias"][offset == 0 ? "offset0" : "offset3"];
    auto o = d.forward(x, SeqContext::from_lengths(kLengths, kS, false, DType::F64), offset);
    CHECK(valid_diff(o.out, from_json(ref["out"], {kB, kS, kD}), kLengths) < 1e-10);
    CHECK(valid_diff(o.artifact_scores, from_json(ref["artifact_scores"], {kB, kS, nh}), kLengths) < 1e-10);
    CHECK(max_abs_diff(o.artifact_magnitude, from_json(ref["artifact_magnitude"], {kB})) < 1e-10);
    CHECK(max_abs_diff(o.correction_magnitude, from_json(ref["correction_magnitude"], {kB})) < 1e-10);
  }
}

TEST_CASE("PositionalDebiasing gradients") {
  Generator g(15);
  PositionalDebiasing d(kD, 3, false, g, DType::F64);
  init_normal(d.basis->weight, g, 0.0, 0.5);  // a correction large enough to see
  init_normal(d.harmonic_weights, g, 1.0, 0.5);
  for (bool causal : {true, false}) {
    CAPTURE(causal);
    SeqContext ctx = SeqContext::from_lengths(kLengths, kS, causal, DType::F64);
    std::vector<Tensor> inputs = {leaf(rand64({kB, kS, kD}, 16))};
    for (auto& p : d.parameters()) inputs.push_back(p);
    CHECK_GRAD([&](const std::vector<Tensor>& in) {
      auto o = d.forward(in[0], ctx);
      return flat_all({o.out, o.artifact_scores});
    }, inputs);
  }
}

TEST_CASE("PositionalDebiasing: model.md's Must hold") {
  Generator g(17);
  PositionalDebiasing d(kD, 8, false, g, DType::F64);
  init_normal(d.basis->weight, g, 0.0, 0.5);
  Tensor x = rand64({kB, kS, kD}, 18);
  SeqContext ctx = SeqContext::from_lengths(kLengths, kS, false, DType::F64);
  auto base = d.forward(x, ctx);
  CHECK(max_abs_diff(base.out, x) > 1e-3);  // it does correct something

  SUBCASE("shifting positions by a common multiple of all periods changes nothing") {
    for (int64_t shift : {512, 1024, -512, 512 * 1000}) {
      auto o = d.forward(x, ctx, shift);
      for (size_t k = 0; k < 4; ++k) CHECK(max_abs_diff(debias_outputs(o)[k], debias_outputs(base)[k]) == 0.0);
    }
    // Half the longest period is not a common multiple: the output moves.
    CHECK(max_abs_diff(d.forward(x, ctx, 256).out, base.out) > 1e-6);
    // Positions come from ctx.positions, not from a counter of their own.
    SeqContext shifted = ctx;
    shifted.positions = Tensor::from_vector<int64_t>({512, 513, 514, 515, 516}, {kS});
    CHECK(max_abs_diff(d.forward(x, shifted).out, base.out) == 0.0);
    shifted.positions = Tensor::from_vector<int64_t>({1, 2, 3, 4, 5}, {kS});
    CHECK(max_abs_diff(d.forward(x, shifted).out, d.forward(x, ctx, 1).out) == 0.0);
  }
  SUBCASE("U = 0 gives the identity") {
    PositionalDebiasing z(kD, 8, false, g, DType::F64);
    z.basis->weight.fill_(0.0);
    auto o = z.forward(x, ctx);
    CHECK(max_abs_diff(o.out, x) == 0.0);
    CHECK(max_abs_diff(o.correction_magnitude, Tensor::zeros({kB}, DType::F64)) == 0.0);
  }
  SUBCASE("pe = none: the identity, with zero diagnostics") {
    PositionalDebiasing ident(kD, 8, true, g, DType::F64);
    ident.load_parameters(d.named_parameters());  // same weights that do correct above
    auto o = ident.forward(x, ctx);
    CHECK(max_abs_diff(o.out, x) == 0.0);
    CHECK(o.artifact_scores.shape() == Shape{kB, kS, 8});
    CHECK(sum(abs(o.artifact_scores)).item() == 0.0);
    CHECK(sum(abs(o.artifact_magnitude)).item() == 0.0);
    CHECK(sum(abs(o.correction_magnitude)).item() == 0.0);
  }
  SUBCASE("padding changes nothing, diagnostics included") {
    auto o = d.forward(overwrite(x, kLengths, -1, true, 19), ctx);
    CHECK(valid_diff(o.out, base.out, kLengths) < 1e-12);
    CHECK(max_abs_diff(o.artifact_magnitude, base.artifact_magnitude) < 1e-12);
    CHECK(max_abs_diff(o.correction_magnitude, base.correction_magnitude) < 1e-12);
    auto single = d.forward(alone(x, 1, 3), SeqContext::from_lengths({3}, 3, false, DType::F64));
    CHECK(std::abs(single.correction_magnitude.item() - select(base.correction_magnitude, 0, 1).item()) < 1e-12);
  }
  SUBCASE("f32 agrees with f64") {
    PositionalDebiasing d32(kD, 8, false, g, DType::F32);
    d32.load_parameters(d.named_parameters());
    auto o = d32.forward(x.to(DType::F32), SeqContext::from_lengths(kLengths, kS, false, DType::F32));
    CHECK(o.out.dtype() == DType::F32);
    CHECK(valid_diff(o.out, base.out, kLengths) < 1e-5);
  }
}

// ------------------------------------------------------------ MDLRegularizedLoss

TEST_CASE("mdl_regularized_loss matches the PyTorch reference") {
  for (const json& c : reference()["mdl"]) {
    const int64_t N = c["N"], C = c["C"];
    Tensor logits = from_json(c["logits"], {N, C});
    Tensor targets = Tensor::from_vector<int64_t>(c["targets"].get<std::vector<int64_t>>(), {N});
    auto o = mdl_regularized_loss(logits, targets, c["beta"].get<double>());
    CHECK(o.n == c["n"].get<int64_t>());
    CHECK(o.mdl_active == c["mdl_active"].get<bool>());
    CHECK(std::abs(o.loss.item() - c["loss"].get<double>()) < 1e-10);
    for (auto [got, key] : std::vector<std::pair<double, const char*>>{
             {o.standard_loss, "standard_loss"}, {o.mdl_penalty, "mdl_penalty"},
             {o.empirical_entropy, "empirical_entropy"}, {o.optimal_complexity, "optimal_complexity"},
             {o.actual_complexity, "actual_complexity"}, {o.compression_efficiency, "compression_efficiency"}})
      CHECK_MESSAGE(std::abs(got - c[key].get<double>()) < 1e-10, key);
  }
}

namespace {
// Logits that code targets y well (inactive guard) or badly (active), with an ignored row.
void mdl_case(bool bad, Tensor* logits, Tensor* targets) {
  const int64_t N = 10, C = 4;
  std::vector<int64_t> y = {0, 1, 2, 3, 0, 1, 2, -100, 0, 1};
  Tensor noise = rand64({N, C}, 31, -0.5, 0.5);
  std::vector<double> v = noise.to_vector<double>();
  for (int64_t i = 0; i < N; ++i)
    if (y[size_t(i)] >= 0) v[size_t(i * C + y[size_t(i)])] += bad ? -6.0 : 6.0;
  *logits = leaf(Tensor::from_vector<double>(v, {N, C}));
  *targets = Tensor::from_vector<int64_t>(y, {N});
}
}  // namespace

TEST_CASE("mdl_regularized_loss: the guard, its gradient and its report") {
  for (bool bad : {false, true}) {
    CAPTURE(bad);
    Tensor logits, targets;
    mdl_case(bad, &logits, &targets);
    const double beta = 0.3;
    auto o = mdl_regularized_loss(logits, targets, beta);
    // Terms computed here from the definition: 9 valid targets with counts 3, 3, 2, 1.
    const double N = 9;
    double H = 0;
    for (double c : {3.0, 3.0, 2.0, 1.0}) H -= c / N * std::log(c / N);
    const double optimal = N * H + std::sqrt(N * std::log(N));
    const double ce = cross_entropy_sum(logits.detach(), targets).item();
    CHECK(o.n == 9);
    CHECK(std::abs(o.empirical_entropy - H) < 1e-12);
    CHECK(std::abs(o.optimal_complexity - optimal) < 1e-10);
    CHECK(std::abs(o.actual_complexity - ce) < 1e-10);
    CHECK(std::abs(o.standard_loss - ce / N) < 1e-12);
    CHECK(std::abs(o.compression_efficiency - optimal / ce) < 1e-12);
    CHECK(o.mdl_active == bad);
    CHECK(o.mdl_active == (ce > optimal));
    CHECK(std::abs(o.mdl_penalty - std::max(0.0, ce - optimal) / N) < 1e-12);
    CHECK(std::abs(o.loss.item() - (ce / N + beta * o.mdl_penalty)) < 1e-12);
    if (bad) CHECK(o.mdl_penalty > 0.1); else CHECK(o.mdl_penalty == 0.0);

    // Gradient: (1 + beta) times CE/N's where active, CE/N's where not.
    o.loss.backward();
    Tensor g_loss = logits.grad();
    logits.zero_grad();
    mul(cross_entropy_sum(logits, targets), 1.0 / N).backward();
    Tensor g_ce = logits.grad();
    CHECK(max_abs_diff(g_loss, mul(g_ce, bad ? 1.0 + beta : 1.0)) < 1e-14);
    CHECK(sum(abs(g_ce)).item() > 1e-3);
    logits.zero_grad();

    CHECK_GRAD([&](const std::vector<Tensor>& in) { return mdl_regularized_loss(in[0], targets, beta).loss; },
               {logits});
    // beta = 0 is plain cross-entropy.
    CHECK(std::abs(mdl_regularized_loss(logits, targets, 0.0).loss.item() - ce / N) < 1e-12);
    // i32 targets are read the same way.
    auto o32 = mdl_regularized_loss(logits, targets.to(DType::I32), beta);
    CHECK(std::abs(o32.loss.item() - o.loss.item()) < 1e-14);
  }
}

TEST_CASE("mdl_regularized_loss: N = 0 contributes nothing; N = 1 has no regret term") {
  Tensor logits = leaf(rand64({3, 4}, 41));
  Tensor none = Tensor::from_vector<int64_t>({-100, -100, -100}, {3});
  auto o = mdl_regularized_loss(logits, none, 0.5);
  CHECK(o.n == 0);
  CHECK(o.loss.item() == 0.0);
  CHECK_FALSE(o.mdl_active);
  CHECK(o.mdl_penalty == 0.0);
  o.loss.backward();
  REQUIRE(logits.grad().defined());
  CHECK(sum(abs(logits.grad())).item() == 0.0);

  Tensor empty = leaf(Tensor::zeros({0, 4}, DType::F64));
  auto e = mdl_regularized_loss(empty, Tensor::zeros({0}, DType::I64), 0.5);
  CHECK(e.loss.item() == 0.0);
  e.loss.backward();

  // One target: optimal = 0, so any positive CE activates the guard.
  Tensor one = Tensor::from_vector<int64_t>({-100, 2, -100}, {3});
  logits.zero_grad();
  auto o1 = mdl_regularized_loss(logits, one, 0.5);
  CHECK(o1.n == 1);
  CHECK(o1.empirical_entropy == 0.0);
  CHECK(o1.optimal_complexity == 0.0);
  CHECK(o1.mdl_active);
  CHECK(std::abs(o1.loss.item() - 1.5 * o1.actual_complexity) < 1e-12);

  CHECK_THROWS_AS(mdl_regularized_loss(logits, Tensor::from_vector<int64_t>({0, 7, 1}, {3}), 0.1), bet::Error);
}
