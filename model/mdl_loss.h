// MDLRegularizedLoss (model.md): cross-entropy plus a guard that acts only when the
// model codes the batch's N valid targets worse than the order-0 code N*H_emp plus the
// theory's regret sqrt(N ln N):
//   loss = CE/N + beta * max(0, CE - optimal) / N,
// with H_emp and `optimal` constants for the gradient, so an active penalty scales the
// cross-entropy's gradient by (1 + beta).
#pragma once
#include <cstdint>

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

}  // namespace bet::model
