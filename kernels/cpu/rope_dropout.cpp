// Rotary embedding and dropout: elementwise maps whose coefficients (the rotation
// angles, the Philox mask) are recomputed rather than stored, so the backward needs
// nothing saved but the positions / (seed, offset).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

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
  parallel_for(B * H * S, std::max<int64_t>(1, kParallelGrain / hd), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t bi = r / (H * S), s = r % S;
      const int64_t prow = (Bp == 1 ? 0 : bi) * S + s;
      const int64_t t = (by_value ? int64_t(pos[prow]) : prow) * half;
      const T* c = cs.data() + t;
      const T* sv = sn.data() + t;
      const T* x1 = xp + r * hd;
      const T* x2 = x1 + half;
      T* y1 = yp + r * hd;
      T* y2 = y1 + half;
      // x' = x*cos + rotate_half(x)*sin, rotate_half([x1, x2]) = [-x2, x1]
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const T a = x1[i], bb = x2[i];
        y1[i] = a * c[i] - bb * sv[i];
        y2[i] = bb * c[i] + a * sv[i];
      }
    }
  });
}

// Philox4x32-10 on kLanes consecutive blocks at once. With AVX2 each round is a few
// vector multiplies per 8 blocks (the 32x32->64 products of even and odd lanes, then
// blends to split high and low halves); elsewhere the portable loop below. Both are
// bit-identical to bet::philox4x32 (a test compares them element by element).
constexpr int kLanes = 16;

// out[4*j + q] is word q of block first_block + j: the words in counter order.
inline void philox_lanes(uint64_t key, uint64_t first_block, uint32_t* __restrict out) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#if defined(__AVX2__)
  // Two groups of 8 blocks; blocks may cross a 2^32 boundary, so c1 is per lane.
  for (int g = 0; g < kLanes / 8; ++g) {
    alignas(32) uint32_t lo[8], hi[8];
    for (int j = 0; j < 8; ++j) {
      const uint64_t c = first_block + uint64_t(g * 8 + j);
      lo[j] = uint32_t(c);
      hi[j] = uint32_t(c >> 32);
    }
    __m256i c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo));
    __m256i c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
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
  // Element i uses word (offset + i) & 3 of Philox block (offset + i) >> 2.
  constexpr int64_t kChunk = 4 * kLanes;
  parallel_for(n, 16384, [&](int64_t b, int64_t e) {
    alignas(32) uint32_t words[kChunk];
    for (int64_t i = b; i < e;) {
      const uint64_t c = offset + uint64_t(i);
      philox_lanes(seed, c >> 2, words);
      // Counters (c >> 2) * 4 .. + kChunk - 1; this element is word c & 3 of them.
      const int64_t w0 = int64_t(c & 3);
      const int64_t take = std::min<int64_t>(kChunk - w0, e - i);
      const uint32_t* __restrict wp = words + w0;
      const T* __restrict xi = xp + i;
      T* __restrict yi = yp + i;
      // Both sides computed, then selected by a bit mask: a blend, not a branch the
      // predictor misses p of the time. A dropped element is 0 even where x is Inf/NaN.
      if constexpr (std::is_same_v<T, float>) {
        std::size_t k = 0;
#if defined(__AVX2__)
        const __m256i thr = _mm256_set1_epi32(threshold - 1);
        const __m256 sc = _mm256_set1_ps(scale);
        for (; k + 8 <= std::size_t(take); k += 8) {
          const __m256i w = _mm256_srli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + k)), 8);
          const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(w, thr));
          _mm256_storeu_ps(yi + k, _mm256_and_ps(keep, _mm256_mul_ps(_mm256_loadu_ps(xi + k), sc)));
        }
#endif
        for (; k < std::size_t(take); ++k) yi[k] = int32_t(wp[k] >> 8) >= threshold ? xi[k] * scale : 0.0f;
      } else {
        for (int64_t k = 0; k < take; ++k) yi[k] = int32_t(wp[k] >> 8) >= threshold ? xi[k] * scale : T(0);
      }
      i += take;
    }
  });
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
