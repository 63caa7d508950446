// Fused scaled-dot-product attention (flash-attention style) behind bet::attention's
// CUDA path: out = dropout(softmax(q k^T, mask)) v, q already scaled by the caller.
//
// Algorithm
// - Forward, one block per (row block bh = (p, b, h), 64 query rows): the Q tile stays
//   in shared memory; K and V tiles of 32 keys stream through it. Scores of the tile
//   are a register micro-tile per thread (8 rows x 2 keys; the 16 threads of a row
//   group are one half-warp, so row max and row sum are 4 shuffles). Online softmax:
//   running max m and sum l per row, the output accumulator rescaled by exp(m_old -
//   m_new). The S x S matrix never exists. Saved: out, and lse = m + log l per row
//   (+inf for a fully masked row, whose probabilities are all 0, as in bet::softmax).
// - Dropout multiplies probability (i, j) by keep * 1/(1-p) AFTER the row sum (it acts
//   on the normalised probabilities); keep comes from Philox word offset + (bh*S + i)*S
//   + j, the element index of the contiguous [P, B, H, S, S] probs that bet::dropout
//   would see, so the mask equals the CPU's bit for bit (same integer threshold).
// - Backward (FlashAttention-2, deterministic: no atomics):
//   1. D_i = rowsum(dO * O) (equal to rowsum(dP * P) even with dropout).
//   2. dK/dV kernel, one block per (v's row block, 32 keys): recomputes P = exp(s -
//      lse) tile by tile over all query tiles; dV += (P*Z)^T dO, dS = P * (dO V^T * Z -
//      D), dK += dS^T Q, Z the dropout factor. When v is shared by all P (Pv == 1) the
//      block also loops over p: dK is written per p, dV summed over p in registers.
//   3. dQ kernel, one block per 64 query rows: dQ = sum over key tiles of dS K.
//   Each of dQ, dK, dV is a fixed-order sum: run-to-run identical.
// - Masked entries (mask 0, or outside S) have probability 0 and gradient 0.
// - Types: f32 and bf16 operands, f32 in shared memory and accumulators. Head dims
//   1..128 in three instantiations (32, 64, 128; shorter heads zero-padded).
//   Shared memory: 25 / 42 / 75 KB forward, up to 116 KB backward at hd 128 (opt-in
//   above 48 KB). Bank conflicts: rows padded by one float.
//
// Verified on a machine without a GPU: compiles for sm_90 with ptxas -v reporting no
// spills and no stack frame (124-234 registers, 128 threads). This file runs in the
// kernel-level CUDA emulator of tests/cuda_emu (every test run) against the CPU
// composite; during development it also matched it over forward and dq/dk/dv for f32 and bf16, hd 1/8/16/40/64/100/128,
// S 3..70 (ragged tiles), shared and per-path v, key/causal/i64 per-head masks with
// fully masked rows, dropout (so the Philox mapping), permuted q, expanded v, dq-only
// and dk/dv-only calls; the tests/test_cuda_ops attention cases came out within 0.2x
// (f32) and 0.6x (bf16) of their tolerances. The op's contract and its composite are
// tested on the CPU (tests/test_attention_op.cpp).
// NOT verified until tests/test_cuda_ops runs on a GPU: real-hardware results (its
// "fused attention" cases: forward and gradients in f32, f64, bf16, the dropout mask
// bit for bit, run-to-run determinism), the shared-memory opt-in and launch limits,
// memcheck cleanliness, speed (untuned: no tensor cores, no causal tile skipping).
#include "kernels/attention.h"

#include <cmath>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/philox.h"

namespace bet::kernels::cuda {

namespace {

// The fused kernels take head dims 1..kAttentionMaxHeadDim (has_fused_attention says
// so); the op composes matmul, softmax and dropout above that.
constexpr int64_t kAttentionMaxHeadDim = 128;

constexpr int kAttnThreads = 128;  // 8 row groups x 16 column groups
constexpr int kRows = 64;          // query rows per tile
constexpr int kKeys = 32;          // keys per tile

struct AttnParams {
  int64_t P = 0, B = 0, H = 0, S = 0;
  int hd = 0;
  // Element strides of dims P, B, H, S (the last dim's is 1). v_st[0] is 0 when v is
  // shared by every P.
  int64_t q_st[4] = {}, k_st[4] = {}, v_st[4] = {};
  const void* mask = nullptr;
  DType mask_dtype = DType::F32;
  int64_t m_st[5] = {};
  bool dropout = false;
  int64_t threshold = 0;
  float scale = 1.0f;
  uint64_t seed = 0, offset = 0;
};

template <int D>
struct Tile {
  static constexpr int LD = D + 1;          // row pitch of [rows][D] tiles
  static constexpr int PLD = kKeys + 1;     // row pitch of [kRows][kKeys] tiles
  static constexpr int RA = kRows / 8;      // query rows per thread
  static constexpr int KA = kKeys / 8;      // key rows per thread (dK, dV)
  static constexpr int CB = kKeys / 16;     // keys per thread in a score tile
  static constexpr int OC = D / 16;         // head columns per thread
};

__device__ __forceinline__ int tx_of() { return int(threadIdx.x) & 15; }
__device__ __forceinline__ int ty_of() { return int(threadIdx.x) >> 4; }

__device__ __forceinline__ float half_warp_max(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float half_warp_sum(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ int64_t base_of(const int64_t* st, int64_t p, int64_t b, int64_t h) {
  return p * st[0] + b * st[1] + h * st[2];
}

// Rows [r0, r0 + R) of one (p, b, h) slice into a [R][D + 1] f32 tile; rows past S and
// columns past hd are zeros (a padded V row must contribute 0, not 0 * garbage).
template <typename T, int D, int R>
__device__ __forceinline__ void load_rows(float* dst, const T* src, int64_t row_stride, int64_t r0, int64_t S,
                                          int hd) {
  for (int e = threadIdx.x; e < R * D; e += kAttnThreads) {
    const int r = e / D, d = e % D;
    float x = 0.0f;
    if (r0 + r < S && d < hd) x = convert<float>(src[(r0 + r) * row_stride + d]);
    dst[r * (D + 1) + d] = x;
  }
}

// acc[a][c] += sum_k A(ty + 8a, k) * B(k, tx + 16c) over k < kmax, with
// A(m, k) = A[m * AR + k * AK] and B(k, n) = B[k * BK + n * BC] in shared memory.
template <int RA, int RC, int AR, int AK, int BK, int BC>
__device__ __forceinline__ void mm_acc(float (&acc)[RA][RC], const float* A, const float* Bm, int kmax) {
  const int tx = tx_of(), ty = ty_of();
#pragma unroll 2
  for (int k = 0; k < kmax; ++k) {
    float av[RA], bv[RC];
#pragma unroll
    for (int a = 0; a < RA; ++a) av[a] = A[(ty + 8 * a) * AR + k * AK];
#pragma unroll
    for (int c = 0; c < RC; ++c) bv[c] = Bm[k * BK + (tx + 16 * c) * BC];
#pragma unroll
    for (int a = 0; a < RA; ++a)
#pragma unroll
      for (int c = 0; c < RC; ++c) acc[a][c] = fmaf(av[a], bv[c], acc[a][c]);
  }
}

template <int RA, int RC>
__device__ __forceinline__ void zero(float (&acc)[RA][RC]) {
#pragma unroll
  for (int a = 0; a < RA; ++a)
#pragma unroll
    for (int c = 0; c < RC; ++c) acc[a][c] = 0.0f;
}

// Score (i, j) takes part: inside S and kept by the mask.
__device__ __forceinline__ bool attn_keep(const AttnParams& g, int64_t mbase, int64_t i, int64_t j) {
  if (i >= g.S || j >= g.S) return false;
  return g.mask == nullptr || nonzero_at(g.mask, mbase + i * g.m_st[3] + j * g.m_st[4], g.mask_dtype);
}

// keep * 1/(1-p) for probability (i, j) of row block bh: bet::dropout's mapping.
__device__ __forceinline__ float drop_factor(const AttnParams& g, int64_t bh, int64_t i, int64_t j) {
  const uint64_t c = g.offset + uint64_t((bh * g.S + i) * g.S + j);
  const Philox4 r = philox4x32_10(g.seed, c >> 2);
  const unsigned q = unsigned(c & 3u);
  const uint32_t w = q == 0 ? r.w[0] : q == 1 ? r.w[1] : q == 2 ? r.w[2] : r.w[3];  // no local-memory indexing
  return dropout_keep(w, g.threshold) ? g.scale : 0.0f;
}

__device__ __forceinline__ void split_bh(const AttnParams& g, int64_t bh, int64_t& p, int64_t& b, int64_t& h) {
  h = bh % g.H;
  const int64_t t = bh / g.H;
  b = t % g.B;
  p = t / g.B;
}

template <typename T, int D>
__global__ void __launch_bounds__(kAttnThreads)
    attn_fwd_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
                    float* __restrict__ lse, AttnParams g) {
  using L = Tile<D>;
  extern __shared__ float smem[];
  float* Qs = smem;
  float* Ks = Qs + kRows * L::LD;
  float* Vs = Ks + kKeys * L::LD;
  float* Ps = Vs + kKeys * L::LD;
  const int tx = tx_of(), ty = ty_of();
  const int64_t ntiles = (g.S + kRows - 1) / kRows;
  const int64_t bh = int64_t(blockIdx.x) / ntiles, i0 = (int64_t(blockIdx.x) % ntiles) * kRows;
  int64_t p, b, h;
  split_bh(g, bh, p, b, h);
  const int64_t mbase = base_of(g.m_st, p, b, h);
  const T* kb = k + base_of(g.k_st, p, b, h);
  const T* vb = v + base_of(g.v_st, p, b, h);
  load_rows<T, D, kRows>(Qs, q + base_of(g.q_st, p, b, h), g.q_st[3], i0, g.S, g.hd);

  float m[L::RA], l[L::RA], o[L::RA][L::OC];
#pragma unroll
  for (int a = 0; a < L::RA; ++a) m[a] = -INFINITY, l[a] = 0.0f;
  zero(o);
  for (int64_t j0 = 0; j0 < g.S; j0 += kKeys) {
    __syncthreads();  // the previous tile's K, V, P reads are done
    load_rows<T, D, kKeys>(Ks, kb, g.k_st[3], j0, g.S, g.hd);
    load_rows<T, D, kKeys>(Vs, vb, g.v_st[3], j0, g.S, g.hd);
    __syncthreads();
    float s[L::RA][L::CB];
    zero(s);
    mm_acc<L::RA, L::CB, L::LD, 1, 1, L::LD>(s, Qs, Ks, g.hd);
#pragma unroll
    for (int a = 0; a < L::RA; ++a) {
      const int64_t i = i0 + ty + 8 * a;
      float mx = -INFINITY;
#pragma unroll
      for (int c = 0; c < L::CB; ++c) {
        if (!attn_keep(g, mbase, i, j0 + tx + 16 * c)) s[a][c] = -INFINITY;
        mx = fmaxf(mx, s[a][c]);
      }
      const float mn = fmaxf(m[a], half_warp_max(mx));
      // Nothing kept so far: every exp below is of -inf (0), and no 0/0 rescale.
      const float ref = mn == -INFINITY ? 0.0f : mn;
      const float alpha = expf(m[a] - ref);
      float rs = 0.0f;
#pragma unroll
      for (int c = 0; c < L::CB; ++c) {
        float e = expf(s[a][c] - ref);
        rs += e;
        if (g.dropout && e != 0.0f) e *= drop_factor(g, bh, i, j0 + tx + 16 * c);
        Ps[(ty + 8 * a) * L::PLD + tx + 16 * c] = e;
      }
      l[a] = l[a] * alpha + half_warp_sum(rs);
      m[a] = mn;
#pragma unroll
      for (int c = 0; c < L::OC; ++c) o[a][c] *= alpha;
    }
    __syncthreads();
    mm_acc<L::RA, L::OC, L::PLD, 1, L::LD, 1>(o, Ps, Vs, kKeys);
  }
#pragma unroll
  for (int a = 0; a < L::RA; ++a) {
    const int64_t i = i0 + ty + 8 * a;
    if (i >= g.S) continue;
    const float inv = l[a] > 0.0f ? 1.0f / l[a] : 0.0f;  // a fully masked row: zeros
    T* orow = out + (bh * g.S + i) * g.hd;
#pragma unroll
    for (int c = 0; c < L::OC; ++c) {
      const int d = tx + 16 * c;
      if (d < g.hd) orow[d] = convert<T>(o[a][c] * inv);
    }
    if (tx == 0) lse[bh * g.S + i] = l[a] > 0.0f ? m[a] + logf(l[a]) : INFINITY;
  }
}

// D_i = sum_d dO[i, d] * O[i, d]: one warp per row.
template <typename T>
__global__ void __launch_bounds__(kAttnThreads)
    attn_rowdot_kernel(const T* __restrict__ o, const T* __restrict__ dout, float* __restrict__ dd, int64_t rows,
                       int hd) {
  const int64_t r = int64_t(blockIdx.x) * (kAttnThreads / 32) + threadIdx.x / 32;
  if (r >= rows) return;  // uniform over the warp
  const int lane = threadIdx.x & 31;
  float s = 0.0f;
  for (int d = lane; d < hd; d += 32) s += convert<float>(o[r * hd + d]) * convert<float>(dout[r * hd + d]);
  s = warp_sum(s);
  if (lane == 0) dd[r] = s;
}

template <typename T, int D>
__global__ void __launch_bounds__(kAttnThreads)
    attn_bwd_dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                       const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ dd,
                       T* __restrict__ dq, AttnParams g) {
  using L = Tile<D>;
  extern __shared__ float smem[];
  float* Qs = smem;
  float* dOs = Qs + kRows * L::LD;
  float* Ks = dOs + kRows * L::LD;
  float* Vs = Ks + kKeys * L::LD;
  float* dSs = Vs + kKeys * L::LD;
  const int tx = tx_of(), ty = ty_of();
  const int64_t ntiles = (g.S + kRows - 1) / kRows;
  const int64_t bh = int64_t(blockIdx.x) / ntiles, i0 = (int64_t(blockIdx.x) % ntiles) * kRows;
  int64_t p, b, h;
  split_bh(g, bh, p, b, h);
  const int64_t mbase = base_of(g.m_st, p, b, h);
  const T* kb = k + base_of(g.k_st, p, b, h);
  const T* vb = v + base_of(g.v_st, p, b, h);
  load_rows<T, D, kRows>(Qs, q + base_of(g.q_st, p, b, h), g.q_st[3], i0, g.S, g.hd);
  load_rows<T, D, kRows>(dOs, dout + bh * g.S * g.hd, g.hd, i0, g.S, g.hd);
  float li[L::RA], di[L::RA];
#pragma unroll
  for (int a = 0; a < L::RA; ++a) {
    const int64_t i = i0 + ty + 8 * a;
    li[a] = i < g.S ? lse[bh * g.S + i] : INFINITY;
    di[a] = i < g.S ? dd[bh * g.S + i] : 0.0f;
  }
  float acc[L::RA][L::OC];
  zero(acc);
  for (int64_t j0 = 0; j0 < g.S; j0 += kKeys) {
    __syncthreads();
    load_rows<T, D, kKeys>(Ks, kb, g.k_st[3], j0, g.S, g.hd);
    load_rows<T, D, kKeys>(Vs, vb, g.v_st[3], j0, g.S, g.hd);
    __syncthreads();
    float s[L::RA][L::CB], dp[L::RA][L::CB];
    zero(s);
    zero(dp);
    mm_acc<L::RA, L::CB, L::LD, 1, 1, L::LD>(s, Qs, Ks, g.hd);
    mm_acc<L::RA, L::CB, L::LD, 1, 1, L::LD>(dp, dOs, Vs, g.hd);
#pragma unroll
    for (int a = 0; a < L::RA; ++a) {
      const int64_t i = i0 + ty + 8 * a;
#pragma unroll
      for (int c = 0; c < L::CB; ++c) {
        const int64_t j = j0 + tx + 16 * c;
        float ds = 0.0f;
        if (attn_keep(g, mbase, i, j)) {
          const float pr = expf(s[a][c] - li[a]);
          const float z = g.dropout ? drop_factor(g, bh, i, j) : 1.0f;
          ds = pr * (dp[a][c] * z - di[a]);
        }
        dSs[(ty + 8 * a) * L::PLD + tx + 16 * c] = ds;
      }
    }
    __syncthreads();
    mm_acc<L::RA, L::OC, L::PLD, 1, L::LD, 1>(acc, dSs, Ks, kKeys);
  }
#pragma unroll
  for (int a = 0; a < L::RA; ++a) {
    const int64_t i = i0 + ty + 8 * a;
    if (i >= g.S) continue;
    T* row = dq + (bh * g.S + i) * g.hd;
#pragma unroll
    for (int c = 0; c < L::OC; ++c) {
      const int d = tx + 16 * c;
      if (d < g.hd) row[d] = convert<T>(acc[a][c]);
    }
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kAttnThreads)
    attn_bwd_dkv_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                        const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ dd,
                        T* __restrict__ dk, T* __restrict__ dv, AttnParams g, int64_t Pv) {
  using L = Tile<D>;
  extern __shared__ float smem[];
  float* Ks = smem;
  float* Vs = Ks + kKeys * L::LD;
  float* Qs = Vs + kKeys * L::LD;
  float* dOs = Qs + kRows * L::LD;
  float* Ps = dOs + kRows * L::LD;
  float* dSs = Ps + kRows * L::PLD;
  const int tx = tx_of(), ty = ty_of();
  const int64_t ntiles = (g.S + kKeys - 1) / kKeys;
  const int64_t bhv = int64_t(blockIdx.x) / ntiles, j0 = (int64_t(blockIdx.x) % ntiles) * kKeys;
  const int64_t h = bhv % g.H, b = (bhv / g.H) % g.B, pv = bhv / (g.H * g.B);
  const int64_t p_lo = Pv == 1 ? 0 : pv, p_hi = Pv == 1 ? g.P : pv + 1;
  load_rows<T, D, kKeys>(Vs, v + base_of(g.v_st, pv, b, h), g.v_st[3], j0, g.S, g.hd);
  float dva[L::KA][L::OC];
  zero(dva);
  for (int64_t p = p_lo; p < p_hi; ++p) {
    const int64_t bh = (p * g.B + b) * g.H + h;
    const int64_t mbase = base_of(g.m_st, p, b, h);
    const T* qb = q + base_of(g.q_st, p, b, h);
    const T* ob = dout + bh * g.S * g.hd;
    __syncthreads();  // the previous p's K reads are done
    load_rows<T, D, kKeys>(Ks, k + base_of(g.k_st, p, b, h), g.k_st[3], j0, g.S, g.hd);
    float dka[L::KA][L::OC];
    zero(dka);
    for (int64_t i0 = 0; i0 < g.S; i0 += kRows) {
      __syncthreads();  // the previous query tile's reads are done
      load_rows<T, D, kRows>(Qs, qb, g.q_st[3], i0, g.S, g.hd);
      load_rows<T, D, kRows>(dOs, ob, g.hd, i0, g.S, g.hd);
      __syncthreads();
      float s[L::RA][L::CB], dp[L::RA][L::CB];
      zero(s);
      zero(dp);
      mm_acc<L::RA, L::CB, L::LD, 1, 1, L::LD>(s, Qs, Ks, g.hd);
      mm_acc<L::RA, L::CB, L::LD, 1, 1, L::LD>(dp, dOs, Vs, g.hd);
#pragma unroll
      for (int a = 0; a < L::RA; ++a) {
        const int64_t i = i0 + ty + 8 * a;
        const float li = i < g.S ? lse[bh * g.S + i] : INFINITY;
        const float di = i < g.S ? dd[bh * g.S + i] : 0.0f;
#pragma unroll
        for (int c = 0; c < L::CB; ++c) {
          const int64_t j = j0 + tx + 16 * c;
          float pd = 0.0f, ds = 0.0f;
          if (attn_keep(g, mbase, i, j)) {
            const float pr = expf(s[a][c] - li);
            const float z = g.dropout ? drop_factor(g, bh, i, j) : 1.0f;
            pd = pr * z;
            ds = pr * (dp[a][c] * z - di);
          }
          Ps[(ty + 8 * a) * L::PLD + tx + 16 * c] = pd;
          dSs[(ty + 8 * a) * L::PLD + tx + 16 * c] = ds;
        }
      }
      __syncthreads();
      // Transposed reads: A(key, i) = P[i][key].
      mm_acc<L::KA, L::OC, 1, L::PLD, L::LD, 1>(dva, Ps, dOs, kRows);
      mm_acc<L::KA, L::OC, 1, L::PLD, L::LD, 1>(dka, dSs, Qs, kRows);
    }
#pragma unroll
    for (int a = 0; a < L::KA; ++a) {
      const int64_t j = j0 + ty + 8 * a;
      if (j >= g.S) continue;
      T* row = dk + (bh * g.S + j) * g.hd;
#pragma unroll
      for (int c = 0; c < L::OC; ++c) {
        const int d = tx + 16 * c;
        if (d < g.hd) row[d] = convert<T>(dka[a][c]);
      }
    }
  }
#pragma unroll
  for (int a = 0; a < L::KA; ++a) {
    const int64_t j = j0 + ty + 8 * a;
    if (j >= g.S) continue;
    T* row = dv + (bhv * g.S + j) * g.hd;
#pragma unroll
    for (int c = 0; c < L::OC; ++c) {
      const int d = tx + 16 * c;
      if (d < g.hd) row[d] = convert<T>(dva[a][c]);
    }
  }
}

// ---------------------------------------------------------------- host side

AttnParams params_of(const TensorRef& q, const TensorRef& k, const TensorRef& v, const TensorRef& mask, double p,
                     uint64_t seed, uint64_t offset) {
  const char* op = "attention (cuda)";
  BET_CHECK(q.dim() == 5 && k.shape() == q.shape() && v.dim() == 5, op, ": q ", shape_str(q.shape()), ", k ",
            shape_str(k.shape()), ", v ", shape_str(v.shape()), " are not [P, B, H, S, hd]");
  AttnParams g;
  g.P = q.shape()[0], g.B = q.shape()[1], g.H = q.shape()[2], g.S = q.shape()[3];
  const int64_t hd = q.shape()[4];
  BET_CHECK(hd >= 1 && hd <= kAttentionMaxHeadDim, op, ": head dim ", hd, " outside 1..", kAttentionMaxHeadDim);
  g.hd = int(hd);
  const int64_t Pv = v.shape()[0];
  BET_CHECK((Pv == 1 || Pv == g.P) && Shape(v.shape().begin() + 1, v.shape().end()) ==
                                          Shape(q.shape().begin() + 1, q.shape().end()),
            op, ": v ", shape_str(v.shape()), " does not match q ", shape_str(q.shape()));
  BET_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype(), op, ": q, k, v dtypes differ");
  for (const TensorRef* t : {&q, &k, &v}) {
    BET_CHECK(t->device() == q.device(), op, ": operands on different devices");
    BET_CHECK(hd == 1 || t->strides()[4] == 1, op, ": the head dim of ", shape_str(t->shape()),
              " must have stride 1, got strides ", shape_str(t->strides()));
  }
  for (int d = 0; d < 4; ++d) {
    g.q_st[d] = q.strides()[size_t(d)];
    g.k_st[d] = k.strides()[size_t(d)];
    g.v_st[d] = v.strides()[size_t(d)];
  }
  if (Pv == 1) g.v_st[0] = 0;
  if (mask.defined()) {
    const Shape want{g.P, g.B, g.H, g.S, g.S};
    BET_CHECK(mask.shape() == want && mask.device() == q.device(), op, ": mask ", shape_str(mask.shape()),
              " must be a view of shape ", shape_str(want), " on ", q.device().str());
    g.mask = mask.raw_data();
    g.mask_dtype = mask.dtype();
    for (int d = 0; d < 5; ++d) g.m_st[d] = mask.strides()[size_t(d)];
  }
  BET_CHECK(p >= 0.0 && p <= 1.0, op, ": dropout p must be in [0, 1], got ", p);
  if (p > 0.0) {
    g.dropout = true;
    g.threshold = dropout_threshold(p);
    g.scale = p >= 1.0 ? 0.0f : float(1.0 / (1.0 - p));  // bet::dropout's f32 scale
    g.seed = seed;
    g.offset = offset;
  }
  return g;
}

template <typename Fn>
void dispatch_attention(DType dt, Fn&& fn) {
  switch (dt) {
    case DType::F32: return fn(float{});
    case DType::BF16: return fn(bf16{});
    default: fail("attention (cuda): dtype ", dtype_name(dt), " not supported by the fused kernels (f32 or bf16)");
  }
}

template <typename Fn>
void dispatch_head_dim(int hd, Fn&& fn) {
  if (hd <= 32) return fn(std::integral_constant<int, 32>{});
  if (hd <= 64) return fn(std::integral_constant<int, 64>{});
  return fn(std::integral_constant<int, 128>{});
}

// Dynamic shared memory above the 48 KB default needs the kernel's opt-in.
template <typename K>
void allow_smem(K* kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    BET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

unsigned blocks_for(int64_t slices, int64_t S, int tile) {
  const int64_t n = slices * ((S + tile - 1) / tile);
  BET_CHECK(n < (int64_t(1) << 31), "attention (cuda): ", n, " blocks exceed the grid limit");
  return unsigned(n);
}

}  // namespace

bool has_fused_attention(const TensorRef& q) {
  const int64_t hd = q.shape()[4];
  return (q.dtype() == DType::F32 || q.dtype() == DType::BF16) && hd >= 1 && hd <= kAttentionMaxHeadDim;
}

void attention_forward(const TensorRef& q, const TensorRef& k, const TensorRef& v, const TensorRef& mask, double p,
                       uint64_t seed, uint64_t offset, const TensorRef& out, const TensorRef& lse) {
  const AttnParams g = params_of(q, k, v, mask, p, seed, offset);
  BET_CHECK(out.shape() == q.shape() && out.is_contiguous() && out.dtype() == q.dtype(),
            "attention (cuda): out must be contiguous ", shape_str(q.shape()));
  BET_CHECK(lse.numel() == g.P * g.B * g.H * g.S && lse.dtype() == DType::F32 && lse.is_contiguous(),
            "attention (cuda): lse must be contiguous f32 with ", g.P * g.B * g.H * g.S, " elements");
  if (out.numel() == 0) return;
  DeviceGuard dg(q);
  dispatch_attention(q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    dispatch_head_dim(g.hd, [&](auto dtag) {
      constexpr int D = decltype(dtag)::value;
      using L = Tile<D>;
      const size_t smem = sizeof(float) * size_t((kRows + 2 * kKeys) * L::LD + kRows * L::PLD);
      auto* kern = &attn_fwd_kernel<T, D>;
      allow_smem(kern, smem);
      kern<<<blocks_for(g.P * g.B * g.H, g.S, kRows), kAttnThreads, smem>>>(ptr<T>(q), ptr<T>(k), ptr<T>(v),
                                                                             ptr<T>(out), ptr<float>(lse), g);
      BET_CUDA_LAUNCHED("attention forward");
    });
  });
}

void attention_backward(const TensorRef& q, const TensorRef& k, const TensorRef& v, const TensorRef& mask,
                        const TensorRef& out, const TensorRef& lse, const TensorRef& dout, double p, uint64_t seed,
                        uint64_t offset, const TensorRef& dq, const TensorRef& dk, const TensorRef& dv) {
  const AttnParams g = params_of(q, k, v, mask, p, seed, offset);
  const int64_t Pv = v.shape()[0], rows = g.P * g.B * g.H * g.S;
  BET_CHECK(dk.defined() == dv.defined(), "attention (cuda): dk and dv are computed together");
  for (const TensorRef* t : {&out, &dout, &dq, &dk})
    BET_CHECK(!t->defined() || (t->shape() == q.shape() && t->is_contiguous() && t->dtype() == q.dtype()),
              "attention (cuda): out, dout, dq and dk must be contiguous ", shape_str(q.shape()), " ",
              dtype_name(q.dtype()));
  BET_CHECK(!dv.defined() || (dv.shape() == v.shape() && dv.is_contiguous() && dv.dtype() == q.dtype()),
            "attention (cuda): dv must be contiguous ", shape_str(v.shape()));
  BET_CHECK(lse.numel() == rows && lse.dtype() == DType::F32, "attention (cuda): lse must be f32 with ", rows,
            " elements");
  DeviceGuard dg(q);
  if (q.numel() == 0) {  // P == 0 with a shared v: v's gradient is an empty sum
    if (dv.defined() && dv.numel() > 0) BET_CUDA_CHECK(cudaMemsetAsync(dv.raw_data(), 0, dv.nbytes(), 0));
    return;
  }
  ScratchTensor dd({rows}, DType::F32, q.device());
  dispatch_attention(q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int kWarps = kAttnThreads / 32;
    attn_rowdot_kernel<T><<<unsigned((rows + kWarps - 1) / kWarps), kAttnThreads>>>(ptr<T>(out), ptr<T>(dout),
                                                                                     ptr<float>(dd), rows, g.hd);
    BET_CUDA_LAUNCHED("attention backward");
    dispatch_head_dim(g.hd, [&](auto dtag) {
      constexpr int D = decltype(dtag)::value;
      using L = Tile<D>;
      if (dk.defined()) {
        const size_t smem = sizeof(float) * size_t((2 * kKeys + 2 * kRows) * L::LD + 2 * kRows * L::PLD);
        auto* kern = &attn_bwd_dkv_kernel<T, D>;
        allow_smem(kern, smem);
        kern<<<blocks_for(Pv * g.B * g.H, g.S, kKeys), kAttnThreads, smem>>>(
            ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(dout), ptr<float>(lse), ptr<float>(dd), ptr<T>(dk), ptr<T>(dv),
            g, Pv);
        BET_CUDA_LAUNCHED("attention backward (dk, dv)");
      }
      if (dq.defined()) {
        const size_t smem = sizeof(float) * size_t((2 * kRows + 2 * kKeys) * L::LD + kRows * L::PLD);
        auto* kern = &attn_bwd_dq_kernel<T, D>;
        allow_smem(kern, smem);
        kern<<<blocks_for(g.P * g.B * g.H, g.S, kRows), kAttnThreads, smem>>>(
            ptr<T>(q), ptr<T>(k), ptr<T>(v), ptr<T>(dout), ptr<float>(lse), ptr<float>(dd), ptr<T>(dq), g);
        BET_CUDA_LAUNCHED("attention backward (dq)");
      }
    });
  });
}

}  // namespace bet::kernels::cuda
