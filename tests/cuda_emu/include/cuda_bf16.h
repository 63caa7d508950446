// Stand-in <cuda_bf16.h>: __nv_bfloat16 as 16 bits with round-to-nearest-even
// conversions (what the device's cvt.rn does; NaN becomes the canonical 0x7fff).
// No arithmetic operators: the kernels compute in f32 and convert explicitly.
#pragma once
#include <cstdint>

#include "cuda_emu_float.h"

struct __nv_bfloat16_raw {
  unsigned short x;
};

struct __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : __x(emu::bf16_bits_rn(f)) {}
  __nv_bfloat16(double d) : __x(emu::bf16_bits_rn(d)) {}
  __nv_bfloat16(int v) : __x(emu::bf16_bits_rn(double(v))) {}
  __nv_bfloat16(long long v) : __x(emu::bf16_bits_rn(double(v))) {}
  __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
  operator float() const { return emu::bf16_to_float(__x); }
  operator __nv_bfloat16_raw() const { return {__x}; }
};
typedef __nv_bfloat16 nv_bfloat16;

inline __nv_bfloat16 emu_bf16_from_bits(unsigned short b) {
  __nv_bfloat16 r;
  r.__x = b;
  return r;
}
inline __nv_bfloat16 __float2bfloat16(float f) { return emu_bf16_from_bits(emu::bf16_bits_rn(f)); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return emu_bf16_from_bits(emu::bf16_bits_rn(f)); }
inline __nv_bfloat16 __double2bfloat16(double d) { return emu_bf16_from_bits(emu::bf16_bits_rn(d)); }
inline __nv_bfloat16 __int2bfloat16_rn(int v) { return emu_bf16_from_bits(emu::bf16_bits_rn(double(v))); }
inline float __bfloat162float(__nv_bfloat16 b) { return emu::bf16_to_float(b.__x); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) { return emu_bf16_from_bits(b); }
