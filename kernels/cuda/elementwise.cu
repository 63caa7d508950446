// Elementwise CUDA kernels. One kernel per element type and arity; the op is a
// run-time switch inside it (uniform across the grid), which keeps nvcc's work and
// the binary small at no measurable cost for memory-bound loops.
#include <cmath>
#include <limits>

#include "kernels/elementwise.h"
#include "kernels/cuda/launch.cuh"

namespace bet::kernels::cuda {

namespace {

template <typename C>
__device__ __forceinline__ C unary_float_op(UnaryOp op, C x, C p0, C p1) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return exp(x);
    case UnaryOp::Log: return log(x);
    case UnaryOp::Sqrt: return sqrt(x);
    case UnaryOp::Tanh: return tanh(x);
    case UnaryOp::Sigmoid: return C(1) / (C(1) + exp(-x));
    case UnaryOp::Relu: return x < C(0) ? C(0) : x;
    case UnaryOp::Gelu: return C(0.5) * x * (C(1) + erf(x * C(0.70710678118654752440)));
    // Above 20 the identity, as torch's threshold and the CPU kernel; below, a form that
    // never overflows.
    case UnaryOp::Softplus: return x > C(20) ? x : (x > C(0) ? x : C(0)) + log1p(exp(-fabs(x)));
    case UnaryOp::Abs: return fabs(x);
    case UnaryOp::AddScalar: return x + p0;
    case UnaryOp::MulScalar: return x * p0;
    case UnaryOp::RSubScalar: return p0 - x;
    case UnaryOp::Pow:
      // The CPU kernel's exact special cases, so both give the same values there.
      if (p0 == C(1)) return x;
      if (p0 == C(2)) return x * x;
      if (p0 == C(3)) return x * x * x;
      if (p0 == C(0.5)) return sqrt(x);
      if (p0 == C(-1)) return C(1) / x;
      if (p0 == C(-0.5)) return C(1) / sqrt(x);
      return pow(x, p0);
    case UnaryOp::Clamp: return x < p0 ? p0 : (x > p1 ? p1 : x);  // NaN passes through
  }
  return x;
}

template <typename T>
__device__ __forceinline__ T unary_int_op(UnaryOp op, T x, T p0, T p1) {
  switch (op) {
    case UnaryOp::Neg: return T(-x);
    case UnaryOp::Abs: return x < 0 ? T(-x) : x;
    case UnaryOp::Relu: return x < 0 ? T(0) : x;
    case UnaryOp::AddScalar: return T(x + p0);
    case UnaryOp::MulScalar: return T(x * p0);
    case UnaryOp::RSubScalar: return T(p0 - x);
    case UnaryOp::Clamp: return x < p0 ? p0 : (x > p1 ? p1 : x);
    default: return x;
  }
}

// g * f'(x) (x = the output y for Exp, Tanh, Sigmoid, Sqrt), as the CPU kernel.
template <typename C>
__device__ __forceinline__ C unary_grad_op(UnaryOp op, C v, C d, C p0, C p1) {
  switch (op) {
    case UnaryOp::Exp: return d * v;
    case UnaryOp::Log: return d / v;
    case UnaryOp::Sqrt: return d / (C(2) * v);
    case UnaryOp::Tanh: return d * (C(1) - v * v);
    case UnaryOp::Sigmoid: return d * v * (C(1) - v);
    case UnaryOp::Relu: return v > C(0) ? d : C(0);
    case UnaryOp::Gelu: {
      const C cdf = C(0.5) * (C(1) + erf(v * C(0.70710678118654752440)));
      const C pdf = exp(C(-0.5) * v * v) * C(0.3989422804014327);
      return d * (cdf + v * pdf);
    }
    case UnaryOp::Softplus: return v > C(20) ? d : d / (C(1) + exp(-v));  // the forward's identity above 20
    case UnaryOp::Abs: return d * (v > C(0) ? C(1) : (v < C(0) ? C(-1) : C(0)));
    case UnaryOp::Pow:
      if (p0 == C(0)) return C(0);
      if (p0 == C(2)) return C(2) * v * d;
      return d * p0 * pow(v, p0 - C(1));
    case UnaryOp::Clamp: return (v >= p0 && v <= p1) ? d : C(0);
    default: return C(0);
  }
}

template <typename C>
__device__ __forceinline__ C binary_op(BinaryOp op, C x, C y) {
  switch (op) {
    case BinaryOp::Add: return x + y;
    case BinaryOp::Sub: return x - y;
    case BinaryOp::Mul: return x * y;
    case BinaryOp::Div: return x / y;
    case BinaryOp::Maximum: return (x != x || x >= y) ? x : y;  // NaN propagates, as torch.maximum
  }
  return x;
}

template <typename T>
void binary_t(BinaryOp op, const TensorRef& a, const TensorRef& b, const TensorRef& out) {
  using C = Acc<T>;
  if constexpr (std::is_integral_v<T>) BET_CHECK(op != BinaryOp::Div, "div: integer tensors are not supported");
  const T* pa = ptr<T>(a);
  const T* pb = ptr<T>(b);
  T* po = ptr<T>(out);
  auto g = geom_of<3>(out.shape(), {&out.strides(), &a.strides(), &b.strides()}, "binary");
  launch_foreach(g, [=] __device__(auto* off) {
    po[off[0]] = convert<T>(binary_op<C>(op, convert<C>(pa[off[1]]), convert<C>(pb[off[2]])));
  });
}

template <typename T>
void unary_t(UnaryOp op, const TensorRef& a, const TensorRef& out, double p0d, double p1d) {
  const T* pa = ptr<T>(a);
  T* po = ptr<T>(out);
  auto g = geom_of<2>(out.shape(), {&out.strides(), &a.strides()}, "unary");
  if constexpr (std::is_integral_v<T>) {
    T p0 = 0, p1 = 0;
    switch (op) {
      case UnaryOp::Neg: case UnaryOp::Abs: case UnaryOp::Relu: break;
      case UnaryOp::AddScalar: case UnaryOp::MulScalar: case UnaryOp::RSubScalar:
        p0 = T(p0d);
        BET_CHECK(double(p0) == p0d, "scalar ", p0d, " is not an integer for an integer tensor");
        break;
      case UnaryOp::Clamp: {
        // Bounds outside T's range (e.g. +-inf) saturate instead of overflowing the cast.
        const double tmin = double(std::numeric_limits<T>::min()), tmax = double(std::numeric_limits<T>::max());
        p0 = T(std::clamp(std::ceil(p0d), tmin, tmax));
        p1 = T(std::clamp(std::floor(p1d), tmin, tmax));
        break;
      }
      default: fail("elementwise: this op does not support integer tensors (", dtype_name(a.dtype()), ")");
    }
    launch_foreach(g, [=] __device__(auto* off) { po[off[0]] = unary_int_op<T>(op, pa[off[1]], p0, p1); });
  } else {
    using C = Acc<T>;
    const C p0 = C(p0d), p1 = C(p1d);
    launch_foreach(g, [=] __device__(auto* off) {
      po[off[0]] = convert<T>(unary_float_op<C>(op, convert<C>(pa[off[1]]), p0, p1));
    });
  }
}

template <typename T>
void unary_backward_t(UnaryOp op, const TensorRef& x, const TensorRef& gt, const TensorRef& out, double p0d,
                      double p1d) {
  using C = Acc<T>;
  const C p0 = C(p0d), p1 = C(p1d);
  const T* px = ptr<T>(x);
  const T* pg = ptr<T>(gt);
  T* po = ptr<T>(out);
  auto g = geom_of<3>(out.shape(), {&out.strides(), &x.strides(), &gt.strides()}, "unary_backward");
  launch_foreach(g, [=] __device__(auto* off) {
    po[off[0]] = convert<T>(unary_grad_op<C>(op, convert<C>(px[off[1]]), convert<C>(pg[off[2]]), p0, p1));
  });
}

template <typename T>
void where_t(const TensorRef& cond, const TensorRef& a, const TensorRef& b, const TensorRef& out) {
  const void* pc = cond.raw_data();
  const DType cdt = cond.dtype();
  const T* pa = ptr<T>(a);
  const T* pb = ptr<T>(b);
  T* po = ptr<T>(out);
  auto g = geom_of<4>(out.shape(), {&out.strides(), &cond.strides(), &a.strides(), &b.strides()}, "where");
  launch_foreach(g, [=] __device__(auto* off) { po[off[0]] = nonzero_at(pc, off[1], cdt) ? pa[off[2]] : pb[off[3]]; });
}

template <typename T>
void masked_fill_t(const TensorRef& a, const TensorRef& mask, double value, const TensorRef& out) {
  const T v = convert<T>(value);
  const void* pm = mask.raw_data();
  const DType mdt = mask.dtype();
  const T* pa = ptr<T>(a);
  T* po = ptr<T>(out);
  auto g = geom_of<3>(out.shape(), {&out.strides(), &a.strides(), &mask.strides()}, "masked_fill");
  launch_foreach(g, [=] __device__(auto* off) { po[off[0]] = nonzero_at(pm, off[2], mdt) ? v : pa[off[1]]; });
}

template <typename T>
void maximum_backward_t(const TensorRef& a, const TensorRef& b, const TensorRef& g, const TensorRef& ga,
                        const TensorRef& gb) {
  using C = Acc<T>;
  const T* pa = ptr<T>(a);
  const T* pb = ptr<T>(b);
  const T* pg = ptr<T>(g);
  T* pga = ptr<T>(ga);
  T* pgb = ptr<T>(gb);
  auto geo = geom_of<5>(g.shape(), {&ga.strides(), &gb.strides(), &a.strides(), &b.strides(), &g.strides()},
                        "maximum_backward");
  launch_foreach(geo, [=] __device__(auto* off) {
    const C x = convert<C>(pa[off[2]]), y = convert<C>(pb[off[3]]);
    const T d = pg[off[4]];
    const bool left = x != x || x >= y;
    pga[off[0]] = left ? d : convert<T>(C(0));
    pgb[off[1]] = left ? convert<T>(C(0)) : d;
  });
}

}  // namespace

void binary(BinaryOp op, const TensorRef& a, const TensorRef& b, const TensorRef& out) {
  if (out.numel() == 0) return;
  DeviceGuard dg(out);
  dispatch_all(out.dtype(), "binary", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, f16>) fail("binary: f16 not supported on cuda");
    else binary_t<T>(op, a, b, out);
  });
}

void unary(UnaryOp op, const TensorRef& a, const TensorRef& out, double p0, double p1) {
  if (out.numel() == 0) return;
  DeviceGuard dg(out);
  dispatch_all(out.dtype(), "unary", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, f16>) fail("unary: f16 not supported on cuda");
    else unary_t<T>(op, a, out, p0, p1);
  });
}

void unary_backward(UnaryOp op, const TensorRef& x, const TensorRef& g, const TensorRef& out, double p0, double p1) {
  if (out.numel() == 0) return;
  DeviceGuard dg(out);
  dispatch_float(out.dtype(), "unary_backward", [&](auto tag) { unary_backward_t<decltype(tag)>(op, x, g, out, p0, p1); });
}

void where(const TensorRef& cond, const TensorRef& a, const TensorRef& b, const TensorRef& out) {
  if (out.numel() == 0) return;
  check_cuda(cond, "where");
  DeviceGuard dg(out);
  dispatch_all(out.dtype(), "where", [&](auto tag) { where_t<decltype(tag)>(cond, a, b, out); });
}

void masked_fill(const TensorRef& a, const TensorRef& mask, double value, const TensorRef& out) {
  if (out.numel() == 0) return;
  check_cuda(mask, "masked_fill");
  DeviceGuard dg(out);
  dispatch_all(out.dtype(), "masked_fill", [&](auto tag) { masked_fill_t<decltype(tag)>(a, mask, value, out); });
}

void maximum_backward(const TensorRef& a, const TensorRef& b, const TensorRef& g, const TensorRef& ga,
                      const TensorRef& gb) {
  if (g.numel() == 0) return;
  DeviceGuard dg(g);
  dispatch_float(g.dtype(), "maximum_backward", [&](auto tag) { maximum_backward_t<decltype(tag)>(a, b, g, ga, gb); });
}

}  // namespace bet::kernels::cuda
