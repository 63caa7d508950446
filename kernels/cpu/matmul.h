// Matrix products on the CPU. f32 goes to oneDNN's matmul primitive; f64 (used only
// by gradient checks) and shapes oneDNN cannot describe take a plain loop of our own.
#pragma once
#include "engine/tensor.h"

namespace bet::kernels::cpu {

// out [..., M, N] = a [..., M, K] @ b [..., K, N] (+ bias[N] added to every row).
// a, b and out have the same rank; each batch dim of a and b is out's or 1 (broadcast).
// out is contiguous; a, b and bias may have any strides: transposed and sliced views
// are read in place, never copied. `bias` may be undefined.
void matmul(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out);

// Number of oneDNN primitives held in the cache (for tests of the caching itself).
size_t matmul_cache_size();

}  // namespace bet::kernels::cpu
