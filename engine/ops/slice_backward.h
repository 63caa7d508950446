// The backward of `slice`, as a named type rather than a lambda, so that backprop can
// recognise it (std::function::target). Backprop keeps the slices' gradients of a tensor
// as pieces and writes them once into one full-size gradient when that tensor's own node
// runs (disjoint parts: each region copied, only the gaps zeroed), instead of a
// zero-filled full-size tensor per slice summed afterwards. split() of a fused GEMM's
// output (q/k/v, the stats encoder's heads) then costs its parts' size backward.
// Called as a function (leaves, tensors that retain their gradient) it returns the dense
// gradient: zeros with g in the sliced region.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace bet::ops_detail {

struct SliceBackward {
  Shape in_shape;
  int64_t dim, start, end, step;
  std::vector<Tensor> operator()(const Tensor& g) const;
  // The region of `full` (shaped in_shape) that the slice covers.
  Tensor region(const Tensor& full) const;
};

}  // namespace bet::ops_detail
