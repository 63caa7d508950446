// Correctly rounded narrowing to the 16-bit float formats (round to nearest, ties to
// even, gradual underflow, overflow to infinity), shared by the stand-in
// <cuda_bf16.h> and <cuda_fp16.h>. Doubles round once, directly (as the device's
// cvt.rn from f64 does), never through float.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace emu {

// x rounded to `mant` fraction bits with normal exponents emin..emax; exact in double.
inline double round_to_format(double x, int mant, int emin, int emax) {
  if (x != x || std::isinf(x) || x == 0.0) return x;
  const double a = std::fabs(x);
  int e = 0;
  (void)std::frexp(a, &e);
  const int q = (e - 1 > emin ? e - 1 : emin) - mant;  // exponent of one unit in the last place
  const double v = std::ldexp(std::nearbyint(std::ldexp(a, -q)), q);  // both ldexp are exact
  const double maxv = std::ldexp(2.0 - std::ldexp(1.0, -mant), emax);
  return std::copysign(v > maxv ? INFINITY : v, x);
}

inline uint16_t bf16_bits_rn(double x) {
  if (x != x) return 0x7fffu;  // the device's canonical NaN
  const float f = float(round_to_format(x, 7, -126, 127));  // exact
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);
}
inline float bf16_to_float(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t half_bits_rn(double x) {
  if (x != x) return 0x7fffu;
  const double v = round_to_format(x, 10, -14, 15);
  const uint16_t sign = std::signbit(v) ? 0x8000u : 0u;
  const double a = std::fabs(v);
  if (std::isinf(a)) return sign | 0x7c00u;
  if (a < std::ldexp(1.0, -14)) return sign | uint16_t(a * 16777216.0);  // subnormal: units of 2^-24
  int e = 0;
  (void)std::frexp(a, &e);
  const uint16_t mant = uint16_t((std::ldexp(a, 1 - e) - 1.0) * 1024.0);
  return sign | uint16_t((e - 1 + 15) << 10) | mant;
}
inline float half_to_float(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
  float r;
  if (exp == 31) r = mant ? NAN : INFINITY;
  else if (exp == 0) r = std::ldexp(float(mant), -24);
  else r = std::ldexp(float(mant + 1024), exp - 25);
  return sign ? -r : r;
}

}  // namespace emu
