// Optimiser kernels: one fused pass per parameter (split over the OpenMP pool on the
// CPU). Elements are independent, so results do not depend on the thread count.
// Tensors are contiguous, same dtype (f32 or f64), same numel. Implemented by
// kernels/cpu/optim.cpp and kernels/cuda/optim.cu.
//
// The scalars arrive in double (as Python floats do in torch) and are rounded to the
// parameter's type once, where torch rounds them: this keeps f32 trajectories within
// an ulp or two of torch's.
#pragma once
#include "kernels/tensor_ref.h"

namespace bet::kernels {

struct AdamWScalars {
  double decay_factor;   // 1 - lr*wd (1 when the parameter does not decay)
  double beta1_weight;   // 1 - beta1, the lerp weight of m towards g
  double beta2;
  double one_minus_beta2;
  double bias2_sqrt;     // sqrt(1 - beta2^t)
  double eps;
  double neg_step_size;  // -lr / (1 - beta1^t)
};

struct SGDScalars {
  double weight_decay;    // 0 when the parameter does not decay
  double momentum;        // 0: no buffer (buf may be undefined)
  double one_minus_dampening;
  bool first;             // the buffer is initialised from this step's direction
  bool nesterov;
  double neg_lr;
};

namespace contract {
using adamw_step = void(const TensorRef& p, const TensorRef& g, const TensorRef& m, const TensorRef& v,
                        const AdamWScalars& s);
using sgd_step = void(const TensorRef& p, const TensorRef& g, const TensorRef& buf, const SGDScalars& s);
// out (one f64 element on x's device) = the sum of the squares of x, for the global
// gradient norm. The CPU accumulates in double over fixed blocks (partial sums added
// in block order, independent of the thread count); CUDA squares and sums in x's
// dtype (the sum accumulating in double), then widens, so that a step reads back
// once for all parameters, never per parameter.
using sum_squares = void(const TensorRef& x, const TensorRef& out);
// x *= s in place.
using scale_ = void(const TensorRef& x, double s);
}  // namespace contract

namespace cpu {
contract::adamw_step adamw_step;
contract::sgd_step sgd_step;
contract::sum_squares sum_squares;
contract::scale_ scale_;
}  // namespace cpu
namespace cuda {
contract::adamw_step adamw_step;
contract::sgd_step sgd_step;
contract::sum_squares sum_squares;
contract::scale_ scale_;
}  // namespace cuda

}  // namespace bet::kernels
