// Rotary embedding and dropout: elementwise maps whose coefficients (the rotation
// angles, the Philox mask) are recomputed rather than stored, so the backward needs
// nothing saved but the positions / (seed, offset).
#include <cmath>
#include <vector>

#include "engine/random.h"
#include "kernels/cpu/nn.h"
#include "kernels/cpu/threads.h"

namespace bet::kernels::cpu {

namespace {

template <typename T>
void rope_t(const Tensor& x, const Tensor& positions, double base, bool inverse, const Tensor& out) {
  const int64_t B = x.shape()[0], H = x.shape()[1], S = x.shape()[2], hd = x.shape()[3];
  const int64_t half = hd / 2;
  const int64_t Bp = positions.shape()[0];
  if (x.numel() == 0 || half == 0) return;
  const double* pos = positions.data<double>();
  // cos/sin table per (position row, s, i): 1/H of x's size, shared by all heads.
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv_freq[size_t(i)] = std::pow(base, -2.0 * double(i) / double(hd));
  std::vector<T> cs(size_t(Bp * S * half)), sn(size_t(Bp * S * half));
  const double sign = inverse ? -1.0 : 1.0;
  parallel_for(Bp * S, std::max<int64_t>(1, 4096 / half), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const double p = pos[r];
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
      const int64_t t = ((Bp == 1 ? 0 : bi) * S + s) * half;
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

template <typename T>
void dropout_t(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out) {
  const int64_t n = x.numel();
  const T* xp = x.data<T>();
  T* yp = out.data<T>();
  const T scale = p >= 1.0 ? T(0) : T(1.0 / (1.0 - p));
  parallel_for(n, 16384, [&](int64_t b, int64_t e) {
    // One Philox block gives the uniforms of four consecutive counters.
    for (int64_t i = b; i < e;) {
      const uint64_t c = offset + uint64_t(i);
      const auto r = philox4x32(seed, c >> 2);
      for (unsigned lane = unsigned(c & 3); lane < 4 && i < e; ++lane, ++i) {
        const float u = uint_to_unit_float(r[lane]);
        yp[i] = double(u) >= p ? xp[i] * scale : T(0);
      }
    }
  });
}

}  // namespace

void rope(const Tensor& x, const Tensor& positions, double base, bool inverse, const Tensor& out) {
  switch (x.dtype()) {
    case DType::F32: return rope_t<float>(x, positions, base, inverse, out);
    case DType::F64: return rope_t<double>(x, positions, base, inverse, out);
    default: fail("rope: dtype ", dtype_name(x.dtype()), " not supported on cpu");
  }
}

void dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& out) {
  switch (x.dtype()) {
    case DType::F32: return dropout_t<float>(x, p, seed, offset, out);
    case DType::F64: return dropout_t<double>(x, p, seed, offset, out);
    default: fail("dropout: dtype ", dtype_name(x.dtype()), " not supported on cpu");
  }
}

}  // namespace bet::kernels::cpu
