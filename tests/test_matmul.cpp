// matmul and linear: f32 values against torch (gen_matmul_index.py) and against a plain
// f64 loop written here, empty dims, error messages, primitive caching. Finite-difference
// gradients and the GPU are the op table's (tests/op_table.h, tests/test_op_table.cpp).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <nlohmann/json.hpp>

#include "bet_config.h"
#include "engine/ops.h"
#include "kernels/cpu/bf16.h"
#include "kernels/cpu/matmul.h"
#include "tests/gradcheck.h"
#include "tests/reference_data.h"

using namespace bet;
using namespace bet::testing;
using nlohmann::json;

namespace {

const json& reference() { return reference_file("matmul_index.json"); }

Tensor from_json(const json& t, DType dt) { return ref_tensor(t, dt); }

// A stored operand, transposed (a non-contiguous view) when the record says so.
Tensor operand(const json& rec, DType dt) {
  Tensor v = from_json(rec.at("value"), dt);
  return rec.at("t").get<bool>() ? transpose(v, -1, -2) : v;
}

// max |x - ref| / max |ref|
double rel_err(const Tensor& x, const Tensor& ref) {
  REQUIRE(x.shape() == ref.shape());
  auto a = x.to_vector<double>(), b = ref.to_vector<double>();
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return num / den;
}

// Plain f64 triple loop over logical elements, independent of the engine's kernels:
// a [..., M, K] @ b [..., K, N] with numpy batch broadcasting.
Tensor naive_matmul(const Tensor& a, const Tensor& b) {
  const int64_t r = std::max(a.dim(), b.dim());
  Shape as(size_t(r - a.dim()), 1), bs(size_t(r - b.dim()), 1);
  as.insert(as.end(), a.shape().begin(), a.shape().end());
  bs.insert(bs.end(), b.shape().begin(), b.shape().end());
  Shape os(static_cast<size_t>(r), 0);
  for (int64_t d = 0; d + 2 < r; ++d) os[d] = std::max(as[d], bs[d]);
  const int64_t M = as[r - 2], K = as[r - 1], N = bs[r - 1];
  os[r - 2] = M;
  os[r - 1] = N;
  auto av = a.to_vector<double>(), bv = b.to_vector<double>();
  std::vector<double> ov(size_t(shape_numel(os)), 0.0);
  const Shape ast = contiguous_strides(as), bst = contiguous_strides(bs);
  int64_t nb = 1;
  for (int64_t d = 0; d + 2 < r; ++d) nb *= os[d];
  for (int64_t bi = 0; bi < nb; ++bi) {
    int64_t rem = bi, ao = 0, bo = 0;
    for (int64_t d = r - 3; d >= 0; --d) {
      int64_t i = rem % os[d];
      rem /= os[d];
      if (as[d] != 1) ao += i * ast[d];
      if (bs[d] != 1) bo += i * bst[d];
    }
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += av[size_t(ao + i * K + k)] * bv[size_t(bo + k * N + j)];
        ov[size_t((bi * M + i) * N + j)] = acc;
      }
  }
  return Tensor::from_vector<double>(ov, os);
}

Tensor rand32(const Shape& shape, uint64_t seed) { return rand64(shape, seed).to(DType::F32); }

}  // namespace

TEST_CASE("matmul with empty dims") {
  Tensor a = leaf(rand64({3, 0}, 30)), b = leaf(rand64({0, 4}, 31));
  Tensor c = matmul(a, b);
  CHECK(c.shape() == Shape{3, 4});
  CHECK(max_abs_diff(c, Tensor::zeros({3, 4}, DType::F64)) == 0.0);
  CHECK(matmul(rand64({0, 3}, 32), rand64({3, 2}, 33)).shape() == Shape{0, 2});
  CHECK(matmul(rand64({2, 0, 3}, 34), rand64({3, 2}, 35)).shape() == Shape{2, 0, 2});
  Tensor z = matmul(Tensor::zeros({3, 0}), Tensor::zeros({0, 4}));  // f32 path
  CHECK(max_abs_diff(z, Tensor::zeros({3, 4})) == 0.0);
}

TEST_CASE("linear equals matmul with the transposed weight plus bias") {
  Tensor x = rand64({2, 3, 4}, 60), w = rand64({5, 4}, 61), b = rand64({5}, 62);
  Tensor ref = naive_matmul(x, transpose(w, 0, 1));
  auto rv = ref.to_vector<double>();
  auto bv = b.to_vector<double>();
  for (size_t i = 0; i < rv.size(); ++i) rv[i] += bv[i % 5];
  CHECK(max_abs_diff(linear(x, w, b), Tensor::from_vector<double>(rv, {2, 3, 5})) < 1e-12);
}

TEST_CASE("matmul and linear f32 forward match torch") {
  const json& ref = reference();
  int n = 0;
  for (const json& c : ref.at("matmul")) {
    Tensor a = operand(c.at("a"), DType::F32), b = operand(c.at("b"), DType::F32);
    Tensor out = matmul(a, b);
    INFO("matmul case " << n << ": " << shape_str(a.shape()) << " @ " << shape_str(b.shape()));
    CHECK(rel_err(out, from_json(c.at("out"), DType::F64)) < 1e-5);
    // f64 (our loop) agrees too
    CHECK(rel_err(matmul(a.to(DType::F64), b.to(DType::F64)), from_json(c.at("out"), DType::F64)) < 1e-12);
    ++n;
  }
  CHECK(n >= 10);
  n = 0;
  for (const json& c : ref.at("linear")) {
    Tensor x = operand(c.at("x"), DType::F32), w = from_json(c.at("w"), DType::F32);
    Tensor b = c.contains("b") ? from_json(c.at("b"), DType::F32) : Tensor();
    INFO("linear case " << n << ": x " << shape_str(x.shape()) << ", w " << shape_str(w.shape()));
    CHECK(rel_err(linear(x, w, b), from_json(c.at("out"), DType::F64)) < 1e-5);
    ++n;
  }
  CHECK(n >= 5);
}

TEST_CASE("oneDNN f32 agrees with a plain f64 loop on larger and odd layouts") {
  struct Case {
    Tensor a, b;
  };
  Tensor big_a = rand32({96, 130}, 70), big_b = rand32({130, 72}, 71);
  std::vector<Case> cases = {
      {big_a, big_b},
      {transpose(rand32({130, 96}, 72), 0, 1), big_b},                             // A^T
      {big_a, transpose(rand32({72, 130}, 73), 0, 1)},                             // B^T
      {rand32({6, 33, 40}, 74), transpose(rand32({6, 50, 40}, 75), -1, -2)},       // K^T
      {rand32({1, 3, 20, 16}, 76), rand32({2, 1, 16, 24}, 77)},                    // two-way broadcast
      {rand32({4, 48, 32}, 78), rand32({32, 40}, 79)},                             // fused batch
      {slice(rand32({20, 64}, 80), 1, 0, 64, 2), rand32({32, 9}, 81)},             // unit stride in neither dim
      {expand(rand32({1, 12, 10}, 82), {5, 12, 10}), rand32({5, 10, 7}, 83)},      // stride-0 batch
      {expand(rand32({12, 10}, 84), {5, 12, 10}), expand(rand32({10, 7}, 85), {5, 10, 7})},  // both expanded
      {expand(rand32({12, 1}, 86), {12, 10}), rand32({10, 7}, 87)},                // stride-0 matrix dim
      {permute(rand32({3, 17, 4, 8}, 88), {0, 2, 1, 3}), transpose(rand32({3, 4, 17, 8}, 89), -1, -2)},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    INFO("case " << i << ": " << shape_str(c.a.shape()) << " @ " << shape_str(c.b.shape()));
    CHECK(rel_err(matmul(c.a, c.b), naive_matmul(c.a, c.b)) < 1e-4);
  }
  // linear with bias over a 3-D input, a token count that is not a multiple of anything
  Tensor x = rand32({3, 37, 64}, 90), w = rand32({48, 64}, 91), b = rand32({48}, 92);
  Tensor ref = naive_matmul(x, transpose(w, 0, 1));
  auto rv = ref.to_vector<double>();
  auto bv = b.to_vector<double>();
  for (size_t i = 0; i < rv.size(); ++i) rv[i] += bv[i % 48];
  CHECK(rel_err(linear(x, w, b), Tensor::from_vector<double>(rv, ref.shape())) < 1e-4);
  // a strided bias (every other element of a longer vector)
  Tensor bs = slice(rand32({96}, 93), 0, 0, 96, 2);
  Tensor lin = linear(x, w, bs);
  CHECK(rel_err(lin, add(linear(x, w), bs)) < 1e-6);
}

TEST_CASE("f32 gradients agree with f64 gradients") {
  // The f32 backward runs on oneDNN with transposed views; f64 on our loop.
  Tensor x64 = rand64({2, 7, 12}, 100), w64 = rand64({9, 12}, 101), b64 = rand64({9}, 102);
  Tensor g64 = rand64({2, 7, 9}, 103);
  std::vector<Tensor> grads[2];
  for (int f = 0; f < 2; ++f) {
    DType dt = f == 0 ? DType::F64 : DType::F32;
    Tensor x = leaf(x64.to(dt).detach()), w = leaf(w64.to(dt).detach()), b = leaf(b64.to(dt).detach());
    sum(mul(linear(x, w, b), g64.to(dt))).backward();
    grads[f] = {x.grad(), w.grad(), b.grad()};
  }
  for (int i = 0; i < 3; ++i) CHECK(rel_err(grads[1][size_t(i)], grads[0][size_t(i)]) < 1e-5);
}

TEST_CASE("matmul errors name the op and the shapes") {
  auto msg = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::string m = msg([] { matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})); });
  CHECK(m.find("matmul") != std::string::npos);
  CHECK(m.find("[2, 3]") != std::string::npos);
  CHECK(m.find("[4, 5]") != std::string::npos);
  m = msg([] { matmul(Tensor::zeros({2, 2, 3}), Tensor::zeros({3, 3, 5})); });
  CHECK(m.find("matmul") != std::string::npos);
  CHECK(m.find("[2, 2, 3]") != std::string::npos);
  CHECK(m.find("[3, 3, 5]") != std::string::npos);
  m = msg([] { matmul(Tensor::zeros({3}), Tensor::zeros({3, 2})); });
  CHECK(m.find("matmul") != std::string::npos);
  CHECK(m.find("[3]") != std::string::npos);
  m = msg([] { matmul(Tensor::zeros({2, 3}), Tensor::zeros({3, 2}, DType::F64)); });
  CHECK(m.find("matmul") != std::string::npos);
  CHECK(m.find("f64") != std::string::npos);
  m = msg([] { linear(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})); });
  CHECK(m.find("linear") != std::string::npos);
  CHECK(m.find("[2, 3]") != std::string::npos);
  CHECK(m.find("[4, 5]") != std::string::npos);
  m = msg([] { linear(Tensor::zeros({2, 3}), Tensor::zeros({4, 3}), Tensor::zeros({3})); });
  CHECK(m.find("linear") != std::string::npos);
  CHECK(m.find("bias") != std::string::npos);
}

TEST_CASE("oneDNN primitives are created once per geometry") {
  Tensor a = rand32({5, 24, 40}, 110), b = rand32({40, 16}, 111);
  matmul(a, b);
  const size_t n = kernels::cpu::matmul_cache_size();
  for (int i = 0; i < 5; ++i) matmul(rand32({5, 24, 40}, 112 + uint64_t(i)), b);
  CHECK(kernels::cpu::matmul_cache_size() == n);
  matmul(a, transpose(rand32({16, 40}, 120), 0, 1));  // a new layout: one new primitive
  CHECK(kernels::cpu::matmul_cache_size() == n + 1);
}

namespace {

Tensor rand_bf16(const Shape& shape, uint64_t seed) { return rand64(shape, seed).to(DType::BF16); }

// Checks a bf16 product `got` against the exact product of its (bf16, so exact in f64)
// operands, `exact`: every element within one bf16 rounding (2^-8 relative) plus an f32
// accumulation bound (K 2^-22 sum |a||b|, `abs_sum`), and nearly every element exactly
// the correctly rounded bf16 of the exact value, which a kernel that rounded partial
// sums to bf16 (or accumulated in bf16) would miss on a large share of them.
void check_bf16_product(const Tensor& got, const Tensor& exact, const Tensor& abs_sum, int64_t K) {
  REQUIRE(got.dtype() == DType::BF16);
  REQUIRE(got.shape() == exact.shape());
  const auto g = got.to_vector<double>(), e = exact.to_vector<double>(), s = abs_sum.to_vector<double>();
  size_t rounded_right = 0, bad = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double tol = std::ldexp(std::abs(e[i]), -8) + double(K) * std::ldexp(s[i], -22);
    if (!(std::abs(g[i] - e[i]) <= tol) && bad++ < 5) FAIL_CHECK("element " << i << ": " << g[i] << " vs exact " << e[i]);
    rounded_right += double(float(kernels::cpu::BF16(e[i]))) == g[i] ? 1 : 0;
  }
  CHECK(bad == 0);
  CHECK(double(rounded_right) >= 0.98 * double(g.size()));
}

Tensor f64_abs(const Tensor& t) { return abs(t.to(DType::F64)); }

}  // namespace

// Both paths where this CPU has both (oneDNN's bf16 primitive needs bf16 instructions),
// whichever the automatic choice is.
static void bf16_layout_cases() {
  struct Case {
    Tensor a, b;
  };
  std::vector<Case> cases = {
      {rand_bf16({1, 1}, 200), rand_bf16({1, 1}, 201)},                                    // 1x1
      {rand_bf16({7, 13}, 202), rand_bf16({13, 5}, 203)},                                  // odd sizes
      {rand_bf16({7, 13, 5}, 204), rand_bf16({5, 3}, 205)},                                // batched, shared b
      {rand_bf16({1, 64}, 206), rand_bf16({64, 1}, 207)},                                  // a dot product
      {rand_bf16({96, 520}, 208), rand_bf16({520, 72}, 209)},                              // K over several blocks
      {transpose(rand_bf16({130, 96}, 210), 0, 1), rand_bf16({130, 72}, 211)},             // A^T
      {rand_bf16({96, 130}, 212), transpose(rand_bf16({72, 130}, 213), 0, 1)},             // B^T
      {transpose(rand_bf16({33, 17}, 214), 0, 1), transpose(rand_bf16({9, 33}, 215), 0, 1)},  // both
      {rand_bf16({6, 33, 40}, 216), transpose(rand_bf16({6, 50, 40}, 217), -1, -2)},       // K^T, batched
      {rand_bf16({1, 3, 20, 16}, 218), rand_bf16({2, 1, 16, 24}, 219)},                    // two-way broadcast
      {slice(rand_bf16({20, 64}, 220), 1, 0, 64, 2), rand_bf16({32, 9}, 221)},             // unit stride in neither dim
      {expand(rand_bf16({1, 12, 10}, 222), {5, 12, 10}), rand_bf16({5, 10, 7}, 223)},      // stride-0 batch
      {expand(rand_bf16({12, 10}, 224), {5, 12, 10}), expand(rand_bf16({10, 7}, 225), {5, 10, 7})},  // both expanded
      {expand(rand_bf16({12, 1}, 226), {12, 10}), rand_bf16({10, 7}, 227)},                // stride-0 matrix dim
      {permute(rand_bf16({3, 17, 4, 8}, 228), {0, 2, 1, 3}), transpose(rand_bf16({3, 4, 17, 8}, 229), -1, -2)},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    INFO("case " << i << ": " << shape_str(c.a.shape()) << " @ " << shape_str(c.b.shape()));
    REQUIRE(c.a.dtype() == DType::BF16);
    const int64_t K = c.a.shape()[c.a.dim() - 1];
    check_bf16_product(matmul(c.a, c.b), naive_matmul(c.a.to(DType::F64), c.b.to(DType::F64)),
                       naive_matmul(f64_abs(c.a), f64_abs(c.b)), K);
  }
  // linear (the kernel's bias): a 3-D input, a token count that is not a multiple of
  // anything; a dense bf16 bias and a strided one; no bias.
  Tensor x = rand_bf16({3, 37, 64}, 230), w = rand_bf16({48, 64}, 231);
  Tensor dense_bias = rand_bf16({48}, 232), strided_bias = slice(rand_bf16({96}, 233), 0, 0, 96, 2);
  const Tensor exact = naive_matmul(x.to(DType::F64), transpose(w.to(DType::F64), 0, 1));
  const Tensor abs_sum = naive_matmul(f64_abs(x), transpose(f64_abs(w), 0, 1));
  for (const Tensor& bias : {Tensor(), dense_bias, strided_bias}) {
    INFO("linear, bias " << (bias.defined() ? shape_str(bias.shape()) : std::string("none")));
    auto ev = exact.to_vector<double>(), sv = abs_sum.to_vector<double>();
    if (bias.defined()) {
      const auto bv = bias.to_vector<double>();
      for (size_t i = 0; i < ev.size(); ++i) ev[i] += bv[i % 48], sv[i] += std::abs(bv[i % 48]);
    }
    check_bf16_product(linear(x, w, bias), Tensor::from_vector<double>(ev, exact.shape()),
                       Tensor::from_vector<double>(sv, exact.shape()), 64);
  }
  // K = 0: zeros (or the bias).
  Tensor z = matmul(Tensor::zeros({3, 0}, DType::BF16), Tensor::zeros({0, 4}, DType::BF16));
  CHECK(z.dtype() == DType::BF16);
  CHECK(max_abs_diff(z.to(DType::F64), Tensor::zeros({3, 4}, DType::F64)) == 0.0);
  // Repeatable: the same call gives the same bits.
  Tensor a = rand_bf16({4, 40, 72}, 234), b = rand_bf16({72, 24}, 235);
  CHECK(matmul(a, b).to_vector<float>() == matmul(a, b).to_vector<float>());
}

TEST_CASE("bf16 matmul: the exact product of the bf16 operands, rounded once, on every layout") {
  using kernels::cpu::Bf16MatmulMode;
  MESSAGE("bf16 matmul path (automatic): " << std::string(kernels::cpu::bf16_matmul_path()));
  for (Bf16MatmulMode m : {Bf16MatmulMode::OneDNN, Bf16MatmulMode::Emulate}) {
    kernels::cpu::set_bf16_matmul_mode(m);
    const std::string path = kernels::cpu::bf16_matmul_path();
    INFO("path " << path);
    if (m == Bf16MatmulMode::Emulate) CHECK(!kernels::cpu::bf16_matmul_native());
    if (m == Bf16MatmulMode::OneDNN && !kernels::cpu::bf16_matmul_native()) {
      MESSAGE("no bf16 instructions: only the emulation is checked");
      continue;
    }
    bf16_layout_cases();
  }
  kernels::cpu::set_bf16_matmul_mode(Bf16MatmulMode::Auto);
}

TEST_CASE("the bf16 matmul path matches the CPU's flags") {
  using kernels::cpu::Bf16MatmulMode;
  kernels::cpu::set_bf16_matmul_mode(Bf16MatmulMode::Auto);
  const std::string path = kernels::cpu::bf16_matmul_path();
  const bool native = kernels::cpu::bf16_matmul_native();
  MESSAGE("bf16 matmul path: " << path);
  CHECK(native == (path.rfind("onednn-bf16", 0) == 0));
  CHECK(!native == (path.find("f32 emulation") == 0));
  // Forced: oneDNN wherever the instructions are, the emulation always.
  kernels::cpu::set_bf16_matmul_mode(Bf16MatmulMode::OneDNN);
  const bool can_native = kernels::cpu::bf16_matmul_native();
  const std::string forced_path = kernels::cpu::bf16_matmul_path();
  kernels::cpu::set_bf16_matmul_mode(Bf16MatmulMode::Emulate);
  CHECK(!kernels::cpu::bf16_matmul_native());
  CHECK(std::string(kernels::cpu::bf16_matmul_path()).find("f32 emulation") == 0);
  kernels::cpu::set_bf16_matmul_mode(Bf16MatmulMode::Auto);
  CHECK((!native || can_native));  // the automatic choice never goes native without them
  CHECK(can_native == (forced_path.rfind("onednn-bf16", 0) == 0));
  if (!can_native) CHECK(path == "f32 emulation (no bf16 instructions)");
  if (path.find("amx") != std::string::npos) CHECK(native);  // AMX: always oneDNN
  // oneDNN's ISA can be capped for a run (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA, how the
  // emulation is exercised on a bf16 machine); then the flags only bound the path.
  const bool capped = std::getenv("ONEDNN_MAX_CPU_ISA") || std::getenv("DNNL_MAX_CPU_ISA");
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  bool have_flags_line = false, avx512_bf16 = false, amx_bf16 = false;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    have_flags_line = true;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string w; words >> w;) {
      avx512_bf16 = avx512_bf16 || w == "avx512_bf16";
      amx_bf16 = amx_bf16 || w == "amx_bf16";
    }
    break;  // the first CPU's flags
  }
  if (!have_flags_line) {
    MESSAGE("no /proc/cpuinfo flags: only the path's own consistency is checked");
    return;
  }
  INFO("cpu flags: avx512_bf16 " << avx512_bf16 << ", amx_bf16 " << amx_bf16);
  if (capped) CHECK((!can_native || avx512_bf16 || amx_bf16));
  else CHECK(can_native == (avx512_bf16 || amx_bf16));
  // AMX needs the OS's consent as well as the flag, so the flag alone does not imply it.
  if (path.find("amx") != std::string::npos || forced_path.find("amx") != std::string::npos) CHECK(amx_bf16);
}
