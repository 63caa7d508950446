// Vectorisable scalar maths for the CPU elementwise kernels' loops.
#pragma once
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace bet::kernels::cpu {

// The f32 forms are branch-free polynomials, so loops calling them vectorise (libm
// calls do not); f64 (gradient checks) uses libm. Accuracy of the f32 forms: a few ulp.
//
// They avoid `c ? f(x) : g(x)` on computed values: under the default -ftrapping-math
// GCC will not speculate the arithmetic of a branch, and the loop stays scalar.
// `vm::blend` selects with bit masks instead, and NaN propagates arithmetically.
// Forced inline: a call in a loop body would stop its vectorisation.
#define BET_VINLINE inline __attribute__((always_inline))

namespace vm {
BET_VINLINE float bits_to_float(int32_t i) { return std::bit_cast<float>(i); }
BET_VINLINE int32_t float_to_bits(float f) { return std::bit_cast<int32_t>(f); }
BET_VINLINE float blend(bool c, float a, float b) {
  const int32_t m = -int32_t(c);
  return bits_to_float((float_to_bits(a) & m) | (float_to_bits(b) & ~m));
}
// min(max(x, lo), hi), NaN passing through. Blends, not ?: (GCC threads the
// constant arms of ?: into branches, and the loop no longer vectorises).
BET_VINLINE float clamp(float x, float lo, float hi) { return blend(x < lo, lo, blend(x > hi, hi, x)); }
// 2^n for an integer n in [-126, 127], by building the exponent field.
BET_VINLINE float pow2i(int32_t n) { return bits_to_float(int32_t(uint32_t(n + 127) << 23)); }
// Rounds to the nearest integer (|x| < 2^22), as float and as int: adding 1.5 * 2^23
// leaves the integer in the low mantissa bits. (floorf does not vectorise under
// -ftrapping-math.)
BET_VINLINE float round_magic(float x, int32_t* i) {
  const float t = x + 12582912.f;
  *i = float_to_bits(t) - 0x4B400000;
  return t - 12582912.f;
}
}  // namespace vm

template <typename T>
BET_VINLINE T vexp(T x) { return std::exp(x); }
template <>
BET_VINLINE float vexp(float x) {
  // exp(x) = 2^n * exp(r), |r| <= ln2/2; the scale 2^n is applied in two halves so
  // that results up to overflow stay exact. Below -87.33 the result is flushed to 0
  // rather than computed as a denormal (denormal arithmetic can take microcode
  // assists, e.g. for masked softmax logits).
  const float xc = vm::clamp(x, -87.33f, 89.f);
  int32_t ni;
  const float n = vm::round_magic(xc * 1.44269504088896341f, &ni);
  float r = std::fma(n, -0.693359375f, xc);
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p * r, r, r + 1.f);
  // A NaN x leaves garbage in ni, but p is NaN and so is the product.
  const int32_t h = ni >> 1;
  return vm::blend(x < -87.33f, 0.f, p * vm::pow2i(h) * vm::pow2i(ni - h));
}

// log(1 + t) for t in [0, 1], as 2 atanh(s) with s = t / (2 + t) <= 1/3: a short odd
// series and no exponent split, so it chains cheaply after vexp (softplus).
BET_VINLINE float vlog1p_unit(float t) {
  const float s = t / (2.f + t), z = s * s;
  float p = 1.f / 13.f;
  p = std::fma(p, z, 1.f / 11.f);
  p = std::fma(p, z, 1.f / 9.f);
  p = std::fma(p, z, 1.f / 7.f);
  p = std::fma(p, z, 1.f / 5.f);
  p = std::fma(p, z, 1.f / 3.f);
  return 2.f * std::fma(p * z, s, s);
}

template <typename T>
BET_VINLINE T vtanh(T x) { return std::tanh(x); }
template <>
BET_VINLINE float vtanh(float x) {
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
  return vm::blend(ax < 0.625f, small, std::copysign(big, x));
}

template <typename T>
BET_VINLINE T verf(T x) { return std::erf(x); }
template <>
BET_VINLINE float verf(float x) {
  // Rational minimax fit on [-4, 4] (the one XLA and Eigen use); |erf| rounds to 1 beyond.
  const float xc = vm::clamp(x, -4.f, 4.f);
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
  return vm::clamp(r, -1.f, 1.f);
}

template <typename T>
BET_VINLINE T vsigmoid(T x) { return T(1) / (T(1) + vexp(-x)); }

// log(1 + exp(x)), torch's softplus (beta 1, threshold 20).
template <typename T>
BET_VINLINE T vsoftplus(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }
template <>
BET_VINLINE float vsoftplus(float x) {
  // max(x, 0) + log1p(exp(-|x|)): never overflows; above 20 the log term is below
  // half an ulp of x, which matches torch's threshold.
  return vm::blend(x > 0.f, x, 0.f) + vlog1p_unit(vexp(-std::abs(x)));  // NaN: the log term is NaN
}

// ------------------------------------------------ fixed-order row reductions
//
// Sums and maxima over a row with 16 partial accumulators, element j going to lane
// j % 16, the last partial block padded with a neutral value, and the 16 lanes combined
// in a fixed halving tree. The order of every addition is thus fixed by the code, not by
// the vector width, and the AVX2 and AVX-512 forms of a kernel (kernels/cpu/isa.h) give
// the same bits. The 16 lanes are held as P native vectors of VB bytes: VB = 32 in the
// AVX2 form (two ymm per f32 block, four per f64), VB = 64 in the AVX-512 form (one zmm
// per f32 block, two per f64); one 64-byte GCC vector under AVX2 would live on the
// stack. Lane-wise vector arithmetic is exact IEEE per lane, and `acc + a * b`
// contracts to an FMA in both forms alike (tests/test_cpu_isa.cpp compares them bit for
// bit). Only pointers and scalars cross these functions' boundaries.
namespace vr {

inline constexpr int kAvx2Bytes = 32, kAvx512Bytes = 64;

// 16 consecutive elements as P vectors of L lanes.
template <typename T, int VB>
struct B16 {
  static constexpr int L = VB / int(sizeof(T)), P = 16 / L;
  typedef T V __attribute__((vector_size(VB)));
  V v[P];

  BET_VINLINE void fill(T x) {
    const V zero = {};
    for (int p = 0; p < P; ++p) v[p] = zero + x;  // a broadcast
  }
  BET_VINLINE void load(const T* x) {
    for (int p = 0; p < P; ++p) __builtin_memcpy(&v[p], x + p * L, sizeof(V));
  }
  // The r < 16 elements from x, the other lanes `pad`.
  BET_VINLINE void load_tail(const T* x, int64_t r, T pad) {
    alignas(VB) T b[16];
    for (int k = 0; k < 16; ++k) b[k] = k < r ? x[k] : pad;
    load(b);
  }
  BET_VINLINE void to_array(T* a) const {
    for (int p = 0; p < P; ++p) __builtin_memcpy(a + p * L, &v[p], sizeof(V));
  }
};

template <typename T, int VB>
struct Acc16 {
  using Blk = B16<T, VB>;
  Blk acc;
  BET_VINLINE explicit Acc16(T init) { acc.fill(init); }
  BET_VINLINE void add(const Blk& b) {
    for (int p = 0; p < Blk::P; ++p) acc.v[p] = acc.v[p] + b.v[p];
  }
  BET_VINLINE void add_product(const Blk& a, const Blk& b) {
    for (int p = 0; p < Blk::P; ++p) acc.v[p] = acc.v[p] + a.v[p] * b.v[p];
  }
  // x > m ? x : m lane-wise: a NaN lane never wins, as in a scalar max loop.
  BET_VINLINE void max(const Blk& b) {
    for (int p = 0; p < Blk::P; ++p) acc.v[p] = b.v[p] > acc.v[p] ? b.v[p] : acc.v[p];
  }
  // Adds x[0..n) lane-wise (padding 0). Called on consecutive chunks of one row, every
  // chunk but the last a multiple of 16 long, it gives the same lanes as one call.
  BET_VINLINE void add(const T* x, int64_t n) {
    Blk t;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      t.load(x + i);
      add(t);
    }
    if (i < n) {
      t.load_tail(x + i, n - i, T(0));
      add(t);
    }
  }
  // The lanes combined in a fixed tree: lane k += lane k + w for w = 8, 4, 2, 1 (in
  // registers: the parts first, then halves of one vector).
  BET_VINLINE T sum() const { return tree<false>(); }
  // The same tree with max (x > m ? x : m: lane k + w wins only when greater).
  BET_VINLINE T max() const { return tree<true>(); }

 private:
  using V = typename Blk::V;
  // (vectors by reference: a 64-byte vector returned by value would change the ABI
  // of the AVX2 form, were it ever called out of line)
  template <bool Max, typename W>
  BET_VINLINE static void combine(W& out, const W& lo, const W& hi) {
    if constexpr (Max) out = hi > lo ? hi : lo;
    else out = lo + hi;
  }
  template <bool Max>
  BET_VINLINE static T combine1(T lo, T hi) {
    if constexpr (Max) return hi > lo ? hi : lo;
    else return lo + hi;
  }
  // One vector of L lanes down to a scalar: lane k with lane k + L/2, halving.
  template <bool Max, int L, typename W, size_t... I>
  BET_VINLINE static T halves(const W& v, std::index_sequence<I...>) {
    if constexpr (L == 2) {
      return combine1<Max>(v[0], v[1]);
    } else {
      typedef T H __attribute__((vector_size(L / 2 * sizeof(T))));
      const H lo = __builtin_shufflevector(v, v, int(I)...);
      const H hi = __builtin_shufflevector(v, v, int(I + L / 2)...);
      H r;
      combine<Max>(r, lo, hi);
      return halves<Max, L / 2>(r, std::make_index_sequence<L / 4>{});
    }
  }
  template <bool Max>
  BET_VINLINE T tree() const {
    constexpr int P = Blk::P, L = Blk::L;
    const V* v = acc.v;
    V t;
    if constexpr (P == 4) {
      V t0, t1;
      combine<Max>(t0, v[0], v[2]);
      combine<Max>(t1, v[1], v[3]);
      combine<Max>(t, t0, t1);
    } else if constexpr (P == 2) {
      combine<Max>(t, v[0], v[1]);
    } else {
      static_assert(P == 1);
      t = v[0];
    }
    return halves<Max, L>(t, std::make_index_sequence<L / 2>{});
  }
};

// sum of x[0..n)
template <typename T, int VB>
BET_VINLINE T sum16(const T* x, int64_t n) {
  Acc16<T, VB> a(T(0));
  a.add(x, n);
  return a.sum();
}

// max of x[0..n) (-inf for n = 0; NaN elements are skipped)
template <typename T, int VB>
BET_VINLINE T max16(const T* x, int64_t n) {
  const T ninf = -__builtin_inf();
  Acc16<T, VB> a(ninf);
  B16<T, VB> t;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    t.load(x + i);
    a.max(t);
  }
  if (i < n) {
    t.load_tail(x + i, n - i, ninf);
    a.max(t);
  }
  return a.max();
}

// sum of x[j] * y[j]
template <typename T, int VB>
BET_VINLINE T dot16(const T* x, const T* y, int64_t n) {
  Acc16<T, VB> a(T(0));
  B16<T, VB> s, t;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s.load(x + i);
    t.load(y + i);
    a.add_product(s, t);
  }
  if (i < n) {
    s.load_tail(x + i, n - i, T(0));
    t.load_tail(y + i, n - i, T(0));
    a.add_product(s, t);
  }
  return a.sum();
}

// sum of (x[j] - mu)^2
template <typename T, int VB>
BET_VINLINE T sumsq_centered16(const T* x, T mu, int64_t n) {
  Acc16<T, VB> a(T(0));
  B16<T, VB> t;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    t.load(x + i);
    for (int p = 0; p < t.P; ++p) t.v[p] = t.v[p] - mu;
    a.add_product(t, t);
  }
  if (i < n) {
    t.load_tail(x + i, n - i, mu);
    for (int p = 0; p < t.P; ++p) t.v[p] = t.v[p] - mu;
    a.add_product(t, t);
  }
  return a.sum();
}

}  // namespace vr

}  // namespace bet::kernels::cpu
