#include "kernels/elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/strided.h"
#include "kernels/cpu/vec_math.h"
#include "platform/threads.h"

namespace bet::kernels::cpu {

using platform::kParallelGrain;
using platform::parallel_for;

namespace {

// Run bodies inline the element functions: an out-of-line call would keep the
// inner loop scalar (GCC's inliner gives up inside these deep template stacks).
#define BET_FLATTEN __attribute__((flatten))

using Off2 = std::array<int64_t, 2>;
using Off3 = std::array<int64_t, 3>;

template <typename T>
T* ptr(const TensorRef& t) {
  return static_cast<T*>(t.raw_data());
}

// for_each_run, except when an input is transposed against the output in the last
// two (coalesced) dims, e.g. a gradient arriving through transpose(-1, -2). Walking
// such an input along the output's rows touches a new cache line per element; here
// the runs are visited tile by tile, so the tile of the input stays in L1.
template <int N, typename Fn>
void for_each_run_tiled(const StridedLoop& loop, Fn&& fn) {
  const int64_t rank = int64_t(loop.shape.size());
  bool transposed = false;
  for (int k = 1; k < N && rank >= 2; ++k) {
    const int64_t si = loop.strides[k][rank - 1];
    if (si != 0 && si != 1 && loop.strides[k][rank - 2] == 1) transposed = true;
  }
  if (!transposed) return for_each_run<N>(loop, fn);
  constexpr int64_t kTile = 32;
  const int64_t R = loop.shape[rank - 2], C = loop.shape[rank - 1];
  int64_t outer = 1;
  for (int64_t d = 0; d + 2 < rank; ++d) outer *= loop.shape[d];
  const int64_t nrt = (R + kTile - 1) / kTile;
  std::array<int64_t, N> st_r{}, st_c{};
  for (int k = 0; k < N; ++k) st_r[k] = loop.strides[k][rank - 2], st_c[k] = loop.strides[k][rank - 1];
  parallel_for(outer * nrt, std::max<int64_t>(1, kParallelGrain / (kTile * C)), [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      std::array<int64_t, N> base{};
      int64_t rem = it / nrt;
      for (int64_t d = rank - 3; d >= 0; --d) {
        const int64_t idx = rem % loop.shape[d];
        rem /= loop.shape[d];
        for (int k = 0; k < N; ++k) base[k] += idx * loop.strides[k][d];
      }
      const int64_t r0 = (it % nrt) * kTile, r1 = std::min(R, r0 + kTile);
      for (int64_t c0 = 0; c0 < C; c0 += kTile) {
        const int64_t n = std::min(kTile, C - c0);
        for (int64_t r = r0; r < r1; ++r) {
          std::array<int64_t, N> off;
          for (int k = 0; k < N; ++k) off[k] = base[k] + r * st_r[k] + c0 * st_c[k];
          fn(off, n, st_c);
        }
      }
    }
  });
}

// out = f(x). The contiguous branch is the one that must vectorise.
template <typename T, typename F>
void unary_loop(const TensorRef& a, const TensorRef& out, F f) {
  const T* pa = ptr<T>(a);
  T* po = ptr<T>(out);
  StridedLoop loop = make_loop(out.shape(), {out.strides(), a.strides()});
  for_each_run_tiled<2>(loop, [&](const Off2& off, int64_t n, const Off2& st) BET_FLATTEN {
    T* __restrict o = po + off[0];
    const T* __restrict x = pa + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = f(x[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = f(x[i * st[1]]);
    }
  });
}

// out = f(x, y). Besides the all-contiguous run, the runs where one operand is
// constant along the inner dim (scalar operand, or a column broadcast over a row)
// hoist that operand out of the loop.
template <typename T, typename F>
void binary_loop(const TensorRef& a, const TensorRef& b, const TensorRef& out, F f) {
  const T* pa = ptr<T>(a);
  const T* pb = ptr<T>(b);
  T* po = ptr<T>(out);
  StridedLoop loop = make_loop(out.shape(), {out.strides(), a.strides(), b.strides()});
  for_each_run_tiled<3>(loop, [&](const Off3& off, int64_t n, const Off3& st) BET_FLATTEN {
    T* __restrict o = po + off[0];
    const T* __restrict x = pa + off[1];
    const T* __restrict y = pb + off[2];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], y[i]);
    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
      const T yv = *y;
      for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], yv);
    } else if (st[0] == 1 && st[1] == 0 && st[2] == 1) {
      const T xv = *x;
      for (int64_t i = 0; i < n; ++i) o[i] = f(xv, y[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = f(x[i * st[1]], y[i * st[2]]);
    }
  });
}

// gelu, forward and backward, compiled twice (kernels/cpu/isa.h): the contiguous runs go
// to the AVX2 or the AVX-512 twin of one body; other runs (strided, broadcast) use the
// same element functions in the build's form. Lane-wise only, with the same FMA
// contractions on both: the same bits.
template <typename T>
BET_VINLINE T gelu_fwd(T x) {
  return T(0.5) * x * (T(1) + verf(x * T(M_SQRT1_2)));
}
template <typename T>
BET_VINLINE T gelu_bwd(T v, T d) {
  const T cdf = T(0.5) * (T(1) + verf(v * T(M_SQRT1_2)));
  const T pdf = vexp(T(-0.5) * v * v) * T(0.3989422804014327);  // 1 / sqrt(2 pi)
  return d * (cdf + v * pdf);
}
template <typename T>
BET_VINLINE void gelu_fwd_body(const T* __restrict x, T* __restrict o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = gelu_fwd(x[i]);
}
template <typename T>
BET_VINLINE void gelu_bwd_body(const T* __restrict x, const T* __restrict g, T* __restrict o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] = gelu_bwd(x[i], g[i]);
}
template <typename T>
void gelu_fwd_avx2(const T* x, T* o, int64_t n) {
  gelu_fwd_body(x, o, n);
}
template <typename T>
BET_AVX512_TARGET void gelu_fwd_avx512(const T* x, T* o, int64_t n) {
  gelu_fwd_body(x, o, n);
}
template <typename T>
void gelu_bwd_avx2(const T* x, const T* g, T* o, int64_t n) {
  gelu_bwd_body(x, g, o, n);
}
template <typename T>
BET_AVX512_TARGET void gelu_bwd_avx512(const T* x, const T* g, T* o, int64_t n) {
  gelu_bwd_body(x, g, o, n);
}
bool gelu_avx512() { return kernel_isa(IsaKernel::Gelu) == CpuIsa::Avx512; }

// unary_loop with the contiguous runs handed to run(x, out, n).
template <typename T, typename F>
void unary_run_loop(const TensorRef& a, const TensorRef& out, void (*run)(const T*, T*, int64_t), F f) {
  const T* pa = ptr<T>(a);
  T* po = ptr<T>(out);
  StridedLoop loop = make_loop(out.shape(), {out.strides(), a.strides()});
  for_each_run_tiled<2>(loop, [&](const Off2& off, int64_t n, const Off2& st) BET_FLATTEN {
    T* __restrict o = po + off[0];
    const T* __restrict x = pa + off[1];
    if (st[0] == 1 && st[1] == 1) {
      run(x, o, n);
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = f(x[i * st[1]]);
    }
  });
}

// binary_loop with the all-contiguous runs handed to run(x, y, out, n).
template <typename T, typename F>
void binary_run_loop(const TensorRef& a, const TensorRef& b, const TensorRef& out,
                     void (*run)(const T*, const T*, T*, int64_t), F f) {
  const T* pa = ptr<T>(a);
  const T* pb = ptr<T>(b);
  T* po = ptr<T>(out);
  StridedLoop loop = make_loop(out.shape(), {out.strides(), a.strides(), b.strides()});
  for_each_run_tiled<3>(loop, [&](const Off3& off, int64_t n, const Off3& st) BET_FLATTEN {
    T* __restrict o = po + off[0];
    const T* __restrict x = pa + off[1];
    const T* __restrict y = pb + off[2];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
      run(x, y, o, n);
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = f(x[i * st[1]], y[i * st[2]]);
    }
  });
}

template <typename T>
void binary_typed(BinaryOp op, const TensorRef& a, const TensorRef& b, const TensorRef& out) {
  switch (op) {
    case BinaryOp::Add: return binary_loop<T>(a, b, out, [](T x, T y) { return x + y; });
    case BinaryOp::Sub: return binary_loop<T>(a, b, out, [](T x, T y) { return x - y; });
    case BinaryOp::Mul: return binary_loop<T>(a, b, out, [](T x, T y) { return x * y; });
    case BinaryOp::Div:
      if constexpr (std::is_floating_point_v<T>) {
        return binary_loop<T>(a, b, out, [](T x, T y) { return x / y; });
      } else {
        fail("div: integer tensors are not supported");
      }
    case BinaryOp::Maximum:
      // NaN in either operand propagates, as in torch.maximum.
      return binary_loop<T>(a, b, out, [](T x, T y) { return (x != x || x >= y) ? x : y; });
  }
}

template <typename T>
void unary_float(UnaryOp op, const TensorRef& a, const TensorRef& out, T p0, T p1) {
  switch (op) {
    case UnaryOp::Neg: return unary_loop<T>(a, out, [](T x) { return -x; });
    case UnaryOp::Exp: return unary_loop<T>(a, out, [](T x) { return vexp(x); });
    case UnaryOp::Log: return unary_loop<T>(a, out, [](T x) { return std::log(x); });
    case UnaryOp::Sqrt: return unary_loop<T>(a, out, [](T x) { return std::sqrt(x); });
    case UnaryOp::Tanh: return unary_loop<T>(a, out, [](T x) { return vtanh(x); });
    case UnaryOp::Sigmoid: return unary_loop<T>(a, out, [](T x) { return vsigmoid(x); });
    case UnaryOp::Relu: return unary_loop<T>(a, out, [](T x) { return x < T(0) ? T(0) : x; });
    case UnaryOp::Gelu:
      return unary_run_loop<T>(a, out, gelu_avx512() ? &gelu_fwd_avx512<T> : &gelu_fwd_avx2<T>,
                               [](T x) { return gelu_fwd(x); });
    case UnaryOp::Softplus:
      return unary_loop<T>(a, out, [](T x) { return vsoftplus(x); });
    case UnaryOp::Abs: return unary_loop<T>(a, out, [](T x) { return std::abs(x); });
    case UnaryOp::AddScalar: return unary_loop<T>(a, out, [p0](T x) { return x + p0; });
    case UnaryOp::MulScalar: return unary_loop<T>(a, out, [p0](T x) { return x * p0; });
    case UnaryOp::RSubScalar: return unary_loop<T>(a, out, [p0](T x) { return p0 - x; });
    case UnaryOp::Pow:
      if (p0 == T(1)) return unary_loop<T>(a, out, [](T x) { return x; });
      if (p0 == T(2)) return unary_loop<T>(a, out, [](T x) { return x * x; });
      if (p0 == T(3)) return unary_loop<T>(a, out, [](T x) { return x * x * x; });
      if (p0 == T(0.5)) return unary_loop<T>(a, out, [](T x) { return std::sqrt(x); });
      if (p0 == T(-1)) return unary_loop<T>(a, out, [](T x) { return T(1) / x; });
      if (p0 == T(-0.5)) return unary_loop<T>(a, out, [](T x) { return T(1) / std::sqrt(x); });
      return unary_loop<T>(a, out, [p0](T x) { return std::pow(x, p0); });
    case UnaryOp::Clamp:
      // NaN passes through, as in torch.clamp.
      return unary_loop<T>(a, out, [p0, p1](T x) { return x < p0 ? p0 : (x > p1 ? p1 : x); });
  }
}

template <typename T>
void unary_int(UnaryOp op, const TensorRef& a, const TensorRef& out, double p0, double p1) {
  switch (op) {
    case UnaryOp::Neg: return unary_loop<T>(a, out, [](T x) { return T(-x); });
    case UnaryOp::Abs: return unary_loop<T>(a, out, [](T x) { return x < 0 ? T(-x) : x; });
    case UnaryOp::Relu: return unary_loop<T>(a, out, [](T x) { return x < 0 ? T(0) : x; });
    case UnaryOp::AddScalar: {
      T s = T(p0);
      BET_CHECK(double(s) == p0, "add: scalar ", p0, " is not an integer for an integer tensor");
      return unary_loop<T>(a, out, [s](T x) { return T(x + s); });
    }
    case UnaryOp::MulScalar: {
      T s = T(p0);
      BET_CHECK(double(s) == p0, "mul: scalar ", p0, " is not an integer for an integer tensor");
      return unary_loop<T>(a, out, [s](T x) { return T(x * s); });
    }
    case UnaryOp::RSubScalar: {
      T s = T(p0);
      BET_CHECK(double(s) == p0, "rsub: scalar ", p0, " is not an integer for an integer tensor");
      return unary_loop<T>(a, out, [s](T x) { return T(s - x); });
    }
    case UnaryOp::Clamp: {
      // Bounds outside T's range (e.g. +-inf) saturate instead of overflowing the cast.
      const double tmin = double(std::numeric_limits<T>::min()), tmax = double(std::numeric_limits<T>::max());
      const T lo = T(std::clamp(std::ceil(p0), tmin, tmax)), hi = T(std::clamp(std::floor(p1), tmin, tmax));
      return unary_loop<T>(a, out, [lo, hi](T x) { return x < lo ? lo : (x > hi ? hi : x); });
    }
    default: fail("elementwise: this op does not support integer tensors (", dtype_name(a.dtype()), ")");
  }
}

// out = h(x, g) over (out, x, g).
template <typename T, typename F>
void grad_loop(const TensorRef& x, const TensorRef& g, const TensorRef& out, F h) {
  binary_loop<T>(x, g, out, h);
}

template <typename T>
void unary_backward_typed(UnaryOp op, const TensorRef& x, const TensorRef& g, const TensorRef& out, T p0, T p1) {
  switch (op) {
    case UnaryOp::Exp: return grad_loop<T>(x, g, out, [](T y, T d) { return d * y; });
    case UnaryOp::Log: return grad_loop<T>(x, g, out, [](T v, T d) { return d / v; });
    case UnaryOp::Sqrt: return grad_loop<T>(x, g, out, [](T y, T d) { return d / (T(2) * y); });
    case UnaryOp::Tanh: return grad_loop<T>(x, g, out, [](T y, T d) { return d * (T(1) - y * y); });
    case UnaryOp::Sigmoid: return grad_loop<T>(x, g, out, [](T y, T d) { return d * y * (T(1) - y); });
    case UnaryOp::Relu: return grad_loop<T>(x, g, out, [](T v, T d) { return v > T(0) ? d : T(0); });
    case UnaryOp::Gelu:
      return binary_run_loop<T>(x, g, out, gelu_avx512() ? &gelu_bwd_avx512<T> : &gelu_bwd_avx2<T>,
                                [](T v, T d) { return gelu_bwd(v, d); });
    case UnaryOp::Softplus:
      // Above torch's threshold the forward is the identity; in f32 sigmoid(v) already
      // rounds to 1 there, and the branch-free form vectorises.
      if constexpr (std::is_same_v<T, float>) return grad_loop<T>(x, g, out, [](T v, T d) { return d * vsigmoid(v); });
      else return grad_loop<T>(x, g, out, [](T v, T d) { return v > T(20) ? d : d * vsigmoid(v); });
    case UnaryOp::Abs:
      return grad_loop<T>(x, g, out, [](T v, T d) { return d * (v > T(0) ? T(1) : (v < T(0) ? T(-1) : T(0))); });
    case UnaryOp::Pow:
      if (p0 == T(0)) return grad_loop<T>(x, g, out, [](T, T) { return T(0); });
      if (p0 == T(2)) return grad_loop<T>(x, g, out, [](T v, T d) { return T(2) * v * d; });
      return grad_loop<T>(x, g, out, [p0](T v, T d) { return d * p0 * std::pow(v, p0 - T(1)); });
    case UnaryOp::Clamp:
      return grad_loop<T>(x, g, out, [p0, p1](T v, T d) { return (v >= p0 && v <= p1) ? d : T(0); });
    default: fail("unary_backward: op has a linear gradient; use the public ops");
  }
}

template <typename T, typename C>
void where_typed(const TensorRef& cond, const TensorRef& a, const TensorRef& b, const TensorRef& out) {
  const C* pc = ptr<C>(cond);
  const T* pa = ptr<T>(a);
  const T* pb = ptr<T>(b);
  T* po = ptr<T>(out);
  StridedLoop loop = make_loop(out.shape(), {out.strides(), cond.strides(), a.strides(), b.strides()});
  for_each_run<4>(loop, [&](const std::array<int64_t, 4>& off, int64_t n, const std::array<int64_t, 4>& st) BET_FLATTEN {
    T* __restrict o = po + off[0];
    const C* __restrict c = pc + off[1];
    const T* __restrict x = pa + off[2];
    const T* __restrict y = pb + off[3];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = c[i] != C(0) ? x[i] : y[i];
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = c[i * st[1]] != C(0) ? x[i * st[2]] : y[i * st[3]];
    }
  });
}

template <typename T, typename C>
void masked_fill_typed(const TensorRef& a, const TensorRef& mask, T value, const TensorRef& out) {
  const T* pa = ptr<T>(a);
  const C* pm = ptr<C>(mask);
  T* po = ptr<T>(out);
  StridedLoop loop = make_loop(out.shape(), {out.strides(), a.strides(), mask.strides()});
  for_each_run<3>(loop, [&](const Off3& off, int64_t n, const Off3& st) BET_FLATTEN {
    T* __restrict o = po + off[0];
    const T* __restrict x = pa + off[1];
    const C* __restrict m = pm + off[2];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = m[i] != C(0) ? value : x[i];
    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
      if (*m != C(0)) {
        for (int64_t i = 0; i < n; ++i) o[i] = value;
      } else {
        for (int64_t i = 0; i < n; ++i) o[i] = x[i];
      }
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = m[i * st[2]] != C(0) ? value : x[i * st[1]];
    }
  });
}

template <typename T>
void maximum_backward_typed(const TensorRef& a, const TensorRef& b, const TensorRef& g, const TensorRef& ga,
                            const TensorRef& gb) {
  const T* pa = ptr<T>(a);
  const T* pb = ptr<T>(b);
  const T* pg = ptr<T>(g);
  T* pga = ptr<T>(ga);
  T* pgb = ptr<T>(gb);
  StridedLoop loop = make_loop(g.shape(), {ga.strides(), gb.strides(), a.strides(), b.strides(), g.strides()});
  for_each_run<5>(loop, [&](const std::array<int64_t, 5>& off, int64_t n, const std::array<int64_t, 5>& st) BET_FLATTEN {
    for (int64_t i = 0; i < n; ++i) {
      const T x = pa[off[2] + i * st[2]], y = pb[off[3] + i * st[3]], d = pg[off[4] + i * st[4]];
      const bool left = x != x || x >= y;
      pga[off[0] + i * st[0]] = left ? d : T(0);
      pgb[off[1] + i * st[1]] = left ? T(0) : d;
    }
  });
}

template <typename Fn>
void dispatch_cond(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::F32: return fn(float{});
    case DType::F64: return fn(double{});
    case DType::I32: return fn(int32_t{});
    case DType::I64: return fn(int64_t{});
    default: fail(op, ": mask dtype ", dtype_name(t), " not supported on cpu");
  }
}

template <typename Fn>
void dispatch_all(DType t, const char* op, Fn&& fn) {
  dispatch_cond(t, op, std::forward<Fn>(fn));
}

}  // namespace

void binary(BinaryOp op, const TensorRef& a, const TensorRef& b, const TensorRef& out) {
  if (out.numel() == 0) return;
  dispatch_all(out.dtype(), "binary", [&](auto tag) { binary_typed<decltype(tag)>(op, a, b, out); });
}

void unary(UnaryOp op, const TensorRef& a, const TensorRef& out, double p0, double p1) {
  if (out.numel() == 0) return;
  switch (out.dtype()) {
    case DType::F32: return unary_float<float>(op, a, out, float(p0), float(p1));
    case DType::F64: return unary_float<double>(op, a, out, p0, p1);
    case DType::I32: return unary_int<int32_t>(op, a, out, p0, p1);
    case DType::I64: return unary_int<int64_t>(op, a, out, p0, p1);
    default: fail("unary: dtype ", dtype_name(out.dtype()), " not supported on cpu");
  }
}

void unary_backward(UnaryOp op, const TensorRef& x, const TensorRef& g, const TensorRef& out, double p0, double p1) {
  if (out.numel() == 0) return;
  switch (out.dtype()) {
    case DType::F32: return unary_backward_typed<float>(op, x, g, out, float(p0), float(p1));
    case DType::F64: return unary_backward_typed<double>(op, x, g, out, p0, p1);
    default: fail("unary_backward: dtype ", dtype_name(out.dtype()), " has no gradient");
  }
}

void where(const TensorRef& cond, const TensorRef& a, const TensorRef& b, const TensorRef& out) {
  if (out.numel() == 0) return;
  dispatch_all(out.dtype(), "where", [&](auto tag) {
    using T = decltype(tag);
    dispatch_cond(cond.dtype(), "where", [&](auto ctag) { where_typed<T, decltype(ctag)>(cond, a, b, out); });
  });
}

void masked_fill(const TensorRef& a, const TensorRef& mask, double value, const TensorRef& out) {
  if (out.numel() == 0) return;
  dispatch_all(out.dtype(), "masked_fill", [&](auto tag) {
    using T = decltype(tag);
    dispatch_cond(mask.dtype(), "masked_fill",
                  [&](auto ctag) { masked_fill_typed<T, decltype(ctag)>(a, mask, T(value), out); });
  });
}

void maximum_backward(const TensorRef& a, const TensorRef& b, const TensorRef& g, const TensorRef& ga,
                      const TensorRef& gb) {
  if (g.numel() == 0) return;
  switch (g.dtype()) {
    case DType::F32: return maximum_backward_typed<float>(a, b, g, ga, gb);
    case DType::F64: return maximum_backward_typed<double>(a, b, g, ga, gb);
    default: fail("maximum_backward: dtype ", dtype_name(g.dtype()), " has no gradient");
  }
}

}  // namespace bet::kernels::cpu
