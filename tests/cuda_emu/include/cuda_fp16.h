// Stand-in <cuda_fp16.h>: __half as 16 bits with round-to-nearest-even conversions
// (subnormals kept, overflow to infinity, NaN the canonical 0x7fff).
#pragma once
#include <cstdint>

#include "cuda_emu_float.h"

struct __half_raw {
  unsigned short x;
};

struct __half {
  unsigned short __x;
  __half() = default;
  __half(float f) : __x(emu::half_bits_rn(f)) {}
  __half(double d) : __x(emu::half_bits_rn(d)) {}
  __half(int v) : __x(emu::half_bits_rn(double(v))) {}
  __half(long long v) : __x(emu::half_bits_rn(double(v))) {}
  __half(const __half_raw& r) : __x(r.x) {}
  operator float() const { return emu::half_to_float(__x); }
  operator __half_raw() const { return {__x}; }
};

inline __half emu_half_from_bits(unsigned short b) {
  __half r;
  r.__x = b;
  return r;
}
inline __half __float2half(float f) { return emu_half_from_bits(emu::half_bits_rn(f)); }
inline __half __float2half_rn(float f) { return emu_half_from_bits(emu::half_bits_rn(f)); }
inline __half __double2half(double d) { return emu_half_from_bits(emu::half_bits_rn(d)); }
inline __half __int2half_rn(int v) { return emu_half_from_bits(emu::half_bits_rn(double(v))); }
inline float __half2float(__half h) { return emu::half_to_float(h.__x); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short b) { return emu_half_from_bits(b); }
