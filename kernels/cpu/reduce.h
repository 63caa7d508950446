// Reduction and scan CPU kernels.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace bet::kernels::cpu {

// out (contiguous, a's shape with the reduced dims set to 1) = sum of `a` (any
// strides) over the dims where reduce[d] is true. Floats accumulate in double.
void sum(const Tensor& a, const std::vector<bool>& reduce, const Tensor& out);

// Max along `dim` of a contiguous `a`. values / indices (either may be null) are
// contiguous with a's shape and `dim` set to 1; indices are i64, the first maximum.
// NaN counts as the maximum. a.shape()[dim] must be > 0.
void max_dim(const Tensor& a, int64_t dim, const Tensor* values, const Tensor* indices);

// out[..., idx[...], ...] = g[...] along `dim`: the scatter of max's gradient. out is
// contiguous with zeros, g and idx contiguous with out's shape except size 1 at dim.
void scatter_dim(const Tensor& g, const Tensor& idx, int64_t dim, const Tensor& out);

// Inclusive prefix sum of a contiguous `a` along `dim` into contiguous `out`;
// `reverse` sums from the end (the adjoint of the forward scan).
void cumsum(const Tensor& a, int64_t dim, bool reverse, const Tensor& out);

}  // namespace bet::kernels::cpu
