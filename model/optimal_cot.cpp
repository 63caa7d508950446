#include "model/optimal_cot.h"

#include <cmath>

#include "model/sufficient_stats.h"

namespace bet::model {

OptimalCoTLayer::OptimalCoTLayer(int64_t d, Generator& g, DType dtype) : d_model(d) {
  BET_CHECK(d >= 2, "OptimalCoTLayer: d_model must be at least 2, got ", d);
  entropy = register_module("entropy", std::make_shared<MLP2>(d, d / 2, 1, g, dtype));
  ratio = register_module("ratio", std::make_shared<MLP2>(d, d / 2, 1, g, dtype));
}

CoTOutput OptimalCoTLayer::forward(const Tensor& x, const SeqContext& ctx) const {
  BET_CHECK(x.dim() == 3 && x.size(2) == d_model, "OptimalCoTLayer: expected x [B, S, ", d_model,
            "], got ", shape_str(x.shape()));
  BET_CHECK(ctx.mask.defined() && ctx.mask.dim() == 2 && ctx.mask.size(0) == x.size(0) &&
                ctx.mask.size(1) == x.size(1),
            "OptimalCoTLayer: context mask does not match x ", shape_str(x.shape()));
  const int64_t B = x.size(0), S = x.size(1);
  // Bidirectional: [B, 1, D], so the MLPs run once per sequence.
  Tensor z = div(context_sum(x, ctx), context_count(ctx, x.dtype()));
  // Both MLPs read z: their hidden layers are one GEMM over the stacked weights.
  auto hid = split(relu(fused_linear({entropy->fc1.get(), ratio->fc1.get()}, z)), {d_model / 2, d_model / 2}, 2);
  Tensor H = add(softplus(squeeze(entropy->fc2->forward(hid[0]), 2)), 1e-6);
  Tensor R = add(softplus(squeeze(ratio->fc2->forward(hid[1]), 2)), 1e-6);

  Tensor n = ctx.n_ctx.dtype() == x.dtype() ? ctx.n_ctx : ctx.n_ctx.to(x.dtype());
  if (!ctx.causal) n = slice(n, 1, 0, 1);
  Tensor len = mul(sqrt(div(mul(n, a), mul(H, R))), std::log2(1.0 / eps));
  len = clamp(len, 1.0, max_cot_length);

  CoTOutput out;
  out.optimal_length = len;
  out.reasoning_entropy = H;
  if (!ctx.causal) {
    out.optimal_length = expand(len, {B, S}).contiguous();
    out.reasoning_entropy = expand(H, {B, S}).contiguous();
  }
  return out;
}

}  // namespace bet::model
