// bfloat16 on the CPU: storage and conversion (elementwise ops compute in f32; matmul
// uses oneDNN's bf16 kernels where the CPU has bf16 instructions, kernels/cpu/matmul.h). The
// rounding is round-to-nearest-even, NaN kept quiet: what the GPU's __float2bfloat16_rn
// does, so a tensor converted on either device has the same bits.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace bet::kernels::cpu {

struct BF16 {
  uint16_t bits = 0;

  BF16() = default;
  template <typename T, typename = std::enable_if_t<std::is_arithmetic_v<T>>>
  explicit BF16(T v) : bits(round(float(v))) {}
  // From double in one rounding (as __double2bfloat16): through float rounded to odd,
  // so the second rounding cannot land on a false tie.
  explicit BF16(double v) : bits(round(to_float_odd(v))) {}
  operator float() const {
    const uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }

  static float to_float_odd(double d) {
    float f = float(d);
    if (!(double(f) != d) || d != d) return f;  // exact, or NaN
    if (std::fabs(double(f)) > std::fabs(d)) f = std::nextafter(f, 0.0f);  // toward zero
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    u |= 1u;  // inexact: odd
    std::memcpy(&f, &u, sizeof f);
    return f;
  }

  static uint16_t round(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);  // NaN, made quiet
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
  }
};
static_assert(sizeof(BF16) == 2);

}  // namespace bet::kernels::cpu
