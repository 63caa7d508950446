// LayerNorm over the last dim, forward and backward. f32 and f64 on both backends,
// bf16 on CUDA (statistics in f32). Implemented by kernels/cpu/layer_norm.cpp and
// kernels/cuda/layer_norm.cu.
#pragma once
#include "kernels/tensor_ref.h"

namespace bet::kernels {

namespace contract {
// LayerNorm over the last dim D of contiguous `x` ([rows, D] logically). `w`, `b` are
// contiguous [D] or undefined. Saves per-row `mean` and `rstd` ([rows], x's dtype).
using layer_norm_forward = void(const TensorRef& x, const TensorRef& w, const TensorRef& b, double eps,
                                const TensorRef& out, const TensorRef& mean, const TensorRef& rstd);
// One pass over (g, x): dx, and the column sums dw = sum g*xhat, db = sum g. Any of
// dx, dw, db may be undefined (not wanted). dw/db sums are blocked by a row split
// that depends only on the row count, so they do not change with the thread count.
using layer_norm_backward = void(const TensorRef& g, const TensorRef& x, const TensorRef& w, const TensorRef& mean,
                                 const TensorRef& rstd, const TensorRef& dx, const TensorRef& dw,
                                 const TensorRef& db);
}  // namespace contract

namespace cpu {
contract::layer_norm_forward layer_norm_forward;
contract::layer_norm_backward layer_norm_backward;
}  // namespace cpu
namespace cuda {
contract::layer_norm_forward layer_norm_forward;
contract::layer_norm_backward layer_norm_backward;
}  // namespace cuda

}  // namespace bet::kernels
