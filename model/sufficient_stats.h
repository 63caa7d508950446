// SufficientStatsEncoder (model.md): per-position summaries of the context P(t) —
// learned moments, soft counts and a conjugate Beta posterior — projected back to D.
// Causal contexts are prefix sums (O(S)); bidirectional contexts are one sum per
// sequence, the same vector at every position.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/context.h"
#include "model/module.h"

namespace bet::model {

// Sum of v [B, S, K] over each position's context P(t), padding excluded.
// Causal: [B, S, K] (prefix sums); bidirectional: [B, 1, K] (broadcasts over S).
Tensor context_sum(const Tensor& v, const SeqContext& ctx);
// max(n(t), 1) shaped to divide context_sum's result: [B, S, 1] or [B, 1, 1].
Tensor context_count(const SeqContext& ctx, DType dtype);
// ctx.mask as [B, S, 1] in `dtype`.
Tensor context_mask(const SeqContext& ctx, DType dtype);

struct StatsOutput {
  Tensor stats;  // [B, S, D]
  Tensor alpha, beta, posterior_mean, posterior_variance;  // [B, S]
};

class SufficientStatsEncoder : public Module {
 public:
  SufficientStatsEncoder(int64_t d_model, Generator& g, DType dtype = DType::F32,
                         StatsFeatures features = StatsFeatures::Counts);
  StatsOutput forward(const Tensor& x, const SeqContext& ctx) const;

  // m = max(3, floor(ln D)).
  static int64_t num_stats(int64_t d_model);

  int64_t d_model, m;
  StatsFeatures features;                     // what proj reads of the Beta posterior (config.h)
  std::vector<std::shared_ptr<MLP2>> moment;  // f_j: D -> D/2 -> 1
  std::shared_ptr<Linear> count;              // g_j, b_j: D -> m
  std::shared_ptr<Linear> beta_head;          // u, b_u: D -> 1
  Tensor prior;                               // [a0, b0]; alpha0 = softplus(a0)
  std::shared_ptr<Linear> proj;               // 2m + 2 -> D

 private:
  // [m, m, 1], 1 where the indices agree: lays the moments' output weights out as one
  // block-diagonal [m, m*h] matrix (forward). A constant, not a parameter.
  Tensor moment_block_;
  void move_constants(Device d) override { moment_block_ = moment_block_.to(d); }
};

}  // namespace bet::model
