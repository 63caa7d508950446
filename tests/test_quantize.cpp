// Int8 inference (`betctl export --quantize int8`): the kernel against its plain C++
// reference (exact integer part, same epilogue) and against the f32 linear within the
// quantisation error bound; per-row activation quantisation edge cases; Linear and
// fused_linear on the int8 path; a small model's int8 outputs near its f32 ones; the
// checkpoint round trip (same int8 bytes and scales) and damaged int8 checkpoints.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/quantized.h"
#include "kernels/cpu/matmul_int8.h"
#include "model/bet_model.h"
#include "model/module.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/checkpoint_manager.h"
#include "runtime/inference/predictor.h"
#include "runtime/io/atomic_file.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/checkpoint_fixtures.h"

using namespace bet;
namespace kc = bet::kernels::cpu;

namespace {

std::vector<float> randn(size_t n, uint32_t seed, float sd = 1.f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// y = x w^T + b in double (the f32 linear's numbers up to rounding).
std::vector<double> linear_ref(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                               int64_t M, int64_t K, int64_t N) {
  std::vector<double> y(size_t(M * N));
  for (int64_t r = 0; r < M; ++r)
    for (int64_t o = 0; o < N; ++o) {
      double s = b.empty() ? 0.0 : b[size_t(o)];
      for (int64_t k = 0; k < K; ++k) s += double(x[size_t(r * K + k)]) * double(w[size_t(o * K + k)]);
      y[size_t(r * N + o)] = s;
    }
  return y;
}

// The bound on |int8 - f32| per element: each factor is off by at most half its step,
//   |x w - x^ w^| <= sum_k |x_k| |w_k - w^_k| + |w^_k| |x_k - x^_k|
//                 <= sum_k |x_k| sw / 2 + |w^_k| sx / 2,
// plus f32 rounding of the products.
double error_bound(const float* x, const kc::Int8Linear& q, int64_t o, double sx) {
  const int64_t K = q.in_features();
  const double sw = q.scale()[size_t(o)];
  double b = 0;
  for (int64_t k = 0; k < K; ++k)
    b += std::fabs(x[k]) * sw / 2 + std::fabs(double(q.weight()[size_t(o * K + k)]) * sw) * sx / 2;
  return b * 1.0001 + 1e-5;
}

// Per-row activation scale as the kernel computes it.
double row_scale(const float* x, int64_t K, int qmax) {
  float lo = 0, hi = 0;
  for (int64_t k = 0; k < K; ++k) lo = std::min(lo, x[k]), hi = std::max(hi, x[k]);
  return double(hi - lo) / qmax;
}

void check_kernel(int64_t M, int64_t K, int64_t N, uint32_t seed, bool with_bias) {
  CAPTURE(M);
  CAPTURE(K);
  CAPTURE(N);
  std::vector<float> x = randn(size_t(M * K), seed), w = randn(size_t(N * K), seed + 1, 0.1f);
  std::vector<float> b = with_bias ? randn(size_t(N), seed + 2) : std::vector<float>();
  auto q = kc::Int8Linear::quantize(w.data(), with_bias ? b.data() : nullptr, N, K);
  std::vector<float> y(size_t(M * N)), yr(size_t(M * N));
  q->forward(x.data(), M, K, y.data());
  kc::int8_linear_reference(x.data(), M, K, K, q->weight().data(), q->scale().data(), q->colsum().data(),
                            with_bias ? q->bias().data() : nullptr, N, yr.data());
  // Exact: the integer GEMM is exact, and the epilogue is the same code.
  CHECK(std::memcmp(y.data(), yr.data(), y.size() * sizeof(float)) == 0);

  // The integer part on its own, against the reference's dot products.
  std::vector<uint8_t> xq(size_t(M * K));
  std::vector<float> sx(static_cast<size_t>(M));
  std::vector<int32_t> zx(static_cast<size_t>(M)), acc(size_t(M * N)), accr(size_t(M * N));
  kc::quantize_rows_u8(x.data(), M, K, K, kc::activation_qmax(), xq.data(), sx.data(), zx.data());
  q->gemm_s32(xq.data(), M, acc.data());
  kc::gemm_s32_reference(xq.data(), q->weight().data(), M, N, K, accr.data());
  CHECK(acc == accr);

  // Against the f32 linear, within the quantisation error bound.
  std::vector<double> yf = linear_ref(x, w, b, M, K, N);
  int bad = 0;
  for (int64_t r = 0; r < M; ++r) {
    const double s = row_scale(x.data() + r * K, K, kc::activation_qmax());
    for (int64_t o = 0; o < N; ++o) {
      const double e = std::fabs(double(y[size_t(r * N + o)]) - yf[size_t(r * N + o)]);
      if (e > error_bound(x.data() + r * K, *q, o, s)) ++bad;
    }
  }
  CHECK(bad == 0);
}

std::unique_ptr<runtime::Tokenizer> byte_tok() { return runtime::make_byte_tokenizer(); }

}  // namespace

TEST_CASE("int8 kernel: exact against the C++ reference, within the quantisation bound of f32") {
  MESSAGE(std::string(kc::int8_matmul_path()));
  const int64_t shapes[][3] = {{1, 128, 128}, {1, 7, 3},    {3, 1, 5},     {5, 63, 17},  {2, 65, 33},
                               {17, 130, 9},  {64, 128, 384}, {256, 128, 512}, {33, 513, 20}, {256, 512, 128}};
  uint32_t seed = 1;
  for (auto& s : shapes) {
    check_kernel(s[0], s[1], s[2], seed++, true);
    check_kernel(s[0], s[1], s[2], seed++, false);
  }
  CHECK(kc::int8_matmul_cache_size() > 0);
}

TEST_CASE("int8 kernel: the worst case for s16 pair sums is exact at the chosen activation range") {
  // vpmaddubsw (AVX2 / AVX-512 without VNNI) saturates a pair of u8 x s8 products at
  // 32767: full-range activations (255) against 127 would; activation_qmax() keeps them
  // to 127 there, and 255 only where the sums come out exact.
  const int qmax = kc::activation_qmax();
  MESSAGE("activation range [0, " << qmax << "]");
  for (int64_t K : {2, 64, 129, 512}) {
    const int64_t M = 3, N = 5;
    std::vector<uint8_t> xq(size_t(M * K), uint8_t(qmax));
    std::vector<int8_t> wq(size_t(N * K));
    for (int64_t i = 0; i < N * K; ++i) wq[size_t(i)] = int8_t((i / K) % 2 ? -127 : 127);
    kc::Int8Linear l(wq, std::vector<float>(size_t(N), 1.f), {}, N, K);
    std::vector<int32_t> got(size_t(M * N)), want(size_t(M * N));
    l.gemm_s32(xq.data(), M, got.data());
    kc::gemm_s32_reference(xq.data(), wq.data(), M, N, K, want.data());
    CHECK(got == want);
  }
}

TEST_CASE("int8 kernel: weight quantisation is symmetric per output channel") {
  const int64_t N = 3, K = 5;
  std::vector<float> w = {1.f, -2.f, 0.5f, 0.f, 2.f,  0.f, 0.f, 0.f, 0.f, 0.f,  -0.01f, 0.02f, 0.f, 0.f, 0.005f};
  std::vector<int8_t> wq(size_t(N * K));
  std::vector<float> s(static_cast<size_t>(N));
  kc::quantize_weight_rows(w.data(), N, K, wq.data(), s.data());
  CHECK(s[0] == doctest::Approx(2.0 / 127));
  CHECK(wq[1] == -127);
  CHECK(wq[4] == 127);
  CHECK(wq[0] == 64);  // 63.5 rounds to even
  CHECK(s[1] == 0.f);  // an all-zero row
  for (int k = 0; k < K; ++k) CHECK(wq[size_t(K + k)] == 0);
  CHECK(wq[size_t(2 * K + 1)] == 127);
  for (int8_t v : wq) CHECK(v != -128);
}

TEST_CASE("int8 kernel: per-row activation quantisation (zero rows, outliers, one-signed rows)") {
  const int64_t K = 37;
  std::vector<float> x(size_t(4 * K), 0.f);
  // row 0: all zero; row 1: one large outlier; row 2: all positive; row 3: all negative
  x[size_t(K + 3)] = 1000.f;
  for (int64_t k = 0; k < K; ++k) {
    if (k != 3) x[size_t(K + k)] = 0.01f * float(k % 5) - 0.02f;
    x[size_t(2 * K + k)] = 0.5f + 0.1f * float(k);
    x[size_t(3 * K + k)] = -0.5f - 0.1f * float(k);
  }
  for (int qmax : {127, 255}) {
    CAPTURE(qmax);
    std::vector<uint8_t> q(x.size());
    std::vector<float> s(4);
    std::vector<int32_t> z(4);
    kc::quantize_rows_u8(x.data(), 4, K, K, qmax, q.data(), s.data(), z.data());
    CHECK(s[0] == 0.f);
    CHECK(z[0] == 0);
    for (int64_t k = 0; k < K; ++k) CHECK(q[size_t(k)] == 0);
    CHECK(q[size_t(K + 3)] == qmax);  // the outlier takes the top of the range
    CHECK(z[2] == 0);                 // all positive: zero maps to 0
    CHECK(q[size_t(3 * K - 1)] == qmax);
    CHECK(z[3] == qmax);              // all negative: zero maps to the top
    CHECK(q[size_t(4 * K - 1)] == 0);
    for (int r = 0; r < 4; ++r)
      for (int64_t k = 0; k < K; ++k) {
        const double back = (double(q[size_t(r * K + k)]) - z[size_t(r)]) * s[size_t(r)];
        CHECK(std::fabs(back - x[size_t(r * K + k)]) <= s[size_t(r)] * 0.5001 + 1e-7);
        CHECK(q[size_t(r * K + k)] <= qmax);
      }
  }
  // Through the whole kernel: the zero row gives exactly the bias; the outlier row the bound.
  std::vector<float> w = randn(size_t(6 * K), 9, 0.2f), b = randn(6, 10);
  auto lin = kc::Int8Linear::quantize(w.data(), b.data(), 6, K);
  std::vector<float> y(4 * 6);
  lin->forward(x.data(), 4, K, y.data());
  for (int o = 0; o < 6; ++o) CHECK(y[size_t(o)] == b[size_t(o)]);
  std::vector<double> yf = linear_ref(x, w, b, 4, K, 6);
  for (int r = 1; r < 4; ++r)
    for (int o = 0; o < 6; ++o)
      CHECK(std::fabs(y[size_t(r * 6 + o)] - yf[size_t(r * 6 + o)]) <=
            error_bound(x.data() + r * K, *lin, o, row_scale(x.data() + r * K, K, kc::activation_qmax())));
  // A non-finite input gives a non-finite output, not garbage.
  std::vector<float> xn(size_t(K), 1.f);
  xn[5] = std::nanf("");
  std::vector<float> yn(6);
  lin->forward(xn.data(), 1, K, yn.data());
  for (float v : yn) CHECK(std::isnan(v));
}

TEST_CASE("int8 kernel: strided rows (ldx > K) read in place") {
  const int64_t M = 9, K = 20, N = 7, ld = 32;
  std::vector<float> xs = randn(size_t(M * ld), 3), x(size_t(M * K));
  for (int64_t r = 0; r < M; ++r) std::copy_n(xs.data() + r * ld, K, x.data() + r * K);
  std::vector<float> w = randn(size_t(N * K), 4);
  auto q = kc::Int8Linear::quantize(w.data(), nullptr, N, K);
  std::vector<float> a(size_t(M * N)), b(size_t(M * N));
  q->forward(xs.data(), M, ld, a.data());
  q->forward(x.data(), M, K, b.data());
  CHECK(a == b);
}

TEST_CASE("Linear and fused_linear run int8 once quantised; concatenation is exact") {
  Generator g(5);
  model::Linear a(24, 10, g), b(24, 6, g, /*bias=*/false), c(24, 3, g);
  Tensor x = g.normal({2, 7, 24}, 0.0, 1.0, DType::F32);
  autograd::NoGradGuard ng;
  Tensor yf = a.forward(x);
  a.quantize_int8();
  b.quantize_int8();
  c.quantize_int8();
  CHECK(a.quantized());
  Tensor y8 = a.forward(x);
  REQUIRE(y8.shape() == Shape{2, 7, 10});
  const auto v8 = y8.to_vector<float>(), vf = yf.to_vector<float>();
  double maxerr = 0;
  for (size_t i = 0; i < v8.size(); ++i) maxerr = std::max(maxerr, double(std::fabs(v8[i] - vf[i])));
  CHECK(maxerr < 0.05);
  CHECK(maxerr > 0);  // it did quantise
  // The int8 path equals the kernel called directly.
  std::vector<float> xv = x.contiguous().to_vector<float>(), direct(size_t(14 * 10));
  a.int8->forward(xv.data(), 14, 24, direct.data());
  CHECK(direct == v8);
  // fused == each layer on its own, bit for bit (per-channel scales concatenate exactly).
  Tensor fused = model::fused_linear({&a, &b, &c}, x);
  REQUIRE(fused.shape() == Shape{2, 7, 19});
  auto parts = split(fused, {10, 6, 3}, 2);
  CHECK(parts[0].contiguous().to_vector<float>() == a.forward(x).to_vector<float>());
  CHECK(parts[1].contiguous().to_vector<float>() == b.forward(x).to_vector<float>());
  CHECK(parts[2].contiguous().to_vector<float>() == c.forward(x).to_vector<float>());
  // Cached: the same concatenation again.
  CHECK(model::fused_linear({&a, &b, &c}, x).to_vector<float>() == fused.contiguous().to_vector<float>());
  // The weight now holds the dequantised values.
  const auto wv = a.weight.contiguous().to_vector<float>();
  const auto deq = a.int8->dequantized();
  CHECK(wv == deq);
  // A new int8 form (a reload) is picked up: the cache never serves a stale concatenation.
  {
    std::vector<float> w2 = randn(size_t(10 * 24), 77, 0.3f);
    std::vector<float> b2 = a.bias.to_vector<float>();
    a.set_int8(kc::Int8Linear::quantize(w2.data(), b2.data(), 10, 24));
  }
  Tensor fused2 = model::fused_linear({&a, &b, &c}, x);
  CHECK(split(fused2, {10, 6, 3}, 2)[0].contiguous().to_vector<float>() == a.forward(x).to_vector<float>());
  CHECK(split(fused2, {10, 6, 3}, 2)[0].contiguous().to_vector<float>() != parts[0].contiguous().to_vector<float>());
}

TEST_CASE("quantized_linear is inference only") {
  Generator g(6);
  model::Linear a(8, 4, g);
  a.quantize_int8();
  Tensor x = g.normal({3, 8}, 0.0, 1.0, DType::F32);
  x.set_requires_grad(true);
  CHECK_THROWS_WITH_AS(quantized_linear(x, *a.int8), doctest::Contains("inference only"), Error);
  // Linear::forward with a gradient wanted takes the f32 path over the dequantised weight.
  Tensor y = a.forward(x);
  CHECK(y.requires_grad());
  // So does a gradient wanted for the layer's own weight, with an input that needs none.
  Tensor x0 = g.normal({3, 8}, 0.0, 1.0, DType::F32);
  sum(a.forward(x0)).backward();
  REQUIRE(a.weight.grad().defined());
  CHECK(a.bias.grad().defined());
  a.weight.zero_grad();
  a.bias.zero_grad();
  sum(model::fused_linear({&a, &a}, x0)).backward();
  CHECK(a.weight.grad().defined());
}

TEST_CASE("int8: non-finite weights are refused; new parameter values drop the int8 form") {
  Generator g(7);
  model::Linear a(8, 4, g);
  {
    autograd::NoGradGuard ng;
    std::vector<float> w = a.weight.contiguous().to_vector<float>();
    w[5] = std::nanf("");
    Tensor bad = Tensor::from_vector<float>(w, {4, 8});
    a.weight.copy_(bad);
  }
  CHECK_THROWS_WITH_AS(a.quantize_int8(), doctest::Contains("not finite"), Error);
  model::Linear b(8, 4, g);
  b.quantize_int8();
  REQUIRE(b.quantized());
  model::Linear fresh(8, 4, g);
  b.load_parameters(fresh.named_parameters());
  CHECK_FALSE(b.quantized());  // stale int8 weights would otherwise keep serving
  autograd::NoGradGuard ng;
  Tensor x = g.normal({2, 8}, 0.0, 1.0, DType::F32);
  CHECK(b.forward(x).to_vector<float>() == fresh.forward(x).to_vector<float>());
}

TEST_CASE("a small model: int8 outputs close to f32; checkpoint round trip keeps the int8 bytes") {
  for (auto layer : {model::LayerKind::Bet, model::LayerKind::Standard}) {
    model::ModelConfig cfg;
    cfg.task = model::Task::Classify;
    cfg.layer = layer;
    cfg.d_model = 32;
    cfg.heads = 2;
    cfg.layers = 2;
    cfg.max_len = 64;
    cfg.k_permutations = layer == model::LayerKind::Bet ? 2 : 0;
    cfg.num_classes = 2;
    cfg.vocab_size = 260;
    cfg.dropout = 0.0;
    cfg.labels = {"ham", "spam"};
    cfg.validate();
    Generator g(11);
    model::BetModel m(cfg, g, DType::F32);
    m.eval();
    autograd::NoGradGuard ng;
    std::vector<int32_t> idv;
    for (int i = 0; i < 2 * 40; ++i) idv.push_back(3 + (i * 37) % 250);
    Tensor ids = Tensor::from_vector(idv, {2, 40});
    model::SeqContext ctx = m.context({40, 33}, 40);
    Tensor lf = m.forward(ids, ctx).logits;
    const int64_t n = model::quantize_int8(m, [](const std::string& name) { return name == "head"; });
    CHECK(n > 4);
    CHECK(model::has_int8(m));
    for (auto& [name, l] : model::named_linears(m)) CHECK(l->quantized() == (name != "head"));
    Tensor lq = m.forward(ids, ctx).logits;
    const auto a = lf.to_vector<float>(), b = lq.to_vector<float>();
    double maxerr = 0;
    for (size_t i = 0; i < a.size(); ++i) maxerr = std::max(maxerr, double(std::fabs(a[i] - b[i])));
    CAPTURE(maxerr);
    CHECK(maxerr < 0.05);

    // Round trip through a file: the same int8 bytes and scales, the same logits.
    const std::string dir = bet::testing::fresh_dir("int8_rt");
    runtime::Checkpoint ck = runtime::make_checkpoint(m, nullptr, byte_tok()->to_json(), "production");
    CHECK(ck.quantize == "int8");
    const std::string path = dir + "/q.bet";
    runtime::save_checkpoint(path, ck);
    runtime::Checkpoint back = runtime::load_checkpoint(path);
    CHECK(back.quantize == "int8");
    auto m2 = runtime::build_model(back, path);
    m2->eval();
    std::map<std::string, model::Linear*> l2;
    for (auto& [name, l] : model::named_linears(*m2)) l2[name] = l;
    for (auto& [name, l] : model::named_linears(m)) {
      CAPTURE(name);
      REQUIRE(l2.count(name));
      REQUIRE(l2[name]->quantized() == l->quantized());
      if (!l->quantized()) continue;
      CHECK(l2[name]->int8->weight() == l->int8->weight());
      CHECK(l2[name]->int8->scale() == l->int8->scale());
      CHECK(l2[name]->int8->bias() == l->int8->bias());
    }
    CHECK(m2->forward(ids, ctx).logits.to_vector<float>() == b);
    nlohmann::json info = runtime::inspect_checkpoint(path);
    CHECK(info["quantize"] == "int8");

    // The serving path loads it as int8 too.
    auto loaded = inference::load_model(path);
    CHECK(model::has_int8(*loaded->model));

    // Training from it is refused.
    auto fresh = std::make_unique<model::BetModel>(cfg, g, DType::F32);
    optim::AdamW opt(fresh->trainable_tensors());
    CHECK_THROWS_WITH_AS(runtime::apply_checkpoint(back, *fresh, &opt), doctest::Contains("inference only"), Error);
  }
}

TEST_CASE("int8 checkpoints: older files (no quantize field) load; damaged int8 files are refused clearly") {
  using bet::testing::fresh_dir;
  const std::string dir = fresh_dir("int8_bad");
  model::ModelConfig cfg = bet::testing::small_config();
  Generator g(3);
  model::BetModel m(cfg, g, DType::F32);
  // f32: no quantize field in the header, loads as before.
  runtime::Checkpoint f = runtime::make_checkpoint(m, nullptr, byte_tok()->to_json(), "production");
  CHECK(f.quantize.empty());
  CHECK(!runtime::checkpoint_header(f).contains("quantize"));
  runtime::save_checkpoint(dir + "/f32.bet", f);
  CHECK(runtime::load_checkpoint(dir + "/f32.bet").quantize.empty());

  model::quantize_int8(m);
  runtime::Checkpoint q = runtime::make_checkpoint(m, nullptr, byte_tok()->to_json(), "production");
  const std::string good = dir + "/q.bet";
  runtime::save_checkpoint(good, q);
  const std::string bytes = runtime::read_file(good);

  auto expect_error = [&](const std::string& name, const std::string& contents, const std::string& what) {
    const std::string p = dir + "/" + name;
    std::ofstream(p, std::ios::binary) << contents;
    CAPTURE(name);
    try {
      runtime::Checkpoint ck = runtime::load_checkpoint(p);
      runtime::build_model(ck, p);
      FAIL("loaded a damaged file");
    } catch (const Error& e) {
      CAPTURE(e.what());
      CHECK(std::string(e.what()).find(what) != std::string::npos);
    }
  };
  expect_error("trunc.bet", bytes.substr(0, bytes.size() / 2), "trunc.bet");
  expect_error("trunc2.bet", bytes.substr(0, bytes.size() - 3), "trunc2.bet");
  std::string flipped = bytes;
  flipped[bytes.size() / 3] ^= 0x5a;
  expect_error("flip.bet", flipped, "flip.bet");

  // A table that does not match the int8 layout, written with valid checksums.
  auto write_with = [&](const std::string& name, const runtime::Checkpoint& ck, nlohmann::json header) {
    const std::string p = dir + "/" + name;
    runtime::write_bet_file(p, header, runtime::checkpoint_tensors(ck));
    return p;
  };
  auto error_of = [](const std::string& p) -> std::string {
    try {
      runtime::Checkpoint ck = runtime::load_checkpoint(p);
      runtime::build_model(ck, p);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  {  // scale missing
    runtime::Checkpoint bad = q;
    bad.weights.erase(std::find_if(bad.weights.begin(), bad.weights.end(),
                                   [](auto& p) { return p.first.size() > 6 && p.first.ends_with(".weight.scale"); }));
    CHECK(error_of(write_with("noscale.bet", bad, runtime::checkpoint_header(bad))).find("has no") != std::string::npos);
  }
  {  // int8 tensors in a file whose header does not say int8
    nlohmann::json h = runtime::checkpoint_header(q);
    h.erase("quantize");
    CHECK(error_of(write_with("nofield.bet", q, h)).find("not a parameter") != std::string::npos);
  }
  {  // an unknown scheme
    nlohmann::json h = runtime::checkpoint_header(q);
    h["quantize"] = "int4";
    CHECK(error_of(write_with("int4.bet", q, h)).find("'quantize' is 'int4'") != std::string::npos);
  }
  {  // -128 (outside the symmetric range) in the int8 bytes
    runtime::Checkpoint bad = q;
    for (auto& [n, t] : bad.weights)
      if (n.ends_with(".weight.int8")) {
        t = t.clone();
        static_cast<uint8_t*>(t.raw_data())[0] = 0x80;
        break;
      }
    CHECK(error_of(write_with("m128.bet", bad, runtime::checkpoint_header(bad))).find("-128") != std::string::npos);
  }
  {  // a negative scale
    runtime::Checkpoint bad = q;
    for (auto& [n, t] : bad.weights)
      if (n.ends_with(".weight.scale")) {
        t = t.clone();
        t.data<float>()[0] = -1.f;
        break;
      }
    CHECK(error_of(write_with("negscale.bet", bad, runtime::checkpoint_header(bad))).find("scale") != std::string::npos);
  }
}

// Timing of the int8 linear against the f32 linear on the default classifier's shapes
// (not a check: run with --no-skip -tc="int8 timing*" -s).
TEST_CASE("int8 timing: f32 linear vs int8 linear" * doctest::skip()) {
  const int64_t shapes[][3] = {{256, 128, 128}, {256, 128, 512}, {256, 512, 128}, {1024, 128, 128},
                               {256, 128, 384}, {32, 128, 128},  {1, 128, 128}};
  autograd::NoGradGuard ng;
  for (auto& s : shapes) {
    const int64_t M = s[0], K = s[1], N = s[2];
    Generator g(1);
    model::Linear l(K, N, g);
    Tensor x = g.normal({M, K}, 0.0, 1.0, DType::F32);
    auto time = [&](auto&& fn) {
      for (int i = 0; i < 5; ++i) fn();
      double best = 1e30;
      for (int rep = 0; rep < 5; ++rep) {
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < 50; ++i) fn();
        best = std::min(best, std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / 50);
      }
      return best;
    };
    const double tf = time([&] { return linear(x, l.weight, l.bias); });
    l.quantize_int8();
    const double t8 = time([&] { return l.forward(x); });
    std::vector<uint8_t> xq(size_t(M * K));
    std::vector<float> sx(static_cast<size_t>(M));
    std::vector<int32_t> zx(static_cast<size_t>(M)), acc(size_t(M * N));
    std::vector<float> xv = x.to_vector<float>();
    const double tq = time([&] { kc::quantize_rows_u8(xv.data(), M, K, K, 255, xq.data(), sx.data(), zx.data()); });
    const double tg = time([&] { l.int8->gemm_s32(xq.data(), M, acc.data()); });
    MESSAGE(M << "x" << K << "x" << N << ": f32 " << tf << " us, int8 " << t8 << " us (quantize " << tq << ", gemm "
                << tg << "), x" << tf / t8);
  }
}

// Where a 256-token request's time goes (not a check: run with --no-skip
// -tc="int8 timing: default*" -s): the default classifier's forward in f32 and int8, and
// the same forward's Linear GEMMs alone (its shapes at B = 1, S = 256, P = 4 paths).
TEST_CASE("int8 timing: default classifier forward, and its linears alone" * doctest::skip()) {
  autograd::NoGradGuard ng;
  model::ModelConfig cfg;
  cfg.labels = {"negative", "positive"};
  cfg.validate();
  Generator g(0);
  model::BetModel m(cfg, g, DType::F32);
  m.eval();
  const int64_t S = 256;
  std::vector<int32_t> idv(S);
  for (int64_t i = 0; i < S; ++i) idv[size_t(i)] = int32_t(3 + (i * 37) % 250);
  Tensor ids = Tensor::from_vector(idv, {1, S});
  model::SeqContext ctx = m.context({S}, S);
  auto best_of = [](auto&& fn, int n) {
    for (int i = 0; i < 3; ++i) fn();
    std::vector<double> t;
    for (int i = 0; i < n; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      fn();
      t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  // Per layer: stats (fused, N = 4*64+4+1), proj (1 row), qkv (fused), o (P*S rows), cot
  // fc1s (1 row) and fc2s, cot_gate, stats_gate, debias detector.fc1+gate (fused),
  // detector.fc2, basis, ffn.
  const int64_t D = cfg.d_model, nh = cfg.n_harmonics, P = cfg.k_permutations + 1;
  const std::vector<std::array<int64_t, 3>> shapes = {
      {S, D, 261}, {1, 10, D}, {S, D, 3 * D}, {P * S, D, D}, {1, D, D}, {1, D / 2, 1}, {1, D / 2, 1},
      {S, D + 2, D}, {S, D, 1}, {S, D, D / 2 + D}, {S, D / 2, nh}, {S, 2 * nh, D}, {S, D, 4 * D}, {S, 4 * D, D}};
  double lin32 = 0, lin8 = 0;
  for (auto& s : shapes) {
    model::Linear l(s[1], s[2], g);
    Tensor x = g.normal({s[0], s[1]}, 0.0, 1.0, DType::F32);
    lin32 += best_of([&] { return l.forward(x); }, 101);
    l.quantize_int8();
    lin8 += best_of([&] { return l.forward(x); }, 101);
  }
  lin32 *= double(cfg.layers), lin8 *= double(cfg.layers);
  const double f32 = best_of([&] { return m.forward(ids, ctx); }, 41);
  model::quantize_int8(m, [](const std::string& n) { return n == "head"; });
  const double i8 = best_of([&] { return m.forward(ids, ctx); }, 41);
  MESSAGE("forward f32 " << f32 << " ms, int8 " << i8 << " ms (x" << f32 / i8 << "); linears alone: f32 " << lin32
                         << " ms (" << 100 * lin32 / f32 << "% of the f32 forward), int8 " << lin8
                         << " ms; the rest " << f32 - lin32 << " ms; bound with free linears x"
                         << f32 / (f32 - lin32));
}
