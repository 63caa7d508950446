// Strided copy with dtype conversion, and fill: the kernels behind contiguous(),
// clone(), to(dtype) and copy_().
#pragma once
#include "engine/tensor.h"

namespace bet::kernels::cpu {

// dst and src have the same shape; any strides, any dtypes (converted like a C cast).
void copy(const Tensor& src, const Tensor& dst);
void fill(const Tensor& dst, double value);

}  // namespace bet::kernels::cpu
