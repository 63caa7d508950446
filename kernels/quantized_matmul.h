// Int8 linear for inference (`betctl export --quantize int8`). CPU only: the engine
// falls back to the f32 linear over the dequantised weight elsewhere.
//
//   y[r, o] = sx[r] * sw[o] * (sum_k (xq[r, k] - zx[r]) * wq[o, k]) + bias[o]
//
// Weights: int8 per output channel, symmetric: sw[o] = max_k |w[o, k]| / 127,
// wq[o, k] = round(w[o, k] / sw[o]) in [-127, 127] (a zero row has sw = 0, wq = 0).
// Activations: quantised dynamically per row, asymmetric u8: the row's range
// [min(0, min x), max(0, max x)] maps onto [0, qmax], zero point zx[r] =
// round(-min / sx[r]); qmax is 255 where the CPU has VNNI (vpdpbusd accumulates u8 x s8
// in s32 without saturation; a worst-case probe at first use confirms oneDNN's sums are
// exact, else 127) and 127 elsewhere (AVX2/AVX-512 without VNNI pair products
// through vpmaddubsw, which saturates at s16 unless activations keep to 7 bits; PyTorch's
// fbgemm `reduce_range` for the same reason). The zero point is taken out after the
// integer GEMM with the precomputed per-channel sum of wq:
//   sum_k (xq - zx) wq = sum_k xq wq - zx * colsum[o].
// The integer GEMM (u8 x s8 -> s32) is oneDNN's int8 matmul (brgemm with VNNI where
// present), its weights reordered once into the layout the primitive asks for; the
// scales, zero point and bias are one pass over the s32 result.
// Implemented by kernels/cpu/matmul_int8.cpp (with a plain C++ reference for tests).
#pragma once
#include <cstdint>

namespace bet::kernels {

namespace contract {
// See above. x [M, K] f32 rows of stride ldx; wq [N, K] int8 row-major; sw [N]; colsum
// [N] = sum_k wq[o, k]; bias [N] or null; y [M, N] f32 contiguous.
using int8_linear = void(const float* x, int64_t M, int64_t K, int64_t ldx, const int8_t* wq, const float* sw,
                         const int32_t* colsum, const float* bias, int64_t N, float* y);
}  // namespace contract

}  // namespace bet::kernels
