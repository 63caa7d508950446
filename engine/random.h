// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). A value is a pure
// function of (key, counter), so any element of any stream can be computed
// independently: the same numbers on every thread count and every device.
#pragma once
#include <array>
#include <cstdint>

#include "engine/tensor.h"

namespace bet {

// Philox4x32 with 10 rounds: 4 random 32-bit words for a 64-bit key and 128-bit counter.
std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_lo, uint64_t counter_hi = 0);

// Uniform float in [0, 1) from 24 random bits / double from 53 bits.
inline float uint_to_unit_float(uint32_t x) { return float(x >> 8) * (1.0f / 16777216.0f); }
inline double uints_to_unit_double(uint32_t hi, uint32_t lo) {
  return double((uint64_t(hi) << 21) ^ (lo >> 11)) * (1.0 / 9007199254740992.0);
}

// A Philox stream: element i of a draw at offset o uses counter o + i. `offset`
// advances by the number of values drawn, so consecutive draws never overlap.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0, uint64_t offset = 0) : seed_(seed), offset_(offset) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  // Reserves n counters and returns the first.
  uint64_t advance(uint64_t n) {
    uint64_t o = offset_;
    offset_ += n;
    return o;
  }

  // Fills new tensors; f32 or f64.
  Tensor uniform(const Shape& shape, double lo = 0.0, double hi = 1.0, DType dtype = DType::F32);
  Tensor normal(const Shape& shape, double mean = 0.0, double std = 1.0, DType dtype = DType::F32);
  // Uniform integer in [0, n).
  uint64_t randint(uint64_t n);
  // A uniformly random permutation of 0..n-1 (Fisher-Yates on the stream).
  std::vector<int64_t> permutation(int64_t n);

 private:
  uint64_t seed_;
  uint64_t offset_;
};

// Mixes several integers into one 64-bit key (splitmix64 chain); used to derive keys
// such as (seed, step, layer, path, sequence) for the attention relabellings.
uint64_t mix_key(std::initializer_list<uint64_t> parts);

// Value i of the stream (seed, offset): uniform in [0,1) — what dropout uses.
inline float philox_uniform(uint64_t seed, uint64_t index) {
  auto r = philox4x32(seed, index >> 2);
  return uint_to_unit_float(r[index & 3]);
}

}  // namespace bet
