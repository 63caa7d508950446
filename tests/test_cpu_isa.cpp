// The AVX2 and AVX-512 forms of our own CPU kernels (kernels/cpu/isa.h): softmax,
// log_softmax and cross_entropy_sum, layer_norm, gelu, rope, dropout and AdamW give the
// same bits on both paths, forward and backward, f32 and f64, over the op table's samples
// of the rows marked isa_variants (tests/op_table.h) and over row lengths around the
// vector widths (below, at and above 16, odd, long). Every kernel is bit-identical: the
// elementwise maps by construction (the same scalar expressions, lane-wise, with the
// same FMA contractions), the row reductions because both forms accumulate in 16 fixed
// partial sums combined in a fixed tree (kernels/cpu/vec_math.h, vr::Acc16), and
// dropout's Philox words because they are integer arithmetic. So no tolerance is
// needed anywhere here.
//
// On a CPU without AVX-512 F/BW/VL/DQ the comparisons are skipped (doctest counts them
// as skipped, and a message says so); the setting and its errors are checked anywhere.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"
#include "kernels/cpu/isa.h"
#include "tests/gpu_op_harness.h"
#include "tests/op_table.h"
#include "tests/op_table_check.h"

using namespace bet;
using kernels::cpu::CpuIsa;
using kernels::cpu::CpuIsaMode;
using kernels::cpu::IsaKernel;
using kernels::cpu::ScopedCpuIsa;

namespace {

bool have_avx512() { return kernels::cpu::cpu_has_avx512(); }

// The decorator of the comparison cases: skipped where there is no AVX-512, said once.
doctest::skip avx512_cases() {
  const bool none = !have_avx512();
  static bool said = false;
  if (none && !said) {
    said = true;
    std::fprintf(stderr, "no AVX-512 (avx512f/bw/vl/dq): the AVX-512 against AVX2 cases are skipped\n");
  }
  return doctest::skip(none);
}

// Empty when a and b hold the same bits (shape, dtype and every element), else where not.
std::string bit_diff(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return "defined on one path only";
  if (!a.defined()) return "";
  if (a.shape() != b.shape()) return "shape " + shape_str(a.shape()) + " vs " + shape_str(b.shape());
  if (a.dtype() != b.dtype()) return std::string("dtype ") + dtype_name(a.dtype()) + " vs " + dtype_name(b.dtype());
  auto first_diff = [&](auto tag) -> std::string {
    using T = decltype(tag);
    const std::vector<T> x = a.to_vector<T>(), y = b.to_vector<T>();
    for (size_t i = 0; i < x.size(); ++i)
      if (std::memcmp(&x[i], &y[i], sizeof(T)) != 0) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "element %zu of %zu: avx512 %.17g, avx2 %.17g", i, x.size(), double(x[i]),
                      double(y[i]));
        return buf;
      }
    return "";
  };
  switch (a.dtype()) {
    case DType::F32: return first_diff(float{});
    case DType::F64: return first_diff(double{});
    case DType::I32: return first_diff(int32_t{});
    default: return first_diff(int64_t{});
  }
}

// Runs `c` on the CPU in `dt` with every kernel on `isa`: output and input gradients.
test::gpu::RunResult run_on(CpuIsaMode isa, const test::gpu::OpCase& c, const std::vector<Tensor>& base, DType dt) {
  ScopedCpuIsa scope(isa);
  return test::gpu::run(c, base, Device::cpu(), dt, c.backward);
}

// The case on both paths, f32 and f64: the same bits, forward and backward.
int check_same_bits(const test::gpu::OpCase& c) {
  int compared = 0;
  for (DType dt : {DType::F32, DType::F64}) {
    CAPTURE(dtype_name(dt));
    const std::vector<Tensor> base = c.make();
    const test::gpu::RunResult a = run_on(CpuIsaMode::Avx512, c, base, dt);
    const test::gpu::RunResult b = run_on(CpuIsaMode::Avx2, c, base, dt);
    const std::string f = bit_diff(a.out, b.out);
    if (!f.empty()) FAIL_CHECK(c.name << " (" << dtype_name(dt) << "): forward: " << f);
    REQUIRE(a.grads.size() == b.grads.size());
    for (size_t i = 0; i < a.grads.size(); ++i) {
      const std::string g = bit_diff(a.grads[i], b.grads[i]);
      if (!g.empty()) FAIL_CHECK(c.name << " (" << dtype_name(dt) << "): grad of input " << i << ": " << g);
    }
    ++compared;
  }
  return compared;
}

test::gpu::OpCase make_case(std::string name, std::function<std::vector<Tensor>()> make,
                            std::function<Tensor(const std::vector<Tensor>&)> fn, bool backward = true) {
  test::gpu::OpCase c;
  c.name = std::move(name);
  c.make = std::move(make);
  c.fn = std::move(fn);
  c.backward = backward;
  return c;
}

// Row lengths around the vector widths (8 and 16 f32 lanes, 4 and 8 f64), the softmax
// chunk (256) and long rows.
const std::vector<int64_t> kLengths = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 64, 100, 255, 256, 257, 513, 2000};

Tensor wide(const Shape& s, uint64_t seed, double lo = -8.0, double hi = 8.0) { return optable::U(s, seed, lo, hi); }

}  // namespace

TEST_CASE("BET_CPU_ISA: values, and errors that name the variable") {
  using kernels::cpu::parse_cpu_isa;
  CHECK(parse_cpu_isa(nullptr, false) == CpuIsaMode::Auto);
  CHECK(parse_cpu_isa("", true) == CpuIsaMode::Auto);
  CHECK(parse_cpu_isa("auto", false) == CpuIsaMode::Auto);
  CHECK(parse_cpu_isa("avx2", false) == CpuIsaMode::Avx2);
  CHECK(parse_cpu_isa("avx2", true) == CpuIsaMode::Avx2);
  CHECK(parse_cpu_isa("avx512", true) == CpuIsaMode::Avx512);
  auto error_of = [](const char* v, bool has) -> std::string {
    try {
      parse_cpu_isa(v, has);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  // avx512 where the CPU lacks it: an error naming the variable, not a SIGILL later.
  const std::string missing = error_of("avx512", false);
  CHECK(missing.find("BET_CPU_ISA=avx512") != std::string::npos);
  CHECK(missing.find("AVX-512") != std::string::npos);
  for (const char* bad : {"sse4", "AVX2", "avx-512", "avx512 "}) {
    CAPTURE(bad);
    const std::string e = error_of(bad, true);
    CHECK(e.find("BET_CPU_ISA") != std::string::npos);
    CHECK(e.find("avx2, avx512, auto") != std::string::npos);
  }
}

TEST_CASE("the kernel ISA: forced in-process, restored after the scope, reported") {
  const CpuIsaMode before = kernels::cpu::cpu_isa_mode();
  MESSAGE("kernel ISA: " << kernels::cpu::kernel_isa_summary());
  {
    ScopedCpuIsa avx2(CpuIsaMode::Avx2);
    for (int k = 0; k < kernels::cpu::kIsaKernels; ++k) CHECK(kernels::cpu::kernel_isa(IsaKernel(k)) == CpuIsa::Avx2);
    CHECK(kernels::cpu::kernel_isa_summary().rfind("avx2", 0) == 0);
  }
  CHECK(kernels::cpu::cpu_isa_mode() == before);
  if (have_avx512()) {
    ScopedCpuIsa avx512(CpuIsaMode::Avx512);
    for (int k = 0; k < kernels::cpu::kIsaKernels; ++k)
      CHECK(kernels::cpu::kernel_isa(IsaKernel(k)) == CpuIsa::Avx512);
    CHECK(kernels::cpu::kernel_isa_summary().rfind("avx512", 0) == 0);
  } else {
    // Forcing it where the CPU lacks it throws, and leaves the setting as it was.
    CHECK_THROWS_AS(ScopedCpuIsa(CpuIsaMode::Avx512), Error);
    CHECK(kernels::cpu::cpu_isa_mode() == before);
    {
      ScopedCpuIsa automatic(CpuIsaMode::Auto);
      for (int k = 0; k < kernels::cpu::kIsaKernels; ++k)
        CHECK(kernels::cpu::kernel_isa(IsaKernel(k)) == CpuIsa::Avx2);
    }
  }
  CHECK(kernels::cpu::cpu_isa_mode() == before);
}

TEST_CASE("the op table marks the rows whose CPU kernels have AVX-512 twins") {
  std::vector<std::string> marked;
  for (const optable::OpInfo& op : optable::op_table())
    if (op.isa_variants) marked.push_back(op.name);
  const std::vector<std::string> want = {"gelu", "softmax", "log_softmax", "layer_norm", "cross_entropy_sum", "rope",
                                         "dropout"};
  for (const std::string& w : want) {
    CAPTURE(w);
    CHECK(std::find(marked.begin(), marked.end(), w) != marked.end());
  }
  CHECK(marked.size() == want.size());
}

TEST_CASE("AVX-512 against AVX2: the op table's samples of the isa_variants rows, same bits" * avx512_cases()) {
  int n = 0;
  for (const optable::OpInfo& op : optable::op_table()) {
    if (!op.isa_variants) continue;
    for (const optable::Sample& s : op.samples) {
      CAPTURE(optable::case_name(op, s));
      n += check_same_bits(optable::gpu_case(op, s));
    }
  }
  MESSAGE(n << " sample x dtype comparisons, forward and backward");
  CHECK(n > 0);
}

TEST_CASE("AVX-512 against AVX2: softmax and log_softmax rows of every length, masked or not, same bits" *
          avx512_cases()) {
  uint64_t seed = 100;
  for (int64_t n : kLengths) {
    for (bool log : {false, true}) {
      const std::string nm = std::string(log ? "log_softmax" : "softmax") + " [5, " + std::to_string(n) + "]";
      auto f = [log](const std::vector<Tensor>& x) {
        const Tensor m = x.size() > 1 ? x[1] : Tensor();
        return log ? log_softmax(x[0], -1, m) : softmax(x[0], -1, m);
      };
      const uint64_t s0 = seed++;
      check_same_bits(make_case(nm, [=] { return std::vector<Tensor>{wide({5, n}, s0, -30, 30)}; }, f));
      // A broadcast mask (row 1 of it fully masked); the log form's -inf entries
      // compare as bits like the rest.
      check_same_bits(make_case(
          nm + " masked",
          [=] {
            std::vector<int64_t> m = optable::mask01({1, 2, n}, s0 + 1000, 0.6).to_vector<int64_t>();
            for (int64_t j = 0; j < n; ++j) m[size_t(n + j)] = 0;
            return std::vector<Tensor>{wide({3, 2, n}, s0 + 2000), Tensor::from_vector(m, {1, 2, n})};
          },
          f));
    }
    // softmax along a non-last dim (the op transposes; the kernel sees a contiguous copy)
    check_same_bits(make_case("softmax dim 0 [" + std::to_string(n) + ", 3]",
                              [=] { return std::vector<Tensor>{wide({n, 3}, seed + 3000)}; },
                              [](const std::vector<Tensor>& x) { return softmax(x[0], 0); }));
  }
  // Large rows and many rows (the parallel split)
  check_same_bits(make_case("softmax [512, 128]", [] { return std::vector<Tensor>{wide({512, 128}, 7)}; },
                            [](const std::vector<Tensor>& x) { return softmax(x[0], -1); }));
}

TEST_CASE("AVX-512 against AVX2: cross_entropy_sum of every class count, same bits" * avx512_cases()) {
  uint64_t seed = 400;
  for (int64_t C : kLengths) {
    const uint64_t s0 = seed++;
    check_same_bits(make_case(
        "cross_entropy_sum [9, " + std::to_string(C) + "]",
        [=] {
          Tensor t = optable::ids({9}, C, s0 + 500);
          t = masked_fill(t, optable::mask01({9}, s0 + 600, 0.2), -100.0);
          return std::vector<Tensor>{wide({9, C}, s0, -20, 20), t};
        },
        [](const std::vector<Tensor>& x) { return cross_entropy_sum(x[0], x[1]); }));
  }
}

TEST_CASE("AVX-512 against AVX2: layer_norm of every width, affine or not, same bits" * avx512_cases()) {
  uint64_t seed = 700;
  for (int64_t D : kLengths) {
    const uint64_t s0 = seed++;
    const std::string d = std::to_string(D);
    auto ln = [](bool w, bool b) {
      return [w, b](const std::vector<Tensor>& x) {
        return layer_norm(x[0], w ? x[1] : Tensor(), b ? x[2] : Tensor(), 1e-5);
      };
    };
    auto in = [=] {
      return std::vector<Tensor>{wide({37, D}, s0, 1.0, 6.0), wide({D}, s0 + 1, 0.5, 1.5), wide({D}, s0 + 2)};
    };
    check_same_bits(make_case("layer_norm [37, " + d + "] affine", in, ln(true, true)));
    check_same_bits(make_case("layer_norm [37, " + d + "] weight only", in, ln(true, false)));
    check_same_bits(make_case("layer_norm [37, " + d + "] plain", in, ln(false, false)));
    check_same_bits(make_case("layer_norm [37, " + d + "] bias only", in, ln(false, true)));
  }
  // Many rows: several dw/db blocks; a transposed (non-contiguous) input.
  check_same_bits(make_case(
      "layer_norm [1100, 40]", [] { return std::vector<Tensor>{wide({1100, 40}, 9), wide({40}, 10), wide({40}, 11)}; },
      [](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2]); }));
  check_same_bits(make_case(
      "layer_norm transposed [33, 20]", [] { return std::vector<Tensor>{wide({33, 20}, 12), wide({33}, 13), wide({33}, 14)}; },
      [](const std::vector<Tensor>& x) { return layer_norm(transpose(x[0], 0, 1), x[1], x[2]); }));
}

TEST_CASE("AVX-512 against AVX2: gelu of every length, contiguous or strided, same bits" * avx512_cases()) {
  uint64_t seed = 900;
  for (int64_t n : kLengths) {
    const uint64_t s0 = seed++;
    check_same_bits(make_case("gelu [" + std::to_string(n) + "]",
                              [=] { return std::vector<Tensor>{wide({n}, s0, -6, 6)}; },
                              [](const std::vector<Tensor>& x) { return gelu(x[0]); }));
    check_same_bits(make_case("gelu transposed [" + std::to_string(n) + ", 3]",
                              [=] { return std::vector<Tensor>{wide({n, 3}, s0 + 50, -6, 6)}; },
                              [](const std::vector<Tensor>& x) { return gelu(transpose(x[0], 0, 1)); }));
  }
  check_same_bits(make_case("gelu [300, 257]", [] { return std::vector<Tensor>{wide({300, 257}, 3, -10, 10)}; },
                            [](const std::vector<Tensor>& x) { return gelu(x[0]); }));
}

TEST_CASE("AVX-512 against AVX2: dropout at every length and counter offset, same bits" * avx512_cases()) {
  for (int64_t n : {1, 3, 15, 16, 17, 63, 64, 65, 100, 1000, 40000}) {
    for (uint64_t offset : {0, 1, 2, 3, 5, 61, 4096 + 7}) {
      for (double p : {0.1, 0.5}) {
        const std::string nm = "dropout [" + std::to_string(n) + "] offset " + std::to_string(offset) + " p " +
                               optable::num(p);
        check_same_bits(make_case(
            nm, [=] { return std::vector<Tensor>{wide({n}, uint64_t(n) + offset)}; },
            [=](const std::vector<Tensor>& x) { return dropout(x[0], p, true, 1234567, offset); }));
      }
    }
  }
  // Counters crossing 2^32 blocks inside one 16-block draw (the carry into the high
  // word): on each path, the kept elements are exactly those of the scalar Philox.
  for (CpuIsaMode isa : {CpuIsaMode::Avx512, CpuIsaMode::Avx2}) {
    ScopedCpuIsa scope(isa);
    const uint64_t seed = 0x123456789abcdefULL, offset = (uint64_t(1) << 34) - 37;
    const std::vector<float> y = dropout(Tensor::ones({300}), 0.5, true, seed, offset).to_vector<float>();
    int64_t mismatches = 0;
    for (size_t i = 0; i < y.size(); ++i)
      mismatches += (y[i] != 0.0f) != (double(philox_uniform(seed, offset + i)) >= 0.5);
    CAPTURE(kernels::cpu::isa_name(isa == CpuIsaMode::Avx512 ? CpuIsa::Avx512 : CpuIsa::Avx2));
    CHECK(mismatches == 0);
  }
  // A seed whose key words are both nonzero, and a counter crossing 2^32 blocks.
  check_same_bits(make_case(
      "dropout, counter across 2^32 blocks", [] { return std::vector<Tensor>{wide({5000}, 77)}; },
      [](const std::vector<Tensor>& x) { return dropout(x[0], 0.3, true, 0x123456789abcdefULL, (1ULL << 34) - 4000); }));
}

TEST_CASE("AVX-512 against AVX2: rope of every head width, integral or fractional positions, same bits" *
          avx512_cases()) {
  uint64_t seed = 1200;
  for (int64_t hd : {2, 4, 6, 14, 16, 30, 32, 34, 64, 66, 128}) {
    const uint64_t s0 = seed++;
    const std::string h = std::to_string(hd);
    check_same_bits(make_case(
        "rope [2, 3, 5, " + h + "] positions [2, 5]",
        [=] { return std::vector<Tensor>{wide({2, 3, 5, hd}, s0), optable::ids({2, 5}, 40, s0 + 1)}; },
        [](const std::vector<Tensor>& x) { return rope(x[0], x[1]); }));
    check_same_bits(make_case(
        "rope [2, 3, 5, " + h + "] fractional positions, transposed x",
        [=] { return std::vector<Tensor>{wide({2, 5, 3, hd}, s0 + 2), wide({2, 5}, s0 + 3, 0.0, 90.0)}; },
        [](const std::vector<Tensor>& x) { return rope(transpose(x[0], 1, 2), x[1], 500.0); }));
  }
}

TEST_CASE("AVX-512 against AVX2: AdamW steps, same parameters and moments" * avx512_cases()) {
  for (DType dt : {DType::F32, DType::F64}) {
    for (double beta1 : {0.9, 0.3}) {  // both forms of the lerp (weight below and above 0.5)
      CAPTURE(dtype_name(dt));
      CAPTURE(beta1);
      auto run = [&](CpuIsaMode isa) {
        ScopedCpuIsa scope(isa);
        std::vector<Tensor> ps;
        uint64_t seed = 50;
        for (int64_t n : {1, 7, 15, 16, 17, 33, 1000, 70001}) ps.push_back(wide({n}, seed++, -1, 1).to(dt).set_requires_grad());
        optim::AdamWOptions o;
        o.lr = 0.01;
        o.beta1 = beta1;
        o.weight_decay = 0.1;
        optim::AdamW opt(ps, o);
        for (int step = 0; step < 3; ++step) {
          for (size_t i = 0; i < ps.size(); ++i) ps[i].set_grad(wide(ps[i].shape(), 1000 + 10 * uint64_t(step) + i, -2, 2).to(dt));
          opt.step();
        }
        std::vector<Tensor> out = ps;
        for (const auto& [name, t] : opt.state()) out.push_back(t);
        return out;
      };
      const std::vector<Tensor> a = run(CpuIsaMode::Avx512), b = run(CpuIsaMode::Avx2);
      REQUIRE(a.size() == b.size());
      for (size_t i = 0; i < a.size(); ++i) {
        CAPTURE(i);
        const std::string d = bit_diff(a[i].detach(), b[i].detach());
        CHECK_MESSAGE(d.empty(), d);
      }
    }
  }
}
