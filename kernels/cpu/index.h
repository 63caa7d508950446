// Index kernels: gather along a dim and its adjoint, scatter-add. index_select and
// embedding are gathers whose index is a 1-D index expanded (stride 0) over the
// other dims, so one pair of kernels serves all three ops.
#pragma once
#include "engine/tensor.h"

namespace bet::kernels::cpu {

// out[p with dim = j] = a[p with dim = index[p with dim = j]] for every position p of
// out. index has out's shape and any strides (0 allowed); a has out's rank and is at
// least as large in every dim but `dim`. Values must already be in range.
void gather(const Tensor& a, int64_t dim, const Tensor& index, const Tensor& out);

// dst[p with dim = index[p with dim = j]] += src[p with dim = j]: the adjoint of gather.
// index and src share a shape. Deterministic: each destination element adds its
// contributions in index order, whatever the thread count.
void scatter_add(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src);

// True, with the value in *bad, when some index value lies outside [0, n).
bool find_out_of_range(const Tensor& index, int64_t n, int64_t* bad);

}  // namespace bet::kernels::cpu
