#include "model/config.h"

#include <cmath>

#include "engine/error.h"
#include "model/sufficient_stats.h"

namespace bet::model {

// The bounds (config.h), and why each is where it is:
//
//   field           range            why
//   vocab_size      [4, 2^22]        SentencePiece vocabularies reach ~256k; 4M ids leave
//                                    room while keeping vocab x d_model far from overflow
//   d_model         [2, 16384]       the layers' per-token statistics need two features;
//                                    16384 is twice the training CLI's widest
//   heads           [1, 256]         and must divide d_model (even head dim for rope)
//   layers          [1, 256]
//   max_len         [1, 65536]       positions; tables and relabellings are max_len long
//   k_permutations  [0, 64]          the training CLI's range; each path is a full pass
//   n_harmonics     [1, 60]          periods 4 * 2^h must fit in int64 (PositionalDebiasing)
//   num_classes     [2, 65536]       classify ([0, 65536] for lm, where it is unused)
//   labels          <= 65536 names   each at most 1024 bytes; classify: none or one per class
//   dropout         [0, 1)           finite
//   parameters      <= 2^32          16 GiB of f32 weights, 48 GiB with AdamW moments:
//                                    what one large machine can load, and no more
//
// Integers only: config_json refuses 1e9 and 128.0 before they get here.

namespace {

void check_range(const char* field, int64_t v, int64_t lo, int64_t hi) {
  BET_CHECK(v >= lo && v <= hi, "config.", field, ": ", v, " is out of range [", lo, ", ", hi, "]");
}

// Every check but the parameter count: after it, every size computed from the config
// is small enough to multiply without overflow.
void check_fields(const ModelConfig& c) {
  using namespace bounds;
  check_range("vocab_size", c.vocab_size, kMinVocab, kMaxVocab);
  check_range("d_model", c.d_model, kMinDModel, kMaxDModel);
  check_range("heads", c.heads, 1, kMaxHeads);
  check_range("layers", c.layers, 1, kMaxLayers);
  check_range("max_len", c.max_len, 1, kMaxLen);
  check_range("k_permutations", c.k_permutations, 0, kMaxPermutations);
  check_range("n_harmonics", c.n_harmonics, 1, kMaxHarmonics);
  check_range("num_classes", c.num_classes, c.task == Task::Classify ? 2 : 0, kMaxClasses);
  BET_CHECK(std::isfinite(c.dropout) && c.dropout >= 0 && c.dropout < 1, "config.dropout: ", c.dropout,
            " is not in [0, 1)");
  BET_CHECK(c.d_model % c.heads == 0, "config.heads: ", c.heads, " does not divide d_model ", c.d_model);
  BET_CHECK(c.pe != PosEncoding::Rope || c.head_dim() % 2 == 0,
            "config.heads: rope needs an even head dim (d_model / heads), got ", c.head_dim());
  BET_CHECK(!c.tie_embeddings || c.task == Task::LM, "config.tie_embeddings: applies to lm only");
  BET_CHECK(c.labels.size() <= size_t(kMaxClasses), "config.labels: ", c.labels.size(),
            " names is over the limit of ", kMaxClasses);
  for (size_t i = 0; i < c.labels.size(); ++i)
    BET_CHECK(c.labels[i].size() <= kMaxLabelBytes, "config.labels[", i, "]: ", c.labels[i].size(),
              " bytes is over the limit of ", kMaxLabelBytes);
  BET_CHECK(c.task != Task::Classify || c.labels.empty() || int64_t(c.labels.size()) == c.num_classes,
            "config.labels: ", c.labels.size(), " names for num_classes ", c.num_classes);
}

// The parameters of the modules in model/, named as Module::collect names them (a
// module's own parameters, then its children's in registration order). Mirrors the
// constructors: test_checkpoint compares this with BetModel::named_parameters() for
// every layer kind, positional encoding, task and tying.
class SpecList {
 public:
  std::vector<ParamSpec> out;

  void add(const std::string& name, std::vector<int64_t> shape) { out.push_back({name, std::move(shape)}); }
  void linear(const std::string& p, int64_t in, int64_t o, bool bias = true) {
    add(p + "weight", {o, in});
    if (bias) add(p + "bias", {o});
  }
  void mlp2(const std::string& p, int64_t in, int64_t hidden, int64_t o) {
    linear(p + "0.", in, hidden);
    linear(p + "2.", hidden, o);
  }
  void layer_norm(const std::string& p, int64_t d) {
    add(p + "weight", {d});
    add(p + "bias", {d});
  }
  void attention(const std::string& p, int64_t d, bool bet) {
    if (bet) {
      add(p + "lam", {});
      add(p + "gamma", {});
    }
    for (const char* m : {"q.", "k.", "v.", "o."}) linear(p + m, d, d);
  }
  void feed_forward(const std::string& p, int64_t d) {
    linear(p + "0.", d, 4 * d);
    linear(p + "3.", 4 * d, d);
  }
  void bet_layer(const std::string& p, const ModelConfig& c) {
    const int64_t d = c.d_model, m = SufficientStatsEncoder::num_stats(d), nh = c.n_harmonics;
    add(p + "stats.prior", {2});
    for (int64_t j = 0; j < m; ++j) mlp2(p + "stats.moment." + std::to_string(j) + ".", d, d / 2, 1);
    linear(p + "stats.count.", d, m);
    linear(p + "stats.beta_head.", d, 1);
    linear(p + "stats.proj.", 2 * m + 2, d);
    attention(p + "attn.", d, true);
    mlp2(p + "cot.entropy.", d, d / 2, 1);
    mlp2(p + "cot.ratio.", d, d / 2, 1);
    linear(p + "cot_gate.", d + 2, d);
    linear(p + "stats_gate.", d, 1);
    add(p + "debias.harmonic_weights", {nh});
    mlp2(p + "debias.detector.", d, d / 2, nh);
    linear(p + "debias.gate.", d, d);
    linear(p + "debias.basis.", 2 * nh, d, false);
    for (const char* n : {"norm1.", "norm2.", "norm3."}) layer_norm(p + n, d);
    feed_forward(p + "ffn.", d);
  }
  void standard_layer(const std::string& p, const ModelConfig& c) {
    attention(p + "attn.", c.d_model, false);
    layer_norm(p + "norm1.", c.d_model);
    layer_norm(p + "norm2.", c.d_model);
    feed_forward(p + "ffn.", c.d_model);
  }
};

}  // namespace

std::vector<ParamSpec> parameter_specs(const ModelConfig& c) {
  check_fields(c);
  SpecList s;
  const int64_t D = c.d_model;
  s.add("temperature", {});
  s.add("embed.weight", {c.vocab_size, D});
  if (c.pe == PosEncoding::Learned) s.add("pos.weight", {c.max_len, D});
  for (int64_t i = 0; i < c.layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    if (c.layer == LayerKind::Bet)
      s.bet_layer(p, c);
    else
      s.standard_layer(p, c);
  }
  if (c.task == Task::Classify)
    s.linear("head.", D, c.num_classes);
  else if (!c.tie_embeddings)
    s.linear("head.", D, c.vocab_size);
  return std::move(s.out);
}

int64_t parameter_count(const ModelConfig& c) {
  int64_t n = 0;
  for (const ParamSpec& p : parameter_specs(c)) {
    int64_t e = 1;
    for (int64_t d : p.shape) e *= d;  // each factor and product bounded by check_fields
    n += e;
  }
  return n;
}

void ModelConfig::validate() const {
  check_fields(*this);
  const int64_t n = parameter_count(*this);
  BET_CHECK(n <= bounds::kMaxParameters, "config: ", n, " parameters (vocab_size ", vocab_size, ", d_model ", d_model,
            ", layers ", layers, ") is over the limit of ", bounds::kMaxParameters);
}

std::string to_string(Task t) { return t == Task::LM ? "lm" : "classify"; }
std::string to_string(LayerKind k) { return k == LayerKind::Bet ? "bet" : "standard"; }
std::string to_string(PosEncoding p) {
  switch (p) {
    case PosEncoding::Rope: return "rope";
    case PosEncoding::Sinusoidal: return "sinusoidal";
    case PosEncoding::Learned: return "learned";
    case PosEncoding::None: return "none";
  }
  return "?";
}
Task parse_task(const std::string& s) {
  if (s == "classify") return Task::Classify;
  if (s == "lm") return Task::LM;
  fail("task: '", s, "' is not one of classify, lm");
}
LayerKind parse_layer(const std::string& s) {
  if (s == "bet") return LayerKind::Bet;
  if (s == "standard") return LayerKind::Standard;
  fail("layer: '", s, "' is not one of bet, standard");
}
PosEncoding parse_pe(const std::string& s) {
  if (s == "rope") return PosEncoding::Rope;
  if (s == "sinusoidal") return PosEncoding::Sinusoidal;
  if (s == "learned") return PosEncoding::Learned;
  if (s == "none") return PosEncoding::None;
  fail("pe: '", s, "' is not one of rope, sinusoidal, learned, none");
}
std::string to_string(BranchInit b) { return b == BranchInit::Zero ? "zero" : "spec"; }
BranchInit parse_branch_init(const std::string& s) {
  if (s == "spec") return BranchInit::Spec;
  if (s == "zero") return BranchInit::Zero;
  fail("branch_init: '", s, "' is not one of spec, zero");
}
std::string to_string(StatsFeatures f) { return f == StatsFeatures::Mean ? "mean" : "counts"; }
StatsFeatures parse_stats_features(const std::string& s) {
  if (s == "counts") return StatsFeatures::Counts;
  if (s == "mean") return StatsFeatures::Mean;
  fail("stats_features: '", s, "' is not one of counts, mean");
}

}  // namespace bet::model
