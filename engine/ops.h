// The engine's differentiable ops. Each op checks its arguments (errors name the op
// and the shapes), dispatches (op, device) to a kernel, and records its backward on
// the autograd tape when an input requires a gradient.
//
// Float ops take f32 and f64 on every device. bf16, autocast's compute type, is taken
// by matmul, linear, sum, attention and the dtype casts on every device (accumulating
// in f32 or wider; the CPU through f32 copies), and by the elementwise ops on a GPU.
// Index tensors are i32 or i64.
// Reductions take a list of dims; an empty list means all dims.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/autograd.h"
#include "engine/tensor.h"

namespace bet {

// ---------------- views (share storage; engine/ops/view_ops.cpp) ----------------
Tensor reshape(const Tensor& a, Shape shape);  // one dim may be -1; copies if not viewable
Tensor flatten(const Tensor& a, int64_t start_dim = 0, int64_t end_dim = -1);
Tensor transpose(const Tensor& a, int64_t d0, int64_t d1);
Tensor permute(const Tensor& a, const std::vector<int64_t>& dims);
Tensor slice(const Tensor& a, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor select(const Tensor& a, int64_t dim, int64_t index);  // drops `dim`
Tensor expand(const Tensor& a, const Shape& shape);        // broadcast to `shape`, stride 0
Tensor unsqueeze(const Tensor& a, int64_t dim);
Tensor squeeze(const Tensor& a, int64_t dim);
// Sums `g` down to `shape` (the adjoint of broadcasting); used by every broadcasting backward.
Tensor sum_to(const Tensor& g, const Shape& shape);

// ---------------- elementwise (engine/ops/elementwise_ops.cpp) ----------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor rsub(double s, const Tensor& a);  // s - a
Tensor neg(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor pow(const Tensor& a, double exponent);
Tensor tanh(const Tensor& a);
Tensor sigmoid(const Tensor& a);
Tensor relu(const Tensor& a);
Tensor gelu(const Tensor& a);      // exact (erf) form, as torch.nn.GELU()
Tensor softplus(const Tensor& a);  // log(1 + exp(a)), stable
Tensor abs(const Tensor& a);
Tensor clamp(const Tensor& a, double lo, double hi);  // gradient 0 outside [lo, hi]
Tensor maximum(const Tensor& a, const Tensor& b);       // gradient to the larger (a on ties)
// out = cond ? a : b, cond any dtype (nonzero = true), all three broadcast.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// out = mask ? value : a, mask broadcastable to a (nonzero = fill).
Tensor masked_fill(const Tensor& a, const Tensor& mask, double value);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double s) { return add(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return add(a, -s); }
inline Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return mul(a, 1.0 / s); }
inline Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
inline Tensor operator+(double s, const Tensor& a) { return add(a, s); }
inline Tensor operator-(double s, const Tensor& a) { return rsub(s, a); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

// ---------------- reductions (engine/ops/reduce_ops.cpp) ----------------
Tensor sum(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor max(const Tensor& a, int64_t dim, bool keepdim = false);  // values; grad to first argmax
Tensor argmax(const Tensor& a, int64_t dim, bool keepdim = false);  // i64, not differentiable
// Inclusive prefix sum along `dim` (O(n)); backward is the reversed prefix sum.
// The SufficientStatsEncoder's causal statistics: cumsum(x * mask, dim).
Tensor cumsum(const Tensor& a, int64_t dim);

// ---------------- normalisation and softmax (engine/ops/nn_ops.cpp) ----------------
// Softmax along `dim`. `mask` (optional) broadcasts to `a`; zero entries get
// probability 0 (as -inf logits). A row with every entry masked gives all zeros.
Tensor softmax(const Tensor& a, int64_t dim, const Tensor& mask = Tensor());
Tensor log_softmax(const Tensor& a, int64_t dim, const Tensor& mask = Tensor());
// LayerNorm over the last dim; weight and bias are [D] (either may be undefined).
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
// Fused log-softmax + NLL over logits [N, C] and targets [N] (i64/i32). Targets equal
// to `ignore_index` contribute nothing. Returns the SUM over counted targets (a scalar);
// divide by the count (`count_valid`) for the mean.
Tensor cross_entropy_sum(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);
int64_t count_valid(const Tensor& targets, int64_t ignore_index = -100);

// ---------------- linear algebra (engine/ops/matmul_ops.cpp; oneDNN, cuBLAS) ----------------
// a [..., M, K] @ b [..., K, N] with broadcast batch dims; 1-D operands are not accepted.
Tensor matmul(const Tensor& a, const Tensor& b);
// x [..., in] @ weight[out, in]^T + bias[out] (bias optional): PyTorch's Linear.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---------------- indexing (engine/ops/index_ops.cpp) ----------------
// weight [V, D], ids (i32/i64, any shape) -> [..., D]; backward scatter-adds.
Tensor embedding(const Tensor& weight, const Tensor& ids);
// out[i][j][k] = a[i][index[i][j][k]][k] for dim = 1 (torch.gather semantics).
Tensor gather(const Tensor& a, int64_t dim, const Tensor& index);
// out = a.index_select(dim, index) with 1-D index; backward scatter-adds.
Tensor index_select(const Tensor& a, int64_t dim, const Tensor& index);
Tensor concat(const std::vector<Tensor>& tensors, int64_t dim);
std::vector<Tensor> split(const Tensor& a, const std::vector<int64_t>& sizes, int64_t dim);

// ---------------- position and noise (engine/ops/nn_ops.cpp) ----------------
// Rotary embedding, half-split convention: x [B, H, S, hd], positions [B, S] or [S]
// (any dtype; value = position id). Pair (i, i + hd/2) rotates by pos * base^(-2i/hd).
Tensor rope(const Tensor& x, const Tensor& positions, double base = 10000.0);
// Inverted dropout with probability p; the mask comes from the Philox stream
// (seed, offset): element i uses counter offset + i, so it is independent of threads.
// Identity when !training or p == 0.
Tensor dropout(const Tensor& a, double p, bool training, uint64_t seed, uint64_t offset);

// ---- fused attention (engine/ops/attention_ops.cpp) ----
// out = dropout(softmax(q k^T, mask), p, training, seed, offset) v, q already scaled.
// q, k [P, B, H, S, hd]; v [P or 1, B, H, S, hd] (shared over P: its gradient sums
// over P); any strides. mask (optional) broadcasts to the scores [P, B, H, S, S]:
// zero entries get probability 0, a fully masked row gives zeros (as softmax). The
// dropout mask is bet::dropout's over the contiguous [P, B, H, S, S] probabilities.
// Gradients to q, k, v. CPU: exactly matmul / softmax / dropout / matmul (bit for
// bit; bf16: that in f32, rounded). GPU, f32/bf16, hd <= 128: fused flash-attention
// kernels (f32 accumulation); otherwise the composite.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, double dropout_p,
                 bool training, uint64_t seed, uint64_t offset);

}  // namespace bet
