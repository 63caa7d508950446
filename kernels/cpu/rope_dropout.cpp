// Rotary embedding and dropout: elementwise maps whose coefficients (the rotation
// angles, the Philox mask) are recomputed rather than stored, so the backward needs
// nothing saved but the positions / (seed, offset).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "kernels/cpu/isa.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/rope_dropout.h"
#include "platform/threads.h"

namespace bet::kernels::cpu {

using platform::kParallelGrain;
using platform::parallel_for;

namespace {

// Positions in the model are small non-negative integers (token indices, permuted
// or shifted), and a batch of B sequences uses at most S of them. The cos/sin table is
// then built once per distinct position rather than per (sequence, token): for the bet
// layer's k permuted paths that is k*B times fewer sin/cos calls. Fractional or huge
// positions fall back to a table per (row, token). Both give the same bits.
constexpr double kMaxTablePosition = 1 << 20;

bool integral_positions(const double* pos, int64_t n, int64_t* max_pos) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double p = pos[i];
    if (!(p >= 0 && p <= kMaxTablePosition) || p != std::floor(p)) return false;
    m = std::max(m, p);
  }
  *max_pos = int64_t(m);
  return true;
}

// The rotation of rows [r0, r1) of x (rows of hd), from the cos/sin table. Lane-wise
// only: the AVX2 and AVX-512 twins below give the same bits (kernels/cpu/isa.h).
template <typename T>
struct RopeRows {
  const T* xp;
  T* yp;
  const T* cs;
  const T* sn;
  const double* pos;
  bool by_value;
  int64_t Bp, H, S, hd;
};

template <typename T>
BET_VINLINE void rope_rows_body(const RopeRows<T>& a, int64_t r0, int64_t r1) {
  const int64_t half = a.hd / 2, H = a.H, S = a.S, hd = a.hd;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t bi = r / (H * S), s = r % S;
    const int64_t prow = (a.Bp == 1 ? 0 : bi) * S + s;
    const int64_t t = (a.by_value ? int64_t(a.pos[prow]) : prow) * half;
    const T* __restrict c = a.cs + t;
    const T* __restrict sv = a.sn + t;
    const T* __restrict x1 = a.xp + r * hd;
    const T* __restrict x2 = x1 + half;
    T* __restrict y1 = a.yp + r * hd;
    T* __restrict y2 = y1 + half;
    // x' = x*cos + rotate_half(x)*sin, rotate_half([x1, x2]) = [-x2, x1]
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
      const T xa = x1[i], xb = x2[i];
      y1[i] = xa * c[i] - xb * sv[i];
      y2[i] = xb * c[i] + xa * sv[i];
    }
  }
}

template <typename T>
void rope_rows_avx2(const RopeRows<T>& a, int64_t r0, int64_t r1) {
  rope_rows_body(a, r0, r1);
}
template <typename T>
BET_AVX512_TARGET void rope_rows_avx512(const RopeRows<T>& a, int64_t r0, int64_t r1) {
  rope_rows_body(a, r0, r1);
}

template <typename T>
void rope_t(const TensorRef& x, const TensorRef& positions, double base, bool inverse, const TensorRef& out) {
  const int64_t B = x.shape()[0], H = x.shape()[1], S = x.shape()[2], hd = x.shape()[3];
  const int64_t half = hd / 2;
  const int64_t Bp = positions.shape()[0];
  if (x.numel() == 0 || half == 0) return;
  const double* pos = positions.data<double>();
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv_freq[size_t(i)] = std::pow(base, -2.0 * double(i) / double(hd));

  // Table rows: one per distinct integer position, or one per (position row, token).
  int64_t max_pos = 0;
  const bool by_value = integral_positions(pos, Bp * S, &max_pos) && max_pos + 1 <= Bp * S;
  const int64_t rows = by_value ? max_pos + 1 : Bp * S;
  std::vector<T> cs(size_t(rows * half)), sn(size_t(rows * half));
  const double sign = inverse ? -1.0 : 1.0;
  parallel_for(rows, std::max<int64_t>(1, 4096 / half), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const double p = by_value ? double(r) : pos[r];
      for (int64_t i = 0; i < half; ++i) {
        const double a = p * inv_freq[size_t(i)];
        cs[size_t(r * half + i)] = T(std::cos(a));
        sn[size_t(r * half + i)] = T(sign * std::sin(a));
      }
    }
  });
  const T* xp = x.data<T>();
  T* yp = out.data<T>();
  const RopeRows<T> rows_of{xp, yp, cs.data(), sn.data(), pos, by_value, Bp, H, S, hd};
  auto* fn = kernel_isa(IsaKernel::Rope) == CpuIsa::Avx512 ? &rope_rows_avx512<T> : &rope_rows_avx2<T>;
  parallel_for(B * H * S, std::max<int64_t>(1, kParallelGrain / hd),
               [&](int64_t b, int64_t e) { fn(rows_of, b, e); });
}

// Philox4x32-10 on kLanes consecutive blocks at once. With AVX2 each round is a few
// vector multiplies per 8 blocks (the 32x32->64 products of even and odd lanes, then
// blends to split high and low halves); elsewhere the portable loop below. Both are
// bit-identical to bet::philox4x32 (a test compares them element by element).
constexpr int kLanes = 16;

// out[4*j + q] is word q of block first_block + j: the words in counter order.
BET_VINLINE void philox_lanes(uint64_t key, uint64_t first_block, uint32_t* __restrict out) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#if defined(__AVX2__)
  // Two groups of 8 blocks; blocks may cross a 2^32 boundary, so c1 is per lane.
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i sign = _mm256_set1_epi32(int(0x80000000u));
  for (int g = 0; g < kLanes / 8; ++g) {
    // Counters first + j built in registers (lanes stored one by one and loaded as a
    // vector would stall store forwarding): low words wrap, a carry where low < j.
    const uint64_t first = first_block + uint64_t(g * 8);
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(int(uint32_t(first))), iota);
    const __m256i carry = _mm256_cmpgt_epi32(_mm256_xor_si256(iota, sign), _mm256_xor_si256(c0, sign));
    __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(int(uint32_t(first >> 32))), carry);
    __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    const __m256i m0 = _mm256_set1_epi32(int(M0)), m1 = _mm256_set1_epi32(int(M1));
    uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
    for (int r = 0; r < 10; ++r) {
      // p = M * c per 32-bit lane: even lanes directly, odd lanes shifted down.
      const __m256i p0e = _mm256_mul_epu32(c0, m0);
      const __m256i p0o = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), m0);
      const __m256i p1e = _mm256_mul_epu32(c2, m1);
      const __m256i p1o = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), m1);
      const __m256i p0lo = _mm256_blend_epi32(p0e, _mm256_slli_epi64(p0o, 32), 0xAA);
      const __m256i p0hi = _mm256_blend_epi32(_mm256_srli_epi64(p0e, 32), p0o, 0xAA);
      const __m256i p1lo = _mm256_blend_epi32(p1e, _mm256_slli_epi64(p1o, 32), 0xAA);
      const __m256i p1hi = _mm256_blend_epi32(_mm256_srli_epi64(p1e, 32), p1o, 0xAA);
      const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(p1hi, c1), _mm256_set1_epi32(int(k0)));
      const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(p0hi, c3), _mm256_set1_epi32(int(k1)));
      c0 = n0;
      c1 = p1lo;
      c2 = n2;
      c3 = p0lo;
      k0 += W0;
      k1 += W1;
    }
    // Interleave to counter order: word q of block j at 4*j + q.
    const __m256i t0 = _mm256_unpacklo_epi32(c0, c1);  // b0w0 b0w1 b1w0 b1w1 | b4.. b5..
    const __m256i t1 = _mm256_unpackhi_epi32(c0, c1);  // b2.. b3.. | b6.. b7..
    const __m256i t2 = _mm256_unpacklo_epi32(c2, c3);
    const __m256i t3 = _mm256_unpackhi_epi32(c2, c3);
    const __m256i b01 = _mm256_unpacklo_epi64(t0, t2);  // b0 | b4
    const __m256i b11 = _mm256_unpackhi_epi64(t0, t2);  // b1 | b5
    const __m256i b22 = _mm256_unpacklo_epi64(t1, t3);  // b2 | b6
    const __m256i b33 = _mm256_unpackhi_epi64(t1, t3);  // b3 | b7
    __m256i* o = reinterpret_cast<__m256i*>(out + 32 * g);
    _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(b01, b11, 0x20));  // b0 b1
    _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(b22, b33, 0x20));  // b2 b3
    _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(b01, b11, 0x31));  // b4 b5
    _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(b22, b33, 0x31));  // b6 b7
  }
#else
  uint32_t c0[kLanes], c1[kLanes], c2[kLanes], c3[kLanes];
  for (int j = 0; j < kLanes; ++j) {
    const uint64_t c = first_block + uint64_t(j);
    c0[j] = uint32_t(c);
    c1[j] = uint32_t(c >> 32);
    c2[j] = 0;
    c3[j] = 0;
  }
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int r = 0; r < 10; ++r) {
    for (int j = 0; j < kLanes; ++j) {
      const uint64_t p0 = uint64_t(M0) * c0[j];
      const uint64_t p1 = uint64_t(M1) * c2[j];
      const uint32_t n0 = uint32_t(p1 >> 32) ^ c1[j] ^ k0;
      const uint32_t n2 = uint32_t(p0 >> 32) ^ c3[j] ^ k1;
      c1[j] = uint32_t(p1);
      c3[j] = uint32_t(p0);
      c0[j] = n0;
      c2[j] = n2;
    }
    k0 += W0;
    k1 += W1;
  }
  for (int j = 0; j < kLanes; ++j) {
    out[4 * j + 0] = c0[j];
    out[4 * j + 1] = c1[j];
    out[4 * j + 2] = c2[j];
    out[4 * j + 3] = c3[j];
  }
#endif
}

// GCC 12 reports the _mm512_undefined_epi32() inside its own intrinsics as maybe
// uninitialised (a known false positive); the region ends after dropout_avx512.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#if BET_HAVE_AVX512_TWINS
// The AVX-512 form of philox_lanes: the same rounds on all 16 blocks in one register
// per word (integer arithmetic: bit-identical by construction; tests/test_cpu_isa.cpp and
// the test against bet::philox4x32 check it). Its own target attribute, as the
// intrinsics need one; always inlined into the AVX-512 twin of dropout only.
BET_AVX512_TARGET inline __attribute__((always_inline)) void philox_lanes_avx512(uint64_t key, uint64_t first_block,
                                                                                uint32_t* __restrict out) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  static_assert(kLanes == 16);
  // Counters first_block + j in registers, as in philox_lanes.
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32(int(uint32_t(first_block))), iota);
  const __mmask16 carry = _mm512_cmplt_epu32_mask(c0, iota);
  const __m512i hi = _mm512_set1_epi32(int(uint32_t(first_block >> 32)));
  __m512i c1 = _mm512_mask_add_epi32(hi, carry, hi, _mm512_set1_epi32(1));
  __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
  const __m512i m0 = _mm512_set1_epi32(int(M0)), m1 = _mm512_set1_epi32(int(M1));
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  constexpr __mmask16 odd = 0xAAAA;
  for (int r = 0; r < 10; ++r) {
    const __m512i p0e = _mm512_mul_epu32(c0, m0);
    const __m512i p0o = _mm512_mul_epu32(_mm512_srli_epi64(c0, 32), m0);
    const __m512i p1e = _mm512_mul_epu32(c2, m1);
    const __m512i p1o = _mm512_mul_epu32(_mm512_srli_epi64(c2, 32), m1);
    const __m512i p0lo = _mm512_mask_blend_epi32(odd, p0e, _mm512_slli_epi64(p0o, 32));
    const __m512i p0hi = _mm512_mask_blend_epi32(odd, _mm512_srli_epi64(p0e, 32), p0o);
    const __m512i p1lo = _mm512_mask_blend_epi32(odd, p1e, _mm512_slli_epi64(p1o, 32));
    const __m512i p1hi = _mm512_mask_blend_epi32(odd, _mm512_srli_epi64(p1e, 32), p1o);
    const __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(p1hi, c1), _mm512_set1_epi32(int(k0)));
    const __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(p0hi, c3), _mm512_set1_epi32(int(k1)));
    c0 = n0;
    c1 = p1lo;
    c2 = n2;
    c3 = p0lo;
    k0 += W0;
    k1 += W1;
  }
  // Counter order: within each 128-bit lane L (blocks 4L .. 4L+3) the unpacks give one
  // block per register: b01 holds blocks 0, 4, 8, 12, b11 1, 5, 9, 13, and so on; the
  // 128-bit shuffles then transpose the 4 x 4 grid of lanes.
  const __m512i t0 = _mm512_unpacklo_epi32(c0, c1);
  const __m512i t1 = _mm512_unpackhi_epi32(c0, c1);
  const __m512i t2 = _mm512_unpacklo_epi32(c2, c3);
  const __m512i t3 = _mm512_unpackhi_epi32(c2, c3);
  const __m512i b01 = _mm512_unpacklo_epi64(t0, t2);  // b0 | b4 | b8 | b12
  const __m512i b11 = _mm512_unpackhi_epi64(t0, t2);  // b1 | b5 | b9 | b13
  const __m512i b22 = _mm512_unpacklo_epi64(t1, t3);  // b2 | b6 | b10 | b14
  const __m512i b33 = _mm512_unpackhi_epi64(t1, t3);  // b3 | b7 | b11 | b15
  const __m512i x0 = _mm512_shuffle_i32x4(b01, b11, 0x44);  // b0 b4 b1 b5
  const __m512i y0 = _mm512_shuffle_i32x4(b22, b33, 0x44);  // b2 b6 b3 b7
  const __m512i x1 = _mm512_shuffle_i32x4(b01, b11, 0xEE);  // b8 b12 b9 b13
  const __m512i y1 = _mm512_shuffle_i32x4(b22, b33, 0xEE);  // b10 b14 b11 b15
  __m512i* o = reinterpret_cast<__m512i*>(out);
  _mm512_storeu_si512(o + 0, _mm512_shuffle_i32x4(x0, y0, 0x88));  // b0 b1 b2 b3
  _mm512_storeu_si512(o + 1, _mm512_shuffle_i32x4(x0, y0, 0xDD));  // b4 .. b7
  _mm512_storeu_si512(o + 2, _mm512_shuffle_i32x4(x1, y1, 0x88));  // b8 .. b11
  _mm512_storeu_si512(o + 3, _mm512_shuffle_i32x4(x1, y1, 0xDD));  // b12 .. b15
}
#else
BET_VINLINE void philox_lanes_avx512(uint64_t key, uint64_t first_block, uint32_t* __restrict out) {
  philox_lanes(key, first_block, out);
}
#endif

// Dropout of elements [b, e): the Philox words of each chunk, then the keep test and
// the scaling, lane-wise (a bit mask, not a branch), so both twins give the same bits;
// only the generator differs in form (AVX2 or AVX-512 intrinsics), not in value. The
// chunk loop is a macro because the AVX-512 generator can only be inlined into a
// function that has the AVX-512 target itself.
template <typename T>
BET_VINLINE void dropout_apply(const uint32_t* __restrict wp, const T* __restrict xi, T* __restrict yi, int64_t take,
                               int32_t threshold, T scale) {
  using I = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  // Both sides computed, then selected by a bit mask: a blend, not a branch the
  // predictor misses p of the time. A dropped element is +0 even where x is Inf/NaN.
#pragma omp simd
  for (int64_t k = 0; k < take; ++k) {
    const I keep = -I(int32_t(wp[k] >> 8) >= threshold);
    yi[k] = std::bit_cast<T>(I(std::bit_cast<I>(T(xi[k] * scale)) & keep));
  }
}

// Element i uses word (offset + i) & 3 of Philox block (offset + i) >> 2.
#define BET_DROPOUT_CHUNKS(PHILOX)                                                   \
  constexpr int64_t kChunk = 4 * kLanes;                                             \
  alignas(64) uint32_t words[kChunk];                                                \
  for (int64_t i = b; i < e;) {                                                      \
    const uint64_t c = offset + uint64_t(i);                                         \
    PHILOX(seed, c >> 2, words);                                                     \
    /* Counters (c >> 2) * 4 .. + kChunk - 1; this element is word c & 3 of them. */ \
    const int64_t w0 = int64_t(c & 3);                                               \
    const int64_t take = std::min<int64_t>(kChunk - w0, e - i);                      \
    dropout_apply(words + w0, xp + i, yp + i, take, threshold, scale);               \
    i += take;                                                                       \
  }

template <typename T>
void dropout_avx2(const T* xp, T* yp, uint64_t seed, uint64_t offset, int32_t threshold, T scale, int64_t b,
                  int64_t e) {
  BET_DROPOUT_CHUNKS(philox_lanes)
}
template <typename T>
BET_AVX512_TARGET void dropout_avx512(const T* xp, T* yp, uint64_t seed, uint64_t offset, int32_t threshold,
                                      T scale, int64_t b, int64_t e) {
  BET_DROPOUT_CHUNKS(philox_lanes_avx512)
}
#undef BET_DROPOUT_CHUNKS
#pragma GCC diagnostic pop

template <typename T>
void dropout_t(const TensorRef& x, double p, uint64_t seed, uint64_t offset, const TensorRef& out) {
  const int64_t n = x.numel();
  const T* xp = x.data<T>();
  T* yp = out.data<T>();
  const T scale = p >= 1.0 ? T(0) : T(1.0 / (1.0 - p));
  // uint_to_unit_float(w) >= p  <=>  (w >> 8) >= ceil(p * 2^24): both sides are exact
  // (24-bit integers, p * 2^24 is exact in double), so an integer compare gives the
  // same mask as the float one.
  const double tp = std::ceil(p * 16777216.0);
  // Signed (AVX2 has no unsigned compare); both sides are below 2^25.
  const int32_t threshold = tp > 16777216.0 ? 16777217 : int32_t(tp);
  auto* fn = kernel_isa(IsaKernel::Dropout) == CpuIsa::Avx512 ? &dropout_avx512<T> : &dropout_avx2<T>;
  parallel_for(n, 16384, [&](int64_t b, int64_t e) { fn(xp, yp, seed, offset, threshold, scale, b, e); });
}

}  // namespace

void rope(const TensorRef& x, const TensorRef& positions, double base, bool inverse, const TensorRef& out) {
  switch (x.dtype()) {
    case DType::F32: return rope_t<float>(x, positions, base, inverse, out);
    case DType::F64: return rope_t<double>(x, positions, base, inverse, out);
    default: fail("rope: dtype ", dtype_name(x.dtype()), " not supported on cpu");
  }
}

void dropout(const TensorRef& x, double p, uint64_t seed, uint64_t offset, const TensorRef& out) {
  switch (x.dtype()) {
    case DType::F32: return dropout_t<float>(x, p, seed, offset, out);
    case DType::F64: return dropout_t<double>(x, p, seed, offset, out);
    default: fail("dropout: dtype ", dtype_name(x.dtype()), " not supported on cpu");
  }
}

}  // namespace bet::kernels::cpu
