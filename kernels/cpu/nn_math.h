// Helpers shared by the nn kernels: a vectorisable exp and the mask row walker.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "engine/tensor.h"

namespace bet::kernels::cpu::nnmath {

// exp for f32 without a libm call, so loops over it vectorise (glibc's vector expf
// is only used under -ffast-math). Cephes range reduction + degree-6 polynomial,
// ~1 ulp on [-87, 88]; inputs are clamped there, so the result is always finite and
// exp(x) for x < -87 gives ~1e-38 rather than 0 (callers select 0 where it matters).
inline float exp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  // Round x*log2(e) to nearest with the 1.5*2^23 trick (no call to nearbyint).
  const float shifter = 12582912.0f;
  float t = x * 1.44269504088896341f + shifter;
  float n = t - shifter;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t e = (std::bit_cast<int32_t>(t) - 0x4B400000) + 127;
  return p * std::bit_cast<float>(e << 23);
}
inline double exp(double x) { return std::exp(x); }

template <typename T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// Element offsets of the rows (all dims but the last) of a strided view, for walking
// a broadcast mask alongside a contiguous [rows, n] tensor.
struct RowWalker {
  const Tensor* t = nullptr;
  int64_t rank = 0;
  int64_t inner_stride = 0;

  explicit RowWalker(const Tensor& v) : t(&v), rank(v.dim()), inner_stride(rank ? v.strides()[rank - 1] : 1) {}
  int64_t row_offset(int64_t row) const {
    int64_t off = 0;
    for (int64_t d = rank - 2; d >= 0; --d) {
      int64_t sz = t->shape()[d];
      off += (row % sz) * t->strides()[d];
      row /= sz;
    }
    return off;
  }
};

// keep[j] = (m[j * stride] != 0) as 0/1 in T, so the row loops stay single-typed.
template <typename T, typename M>
inline void load_keep(const M* m, int64_t stride, int64_t n, T* keep) {
  if (stride == 1) {
    for (int64_t j = 0; j < n; ++j) keep[j] = m[j] != M(0) ? T(1) : T(0);
  } else {
    for (int64_t j = 0; j < n; ++j) keep[j] = m[j * stride] != M(0) ? T(1) : T(0);
  }
}

// Calls fn.template operator()<M>() with M the C++ type of `dt` (f32, f64, i32, i64).
template <typename Fn>
decltype(auto) dispatch_any(DType dt, const char* op, Fn&& fn) {
  switch (dt) {
    case DType::F32: return fn(float{});
    case DType::F64: return fn(double{});
    case DType::I32: return fn(int32_t{});
    case DType::I64: return fn(int64_t{});
    default: fail(op, ": dtype ", dtype_name(dt), " not supported on cpu");
  }
}

}  // namespace bet::kernels::cpu::nnmath
