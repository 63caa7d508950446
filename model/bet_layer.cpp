#include "model/bet_layer.h"

namespace bet::model {

namespace {
// Diagnostics leave the graph; a module may leave one undefined (debiasing with pe=none).
Tensor detached(const Tensor& t) { return t.defined() ? t.detach() : t; }
}  // namespace

BetLayer::BetLayer(const ModelConfig& cfg, int64_t layer, Generator& g, DType dtype) : dropout(cfg.dropout) {
  const int64_t D = cfg.d_model;
  stats = register_module("stats", std::make_shared<SufficientStatsEncoder>(D, g, dtype, cfg.stats_features));
  attn = register_module("attn", std::make_shared<MartingaleAwareAttention>(cfg, layer, g, true, dtype));
  cot = register_module("cot", std::make_shared<OptimalCoTLayer>(D, g, dtype));
  cot_gate = register_module("cot_gate", std::make_shared<Linear>(D + 2, D, g, true, Linear::Init::Xavier, dtype));
  stats_gate = register_module("stats_gate", std::make_shared<Linear>(D, 1, g, true, Linear::Init::Xavier, dtype));
  debias = register_module("debias", std::make_shared<PositionalDebiasing>(D, cfg.n_harmonics,
                                                                          cfg.pe == PosEncoding::None, g, dtype));
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(D, 1e-5, dtype));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(D, 1e-5, dtype));
  norm3 = register_module("norm3", std::make_shared<LayerNorm>(D, 1e-5, dtype));
  ffn = register_module("ffn", std::make_shared<FeedForward>(D, g, cfg.dropout, dtype));
  if (cfg.branch_init == BranchInit::Zero) {
    // Zeroed after the draws above, so every other parameter is the one `spec` would draw:
    // the two inits differ only in these branches. stats = 0 makes LN1's input x and the
    // gated stats branch 0; tanh(0) = 0 closes the CoT branch; U = 0 makes the debiasing the
    // identity. Each still gets a gradient (its input is not zero), so it can grow.
    stats->proj->weight.fill_(0.0);
    stats->proj->bias.fill_(0.0);
    cot_gate->weight.fill_(0.0);
    cot_gate->bias.fill_(0.0);
    debias->basis->weight.fill_(0.0);
  }
}

BetLayerOutput BetLayer::forward(const Tensor& x_in, const SeqContext& ctx, const Tensor& perm_ids,
                                 const Tensor& mask) const {
  StatsOutput st = stats->forward(x_in, ctx);
  Tensor h = norm1->forward(add(x_in, st.stats));
  AttentionOutput a = attn->forward(h, ctx, perm_ids, mask);
  Tensor x = norm2->forward(add(x_in, site_dropout(a.out, dropout, ctx)));

  CoTOutput c = cot->forward(x, ctx);
  Tensor cot_in = concat({x, unsqueeze(c.reasoning_entropy, 2), unsqueeze(log(c.optimal_length), 2)}, 2);
  x = add(x, tanh(cot_gate->forward(cot_in)));
  Tensor g = add(mul(tanh(stats_gate->forward(st.stats)), 0.5), 0.5);  // [B, S, 1]
  x = add(x, mul(g, st.stats));

  DebiasOutput d = debias->forward(x, ctx);
  x = norm3->forward(add(d.out, site_dropout(ffn->forward(d.out, ctx), dropout, ctx)));

  BetLayerOutput res;
  res.out = x;
  LayerDiagnostics& dg = res.diag;
  dg.alpha = detached(st.alpha);
  dg.beta = detached(st.beta);
  dg.posterior_mean = detached(st.posterior_mean);
  dg.posterior_variance = detached(st.posterior_variance);
  dg.order_dispersion = a.order_dispersion;
  dg.optimal_length = detached(c.optimal_length);
  dg.reasoning_entropy = detached(c.reasoning_entropy);
  dg.artifact_magnitude = detached(d.artifact_magnitude);
  dg.correction_magnitude = detached(d.correction_magnitude);
  return res;
}

}  // namespace bet::model
