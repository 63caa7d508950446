// The GPU-against-CPU harness shared by tests/test_cuda_ops.cpp and
// tests/test_cuda_attention.cpp: seeded inputs, one case = inputs + op, run on two
// devices/dtypes with the same upstream gradient, compared with per-dtype tolerances,
// and the one visible skip message where there is no GPU.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/ops.h"
#include "engine/random.h"

namespace bet::test::gpu {

// ---------------------------------------------------------------- inputs

inline Tensor U(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Generator g(seed);
  return g.uniform(s, lo, hi, DType::F64);
}

inline Tensor ids(const Shape& s, int64_t n, uint64_t seed, DType dt = DType::I64) {
  Generator g(seed);
  std::vector<int64_t> v(size_t(shape_numel(s)));
  for (auto& x : v) x = int64_t(g.randint(uint64_t(n)));
  return Tensor::from_vector(v, s).to(dt);
}

// 0/1 mask (i64), about `keep` of it ones.
inline Tensor mask01(const Shape& s, uint64_t seed, double keep = 0.7) {
  Tensor u = U(s, seed, 0.0, 1.0);
  std::vector<double> uv = u.to_vector<double>();
  std::vector<int64_t> v(uv.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = uv[i] < keep ? 1 : 0;
  return Tensor::from_vector(v, s);
}

// ---------------------------------------------------------------- the table

using Inputs = std::vector<Tensor>;

struct OpCase {
  std::string name;
  std::function<Inputs()> make;                      // CPU inputs; floating ones in f64
  std::function<Tensor(const Inputs&)> fn;           // the op under test (views applied inside)
  double tol = 1.0;                                  // multiplier on the dtype's tolerance
  bool backward = true;
  bool bf16 = false;  // also run on the GPU in bf16 (f32 accumulation) against the CPU's f32
};

// ---------------------------------------------------------------- comparison

struct Tol {
  double atol, rtol;
};
inline Tol tol_for(DType dt, double mult) {
  switch (dt) {
    case DType::F64: return {1e-12 * mult, 1e-10 * mult};
    case DType::BF16: return {2e-2 * mult, 3e-2 * mult};
    default: return {1e-5 * mult, 1e-4 * mult};
  }
}

// Empty string when `got` matches `want` elementwise (|got - want| <= atol + rtol |want|;
// NaN never matches), else a description of the worst element.
inline std::string compare(const Tensor& got, const Tensor& want, Tol tol) {
  if (got.shape() != want.shape()) return "shape " + shape_str(got.shape()) + " vs " + shape_str(want.shape());
  if (got.dtype() != want.dtype() && (is_integer(got.dtype()) || is_integer(want.dtype())))
    return std::string("dtype ") + dtype_name(got.dtype()) + " vs " + dtype_name(want.dtype());
  const std::vector<double> g = got.to_vector<double>(), w = want.to_vector<double>();
  double worst = 0;
  size_t at = 0;
  bool bad = false;
  for (size_t i = 0; i < g.size(); ++i) {
    const double lim = tol.atol + tol.rtol * std::abs(w[i]);
    const double err = std::abs(g[i] - w[i]);
    const bool inf_ok = std::isinf(w[i]) && g[i] == w[i];
    if (inf_ok) continue;
    if (!(err <= lim)) {
      if (!bad || !(err / lim <= worst)) worst = err / lim, at = i;
      bad = true;
    }
  }
  if (!bad) return "";
  char buf[200];
  std::snprintf(buf, sizeof buf, "element %zu: got %.17g, want %.17g (%.3g x the tolerance)", at, g[at], w[at], worst);
  return buf;
}

// On the host, floating values as f64 (converted on their device: the CPU has no bf16).
inline Tensor host(const Tensor& t) {
  Tensor h = t.detach();
  if (is_floating(h.dtype())) h = h.to(DType::F64);
  return h.to(Device::cpu());
}

struct RunResult {
  Tensor out;
  std::vector<Tensor> grads;  // per input (undefined for non-floating inputs)
};

// Runs a case on `device` with floating inputs cast to `dt` (on that device). The
// same seeded upstream gradient R gives the backward: grads of sum(out * R).
inline RunResult run(const OpCase& c, const Inputs& base, Device device, DType dt, bool backward) {
  Inputs in;
  for (const Tensor& x : base) {
    Tensor y = x.to(device);
    if (is_floating(x.dtype())) {
      y = y.to(dt).detach();
      if (backward) y.set_requires_grad();
    }
    in.push_back(y);
  }
  RunResult r;
  r.out = c.fn(in);
  if (!backward || !is_floating(r.out.dtype())) return r;
  Tensor R = U(r.out.shape(), 4242, -1.0, 1.0).to(device).to(r.out.dtype());
  sum(mul(r.out, R)).backward();
  for (const Tensor& x : in) r.grads.push_back(is_floating(x.dtype()) ? x.grad() : Tensor());
  return r;
}

// Compares `test` against `ref`; returns the failures (empty when all match).
inline std::vector<std::string> check_case(const OpCase& c, Device dev, DType dt, Device ref_dev, DType ref_dt, Tol tol) {
  std::vector<std::string> errors;
  const Inputs base = c.make();
  RunResult ref, got;
  try {
    ref = run(c, base, ref_dev, ref_dt, c.backward);
    got = run(c, base, dev, dt, c.backward);
  } catch (const std::exception& e) {
    return {c.name + ": threw: " + e.what()};
  }
  const std::string e = compare(host(got.out), host(ref.out), tol);
  if (!e.empty()) errors.push_back(c.name + ": forward: " + e);
  for (size_t i = 0; i < got.grads.size() && i < ref.grads.size(); ++i) {
    const Tensor& g = got.grads[i];
    const Tensor& w = ref.grads[i];
    if (!is_floating(base[i].dtype())) continue;
    if (g.defined() != w.defined()) {
      errors.push_back(c.name + ": grad " + std::to_string(i) + " defined on one device only");
      continue;
    }
    if (!g.defined()) continue;
    const std::string ge = compare(host(g), host(w), tol);
    if (!ge.empty()) errors.push_back(c.name + ": grad of input " + std::to_string(i) + ": " + ge);
  }
  return errors;
}

// The skip, said once and visibly (doctest MESSAGE), so a run without a GPU never
// reads as if the GPU had been checked.
inline bool gpu_or_skip(int case_count) {
  if (cuda_available()) return true;
  static bool said = false;
  if (!said) {
    said = true;
    const std::string msg = "no CUDA device: " + std::to_string(case_count) + " GPU cases skipped";
    MESSAGE(msg);
    std::fprintf(stderr, "%s\n", msg.c_str());
  }
  return false;
}

// The decorator of a case that needs a CUDA device, real or emulated (the
// -Dgpu_emulation build, or BET_EMULATE_CUDA): without one the case is skipped at
// registration, so doctest counts it as skipped rather than as passed, and says so once
// on stderr. TEST_CASE("GPU: ..." * bet::test::gpu::gpu_cases()) { ... }
inline doctest::skip gpu_cases() {
  const bool none = !cuda_available();
  static bool said = false;
  if (none && !said) {
    said = true;
    std::fprintf(stderr, "no CUDA device (real or emulated): the GPU cases are skipped\n");
  }
  return doctest::skip(none);
}

// GPU comparisons a table makes: f32 and f64, and bf16 where the case allows.
inline int gpu_comparisons(const std::vector<OpCase>& cases) {
  int n = 0;
  for (const OpCase& c : cases) n += 2 + (c.bf16 ? 1 : 0);
  return n;
}

// Every case on the GPU (cuda:`device`) against the CPU: f32 and f64 against the same
// dtype, bf16 (where the case allows) against the CPU's f32; f32 alone unless
// `all_dtypes`.
inline void check_cases_on_gpu(const std::vector<OpCase>& cases, int device = 0, bool all_dtypes = true) {
  const Device gpu = Device::cuda(device);
  for (const OpCase& c : cases) {
    CAPTURE(c.name);
    for (DType dt : {DType::F32, DType::F64})
      if (all_dtypes || dt == DType::F32)
        for (const std::string& e : check_case(c, gpu, dt, Device::cpu(), dt, tol_for(dt, c.tol))) FAIL_CHECK(e);
    if (c.bf16 && all_dtypes)
      for (const std::string& e : check_case(c, gpu, DType::BF16, Device::cpu(), DType::F32, tol_for(DType::BF16, c.tol)))
        FAIL_CHECK(e);
  }
}

// The same cases on the CPU, f32 against f64: a broken case or harness shows here
// first, on any machine.
inline void check_cases_on_cpu(const std::vector<OpCase>& cases) {
  for (const OpCase& c : cases) {
    CAPTURE(c.name);
    for (const std::string& e : check_case(c, Device::cpu(), DType::F32, Device::cpu(), DType::F64,
                                           tol_for(DType::F32, 10.0 * c.tol)))
      FAIL_CHECK(e);
  }
}

}  // namespace bet::test::gpu
