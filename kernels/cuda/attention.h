// Fused scaled-dot-product attention on the GPU (kernels/cuda/attention.cu): the
// contract behind bet::attention's CUDA path. Plain C++ header, so the op's .cpp
// includes it without the CUDA toolkit.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace bet::kernels::cuda {

// The fused kernels take head dims 1..kAttentionMaxHeadDim; the op falls back to its
// composition of ops above that.
constexpr int64_t kAttentionMaxHeadDim = 128;

// Operands, all on one CUDA device, f32 or bf16 (one dtype; f32 accumulation):
//   q, k [P, B, H, S, hd] and v [Pv, B, H, S, hd], Pv = 1 (v shared by every P) or P;
//   any element strides except that the last dim's is 1 (or hd == 1).
//   mask: undefined (no mask) or a view of shape [P, B, H, S, S] (stride 0 along the
//   dims it broadcasts over), any dtype, nonzero = keep.
//   dropout p in [0, 1]: 0 = none; element (i, j) of row block bh keeps its
//   probability when Philox word offset + (bh * S + i) * S + j of `seed` passes the
//   dropout threshold (bet::dropout's mapping over the contiguous [P, B, H, S, S]).
// Forward writes out [P, B, H, S, hd] (contiguous, q's dtype) and lse [P*B*H*S] (f32,
// per-row log-sum-exp of the masked scores; +inf for a fully masked row).
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, double p,
                       uint64_t seed, uint64_t offset, const Tensor& out, const Tensor& lse);

// Gradients of sum(out * dout): dq, dk [P, B, H, S, hd], dv [Pv, B, H, S, hd],
// contiguous, q's dtype; dv sums over P when Pv == 1. `out` and `lse` are the
// forward's; dout contiguous [P, B, H, S, hd]. An undefined dq skips its kernel;
// dk and dv are computed together (both defined, or both undefined to skip).
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, const Tensor& out,
                        const Tensor& lse, const Tensor& dout, double p, uint64_t seed, uint64_t offset,
                        const Tensor& dq, const Tensor& dk, const Tensor& dv);

}  // namespace bet::kernels::cuda
