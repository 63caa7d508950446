#include "runtime/inference/forward.h"

#include <algorithm>

#include "engine/autograd.h"
#include "engine/random.h"
#include "runtime/tokenizer/tokenizer.h"

namespace bet::inference {

namespace {
constexpr uint64_t kDropoutTag = 0x696e662d64726f70ULL;  // "inf-drop"
constexpr int64_t kLogitBudget = int64_t(1) << 25;     // lm logits per forward (128 MiB of f32)
}  // namespace

int64_t forward_token_budget(const model::BetModel& m) {
  const model::ModelConfig& cfg = m.config();
  if (cfg.task == model::Task::Classify) return kForwardTokenBudget;
  return std::max<int64_t>(1, std::min<int64_t>(kForwardTokenBudget, kLogitBudget / cfg.vocab_size));
}

std::vector<MemberOutput> forward_rows(const model::BetModel& m, const std::vector<const std::vector<int32_t>*>& rows,
                                       bool mc_dropout) {
  const model::ModelConfig& cfg = m.config();
  const int64_t B = int64_t(rows.size());
  BET_CHECK(B > 0, "inference: no rows");
  int64_t S = 1;
  for (const auto* r : rows) {
    BET_CHECK(!r->empty() && int64_t(r->size()) <= cfg.max_len, "inference: a row has ", r->size(),
              " tokens (1..", cfg.max_len, " allowed)");
    S = std::max<int64_t>(S, int64_t(r->size()));
  }
  std::vector<int64_t> ids(static_cast<size_t>(B * S), runtime::kPad), lengths(static_cast<size_t>(B)),
      last(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const auto& r = *rows[size_t(b)];
    std::copy(r.begin(), r.end(), ids.begin() + b * S);
    lengths[size_t(b)] = int64_t(r.size());
    last[size_t(b)] = b * S + int64_t(r.size()) - 1;
  }

  autograd::NoGradGuard no_grad;
  model::SeqContext ctx = model::SeqContext::from_lengths(lengths, S, cfg.causal(), m.dtype());
  model::ForwardOptions opt;
  opt.temperature = 1.0;  // raw logits: each request applies its own temperature
  std::vector<Tensor> perm;
  uint64_t offset = 0;
  if (mc_dropout && cfg.dropout > 0) {
    // Dropout needs a training context, which would also switch the attention
    // relabellings to their training keys; drawing them here, before the switch, keeps
    // the inference ones.
    perm.resize(size_t(cfg.layers));
    for (size_t i = 0; i < m.bet_layers.size(); ++i) {
      const auto& a = *m.bet_layers[i]->attn;
      if (a.use_rope && a.k_paths > 0) perm[i] = a.relabellings(ctx);
    }
    opt.perm_ids = &perm;
    ctx.training = true;
    ctx.seed = mix_key({kDropoutTag, cfg.inference_seed});
    ctx.dropout_offset = &offset;
  }
  model::ForwardOutput out = m.forward(Tensor::from_vector<int64_t>(ids, {B, S}), ctx, opt);

  Tensor logits = out.logits;
  if (cfg.task != model::Task::Classify) {
    const int64_t V = logits.size(2);
    logits = index_select(reshape(logits, {B * S, V}), 0, Tensor::from_vector<int64_t>(last, {B}));
  }
  const int64_t C = logits.size(1);
  const std::vector<double> lv = logits.to_vector<double>();
  const std::vector<double> disp = out.attention_dispersion.to_vector<double>();
  std::vector<double> alpha, beta, pm, pv, cot;
  const model::LayerDiagnostics& d = out.layers.back();
  if (d.alpha.defined()) {
    alpha = model::at_last_valid(d.alpha, ctx).to_vector<double>();
    beta = model::at_last_valid(d.beta, ctx).to_vector<double>();
    pm = model::at_last_valid(d.posterior_mean, ctx).to_vector<double>();
    pv = model::at_last_valid(d.posterior_variance, ctx).to_vector<double>();
  }
  if (d.optimal_length.defined()) cot = model::at_last_valid(d.optimal_length, ctx).to_vector<double>();

  std::vector<MemberOutput> res(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    MemberOutput& o = res[size_t(b)];
    o.logits.assign(lv.begin() + b * C, lv.begin() + (b + 1) * C);
    o.attention_dispersion = disp[size_t(b)];
    if (!alpha.empty()) {
      o.has_beta = true;
      o.alpha = alpha[size_t(b)];
      o.beta = beta[size_t(b)];
      o.posterior_mean = pm[size_t(b)];
      o.posterior_variance = pv[size_t(b)];
    }
    if (!cot.empty()) {
      o.has_cot = true;
      o.cot_length = cot[size_t(b)];
    }
  }
  return res;
}

}  // namespace bet::inference
