// CPU kernels of the optimisers: one fused, vectorisable pass per parameter, split
// over the OpenMP pool. Elements are independent, so results do not depend on the
// thread count. Tensors are contiguous, same dtype (f32 or f64), same numel.
//
// The scalars arrive in double (as Python floats do in torch) and are rounded to the
// parameter's type once, where torch rounds them: this keeps f32 trajectories within
// an ulp or two of torch's.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace bet::kernels::cpu {

struct AdamWScalars {
  double decay_factor;   // 1 - lr*wd (1 when the parameter does not decay)
  double beta1_weight;   // 1 - beta1, the lerp weight of m towards g
  double beta2;
  double one_minus_beta2;
  double bias2_sqrt;     // sqrt(1 - beta2^t)
  double eps;
  double neg_step_size;  // -lr / (1 - beta1^t)
};
void adamw_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v,
                const AdamWScalars& s);

struct SGDScalars {
  double weight_decay;    // 0 when the parameter does not decay
  double momentum;        // 0: no buffer (buf may be undefined)
  double one_minus_dampening;
  bool first;             // the buffer is initialised from this step's direction
  bool nesterov;
  double neg_lr;
};
void sgd_step(const Tensor& p, const Tensor& g, const Tensor& buf, const SGDScalars& s);

// Sum of squares of a contiguous tensor, accumulated in double over fixed blocks
// (partial sums added in block order), so the value is independent of threads.
double sum_squares(const Tensor& x);
// x *= s in place (contiguous).
void scale_(const Tensor& x, double s);

}  // namespace bet::kernels::cpu
