// Strided copy with dtype conversion, and fill: the kernels behind contiguous(),
// clone(), to(dtype), copy_() and fill_(). Implemented by kernels/cpu/copy.cpp and
// kernels/cuda/copy.cu (kernels/dispatch.h explains the pattern).
#pragma once
#include "kernels/tensor_ref.h"

namespace bet::kernels {

namespace contract {
// dst and src have the same shape; any strides, any dtypes (converted like a C cast;
// to bf16 rounded to nearest even). The CPU takes f32, f64, bf16, i32, i64; CUDA f16
// too.
using copy = void(const TensorRef& src, const TensorRef& dst);
// Every element of dst (any strides) set to value, converted to dst's dtype.
using fill = void(const TensorRef& dst, double value);
}  // namespace contract

namespace cpu {
contract::copy copy;
contract::fill fill;
}  // namespace cpu
namespace cuda {
contract::copy copy;
contract::fill fill;
}  // namespace cuda

}  // namespace bet::kernels
