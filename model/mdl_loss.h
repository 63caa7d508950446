// MDLRegularizedLoss (model.md): cross-entropy plus a guard that acts only when the
// model codes the batch's N valid targets worse than the order-0 code N*H_emp plus the
// theory's regret sqrt(N ln N):
//   loss = CE/N + beta * max(0, CE - optimal) / N,
// with H_emp and `optimal` constants for the gradient, so an active penalty scales the
// cross-entropy's gradient by (1 + beta).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/ops.h"

namespace bet::model {

struct MDLLossOutput {
  Tensor loss;                 // scalar, differentiable w.r.t. the logits
  double standard_loss = 0;    // CE / N
  double mdl_penalty = 0;      // max(0, CE - optimal) / N
  double empirical_entropy = 0;   // H_emp, nats
  double optimal_complexity = 0;  // N H_emp + sqrt(N ln N); 0 for N <= 1
  double actual_complexity = 0;   // CE (nats, summed)
  double compression_efficiency = 0;  // optimal / CE (0 when CE is 0)
  bool mdl_active = false;     // CE > optimal
  int64_t n = 0;               // valid targets
};

// logits [N, C] (f32/f64), targets [N] (i32/i64); targets equal to ignore_index are
// not counted. N = 0 gives a zero loss whose gradient is zeros.
MDLLossOutput mdl_regularized_loss(const Tensor& logits, const Tensor& targets, double beta,
                                   int64_t ignore_index = -100);

// The same loss in split form, for a batch spread over ranks and micro-batches. The
// penalty is a decision about the whole batch (is its summed CE above `optimal`?), so
// the parts are summed first and decided once:
//   target_counts   per-class counts of the valid targets of one part (host side);
//   mdl_from_totals every field but `loss` from the summed CE and counts.
// The whole batch's gradient is then (1 + beta [mdl_active]) / n times the gradient of
// the summed CE: each part backpropagates its CE sum, and the sum of the parts'
// gradients is scaled once.
std::vector<int64_t> target_counts(const Tensor& targets, int64_t classes, int64_t ignore_index = -100);
MDLLossOutput mdl_from_totals(double ce_total, const std::vector<int64_t>& counts);
// The factor of that gradient (0 when no target is valid).
double mdl_gradient_scale(const MDLLossOutput& totals, double beta);

}  // namespace bet::model
