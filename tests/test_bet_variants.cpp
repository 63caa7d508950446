// The bet layer's alternatives to model.md, each behind a config option (config.h):
// zero-initialised branches (`branch_init = zero`) and length-free Beta features for the
// stats projection (`stats_features = mean`). Each is checked for what it promises, against
// the spec's version built from the same seed, and for its gradients.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <set>
#include <string>

#include "model/bet_layer.h"
#include "model/martingale_attention.h"
#include "runtime/checkpoint/config_json.h"
#include "tests/gradcheck.h"

using namespace bet;
using namespace bet::model;
using namespace bet::testing;

namespace {

ModelConfig small_config(bool causal, PosEncoding pe = PosEncoding::Rope) {
  ModelConfig c;
  c.task = causal ? Task::LM : Task::Classify;
  c.layer = LayerKind::Bet;
  c.pe = pe;
  c.k_permutations = 2;
  c.layers = 1;
  c.d_model = 8;
  c.heads = 2;
  c.max_len = 16;
  c.vocab_size = 12;
  c.num_classes = 3;
  c.n_harmonics = 3;
  c.dropout = 0.0;
  c.branch_init = BranchInit::Spec;  // model.md's layer; each test says what it changes
  c.stats_features = StatsFeatures::Counts;
  return c;
}

double max_valid_diff(const Tensor& a, const Tensor& b, const SeqContext& ctx) {
  Tensor m = unsqueeze(ctx.mask.to(DType::F64), 2);
  auto d = mul(abs(sub(a.to(DType::F64), b.to(DType::F64))), m).to_vector<double>();
  double worst = 0;
  for (double v : d) worst = std::max(worst, v);
  return worst;
}

std::map<std::string, Tensor> params_of(const Module& m) {
  std::map<std::string, Tensor> out;
  for (auto& [n, t] : m.named_parameters()) out.emplace(n, t);
  return out;
}

}  // namespace

TEST_CASE("branch_init=zero: a fresh bet layer is LN3(h + FFN(h)), h = LN2(x + attention(LN1(x)))") {
  for (bool causal : {false, true}) {
    CAPTURE(causal);
    ModelConfig c = small_config(causal);
    SeqContext ctx = SeqContext::from_lengths({5, 3}, 5, causal, DType::F64);
    Tensor x = rand64({2, 5, 8}, 7);
    const Tensor mask = attention_mask(ctx);

    c.branch_init = BranchInit::Zero;
    Generator g(11);
    BetLayer zero(c, 0, g, DType::F64);
    // The same function written out with the layer's own parts: no stats, no CoT branch,
    // no stats branch, no debiasing correction.
    Tensor h = zero.norm2->forward(add(x, zero.attn->forward(zero.norm1->forward(x), ctx, Tensor(), mask).out));
    Tensor expected = zero.norm3->forward(add(h, zero.ffn->forward(h, ctx)));
    CHECK(max_valid_diff(zero.forward(x, ctx, Tensor(), mask).out, expected, ctx) < 1e-12);

    // Negative control: model.md's initialisation adds the branches from step 0.
    c.branch_init = BranchInit::Spec;
    Generator g2(11);
    BetLayer spec(c, 0, g2, DType::F64);
    CHECK(max_valid_diff(spec.forward(x, ctx, Tensor(), mask).out, expected, ctx) > 1e-3);
  }
}

TEST_CASE("branch_init: spec and zero draw every other parameter alike") {
  ModelConfig c = small_config(false);
  Generator g1(3), g2(3);
  BetLayer spec(c, 0, g1, DType::F64);
  c.branch_init = BranchInit::Zero;
  BetLayer zero(c, 0, g2, DType::F64);
  const std::set<std::string> zeroed = {"stats.proj.weight", "stats.proj.bias", "cot_gate.weight", "cot_gate.bias",
                                        "debias.basis.weight"};
  auto a = params_of(spec), b = params_of(zero);
  REQUIRE(a.size() == b.size());
  for (auto& [name, t] : a) {
    CAPTURE(name);
    auto va = t.to_vector<double>(), vb = b.at(name).to_vector<double>();
    double diff = 0, zero_norm = 0;
    for (size_t i = 0; i < va.size(); ++i) {
      diff = std::max(diff, std::abs(va[i] - vb[i]));
      zero_norm = std::max(zero_norm, std::abs(vb[i]));
    }
    if (zeroed.count(name)) {
      CHECK(zero_norm == 0.0);
      if (name != "cot_gate.bias") CHECK(diff > 0.0);  // Xavier's bias is zero already
    } else {
      CHECK(diff == 0.0);
    }
  }
}

TEST_CASE("branch_init=zero: the closed branches still get gradients, and they are right") {
  for (bool causal : {false, true}) {
    CAPTURE(causal);
    ModelConfig c = small_config(causal);
    c.branch_init = BranchInit::Zero;
    Generator g(21);
    BetLayer layer(c, 0, g, DType::F64);
    SeqContext ctx = SeqContext::from_lengths({4, 3}, 4, causal, DType::F64);
    Tensor x = leaf(rand64({2, 4, 8}, 22));
    auto f = [&](const std::vector<Tensor>& in) { return layer.forward(in[0], ctx).out; };
    CHECK_GRAD(f, (std::vector<Tensor>{x, layer.stats->proj->weight, layer.stats->proj->bias,
                                       layer.cot_gate->weight, layer.debias->basis->weight}));
    // A zero weight is not a dead one: one backward gives each closed branch a gradient.
    Tensor out = layer.forward(x, ctx).out;
    Tensor proj = rand64(out.shape(), 23);
    sum(mul(out, proj)).backward();
    for (Tensor* w : {&layer.stats->proj->weight, &layer.cot_gate->weight, &layer.debias->basis->weight}) {
      double norm = 0;
      for (double v : w->grad().to_vector<double>()) norm += v * v;
      CHECK(norm > 1e-12);
    }
  }
}

TEST_CASE("stats_features=mean: the projection reads log posterior mean and its complement") {
  for (bool causal : {false, true}) {
    CAPTURE(causal);
    SeqContext ctx = SeqContext::from_lengths({6, 2}, 6, causal, DType::F64);
    Tensor x = rand64({2, 6, 8}, 5);
    Generator g1(9), g2(9);
    SufficientStatsEncoder counts(8, g1, DType::F64, StatsFeatures::Counts);
    SufficientStatsEncoder mean(8, g2, DType::F64, StatsFeatures::Mean);
    StatsOutput a = counts.forward(x, ctx), b = mean.forward(x, ctx);
    // Only the last two inputs of proj differ, each by -log(alpha + beta):
    // stats_mean - stats_counts = -log(alpha + beta) * (W[:, -2] + W[:, -1]).
    const int64_t F = counts.proj->weight.size(1);
    Tensor w = add(select(counts.proj->weight.detach(), 1, F - 2), select(counts.proj->weight.detach(), 1, F - 1));
    Tensor log_total = unsqueeze(log(add(a.alpha, a.beta)), 2);
    Tensor expected = sub(a.stats, mul(log_total, reshape(w, {1, 1, 8})));
    CHECK(max_valid_diff(b.stats, expected, ctx) < 1e-12);
    CHECK(max_valid_diff(a.stats, b.stats, ctx) > 1e-3);  // the two really differ
    // The posterior itself is the same; only what is projected changed.
    CHECK(max_valid_diff(unsqueeze(a.posterior_variance, 2), unsqueeze(b.posterior_variance, 2), ctx) == 0.0);
  }
}

TEST_CASE("stats_features=mean: gradients of the encoder and of a whole layer") {
  for (bool causal : {false, true}) {
    CAPTURE(causal);
    SeqContext ctx = SeqContext::from_lengths({4, 3}, 4, causal, DType::F64);
    Generator g(31);
    SufficientStatsEncoder enc(8, g, DType::F64, StatsFeatures::Mean);
    std::vector<Tensor> inputs = {leaf(rand64({2, 4, 8}, 32)), enc.prior, enc.beta_head->weight, enc.proj->weight};
    CHECK_GRAD([&](const std::vector<Tensor>& in) { return enc.forward(in[0], ctx).stats; }, inputs);

    ModelConfig c = small_config(causal);
    c.stats_features = StatsFeatures::Mean;
    c.branch_init = BranchInit::Zero;
    Generator g2(33);
    BetLayer layer(c, 0, g2, DType::F64);
    // Open the branches a little so the gradient runs through the stats encoder too.
    layer.stats->proj->weight.copy_(rand64(layer.stats->proj->weight.shape(), 34, -0.3, 0.3));
    auto f = [&](const std::vector<Tensor>& in) { return layer.forward(in[0], ctx).out; };
    CHECK_GRAD(f, (std::vector<Tensor>{leaf(rand64({2, 4, 8}, 35)), layer.stats->prior, layer.stats->count->weight,
                                       layer.stats->proj->weight}));
  }
}

TEST_CASE("config: branch_init and stats_features round-trip; files without them read model.md's") {
  ModelConfig c = small_config(false);
  c.labels = {"a", "b", "c"};
  c.branch_init = BranchInit::Zero;
  c.stats_features = StatsFeatures::Mean;
  nlohmann::json j = runtime::config_to_json(c);
  CHECK(j.at("branch_init") == "zero");
  CHECK(j.at("stats_features") == "mean");
  ModelConfig back = runtime::config_from_json(j, "t");
  CHECK(back.branch_init == BranchInit::Zero);
  CHECK(back.stats_features == StatsFeatures::Mean);
  j.erase("branch_init");
  j.erase("stats_features");
  back = runtime::config_from_json(j, "t");
  CHECK(back.branch_init == BranchInit::Spec);
  CHECK(back.stats_features == StatsFeatures::Counts);
  j["stats_features"] = "log";
  CHECK_THROWS_WITH(runtime::config_from_json(j, "t"), doctest::Contains("stats_features"));
}
