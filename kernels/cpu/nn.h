// CPU kernels behind the nn ops (softmax, layer_norm, cross_entropy, rope, dropout).
// Row kernels take contiguous inputs and write into preallocated contiguous outputs
// (the op does the copying and the allocation); they parallelise over rows.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace bet::kernels::cpu {

// Softmax (or log-softmax) over the last dim of contiguous `x` into contiguous `out`.
// `mask` is undefined or a view with x's shape (any strides, 0 where it broadcasts,
// any dtype; zero = masked). Masked entries give probability 0 (log: -inf); a row with
// every entry masked gives zeros.
void softmax_forward(const Tensor& x, const Tensor& mask, const Tensor& out, bool log);
// grad_in = d loss / d x from the forward output `y` and its gradient `g` (both
// contiguous); masked entries (and fully masked rows) get zero.
void softmax_backward(const Tensor& y, const Tensor& g, const Tensor& mask, const Tensor& grad_in,
                      bool log);

// LayerNorm over the last dim D of contiguous `x` ([rows, D] logically). `w`, `b`
// are contiguous [D] or undefined. Saves per-row `mean` and `rstd` ([rows], x's dtype).
void layer_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps,
                        const Tensor& out, const Tensor& mean, const Tensor& rstd);
// One pass over (g, x): dx, and the column sums dw = sum g*xhat, db = sum g. Any of
// dx, dw, db may be undefined (not wanted). dw/db sums are blocked by a row split
// that depends only on the row count, so they do not change with the thread count.
void layer_norm_backward(const Tensor& g, const Tensor& x, const Tensor& w, const Tensor& mean,
                         const Tensor& rstd, const Tensor& dx, const Tensor& dw, const Tensor& db);

// Fused log-softmax + NLL: logits contiguous [N, C], targets contiguous [N] (i32/i64).
// Writes each row's log-sum-exp to `lse` [N] and returns the summed loss over rows
// whose target is not `ignore_index`. Throws on a target outside [0, C).
double cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                             const Tensor& lse);
// dlogits = g * (softmax - onehot), zero rows for ignored targets.
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                            const Tensor& lse, double g, const Tensor& dlogits);
// Number of entries of `targets` (i32/i64, contiguous) different from ignore_index.
int64_t count_valid(const Tensor& targets, int64_t ignore_index);

// Rotary embedding on contiguous x [B, H, S, hd] with f64 contiguous positions [Bp, S]
// (Bp = B or 1). `inverse` rotates by the negative angle (the backward).
void rope(const Tensor& x, const Tensor& positions, double base, bool inverse, const Tensor& out);

// out[i] = philox_uniform(seed, offset + i) >= p ? x[i] / (1 - p) : 0 over contiguous x.
void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out);

}  // namespace bet::kernels::cpu
