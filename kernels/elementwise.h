// Elementwise kernels. Every operand arrives already broadcast to the output's shape
// (stride 0 along broadcast dims), with any strides. The CPU computes f32 and f64
// (and i32/i64 where integers make sense); CUDA also bf16 (computed in f32).
// Implemented by kernels/cpu/elementwise.cpp and kernels/cuda/elementwise.cu.
#pragma once
#include "kernels/tensor_ref.h"

namespace bet::kernels {

enum class BinaryOp { Add, Sub, Mul, Div, Maximum };

enum class UnaryOp {
  Neg, Exp, Log, Sqrt, Tanh, Sigmoid, Relu, Gelu, Softplus, Abs,
  AddScalar,   // a + p0
  MulScalar,   // a * p0
  RSubScalar,  // p0 - a
  Pow,         // a ^ p0
  Clamp,       // min(max(a, p0), p1)
};

namespace contract {
// out = a op b. a, b and out share a shape and dtype; out is freshly allocated.
using binary = void(BinaryOp op, const TensorRef& a, const TensorRef& b, const TensorRef& out);
// out = f(a); same shape and dtype. p0, p1: the op's scalars (0 when it has none).
using unary = void(UnaryOp op, const TensorRef& a, const TensorRef& out, double p0, double p1);
// out = g * f'(x), for the ops with a nonlinear derivative. `x` is the op's input,
// except for Exp, Tanh, Sigmoid and Sqrt, whose derivative is cheaper from the
// output y (pass y there).
using unary_backward = void(UnaryOp op, const TensorRef& x, const TensorRef& g, const TensorRef& out, double p0,
                            double p1);
// out = cond != 0 ? a : b; cond may have any dtype.
using where = void(const TensorRef& cond, const TensorRef& a, const TensorRef& b, const TensorRef& out);
// out = mask != 0 ? value : a; mask may have any dtype.
using masked_fill = void(const TensorRef& a, const TensorRef& mask, double value, const TensorRef& out);
// Gradient of maximum(a, b): ga = a >= b ? g : 0, gb = a >= b ? 0 : g (ties and NaN
// in a to a). All five share g's shape.
using maximum_backward = void(const TensorRef& a, const TensorRef& b, const TensorRef& g, const TensorRef& ga,
                              const TensorRef& gb);
}  // namespace contract

namespace cpu {
contract::binary binary;
contract::unary unary;
contract::unary_backward unary_backward;
contract::where where;
contract::masked_fill masked_fill;
contract::maximum_backward maximum_backward;
}  // namespace cpu
namespace cuda {
contract::binary binary;
contract::unary unary;
contract::unary_backward unary_backward;
contract::where where;
contract::masked_fill masked_fill;
contract::maximum_backward maximum_backward;
}  // namespace cuda

}  // namespace bet::kernels
