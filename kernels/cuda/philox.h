// Philox4x32-10 for host and device: the same function as bet::philox4x32
// (engine/random.cpp), so a dropout mask drawn on the GPU is bit-identical to the
// CPU's. Element i of the stream (seed, offset) is word (offset + i) & 3 of block
// (offset + i) >> 2. Plain C++ outside nvcc, so tests compare it on any machine.
#pragma once
#include <cstdint>

#include "kernels/cuda/geom.h"

namespace bet::kernels::cuda {

struct Philox4 {
  uint32_t w[4];
};

BET_HD uint32_t mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return uint32_t((uint64_t(a) * b) >> 32);
#endif
}

BET_HD Philox4 philox4x32_10(uint64_t key, uint64_t counter_lo) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  uint32_t c0 = uint32_t(counter_lo), c1 = uint32_t(counter_lo >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    const uint32_t hi0 = mulhi32(M0, c0), lo0 = M0 * c0;
    const uint32_t hi1 = mulhi32(M1, c2), lo1 = M1 * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += W0;
    k1 += W1;
  }
  return {{c0, c1, c2, c3}};
}

// Dropout keeps element i when its 24-bit uniform (w >> 8) / 2^24 >= p, i.e. when
// (w >> 8) >= ceil(p * 2^24): the integer threshold the CPU kernel uses.
inline int64_t dropout_threshold(double p) {
  const double t = p * 16777216.0;
  int64_t c = int64_t(t);
  if (double(c) < t) ++c;
  return c > 16777216 ? 16777217 : c;
}

BET_HD bool dropout_keep(uint32_t word, int64_t threshold) { return int64_t(word >> 8) >= threshold; }

}  // namespace bet::kernels::cuda
