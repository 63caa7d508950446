// Elementwise CPU kernels. Every operand arrives already broadcast to the output's
// shape (stride 0 along broadcast dims), so one strided loop serves all shapes; the
// inner runs have special cases for the contiguous and the broadcast-scalar layouts
// (same-shape ops, bias adds, per-row scales), which the compiler vectorises.
#pragma once
#include "engine/tensor.h"

namespace bet::kernels::cpu {

enum class BinaryOp { Add, Sub, Mul, Div, Maximum };

// out = a op b. a, b and out share a shape and dtype; out is freshly allocated.
void binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);

enum class UnaryOp {
  Neg, Exp, Log, Sqrt, Tanh, Sigmoid, Relu, Gelu, Softplus, Abs,
  AddScalar,   // a + p0
  MulScalar,   // a * p0
  RSubScalar,  // p0 - a
  Pow,         // a ^ p0
  Clamp,       // min(max(a, p0), p1)
};

// out = f(a); same shape and dtype.
void unary(UnaryOp op, const Tensor& a, const Tensor& out, double p0 = 0, double p1 = 0);

// out = g * f'(x), for the ops with a nonlinear derivative. `x` is the op's input,
// except for Exp, Tanh, Sigmoid and Sqrt, whose derivative is cheaper from the
// output y (pass y there).
void unary_backward(UnaryOp op, const Tensor& x, const Tensor& g, const Tensor& out, double p0 = 0,
                    double p1 = 0);

// out = cond != 0 ? a : b; cond may have any dtype.
void where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out);
// out = mask != 0 ? value : a; mask may have any dtype.
void masked_fill(const Tensor& a, const Tensor& mask, double value, const Tensor& out);

// Gradient of maximum(a, b): ga = a >= b ? g : 0, gb = a >= b ? 0 : g (ties to a).
// All five share g's shape.
void maximum_backward(const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& ga, const Tensor& gb);

}  // namespace bet::kernels::cpu
