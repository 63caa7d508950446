// Matrix products. CPU: f32 through oneDNN's matmul primitive, f64 (gradient checks)
// and shapes oneDNN cannot describe through a plain loop of our own; bf16 through
// oneDNN's bf16 primitive (f32 accumulation) where the CPU makes it pay (AMX, or
// AVX512_BF16 measured faster than f32 FMA), else as f32 on f32 copies of the
// operands, rounded: the same numbers up to the order of accumulation
// (kernels/cpu/matmul.h: bf16_matmul_path, BET_CPU_BF16_MATMUL). CUDA: cuBLAS for f32, f64 and bf16 (f32 accumulation); f32 is full
// FP32 unless BET_CUDA_TF32=1 is set. Implemented by kernels/cpu/matmul.cpp and
// kernels/cuda/matmul.cu.
#pragma once
#include "kernels/tensor_ref.h"

namespace bet::kernels {

namespace contract {
// out [..., M, N] = a [..., M, K] @ b [..., K, N] (+ bias[N] added to every row).
// a, b and out have the same rank; each batch dim of a and b is out's or 1
// (broadcast). out is contiguous; a, b and bias may have any strides: transposed and
// sliced views are read in place where the library can describe them. `bias` may be
// undefined.
using matmul = void(const TensorRef& a, const TensorRef& b, const TensorRef& bias, const TensorRef& out);
}  // namespace contract

namespace cpu {
contract::matmul matmul;
}  // namespace cpu
namespace cuda {
contract::matmul matmul;
}  // namespace cuda

}  // namespace bet::kernels
