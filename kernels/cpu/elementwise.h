// Elementwise CPU kernels. Every operand arrives already broadcast to the output's
// shape (stride 0 along broadcast dims), so one strided loop serves all shapes; the
// inner runs have special cases for the contiguous and the broadcast-scalar layouts
// (same-shape ops, bias adds, per-row scales), which the compiler vectorises.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

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

// Scalar maths for kernel loops (also used by other kernels, e.g. softmax). The f32
// forms are branch-free polynomials, so loops calling them vectorise (libm calls do
// not); f64 (gradient checks) uses libm. Accuracy of the f32 forms: a few ulp.
namespace vm {
inline float bits_to_float(int32_t i) { return std::bit_cast<float>(i); }
inline int32_t float_to_bits(float f) { return std::bit_cast<int32_t>(f); }
}  // namespace vm

template <typename T>
inline T vexp(T x) { return std::exp(x); }
template <>
inline float vexp(float x) {
  // exp(x) = 2^n * exp(r), |r| <= ln2/2; the scale 2^n is applied in two halves so
  // that results near overflow and in the denormal range stay exact.
  const float xc = x < -104.f ? -104.f : (x > 89.f ? 89.f : x);
  const float n = std::floor(std::fma(xc, 1.44269504088896341f, 0.5f));
  float r = std::fma(n, -0.693359375f, xc);
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p * r, r, r + 1.f);
  const int32_t ni = int32_t(n), h = ni >> 1;
  const float s1 = vm::bits_to_float((h + 127) << 23), s2 = vm::bits_to_float((ni - h + 127) << 23);
  const float y = p * s1 * s2;
  return x != x ? x : y;
}

// log(x) for finite positive normal f32 (Cephes logf).
inline float vlog_pos(float x) {
  const int32_t b = vm::float_to_bits(x);
  float e = float(((b >> 23) & 0xff) - 126);
  float m = vm::bits_to_float((b & 0x807fffff) | 0x3f000000);  // [0.5, 1)
  const bool lo = m < 0.707106781186547524f;
  e = lo ? e - 1.f : e;
  m = lo ? m + m - 1.f : m - 1.f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = std::fma(y, m, -1.1514610310e-1f);
  y = std::fma(y, m, 1.1676998740e-1f);
  y = std::fma(y, m, -1.2420140846e-1f);
  y = std::fma(y, m, 1.4249322787e-1f);
  y = std::fma(y, m, -1.6668057665e-1f);
  y = std::fma(y, m, 2.0000714765e-1f);
  y = std::fma(y, m, -2.4999993993e-1f);
  y = std::fma(y, m, 3.3333331174e-1f);
  y = y * m * z;
  y = std::fma(e, -2.12194440e-4f, y);
  y = std::fma(z, -0.5f, y);
  return std::fma(e, 0.693359375f, m + y);
}

// log(1 + t) for t in [0, 1]; the correction term recovers the bits lost in 1 + t.
inline float vlog1p_unit(float t) {
  const float u = 1.f + t;
  return vlog_pos(u) - ((u - 1.f) - t) / u;
}

template <typename T>
inline T vtanh(T x) { return std::tanh(x); }
template <>
inline float vtanh(float x) {
  const float ax = std::abs(x);
  // small |x|: odd polynomial (Cephes tanhf); large: 1 - 2 / (exp(2|x|) + 1)
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = std::fma(p, z, 2.06390887954e-2f);
  p = std::fma(p, z, -5.37397155531e-2f);
  p = std::fma(p, z, 1.33314422036e-1f);
  p = std::fma(p, z, -3.33332819422e-1f);
  const float small = std::fma(p * z, x, x);
  const float big = 1.f - 2.f / (vexp(2.f * ax) + 1.f);
  return ax < 0.625f ? small : std::copysign(big, x);
}

template <typename T>
inline T verf(T x) { return std::erf(x); }
template <>
inline float verf(float x) {
  // Rational minimax fit on [-4, 4] (the one XLA and Eigen use); |erf| rounds to 1 beyond.
  const float xc = x < -4.f ? -4.f : (x > 4.f ? 4.f : x);
  const float x2 = xc * xc;
  float p = -2.72614225801306e-10f;
  p = std::fma(x2, p, 2.77068142495902e-08f);
  p = std::fma(x2, p, -2.10102402082508e-06f);
  p = std::fma(x2, p, -5.69250639462346e-05f);
  p = std::fma(x2, p, -7.34990630326855e-04f);
  p = std::fma(x2, p, -2.95459980854025e-03f);
  p = std::fma(x2, p, -1.60960333262415e-02f);
  float q = -1.45660718464996e-05f;
  q = std::fma(x2, q, -2.13374055278905e-04f);
  q = std::fma(x2, q, -1.68282697438203e-03f);
  q = std::fma(x2, q, -7.37332916720468e-03f);
  q = std::fma(x2, q, -1.42647390514189e-02f);
  const float r = xc * p / q;
  return r < -1.f ? -1.f : (r > 1.f ? 1.f : r);
}

template <typename T>
inline T vsigmoid(T x) { return T(1) / (T(1) + vexp(-x)); }

// log(1 + exp(x)), torch's softplus (beta 1, threshold 20).
template <typename T>
inline T vsoftplus(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }
template <>
inline float vsoftplus(float x) {
  // max(x, 0) + log1p(exp(-|x|)): never overflows; above 20 the log term is below
  // half an ulp of x, which matches torch's threshold.
  const float y = (x > 0.f ? x : 0.f) + vlog1p_unit(vexp(-std::abs(x)));
  return x != x ? x : y;
}

}  // namespace bet::kernels::cpu
