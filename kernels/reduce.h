// Reduction and scan kernels. Results are deterministic: every sum has a fixed order
// for a given shape (no atomics), independent of the thread count. Implemented by
// kernels/cpu/reduce.cpp and kernels/cuda/reduce.cu.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/tensor_ref.h"

namespace bet::kernels {

namespace contract {
// out (contiguous, a's shape with the reduced dims set to 1) = sum of `a` (any
// strides) over the dims where reduce[d] is true. Floats accumulate in double,
// integers in int64. bf16 sums in f32 and rounds (the CPU through an f32 copy).
using sum = void(const TensorRef& a, const std::vector<bool>& reduce, const TensorRef& out);
// Max along `dim` of a contiguous `a` (a.shape()[dim] > 0). values and indices are
// contiguous with a's shape and `dim` set to 1, either undefined when not wanted;
// indices are i64, the first maximum. NaN counts as the maximum (the first NaN).
using max_dim = void(const TensorRef& a, int64_t dim, const TensorRef& values, const TensorRef& indices);
// out[..., idx[...], ...] = g[...] along `dim`: the scatter of max's gradient. out is
// contiguous and zero-filled by the caller, g and idx contiguous with out's shape
// except size 1 at dim.
using scatter_dim = void(const TensorRef& g, const TensorRef& idx, int64_t dim, const TensorRef& out);
// Inclusive prefix sum of a contiguous `a` along `dim` into contiguous `out`;
// `reverse` sums from the end (the adjoint of the forward scan).
using cumsum = void(const TensorRef& a, int64_t dim, bool reverse, const TensorRef& out);
}  // namespace contract

namespace cpu {
contract::sum sum;
contract::max_dim max_dim;
contract::scatter_dim scatter_dim;
contract::cumsum cumsum;
}  // namespace cpu
namespace cuda {
contract::sum sum;
contract::max_dim max_dim;
contract::scatter_dim scatter_dim;
contract::cumsum cumsum;
}  // namespace cuda

}  // namespace bet::kernels
