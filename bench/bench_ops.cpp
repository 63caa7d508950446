#include "bench/bench_ops.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.h>

#include "bench/machine_baselines.h"
#include "engine/ops.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"
#include "kernels/cpu/isa.h"
#include "platform/threads.h"
#include "tests/op_table.h"

namespace bet::bench {

namespace {

constexpr double kMatmulTarget = 0.85;  // of oneDNN sgemm, same shape
constexpr double kMemoryTarget = 0.70;  // of a copy moving the same bytes

std::string dims(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t x : d) {
    if (!s.empty()) s += 'x';
    s += std::to_string(x);
  }
  return s;
}

// One table row; every row sets every column so the column order is fixed by the first.
struct RowSpec {
  std::string name, shape, unit;
  double ours = NAN;
  std::string baseline;
  double baseline_value = NAN;
  double target = NAN;     // NaN: informational row (no pass/short)
  double peak_frac = NAN;  // matmul rows: ours / FMA peak
  double ms = NAN;         // median milliseconds per call
  std::string error;
};

RowSpec spec(std::string name, std::string shape, std::string unit) {
  RowSpec s;
  s.name = std::move(name);
  s.shape = std::move(shape);
  s.unit = std::move(unit);
  return s;
}

Row to_row(const RowSpec& s) {
  auto num = [](double v) { return std::isnan(v) ? Value() : Value(v); };
  double ratio = (std::isnan(s.ours) || std::isnan(s.baseline_value) || s.baseline_value <= 0)
                     ? NAN
                     : s.ours / s.baseline_value;
  std::string status = !s.error.empty()            ? "error: " + s.error
                       : std::isnan(s.target)      ? "-"
                       : std::isnan(ratio)         ? "-"
                       : ratio >= s.target         ? "pass"
                                                   : "short";
  Row r;
  r.set("name", s.name)
      .set("shape", s.shape)
      .set("unit", s.unit)
      .set("ours", num(s.ours))
      .set("baseline", s.baseline.empty() ? Value() : Value(s.baseline))
      .set("baseline_value", num(s.baseline_value))
      .set("ratio", num(ratio))
      .set("target", num(s.target))
      .set("status", status)
      .set("peak_frac", num(s.peak_frac))
      .set("ms", num(s.ms));
  return r;
}

Tensor randn(const Shape& shape, uint64_t seed, bool requires_grad) {
  Generator g(seed);
  Tensor t = g.normal(shape, 0.0, 1.0);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

struct Bench {
  TimingPolicy pol;
  double fma_peak = NAN;  // best of the vector widths, all threads
  Table table;
  bool failed = false;

  // Runs `measure` (which fills the spec's numbers); an exception becomes an error row.
  void row(RowSpec spec, const std::function<void(RowSpec&)>& measure) {
    try {
      measure(spec);
    } catch (const std::exception& e) {
      spec.error = e.what();
      failed = true;
    }
    table.add(to_row(spec));
  }

  // Engine matmul-like op against dnnl_sgemm on the same shape (for a batch, the faster
  // of its two calling patterns).
  void matmul_row(const std::string& name, int64_t batch, int64_t M, int64_t N, int64_t K,
                  bool trans_b, const std::string& shape, const std::function<void()>& op) {
    RowSpec s = spec(name, shape, "GFLOP/s");
    s.target = kMatmulTarget;
    row(s, [&](RowSpec& r) {
      SgemmBench base(batch, M, N, K, trans_b);
      std::string kind = trans_b ? "dnnl_sgemm NT" : "dnnl_sgemm NN";
      std::vector<std::function<void()>> fns = {op, [&] { base.run(); }};
      // A batch has two ways to call sgemm; the baseline is whichever is faster here.
      if (batch > 1) fns.push_back([&] { base.run_batch_parallel(); });
      auto t = time_interleaved(fns, pol);
      r.ms = t[0].median_s * 1e3;
      r.ours = base.flops() / t[0].median_s * 1e-9;
      size_t best = 1;
      if (batch > 1) {
        best = t[2].median_s < t[1].median_s ? 2 : 1;
        kind += best == 2 ? " x" + std::to_string(batch) + ", batch over threads"
                          : " x" + std::to_string(batch) + ", looped";
      }
      r.baseline = kind;
      r.baseline_value = base.flops() / t[best].median_s * 1e-9;
      r.peak_frac = r.ours / fma_peak;
    });
  }

  // Memory-bound op against a copy that reads and writes the same number of bytes
  // (so both work on the same cache level).
  void memory_row(const std::string& name, const std::string& shape, double bytes,
                  const std::function<void()>& op) {
    RowSpec s = spec(name, shape, "GB/s");
    s.baseline = "copy, same bytes";
    s.target = kMemoryTarget;
    row(s, [&](RowSpec& r) {
      CopyBench base(size_t(bytes / 2));
      auto [t, tb] = time_pair(op, [&] { base.run(); }, pol);
      r.ms = t.median_s * 1e3;
      r.ours = bytes / t.median_s * 1e-9;
      r.baseline_value = base.bytes_moved() / tb.median_s * 1e-9;
    });
  }
};

void machine_rows(Bench& b, const BenchOptions& opts) {
  int nt = platform::num_threads();
  std::string all = std::to_string(nt) + (nt == 1 ? " thread" : " threads");
  double peak = 0;
  for (int width : {256, 512}) {
    if (width == 512 && !cpu_has_avx512f()) continue;
    std::string isa = width == 256 ? "avx2" : "avx512";
    b.row(spec("fma peak " + isa, all, "GFLOP/s"), [&](RowSpec& r) {
      r.ours = fma_peak_gflops(0, width, b.pol);
      peak = std::max(peak, r.ours);
    });
    if (nt > 1)
      b.row(spec("fma peak " + isa, "1 thread", "GFLOP/s"),
            [&](RowSpec& r) { r.ours = fma_peak_gflops(1, width, b.pol); });
  }
  b.fma_peak = peak > 0 ? peak : NAN;

  size_t mb = opts.quick ? 64 : 256;
  std::string arr = std::to_string(mb) + " MB -> " + std::to_string(mb) + " MB";
  b.row(spec("copy (stream)", arr, "GB/s"),
        [&](RowSpec& r) { r.ours = copy_gbps(mb << 20, b.pol); });
  b.row(spec("copy (memcpy)", arr, "GB/s"),
        [&](RowSpec& r) { r.ours = memcpy_gbps(mb << 20, b.pol); });

  int64_t n = opts.quick ? 1024 : 2048;
  b.row(spec("dnnl_sgemm", dims({n, n}) + " @ " + dims({n, n}), "GFLOP/s"), [&](RowSpec& r) {
    r.ours = sgemm_gflops(1, n, n, n, false, b.pol);
    r.peak_frac = r.ours / b.fma_peak;
  });
}

// The op rows: the bench cases of the op table (tests/op_table.h), products first. The
// inputs are f32, floating ones requiring a gradient (the op records its backward, as in
// training).
void op_rows(Bench& b) {
  using optable::OpInfo;
  for (const bool gemm : {true, false})
    for (const OpInfo& op : optable::op_table())
      for (const optable::BenchCase& c : op.bench) {
        if (c.cost.gemm != gemm) continue;
        optable::Inputs in = c.make();
        for (size_t i = 0; i < in.size(); ++i)
          if (is_floating(in[i].dtype()) && !op.is_nondiff(i)) in[i].set_requires_grad(true);
        auto run = [&] { Tensor y = optable::run_bench(op, c, in); };
        if (gemm)
          b.matmul_row(c.label, c.cost.batch, c.cost.M, c.cost.N, c.cost.K, c.cost.trans_b, c.shape, run);
        else
          b.memory_row(c.label, c.shape, c.cost.bytes, run);
      }
}

// Not an op of engine/ops.h: the optimiser step.
void optimizer_rows(Bench& b) {
  const double f = sizeof(float);
  {
    // A transformer-sized parameter set (~4.2M): eight 1024x512 matrices and their biases.
    std::vector<Tensor> params;
    int64_t n = 0;
    for (int i = 0; i < 8; ++i) {
      for (Shape s : {Shape{1024, 512}, Shape{1024}}) {
        Tensor p = randn(s, 20 + uint64_t(params.size()), true);
        p.set_grad(mul(randn(s, 100 + uint64_t(params.size()), false), 1e-3));
        n += p.numel();
        params.push_back(p);
      }
    }
    optim::AdamW opt(params, optim::AdamWOptions{});
    // Minimal traffic of a fused step: read p, g, m, v; write p, m, v.
    b.memory_row("adamw step", std::to_string(n) + " params, 16 tensors", 7.0 * double(n) * f,
                 [&] { opt.step(); });
  }
}

// Our own CPU kernels on their AVX-512 path against their AVX2 twin (kernels/cpu/isa.h),
// interleaved in the same run: "ours" is the AVX-512 path, the baseline the AVX2 one,
// both in GB/s of the bytes the op must move (read + write), so the ratio is the speedup.
// The results are the same bits on both paths (tests/test_cpu_isa.cpp); only speed is
// measured. Forward rows time the op alone; "fwd+bwd" rows time the op and its backward
// (the upstream gradient given, the input's gradient cleared each call). Skipped (one
// note row) where the CPU has no AVX-512.
void isa_rows(Bench& b, const BenchOptions& opts) {
  using kernels::cpu::CpuIsaMode;
  using kernels::cpu::ScopedCpuIsa;
  if (!kernels::cpu::cpu_has_avx512()) {
    RowSpec s = spec("isa: skipped", "no avx512f/bw/vl/dq on this CPU", "-");
    b.row(s, [](RowSpec&) {});
    return;
  }
  const double f = sizeof(float);
  auto isa_row = [&](const std::string& name, const std::string& shape, double bytes, const std::function<void()>& op) {
    RowSpec s = spec("isa: " + name, shape, "GB/s");
    s.baseline = "same kernel, avx2 twin";
    b.row(s, [&](RowSpec& r) {
      auto [t512, t2] = time_pair(
          [&] {
            ScopedCpuIsa isa(CpuIsaMode::Avx512);
            op();
          },
          [&] {
            ScopedCpuIsa isa(CpuIsaMode::Avx2);
            op();
          },
          b.pol);
      r.ms = t512.median_s * 1e3;
      r.ours = bytes / t512.median_s * 1e-9;
      r.baseline_value = bytes / t2.median_s * 1e-9;
    });
  };
  // op(x) alone, and op(x) with its backward from a given upstream gradient.
  auto fwd_bwd = [&](const std::string& name, const std::string& shape, double fwd_bytes, double bwd_bytes,
                     Tensor x, const std::function<Tensor(const Tensor&)>& fn) {
    isa_row(name, shape, fwd_bytes, [&] { Tensor y = fn(x); });
    if (bwd_bytes <= 0) return;
    Tensor xg = x.detach().clone();
    xg.set_requires_grad(true);
    Tensor g = fn(x);  // an upstream gradient of the output's shape
    isa_row(name + " fwd+bwd", shape, fwd_bytes + bwd_bytes, [&] {
      xg.zero_grad();
      fn(xg).backward(g);
    });
  };
  const int64_t T = 4096, S = 128;
  for (int64_t rows : {T, 32 * 4 * S}) {  // a [4096, 128] batch; the bet layer's 32 x 4 heads x 128 scores
    const double n = double(rows * S);
    fwd_bwd("softmax", dims({rows, S}) + ", last dim", 2 * n * f, 3 * n * f, randn({rows, S}, 30, false),
            [](const Tensor& x) { return softmax(x, -1); });
  }
  fwd_bwd("log_softmax", dims({T, S}) + ", last dim", 2.0 * double(T * S) * f, 3.0 * double(T * S) * f,
          randn({T, S}, 31, false), [](const Tensor& x) { return log_softmax(x, -1); });
  {
    const int64_t C = 1024;
    Tensor x = randn({T, C}, 32, false);
    Tensor t = optable::ids({T}, C, 33);
    isa_row("cross_entropy_sum", dims({T, C}) + ", " + std::to_string(T) + " targets", double(T * C) * f,
            [&] { Tensor l = cross_entropy_sum(x, t); });
    Tensor xg = x.detach().clone();
    xg.set_requires_grad(true);
    isa_row("cross_entropy_sum fwd+bwd", dims({T, C}), 3.0 * double(T * C) * f, [&] {
      xg.zero_grad();
      cross_entropy_sum(xg, t).backward();
    });
  }
  for (int64_t D : {int64_t(256), int64_t(1024)}) {
    const double n = double(T * D);
    Tensor x = randn({T, D}, 43, false), w = randn({D}, 34, false), bias = randn({D}, 35, false);
    isa_row("layer_norm", dims({T, D}), 2 * n * f, [&] { Tensor y = layer_norm(x, w, bias); });
    Tensor xg = randn({T, D}, 36, true), wg = w.detach().clone(), bg = bias.detach().clone();
    wg.set_requires_grad(true);
    bg.set_requires_grad(true);
    Tensor g = randn({T, D}, 37, false);
    isa_row("layer_norm fwd+bwd", dims({T, D}), (2 * n + 3 * n) * f, [&] {
      xg.zero_grad();
      wg.zero_grad();
      bg.zero_grad();
      layer_norm(xg, wg, bg).backward(g);
    });
  }
  {
    const int64_t n = T * 1024;
    fwd_bwd("gelu", dims({T, 1024}), 2.0 * double(n) * f, 3.0 * double(n) * f, randn({T, 1024}, 38, false),
            [](const Tensor& x) { return gelu(x); });
    Tensor x = randn({T, 1024}, 39, false);
    isa_row("dropout p=0.1", dims({T, 1024}), 2.0 * double(n) * f, [&] { Tensor y = dropout(x, 0.1, true, 5, 0); });
  }
  {
    const int64_t B = 32, H = 4, hd = 64;
    std::vector<double> pos(size_t(B * S));
    Generator g(16);
    for (int64_t bi = 0; bi < B; ++bi) {
      auto perm = g.permutation(S);
      for (int64_t s = 0; s < S; ++s) pos[size_t(bi * S + s)] = double(perm[size_t(s)]);
    }
    Tensor x = randn({B, H, S, hd}, 40, false), p = Tensor::from_vector(pos, {B, S});
    isa_row("rope, permuted positions", dims({B, H, S, hd}), 2.0 * double(B * H * S * hd) * f,
            [&] { Tensor y = rope(x, p); });
  }
  {
    const int64_t n = opts.quick ? (int64_t(1) << 18) : (int64_t(1) << 20);
    Tensor prm = randn({n}, 41, true);
    prm.set_grad(mul(randn({n}, 42, false), 1e-3));
    optim::AdamW opt({prm}, optim::AdamWOptions{});
    isa_row("adamw step", std::to_string(n) + " params, 1 tensor", 7.0 * double(n) * f, [&] { opt.step(); });
  }
}

}  // namespace

int run_ops(const BenchOptions& opts, const OpsBenchOptions& ops) {
  if (!valid_format(opts.format)) {
    std::cerr << "bench ops: unknown format '" << opts.format << "' (md, csv or json)\n";
    return 2;
  }
  if (opts.threads > 0) platform::set_num_threads(opts.threads);
  std::string kernel_isa;
  try {
    kernel_isa = kernels::cpu::kernel_isa_summary();
  } catch (const std::exception& e) {  // a bad BET_CPU_ISA
    std::cerr << "bench ops: " << e.what() << "\n";
    return 1;
  }
  Bench b;
  b.pol = TimingPolicy::from_quick(opts.quick);
  b.table.title = "bench ops";
  const dnnl_version_t* dv = dnnl_version();
  b.table.add_meta("cpu", cpu_model_name())
      .add_meta("threads", int64_t(platform::num_threads()))
      .add_meta("onednn", std::to_string(dv->major) + "." + std::to_string(dv->minor) + "." +
                              std::to_string(dv->patch) +
                              (dv->cpu_runtime == DNNL_RUNTIME_OMP ? " (OpenMP)" : ""))
      .add_meta("kernel isa", kernel_isa)
      .add_meta("quick", opts.quick)
      .add_meta("timing", "median of " + std::to_string(b.pol.reps) + " repetitions, ~" +
                              std::to_string(int(b.pol.target_s * 1000)) + " ms per row")
      .add_meta("targets", "matmul >= 0.85 x dnnl_sgemm on the same shape; memory-bound ops "
                           ">= 0.70 x a copy of the same bytes (read + write)");
  try {
    if (!ops.isa_only) {
      machine_rows(b, opts);
      op_rows(b);
      optimizer_rows(b);
    }
    isa_rows(b, opts);
  } catch (const std::exception& e) {
    // Setting up a row's inputs failed (rows themselves record their own errors).
    std::cerr << "bench ops: " << e.what() << "\n";
    return 1;
  }
  int rc = emit({b.table}, opts);
  return rc ? rc : (b.failed ? 1 : 0);
}

}  // namespace bet::bench
