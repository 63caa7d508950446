// Index CUDA kernels: the contracts of kernels/cpu/index.h. scatter_add is
// deterministic (no floating-point atomics): contributions to one destination are
// added in index order.
#pragma once
#include "engine/tensor.h"

namespace bet::kernels::cuda {

void gather(const Tensor& a, int64_t dim, const Tensor& index, const Tensor& out);
void scatter_add(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src);
// One small device-to-host read (a flag and, when set, the offending value).
bool find_out_of_range(const Tensor& index, int64_t n, int64_t* bad);

}  // namespace bet::kernels::cuda
