// Fused scaled-dot-product attention (flash attention: the S x S scores are never
// materialised). CUDA has the kernels (kernels/cuda/attention.cu); the CPU has none
// and says so (kernels/cpu/attention.cpp), and bet::attention then composes matmul,
// softmax and dropout.
#pragma once
#include <cstdint>

#include "kernels/tensor_ref.h"

namespace bet::kernels {

namespace contract {
// Whether this backend has fused kernels for queries like q (its dtype and head
// dim): CUDA for f32 and bf16 with head dims 1..128, the CPU never.
using has_fused_attention = bool(const TensorRef& q);
// Operands, all on one device, one dtype (f32 accumulation):
//   q, k [P, B, H, S, hd] and v [Pv, B, H, S, hd], Pv = 1 (v shared by every P) or P;
//   any element strides except that the last dim's is 1 (or hd == 1).
//   mask: undefined (no mask) or a view of shape [P, B, H, S, S] (stride 0 along the
//   dims it broadcasts over), any dtype, nonzero = keep.
//   dropout p in [0, 1]: 0 = none; element (i, j) of row block bh keeps its
//   probability when Philox word offset + (bh * S + i) * S + j of `seed` passes the
//   dropout threshold (bet::dropout's mapping over the contiguous [P, B, H, S, S]).
// Forward writes out [P, B, H, S, hd] (contiguous, q's dtype) and lse [P*B*H*S] (f32,
// per-row log-sum-exp of the masked scores; +inf for a fully masked row).
using attention_forward = void(const TensorRef& q, const TensorRef& k, const TensorRef& v, const TensorRef& mask,
                               double p, uint64_t seed, uint64_t offset, const TensorRef& out, const TensorRef& lse);
// Gradients of sum(out * dout): dq, dk [P, B, H, S, hd], dv [Pv, B, H, S, hd],
// contiguous, q's dtype; dv sums over P when Pv == 1. `out` and `lse` are the
// forward's; dout contiguous [P, B, H, S, hd]. An undefined dq skips its kernel;
// dk and dv are computed together (both defined, or both undefined to skip).
using attention_backward = void(const TensorRef& q, const TensorRef& k, const TensorRef& v, const TensorRef& mask,
                                const TensorRef& out, const TensorRef& lse, const TensorRef& dout, double p,
                                uint64_t seed, uint64_t offset, const TensorRef& dq, const TensorRef& dk,
                                const TensorRef& dv);
}  // namespace contract

namespace cpu {
contract::has_fused_attention has_fused_attention;
contract::attention_forward attention_forward;
contract::attention_backward attention_backward;
}  // namespace cpu
namespace cuda {
contract::has_fused_attention has_fused_attention;
contract::attention_forward attention_forward;
contract::attention_backward attention_backward;
}  // namespace cuda

}  // namespace bet::kernels
