// Finite-difference gradient checking, shared by every op and layer test.
// The function under test runs in float64; the analytic gradient from backward()
// is compared with central differences of L = sum(f(x) * R), R a fixed random
// projection (so every output element matters and no cancellation hides errors).
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
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

// The fixed random projection R of the checked loss sum(f(x) * R), in [-1, 1).
inline Tensor projection(const Shape& shape) { return rand64(shape, 4242); }

// Every element of every checked input is compared; an element fails when
// |numeric - analytic| > atol + rtol |numeric| (or either is NaN). `failures` counts
// the failing elements, `worst` names the one furthest past its tolerance. (Before
// issue 12 an element was recorded only when its error also exceeded the largest seen
// so far, so a large gradient slightly off masked a later one of the wrong sign.)
struct GradCheckResult {
  int64_t inputs_checked = 0;    // f64 inputs that require grad
  int64_t elements_checked = 0;  // their elements
  int64_t failures = 0;          // elements over tolerance
  double max_abs_err = 0;        // over all elements, failing or not
  double worst_ratio = 0;        // largest err / tolerance among the failures (inf: NaN)
  std::string worst;             // the worst failing element, or why the check failed
  bool ok() const { return failures == 0 && inputs_checked > 0; }
  std::string summary() const {
    if (failures == 0 && inputs_checked == 0) return "no f64 input requires grad: nothing was checked";
    if (failures == 0) return "ok (max abs err " + std::to_string(max_abs_err) + ")";
    return std::to_string(failures) + " of " + std::to_string(elements_checked) +
           " elements over tolerance; worst: " + worst;
  }
};

// Checks d sum(f(inputs) * R) / d input[i] for every f64 input that requires grad.
// Inputs may be non-contiguous views; their storage is perturbed in place.
inline GradCheckResult gradcheck(const Fn& f, std::vector<Tensor> inputs, double eps = 1e-6,
                                 double atol = 1e-7, double rtol = 1e-5) {
  GradCheckResult res;
  Tensor out = f(inputs);
  Tensor R = projection(out.shape());
  for (auto& x : inputs)
    if (x.defined()) x.zero_grad();
  Tensor loss = sum(mul(out, R));
  auto fail = [&res](double ratio, const std::string& what) {
    ++res.failures;
    if (res.failures == 1 || !(ratio <= res.worst_ratio)) res.worst_ratio = ratio, res.worst = what;
  };
  try {
    if (loss.requires_grad()) loss.backward();
  } catch (const std::exception& e) {
    fail(INFINITY, std::string("backward threw: ") + e.what());
    return res;
  }
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    if (!x.defined() || !x.requires_grad() || x.dtype() != DType::F64) continue;
    ++res.inputs_checked;
    const int64_t n = x.numel();
    res.elements_checked += n;
    Tensor analytic = x.grad();
    if (analytic.defined() && analytic.shape() != x.shape()) {
      fail(INFINITY, "input " + std::to_string(k) + ": gradient shape " + shape_str(analytic.shape()) +
                         ", input shape " + shape_str(x.shape()));
      continue;
    }
    std::vector<double> ga = analytic.defined() ? analytic.to_vector<double>()
                                                : std::vector<double>(size_t(n), 0.0);
    // Walk elements in logical (row-major) order through the strides.
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
      const double num = (lp - lm) / (2 * eps);
      const double err = std::abs(num - ga[size_t(e)]);
      const double lim = atol + rtol * std::abs(num);
      if (!(err <= lim))  // NaN on either side fails too
        fail(std::isnan(err) ? INFINITY : err / lim,
             "input " + std::to_string(k) + " element " + std::to_string(e) + ": numeric " +
                 std::to_string(num) + " analytic " + std::to_string(ga[size_t(e)]));
      if (!std::isnan(err)) res.max_abs_err = std::max(res.max_abs_err, err);
      for (int64_t d = x.dim() - 1; d >= 0; --d) {
        if (++idx[d] < x.shape()[d]) break;
        idx[d] = 0;
      }
    }
  }
  return res;
}

// doctest assertion wrapper: fails when any element is over tolerance (or nothing was
// checked), naming the count and the worst element.
#define CHECK_GRAD(fn, inputs, ...)                                      \
  do {                                                                   \
    auto _r = ::bet::testing::gradcheck(fn, inputs, ##__VA_ARGS__);      \
    INFO("gradcheck: " << _r.summary());                                 \
    CHECK(_r.ok());                                                      \
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
