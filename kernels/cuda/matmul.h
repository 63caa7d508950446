// Matrix products on the GPU through cuBLAS: the contract of kernels/cpu/matmul.h
// (strided views read in place where cuBLAS can describe them), for f32, f64 and
// bf16 (bf16 operands and output, f32 accumulation). f32 uses full-precision FP32
// arithmetic unless BET_CUDA_TF32=1 is set in the environment.
#pragma once
#include "engine/tensor.h"

namespace bet::kernels::cuda {

void matmul(const Tensor& a, const Tensor& b, const Tensor& bias, const Tensor& out);

}  // namespace bet::kernels::cuda
