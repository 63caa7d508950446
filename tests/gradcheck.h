// Finite-difference gradient checking, shared by every op and layer test.
// The function under test runs in float64; the analytic gradient from backward()
// is compared with central differences of L = sum(f(x) * R), R a fixed random
// projection (so every output element matters and no cancellation hides errors).
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/random.h"

namespace bet::testing {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// Random f64 tensor in [lo, hi), seeded.
inline Tensor rand64(const Shape& shape, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Generator g(seed);
  return g.uniform(shape, lo, hi, DType::F64);
}

struct GradCheckResult {
  double max_abs_err = 0;
  double max_rel_err = 0;
  std::string where;
};

// Checks d sum(f(inputs) * R) / d input[i] for every floating input that requires grad.
// Inputs may be non-contiguous views; their storage is perturbed in place.
inline GradCheckResult gradcheck(const Fn& f, std::vector<Tensor> inputs, double eps = 1e-6,
                                 double atol = 1e-7, double rtol = 1e-5) {
  GradCheckResult res;
  Tensor out = f(inputs);
  Tensor R = rand64(out.shape(), 4242);
  for (auto& x : inputs)
    if (x.defined()) x.zero_grad();
  Tensor loss = sum(mul(out, R));
  loss.backward();

  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad() || x.dtype() != DType::F64) continue;
    Tensor analytic = x.grad();
    std::vector<double> ga = analytic.defined() ? analytic.to_vector<double>()
                                                : std::vector<double>(size_t(x.numel()), 0.0);
    // Walk elements in logical (row-major) order through the strides.
    const int64_t n = x.numel();
    std::vector<int64_t> idx(size_t(x.dim()), 0);
    double* base = static_cast<double*>(x.storage()->data());
    for (int64_t e = 0; e < n; ++e) {
      int64_t off = x.offset();
      for (int64_t d = 0; d < x.dim(); ++d) off += idx[d] * x.strides()[d];
      double orig = base[off];
      double lp, lm;
      {
        autograd::NoGradGuard ng;
        base[off] = orig + eps;
        lp = sum(mul(f(inputs), R)).item();
        base[off] = orig - eps;
        lm = sum(mul(f(inputs), R)).item();
        base[off] = orig;
      }
      double num = (lp - lm) / (2 * eps);
      double err = std::abs(num - ga[size_t(e)]);
      double rel = err / std::max(std::abs(num), 1e-12);
      if (err > atol + rtol * std::abs(num) && err > res.max_abs_err) {
        res.where = "input " + std::to_string(k) + " element " + std::to_string(e) + ": numeric " +
                    std::to_string(num) + " analytic " + std::to_string(ga[size_t(e)]);
      }
      if (err > atol + rtol * std::abs(num)) res.max_rel_err = std::max(res.max_rel_err, rel);
      res.max_abs_err = std::max(res.max_abs_err, err);
      for (int64_t d = x.dim() - 1; d >= 0; --d) {
        if (++idx[d] < x.shape()[d]) break;
        idx[d] = 0;
      }
    }
  }
  return res;
}

// doctest assertion wrapper: fails with the first offending element named.
#define CHECK_GRAD(fn, inputs, ...)                                      \
  do {                                                                   \
    auto _r = ::bet::testing::gradcheck(fn, inputs, ##__VA_ARGS__);      \
    INFO("gradcheck: " << _r.where << " (max abs err " << _r.max_abs_err << ")"); \
    CHECK(_r.where.empty());                                             \
  } while (0)

// Max |a - b| over all elements (any float dtypes, same shape).
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::abs(va[i] - vb[i]));
  return m;
}

// A requires-grad leaf (f64 unless asked).
inline Tensor leaf(Tensor t) {
  t.set_requires_grad(true);
  return t;
}

}  // namespace bet::testing
