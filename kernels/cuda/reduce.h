// Reduction and scan CUDA kernels: the contracts of kernels/cpu/reduce.h. Results
// are deterministic: every sum has a fixed order for a given shape (no atomics).
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace bet::kernels::cuda {

// out (contiguous, keepdim shape) = sum of `a` (any strides) over the dims where
// reduce[d]; floats accumulate in double, integers in int64.
void sum(const Tensor& a, const std::vector<bool>& reduce, const Tensor& out);
// Max along `dim` of contiguous `a` (values and/or i64 indices, keepdim, contiguous);
// the first maximum, NaN counting as the maximum (the first NaN).
void max_dim(const Tensor& a, int64_t dim, const Tensor* values, const Tensor* indices);
// out[..., idx, ...] = g along dim (out contiguous, zero-filled by the caller).
void scatter_dim(const Tensor& g, const Tensor& idx, int64_t dim, const Tensor& out);
// Inclusive prefix sum of contiguous `a` along `dim` into contiguous `out`.
void cumsum(const Tensor& a, int64_t dim, bool reverse, const Tensor& out);

}  // namespace bet::kernels::cuda
