#include "engine/random.h"

#include <cmath>

#include "platform/threads.h"

namespace bet {

std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_lo, uint64_t counter_hi) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  uint32_t c0 = uint32_t(counter_lo), c1 = uint32_t(counter_lo >> 32);
  uint32_t c2 = uint32_t(counter_hi), c3 = uint32_t(counter_hi >> 32);
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = uint64_t(M0) * c0;
    uint64_t p1 = uint64_t(M1) * c2;
    uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ k0;
    uint32_t n1 = uint32_t(p1);
    uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ k1;
    uint32_t n3 = uint32_t(p0);
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += W0;
    k1 += W1;
  }
  return {c0, c1, c2, c3};
}

uint64_t mix_key(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0x9E3779B97F4A7C15ull;
  for (uint64_t p : parts) {
    uint64_t z = h ^ (p + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2));
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    h = z ^ (z >> 31);
  }
  return h;
}

Tensor Generator::uniform(const Shape& shape, double lo, double hi, DType dtype) {
  BET_CHECK(dtype == DType::F32 || dtype == DType::F64, "Generator::uniform: dtype ", dtype_name(dtype));
  Tensor t = Tensor::empty(shape, dtype);
  const int64_t n = t.numel();
  const uint64_t base = advance(uint64_t(n) * 2);  // two words per value (f64 needs 53 bits)
  const uint64_t key = seed_;
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      uint64_t c = base + uint64_t(i) * 2;
      auto r = philox4x32(key, c >> 2);
      double u = uints_to_unit_double(r[c & 3], r[(c & 3) + 1]);
      double v = lo + (hi - lo) * u;
      if (dtype == DType::F32) t.data<float>()[i] = float(v);
      else t.data<double>()[i] = v;
    }
  };
  platform::parallel_for(n, 8192, body);
  return t;
}

Tensor Generator::normal(const Shape& shape, double mean, double std, DType dtype) {
  BET_CHECK(dtype == DType::F32 || dtype == DType::F64, "Generator::normal: dtype ", dtype_name(dtype));
  Tensor t = Tensor::empty(shape, dtype);
  const int64_t n = t.numel();
  const uint64_t base = advance(uint64_t(n));  // one Philox block (4 words) per value
  const uint64_t key = seed_;
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      auto r = philox4x32(key, base + uint64_t(i), 1);
      double u1 = uints_to_unit_double(r[0], r[1]);
      double u2 = uints_to_unit_double(r[2], r[3]);
      double z = std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(2.0 * M_PI * u2);  // Box-Muller
      double v = mean + std * z;
      if (dtype == DType::F32) t.data<float>()[i] = float(v);
      else t.data<double>()[i] = v;
    }
  };
  platform::parallel_for(n, 8192, body);
  return t;
}

uint64_t Generator::randint(uint64_t n) {
  BET_CHECK(n > 0, "Generator::randint: empty range");
  auto r = philox4x32(seed_, advance(1), 2);
  uint64_t x = (uint64_t(r[0]) << 32) | r[1];
  // 64 random bits: modulo bias below 2^-40 for n < 2^24, negligible for our uses.
  return x % n;
}

std::vector<int64_t> Generator::permutation(int64_t n) {
  std::vector<int64_t> p(size_t(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[randint(uint64_t(i + 1))]);
  return p;
}

}  // namespace bet
