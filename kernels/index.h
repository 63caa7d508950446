// Index kernels: gather along a dim and its adjoint, scatter-add. index_select and
// embedding are gathers whose index is a 1-D index expanded (stride 0) over the
// other dims, so one pair of kernels serves all three ops. Implemented by
// kernels/cpu/index.cpp and kernels/cuda/index.cu.
#pragma once
#include <cstdint>

#include "kernels/tensor_ref.h"

namespace bet::kernels {

namespace contract {
// out[p with dim = j] = a[p with dim = index[p with dim = j]] for every position p of
// out. index has out's shape and any strides (0 allowed); a has out's rank and is at
// least as large in every dim but `dim`. Values must already be in range.
using gather = void(const TensorRef& a, int64_t dim, const TensorRef& index, const TensorRef& out);
// dst[p with dim = index[p with dim = j]] += src[p with dim = j]: the adjoint of
// gather. index and src share a shape. Deterministic (no floating-point atomics):
// each destination element adds its contributions in index order.
using scatter_add = void(const TensorRef& dst, int64_t dim, const TensorRef& index, const TensorRef& src);
// True, with the value in *bad, when some index value lies outside [0, n) (on a GPU:
// one small device-to-host read).
using find_out_of_range = bool(const TensorRef& index, int64_t n, int64_t* bad);
}  // namespace contract

namespace cpu {
contract::gather gather;
contract::scatter_add scatter_add;
contract::find_out_of_range find_out_of_range;
}  // namespace cpu
namespace cuda {
contract::gather gather;
contract::scatter_add scatter_add;
contract::find_out_of_range find_out_of_range;
}  // namespace cuda

}  // namespace bet::kernels
