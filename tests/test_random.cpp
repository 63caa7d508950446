// Philox streams: fixed seeds give fixed values, independent of the thread count.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/random.h"
#include "platform/threads.h"

using namespace bet;

TEST_CASE("philox4x32-10 matches the Random123 known-answer vectors") {
  // Random123 kat_vectors: philox4x32 10 rounds.
  auto r0 = philox4x32(0, 0, 0);
  CHECK(r0 == std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  auto r1 = philox4x32(~0ull, ~0ull, ~0ull);
  CHECK(r1 == std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
  // counter words 243f6a88 85a308d3 13198a2e 03707344, key words a4093822 299f31d0
  auto r2 = philox4x32(0x299f31d0a4093822ull, 0x85a308d3243f6a88ull, 0x0370734413198a2eull);
  CHECK(r2 == std::array<uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
}

TEST_CASE("uniform and normal streams are reproducible and thread-count independent") {
  int saved = platform::num_threads();
  platform::set_num_threads(1);
  Generator g1(123);
  auto u1 = g1.uniform({100000}).to_vector<float>();
  auto n1 = g1.normal({50000}, 0, 1, DType::F64).to_vector<double>();
  platform::set_num_threads(2);
  Generator g2(123);
  auto u2 = g2.uniform({100000}).to_vector<float>();
  auto n2 = g2.normal({50000}, 0, 1, DType::F64).to_vector<double>();
  platform::set_num_threads(saved);
  CHECK(u1 == u2);
  CHECK(n1 == n2);
  // moments within 5 standard errors
  double m = 0, v = 0;
  for (double x : n1) m += x;
  m /= n1.size();
  for (double x : n1) v += (x - m) * (x - m);
  v /= n1.size();
  CHECK(std::abs(m) < 5.0 / std::sqrt(50000.0));
  CHECK(std::abs(v - 1.0) < 5.0 * std::sqrt(2.0 / 50000.0));
  double um = 0;
  for (float x : u1) {
    CHECK(x >= 0.0f);
    CHECK(x < 1.0f);
    um += x;
  }
  CHECK(std::abs(um / u1.size() - 0.5) < 5.0 * std::sqrt(1.0 / 12.0 / 100000.0));
}

TEST_CASE("different seeds and successive draws differ") {
  Generator a(1), b(2);
  CHECK(a.uniform({8}).to_vector<float>() != b.uniform({8}).to_vector<float>());
  Generator c(1);
  auto first = c.uniform({8}).to_vector<float>();
  auto second = c.uniform({8}).to_vector<float>();
  CHECK(first != second);
}

TEST_CASE("permutation is a permutation and depends on the seed") {
  Generator g(7);
  auto p = g.permutation(50);
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 50; ++i) CHECK(sorted[i] == i);
  Generator h(8);
  CHECK(h.permutation(50) != p);
  CHECK(mix_key({1, 2, 3}) != mix_key({1, 3, 2}));
}
