// CUDA kernels behind the nn ops: the contracts of kernels/cpu/nn.h, except that the
// cross-entropy results stay on the device (no host round trip per step).
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace bet::kernels::cuda {

void softmax_forward(const Tensor& x, const Tensor& mask, const Tensor& out, bool log);
void softmax_backward(const Tensor& y, const Tensor& g, const Tensor& mask, const Tensor& grad_in, bool log);

void layer_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& out,
                        const Tensor& mean, const Tensor& rstd);
void layer_norm_backward(const Tensor& g, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         const Tensor& dx, const Tensor& dw, const Tensor& db);

// Fused log-softmax + NLL: writes each row's log-sum-exp to `lse` and the summed loss
// over counted rows to `out` (0-d, logits' dtype, on the device). Throws on a target
// outside [0, C) (one small device-to-host read per call).
void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& lse,
                           const Tensor& out);
// dlogits = g * (softmax - onehot); `g` is the 0-d upstream gradient on the device.
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& lse,
                            const Tensor& g, const Tensor& dlogits);
int64_t count_valid(const Tensor& targets, int64_t ignore_index);

// x [B, H, S, hd] contiguous; positions f64 [Bp, S] contiguous (on the device).
void rope(const Tensor& x, const Tensor& positions, double base, bool inverse, const Tensor& out);
// The CPU's mask bit for bit (the same Philox stream, kernels/cuda/philox.h).
void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out);

}  // namespace bet::kernels::cuda
