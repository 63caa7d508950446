// The fused attention op (engine/ops/attention_ops.cpp) on the GPU against the CPU:
// forward and q/k/v gradients in f32, f64 and bf16 (one case on the composite fallback),
// the dropout mask bit for bit, and repeatability. Without a GPU the GPU cases skip with
// a message; the cases themselves still run on the CPU (f32 against f64).
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/ops.h"
#include "tests/gpu_op_harness.h"

using namespace bet;
using namespace bet::test::gpu;

namespace {

// Key mask [B, 1, 1, S] (i64); every key of batch `dead` masked (-1: none).
Tensor keys01(int64_t B, int64_t S, uint64_t seed, int64_t dead) {
  std::vector<int64_t> m = mask01({B, 1, 1, S}, seed, 0.75).to_vector<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      if (b == dead) m[size_t(b * S + s)] = 0;
  return Tensor::from_vector(m, {B, 1, 1, S});
}

// The model's causal * key mask [B, 1, S, S] (i64); key 0 of batch 0 masked, so query
// row 0 there has no key at all.
Tensor causal01(int64_t B, int64_t S, uint64_t seed) {
  std::vector<int64_t> keys = mask01({B, S}, seed, 0.8).to_vector<int64_t>();
  keys[0] = 0;
  std::vector<int64_t> m(size_t(B * S * S), 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < S; ++t)
      for (int64_t s = 0; s <= t; ++s) m[size_t((b * S + t) * S + s)] = keys[size_t(b * S + s)];
  return Tensor::from_vector(m, {B, 1, S, S});
}

std::vector<OpCase> attention_cases() {
  std::vector<OpCase> t;
  auto def = [&](std::string name, std::function<Inputs()> make, std::function<Tensor(const Inputs&)> fn,
                 double tol, bool bf16) { t.push_back({std::move(name), std::move(make), std::move(fn), tol, true, bf16}); };
  def("attention: shared v, key mask with a dead batch, S 70 (ragged tiles), hd 8",
      [] {
        return Inputs{U({2, 3, 2, 70, 8}, 200), U({2, 3, 2, 70, 8}, 201), U({1, 3, 2, 70, 8}, 202),
                      keys01(3, 70, 203, 1)};
      },
      [](const Inputs& x) { return attention(x[0], x[1], x[2], x[3], 0.0, true, 0, 0); }, 2.0, true);
  def("attention: per-path v, causal mask, dropout, S 45, hd 40",
      [] {
        return Inputs{U({2, 2, 2, 45, 40}, 204, -0.5, 0.5), U({2, 2, 2, 45, 40}, 205), U({2, 2, 2, 45, 40}, 206),
                      causal01(2, 45, 207)};
      },
      [](const Inputs& x) { return attention(x[0], x[1], x[2], x[3], 0.2, true, 77, 3); }, 2.0, true);
  def("attention: hd 128, permuted q, expanded v, causal mask, dropout",
      [] {
        return Inputs{U({2, 1, 33, 2, 128}, 208, -0.3, 0.3), U({2, 1, 2, 33, 128}, 209), U({1, 1, 2, 33, 128}, 210),
                      causal01(1, 33, 211)};
      },
      [](const Inputs& x) {
        return attention(permute(x[0], {0, 1, 3, 2, 4}), x[1], expand(x[2], {2, 1, 2, 33, 128}), x[3], 0.1, true, 5,
                         8);
      },
      2.0, true);
  def("attention: hd 1, S 3, no mask, dropout ignored when not training",
      [] { return Inputs{U({2, 1, 3, 3, 1}, 212), U({2, 1, 3, 3, 1}, 213), U({1, 1, 3, 3, 1}, 214)}; },
      [](const Inputs& x) { return attention(x[0], x[1], x[2], Tensor(), 0.5, false, 1, 2); }, 2.0, true);
  def("attention: hd 160 (composite fallback), key mask",
      [] {
        return Inputs{U({1, 2, 2, 9, 160}, 215, -0.2, 0.2), U({1, 2, 2, 9, 160}, 216), U({1, 2, 2, 9, 160}, 217),
                      keys01(2, 9, 218, -1)};
      },
      [](const Inputs& x) { return attention(x[0], x[1], x[2], x[3], 0.3, true, 3, 1); }, 2.0, true);
  return t;
}

int gpu_case_count() {
  return gpu_comparisons(attention_cases()) + 3 + 1;  // dropout offsets, determinism
}

bool gpu_or_skip() { return bet::test::gpu::gpu_or_skip(gpu_case_count()); }

}  // namespace

TEST_CASE("attention cases on the CPU: f32 matches f64 (the cases the GPU run uses)") {
  check_cases_on_cpu(attention_cases());
}

TEST_CASE("GPU: fused attention against the CPU (forward, q/k/v gradients; f32, f64, bf16)" * gpu_cases()) {
  if (!gpu_or_skip()) return;
  check_cases_on_gpu(attention_cases());
}

TEST_CASE("GPU: fused attention's dropout mask is the CPU's bit for bit; results repeat exactly" * gpu_cases()) {
  if (!gpu_or_skip()) return;
  const Device gpu = Device::cuda(0);
  // v = identity (hd = S): the output IS the dropped probability matrix, so a dropped
  // element is an exact 0 on both devices and a kept one is not.
  const int64_t P = 2, B = 2, H = 3, S = 48;
  Tensor q = U({P, B, H, S, S}, 220).to(DType::F32), k = U({P, B, H, S, S}, 221).to(DType::F32);
  std::vector<double> eye(size_t(S * S), 0.0);
  for (int64_t i = 0; i < S; ++i) eye[size_t(i * S + i)] = 1.0;
  Tensor v = expand(Tensor::from_vector(eye, {1, 1, 1, S, S}), {1, B, H, S, S}).contiguous().to(DType::F32);
  for (uint64_t offset : {uint64_t(0), uint64_t(3), (uint64_t(1) << 34) - 6}) {
    CAPTURE(offset);
    const std::vector<float> want = attention(q, k, v, Tensor(), 0.4, true, 99, offset).to_vector<float>();
    const std::vector<float> got =
        attention(q.to(gpu), k.to(gpu), v.to(gpu), Tensor(), 0.4, true, 99, offset).to(Device::cpu()).to_vector<float>();
    int64_t mismatches = 0;
    for (size_t i = 0; i < want.size(); ++i) mismatches += (want[i] == 0.0f) != (got[i] == 0.0f);
    CHECK(mismatches == 0);
  }
  // Deterministic kernels (no atomics): two runs give the same bits, gradients included.
  const OpCase c = attention_cases()[1];
  const Inputs base = c.make();
  RunResult r1 = run(c, base, gpu, DType::F32, true), r2 = run(c, base, gpu, DType::F32, true);
  CHECK(compare(host(r1.out), host(r2.out), {0.0, 0.0}) == "");
  for (size_t i = 0; i < 3; ++i) CHECK(compare(host(r1.grads[i]), host(r2.grads[i]), {0.0, 0.0}) == "");
}
