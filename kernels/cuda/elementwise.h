// Elementwise CUDA kernels: the same contracts as kernels/cpu/elementwise.h (operands
// already broadcast to the output's shape, any strides), for f32, f64 and bf16
// (computed in f32), and i32/i64 where the CPU supports integers.
#pragma once
#include "engine/tensor.h"
#include "kernels/cpu/elementwise.h"  // BinaryOp, UnaryOp

namespace bet::kernels::cuda {

using cpu::BinaryOp;
using cpu::UnaryOp;

void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void unary(UnaryOp op, const Tensor& a, const Tensor& out, double p0 = 0, double p1 = 0);
void unary_backward(UnaryOp op, const Tensor& x, const Tensor& g, const Tensor& out, double p0 = 0,
                    double p1 = 0);
void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out);
void masked_fill(const Tensor& a, const Tensor& mask, double value, const Tensor& out);
void maximum_backward(const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& ga, const Tensor& gb);

// Strided copy with dtype conversion (any dtypes, incl. bf16/f16) and fill: the
// kernels behind contiguous(), clone(), to(dtype) and copy_() on a GPU.
void copy(const Tensor& src, const Tensor& dst);
void fill(const Tensor& dst, double value);

}  // namespace bet::kernels::cuda
