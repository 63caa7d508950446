// bf16 on the CPU (storage, conversion, matmul and sum by way of f32) and autocast:
// matmul/linear in bf16 with f32 master weights, gradients back in f32, training that
// still learns. The GPU runs the same code with cuBLAS bf16 GEMMs (tests/test_cuda_ops).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/autocast.h"
#include "engine/ops.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"
#include "kernels/cpu/bf16.h"
#include "model/bet_model.h"

using namespace bet;
using kernels::cpu::BF16;

namespace {

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// The bf16 nearest to f, ties to even, found by comparing the two neighbours in double.
uint16_t nearest_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint16_t lo = uint16_t(u >> 16);
  const uint16_t hi = uint16_t(lo + 1);
  const double dl = std::abs(double(f) - double(bits_to_float(uint32_t(lo) << 16)));
  const double dh = std::abs(double(f) - double(bits_to_float(uint32_t(hi) << 16)));
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return (lo & 1) ? hi : lo;
}

Tensor U(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return g.uniform(s, -1.0, 1.0, DType::F32);
}

double max_rel(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num = std::max(num, std::abs(x[i] - y[i]));
    den = std::max(den, std::abs(y[i]));
  }
  return num / std::max(den, 1e-30);
}

}  // namespace

TEST_CASE("bf16 conversion rounds to nearest, ties to even; NaN and infinities survive") {
  Generator g(1);
  for (int i = 0; i < 20000; ++i) {
    const uint32_t u = uint32_t(g.randint(uint64_t(1) << 32));
    const float f = bits_to_float(u);
    if (!std::isfinite(f) || std::abs(f) > 3.0e38f) continue;  // rounding up past the largest finite
    CAPTURE(f);
    CHECK(BF16(f).bits == nearest_bf16(f));
  }
  // From double in one rounding: doubles a hair off a bf16 tie (where rounding through
  // float would create a false tie) go to the nearer neighbour.
  for (int i = 0; i < 2000; ++i) {
    const uint16_t a = uint16_t(0x3f00 + g.randint(0x0200));  // bf16 values in [0.5, 4)
    const double lo = double(float(BF16(bits_to_float(uint32_t(a) << 16)))),
                 hi = double(bits_to_float(uint32_t(a + 1) << 16));
    const double mid = 0.5 * (lo + hi), eps = (hi - lo) * std::ldexp(1.0, -30);
    CHECK(BF16(mid + eps).bits == uint16_t(a + 1));
    CHECK(BF16(mid - eps).bits == a);
    CHECK(BF16(mid).bits == ((a & 1) ? uint16_t(a + 1) : a));  // an exact tie: to even
  }
  // Exact ties: halfway between two bf16 values goes to the even one.
  CHECK(BF16(bits_to_float(0x3f808000u)).bits == 0x3f80);  // 1 + 2^-8: tie, 0x3f80 is even
  CHECK(BF16(bits_to_float(0x3f818000u)).bits == 0x3f82);  // tie, rounds up to even
  CHECK(std::isnan(float(BF16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isnan(float(BF16(bits_to_float(0x7f800001u)))));  // a signalling NaN must not become inf
  CHECK(float(BF16(std::numeric_limits<float>::infinity())) == std::numeric_limits<float>::infinity());

  Tensor x = U({7, 9}, 2);
  Tensor b = x.to(DType::BF16);
  CHECK(b.dtype() == DType::BF16);
  const auto xs = x.to_vector<float>(), back = b.to_vector<float>();
  for (size_t i = 0; i < xs.size(); ++i) CHECK(BF16(back[i]).bits == nearest_bf16(xs[i]));
  // Strided source and a fill.
  CHECK(transpose(b, 0, 1).to(DType::F32).contiguous().to_vector<float>() ==
        transpose(b.to(DType::F32), 0, 1).contiguous().to_vector<float>());
  Tensor f = Tensor::full({3}, 1.0 / 3.0, DType::BF16);
  CHECK(f.to_vector<float>() == std::vector<float>(3, float(BF16(1.0f / 3.0f))));
}

TEST_CASE("bf16 matmul and sum on the CPU: the exact result of the bf16 operands, rounded once") {
  for (auto [M, K, N] : {std::array<int64_t, 3>{5, 7, 3}, {16, 64, 8}, {1, 300, 2}}) {
    Tensor a = U({M, K}, 3).to(DType::BF16), b = U({K, N}, 4).to(DType::BF16);
    Tensor c = matmul(a, b);
    REQUIRE(c.dtype() == DType::BF16);
    Tensor exact = matmul(a.to(DType::F64), b.to(DType::F64));
    const auto got = c.to_vector<double>(), want = exact.to_vector<double>();
    for (size_t i = 0; i < got.size(); ++i) {
      // One bf16 rounding (2^-9 relative) plus the f32 accumulation (far smaller).
      CHECK(std::abs(got[i] - want[i]) <= std::abs(want[i]) * std::ldexp(1.0, -8) + 1e-6 * double(K));
    }
    Tensor s = sum(a, {0});
    REQUIRE(s.dtype() == DType::BF16);
    const auto sg = s.to_vector<double>(), sw = sum(a.to(DType::F64), {0}).to_vector<double>();
    for (size_t i = 0; i < sg.size(); ++i) CHECK(std::abs(sg[i] - sw[i]) <= std::abs(sw[i]) * std::ldexp(1.0, -8) + 1e-6);
  }
}

TEST_CASE("autocast: linear and matmul compute in bf16 and return f32; gradients reach f32 tensors in f32") {
  Tensor x0 = U({4, 6, 32}, 5), w0 = U({24, 32}, 6), b0 = U({24}, 7);
  auto leaves = [&] {
    return std::array<Tensor, 3>{x0.detach().clone().set_requires_grad(true), w0.detach().clone().set_requires_grad(true),
                                 b0.detach().clone().set_requires_grad(true)};
  };
  auto [x, w, b] = leaves();
  auto [xf, wf, bf] = leaves();
  Tensor y, yf = linear(xf, wf, bf);
  {
    AutocastGuard ac(DType::BF16);
    CHECK(autocast_dtype() == DType::BF16);
    y = linear(x, w, b);
    {
      AutocastGuard off(DType::F32);  // nests
      CHECK(linear(x0, w0, b0).to_vector<float>() == yf.to_vector<float>());
    }
    CHECK(autocast_dtype() == DType::BF16);
  }
  CHECK(autocast_dtype() == DType::F32);
  REQUIRE(y.dtype() == DType::F32);
  // Exactly the bf16 product of the rounded operands, the bias added in f32.
  Tensor manual = add(linear(x0.to(DType::BF16), w0.to(DType::BF16), Tensor()).to(DType::F32), b0);
  CHECK(y.to_vector<float>() == manual.to_vector<float>());
  const double rel = max_rel(y, yf);
  CHECK(rel > 0.0);   // it did compute in bf16
  CHECK(rel < 2e-2);  // and stayed close to f32

  Tensor gy = U(y.shape(), 8);
  sum(mul(y, gy)).backward();
  sum(mul(yf, gy)).backward();
  for (auto [t, r] : {std::pair{x, xf}, std::pair{w, wf}, std::pair{b, bf}}) {
    REQUIRE(t.grad().defined());
    CHECK(t.grad().dtype() == DType::F32);
    CHECK(max_rel(t.grad(), r.grad()) < 2e-2);
  }

  // matmul with broadcasting batch dims (attention's scores and values).
  Tensor q = U({2, 3, 5, 8}, 9).set_requires_grad(true), k = U({3, 8, 5}, 10).set_requires_grad(true);
  Tensor s;
  {
    AutocastGuard ac(DType::BF16);
    s = matmul(q, k);
  }
  CHECK(s.dtype() == DType::F32);
  CHECK(max_rel(s, matmul(q.detach(), k.detach())) < 2e-2);
  sum(s).backward();
  CHECK(k.grad().dtype() == DType::F32);
  CHECK(k.grad().shape() == k.shape());
}

TEST_CASE("bf16 autocast training learns like f32; the master weights stay f32") {
  model::ModelConfig cfg;
  cfg.d_model = 32;
  cfg.heads = 2;
  cfg.layers = 1;
  cfg.max_len = 16;
  cfg.k_permutations = 2;
  cfg.dropout = 0.0;
  cfg.num_classes = 2;
  auto run = [&](DType compute) {
    Generator g(3);
    model::BetModel m(cfg, g);
    m.train();
    auto params = m.trainable_tensors();
    std::vector<bool> decay(params.size(), false);
    optim::AdamWOptions o;
    o.lr = 3e-3;
    optim::AdamW opt(params, o, decay);
    // A learnable rule: class 1 draws its tokens from another range than class 0.
    Generator d(4);
    const int64_t B = 16, S = 12;
    std::vector<double> losses;
    for (int step = 0; step < 40; ++step) {
      std::vector<int64_t> ids(static_cast<size_t>(B * S)), y(static_cast<size_t>(B));
      for (int64_t i = 0; i < B; ++i) {
        y[size_t(i)] = int64_t(d.randint(2));
        for (int64_t t = 0; t < S; ++t) ids[size_t(i * S + t)] = 6 + 10 * y[size_t(i)] + int64_t(d.randint(10));
      }
      model::SeqContext ctx = model::SeqContext::from_lengths(std::vector<int64_t>(size_t(B), S), S, false);
      model::MDLLossOutput L;
      {
        AutocastGuard ac(compute);
        auto out = m.forward(Tensor::from_vector<int64_t>(ids, {B, S}), ctx);
        L = model::model_loss(out, Tensor::from_vector<int64_t>(y, {B}), ctx, cfg.task, 0.0);
      }
      L.loss.backward();
      opt.step();
      opt.zero_grad();
      losses.push_back(L.loss.item());
    }
    for (auto& p : params) CHECK(p.dtype() == DType::F32);
    double late = 0;
    for (size_t i = losses.size() - 10; i < losses.size(); ++i) late += losses[i] / 10;
    return std::pair{losses.front(), late};
  };
  auto [f_first, f_late] = run(DType::F32);
  auto [b_first, b_late] = run(DType::BF16);
  MESSAGE("f32 loss " << f_first << " -> " << f_late << "; bf16 " << b_first << " -> " << b_late);
  CHECK(b_first == doctest::Approx(f_first).epsilon(2e-2));
  CHECK(b_late < 0.8 * b_first);                         // it learns
  CHECK(b_late == doctest::Approx(f_late).epsilon(0.2));  // about as well as f32
}
