// Softmax and log-softmax over the last dim, and the fused log-softmax + NLL
// (cross-entropy). Row kernels: contiguous inputs, preallocated contiguous outputs
// (the op copies and allocates). f32 and f64 on both backends, bf16 on CUDA.
// Implemented by kernels/cpu/softmax.cpp and kernels/cuda/softmax.cu.
#pragma once
#include <cstdint>

#include "kernels/tensor_ref.h"

namespace bet::kernels {

namespace contract {
// Softmax (or log-softmax) over the last dim of contiguous `x` into contiguous `out`.
// `mask` is undefined or a view with x's shape (any strides, 0 where it broadcasts,
// any dtype; zero = masked). Masked entries give probability 0 (log: -inf); a row
// with every entry masked gives zeros.
using softmax_forward = void(const TensorRef& x, const TensorRef& mask, const TensorRef& out, bool log);
// grad_in = d loss / d x from the forward output `y` and its gradient `g` (both
// contiguous); masked entries (and fully masked rows) get zero.
using softmax_backward = void(const TensorRef& y, const TensorRef& g, const TensorRef& mask, const TensorRef& grad_in,
                              bool log);
// Fused log-softmax + NLL: logits contiguous [N, C], targets contiguous [N] (i32 or
// i64). Writes each row's log-sum-exp to `lse` [N] and the loss summed over the rows
// whose target is not `ignore_index` to `out` (0-d, logits' dtype, on their device:
// no host round trip per step), summed in double in row order, then rounded. Throws
// on a target outside [0, C) (on a GPU after one small device-to-host read).
using cross_entropy_forward = void(const TensorRef& logits, const TensorRef& targets, int64_t ignore_index,
                                   const TensorRef& lse, const TensorRef& out);
// dlogits = g * (softmax - onehot), zero rows for ignored targets; `g` is the 0-d
// upstream gradient, on the logits' device.
using cross_entropy_backward = void(const TensorRef& logits, const TensorRef& targets, int64_t ignore_index,
                                    const TensorRef& lse, const TensorRef& g, const TensorRef& dlogits);
// Number of entries of `targets` (i32/i64, contiguous) different from ignore_index.
using count_valid = int64_t(const TensorRef& targets, int64_t ignore_index);
}  // namespace contract

namespace cpu {
contract::softmax_forward softmax_forward;
contract::softmax_backward softmax_backward;
contract::cross_entropy_forward cross_entropy_forward;
contract::cross_entropy_backward cross_entropy_backward;
contract::count_valid count_valid;
}  // namespace cpu
namespace cuda {
contract::softmax_forward softmax_forward;
contract::softmax_backward softmax_backward;
contract::cross_entropy_forward cross_entropy_forward;
contract::cross_entropy_backward cross_entropy_backward;
contract::count_valid count_valid;
}  // namespace cuda

}  // namespace bet::kernels
