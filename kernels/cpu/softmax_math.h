// Helpers of the softmax kernels: a vectorisable exp and the mask row walker.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/cpu/vec_math.h"
#include "kernels/tensor_ref.h"

namespace bet::kernels::cpu::softmax_math {

// exp's lower clamp, hidden from the optimiser: when GCC sees a constant bound it
// folds exp(bound), turns the clamp into a branch and stops vectorising the loop.
// Call once per row, outside the inner loop.
struct ExpClamp {
  float lo;
};
inline ExpClamp exp_clamp() {
  float lo = -88.0f;
  asm("" : "+m"(lo));
  return {lo};
}

// exp for f32 arguments <= 0 (every caller passes x - max or a log-probability),
// without a libm call so the loops over it vectorise (glibc's vector expf is only
// used under -ffast-math). exp(x) = 2^n * 2^f, n = round(x*log2 e), |f| <= 1/2, 2^f a
// degree-5 minimax polynomial (relative error 1e-7). Rounding x*log2 e costs a
// relative error of ~|x| * 1e-7, negligible in absolute terms as exp(x) shrinks.
// Below about -87.7 the result is exactly 0 (so exp(-inf) = 0, as masking needs).
// Always inlined: the AVX2 and AVX-512 forms of the softmax kernels (kernels/cpu/isa.h)
// each compile it with their own target.
BET_VINLINE float exp(float x, ExpClamp c) {
  x = x < c.lo ? c.lo : x;
  const float t = x * 1.44269504088896341f;
  // Round to nearest with the 1.5*2^23 trick: k's low mantissa bits hold n.
  const float k = t + 12582912.0f;
  const float f = t - (k - 12582912.0f);
  float p = 1.326472614891827e-3f;
  p = p * f + 9.671512991189957e-3f;
  p = p * f + 5.550733581185341e-2f;
  p = p * f + 2.4022242426872253e-1f;
  p = p * f + 6.931470036506653e-1f;
  p = p * f + 1.0f;
  // 2^n from the exponent bits: (bits(k) << 23) == n << 23 (mod 2^32); n = -127
  // gives the bit pattern of 0.0f.
  const int32_t e = int32_t(uint32_t(std::bit_cast<int32_t>(k)) << 23) + (127 << 23);
  return p * std::bit_cast<float>(e);
}
BET_VINLINE double exp(double x, ExpClamp) { return std::exp(x); }

template <typename T>
constexpr T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

// Element offsets of the rows (all dims but the last) of a strided view, for walking
// a broadcast mask alongside a contiguous [rows, n] tensor.
struct RowWalker {
  const TensorRef* t = nullptr;
  int64_t rank = 0;
  int64_t inner_stride = 0;

  explicit RowWalker(const TensorRef& v) : t(&v), rank(v.dim()), inner_stride(rank ? v.strides()[rank - 1] : 1) {}
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

// The row's mask as an additive bias (0 kept, -inf masked), so masked logits drop out
// of max and exp without a branch, and as a 0/1 factor for the backward.
template <typename T, typename M>
inline void load_mask_bias(const M* m, int64_t stride, int64_t n, T* bias) {
  if (stride == 1) {
    for (int64_t j = 0; j < n; ++j) bias[j] = m[j] != M(0) ? T(0) : neg_inf<T>();
  } else {
    for (int64_t j = 0; j < n; ++j) bias[j] = m[j * stride] != M(0) ? T(0) : neg_inf<T>();
  }
}
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

}  // namespace bet::kernels::cpu::softmax_math
