// The gradient checker itself (tests/gradcheck.h): a deliberately wrong backward must
// fail it, wherever the wrong element is, whatever the other elements' errors are.
//
// The op under test is `scale(x, c, k)`: out = x * c elementwise (c a constant), whose
// recorded backward returns g * c * k. k = 1 everywhere is the true gradient; any other
// k[i] makes element i's gradient wrong by the factor k[i]. The loss the checker
// differentiates is sum(out * R), R = projection(shape), so element i's true gradient is
// c[i] R[i]: choosing c[i] = v / R[i] makes it exactly v.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "tests/gradcheck.h"

using namespace bet;
using namespace bet::testing;

namespace {

Tensor scale(const Tensor& x, const Tensor& c, const Tensor& k) {
  Tensor out;
  {
    autograd::NoGradGuard ng;
    out = mul(x, c);
  }
  return autograd::record("scale_test", out, {x},
                          [c, k](const Tensor& g) { return std::vector<Tensor>{mul(mul(g, c), k)}; });
}

Tensor vec(const std::vector<double>& v, const Shape& s) { return Tensor::from_vector<double>(v, s); }

// c such that element i's true gradient (of sum(out * R)) is want[i].
Tensor coeffs_for(const std::vector<double>& want, const Shape& s) {
  const std::vector<double> r = projection(s).to_vector<double>();
  std::vector<double> c(want.size());
  for (size_t i = 0; i < c.size(); ++i) c[i] = want[i] / r[i];
  return vec(c, s);
}

GradCheckResult check_scale(const std::vector<double>& x, const std::vector<double>& want,
                            const std::vector<double>& k) {
  const Shape s{int64_t(x.size())};
  Tensor c = coeffs_for(want, s), kk = vec(k, s);
  return gradcheck([c, kk](const std::vector<Tensor>& in) { return scale(in[0], c, kk); }, {leaf(vec(x, s))});
}

// The rule the checker had before issue 12: an element was recorded only when its
// error was over tolerance AND over the largest error seen so far.
bool old_rule_records_a_failure(const std::vector<double>& num, const std::vector<double>& ana,
                                double atol = 1e-7, double rtol = 1e-5) {
  double max_err = 0;
  bool recorded = false;
  for (size_t i = 0; i < num.size(); ++i) {
    const double err = std::abs(num[i] - ana[i]);
    if (err > atol + rtol * std::abs(num[i]) && err > max_err) recorded = true;
    max_err = std::max(max_err, err);
  }
  return recorded;
}

}  // namespace

TEST_CASE("gradcheck passes a correct backward") {
  auto r = check_scale({0.3, -0.2, 0.7, 0.1}, {1.0, -2.0, 0.5, 3.0}, {1, 1, 1, 1});
  CHECK(r.ok());
  CHECK(r.failures == 0);
  CHECK(r.inputs_checked == 1);
  CHECK(r.elements_checked == 4);
  CHECK(r.max_abs_err < 1e-8);
}

TEST_CASE("gradcheck fails a gradient with the wrong sign on one element") {
  auto r = check_scale({0.3, -0.2, 0.7, 0.1}, {1.0, -2.0, 0.5, 3.0}, {1, 1, -1, 1});
  CHECK_FALSE(r.ok());
  CHECK(r.failures == 1);
  CHECK(r.worst.find("element 2") != std::string::npos);
}

TEST_CASE("gradcheck: a large gradient slightly off (within tolerance) does not mask a later wrong one") {
  // Element 0: true gradient 1e6, analytic 1e6 (1 + 5e-6): error 5, tolerance 10 (passes).
  // Element 3: true gradient 1, analytic -1 (wrong sign): error 2, tolerance 1e-5 (fails),
  // but 2 < 5, the largest error so far, so the old rule never recorded it.
  // x[0] = 0 keeps the loss small, so the finite differences stay exact to ~1e-10.
  const std::vector<double> want = {1e6, 0.5, -0.25, 1.0, 2.0};
  const std::vector<double> k = {1 + 5e-6, 1, 1, -1, 1};
  std::vector<double> analytic(want.size());
  for (size_t i = 0; i < want.size(); ++i) analytic[i] = want[i] * k[i];
  REQUIRE_FALSE(old_rule_records_a_failure(want, analytic));  // the case masks under the old rule

  auto r = check_scale({0.0, 0.4, -0.3, 0.2, 0.6}, want, k);
  CHECK_FALSE(r.ok());
  CHECK(r.failures == 1);                                    // element 0 is within tolerance
  CHECK(r.worst.find("element 3") != std::string::npos);
  CHECK(r.max_abs_err == doctest::Approx(5.0).epsilon(1e-3));  // element 0's, larger than element 3's
}

TEST_CASE("gradcheck counts every failing element and names the worst") {
  auto r = check_scale({0.1, 0.2, 0.3, 0.4, 0.5, 0.6}, {1, 1, 1, 1, 1, 1}, {1, 1.01, 1, 3, 1, 0.5});
  CHECK(r.failures == 3);
  CHECK(r.worst.find("element 3") != std::string::npos);  // error 2: furthest past its tolerance
}

TEST_CASE("gradcheck fails NaN, missing and misshapen gradients, and a check of nothing") {
  // A NaN in the analytic gradient (NaN compares false with every tolerance).
  auto r = check_scale({0.1, 0.2, 0.3}, {1, 1, 1}, {1, NAN, 1});
  CHECK(r.failures == 1);
  CHECK(r.worst.find("element 1") != std::string::npos);

  // A backward that returns no gradient for an input whose gradient is not zero.
  Tensor x = leaf(rand64({3}, 1));
  auto none = gradcheck(
      [](const std::vector<Tensor>& in) {
        Tensor out;
        {
          autograd::NoGradGuard ng;
          out = mul(in[0], 2.0);
        }
        return autograd::record("no_grad_test", out, {in[0]},
                                [](const Tensor&) { return std::vector<Tensor>{Tensor()}; });
      },
      {x});
  CHECK(none.failures == 3);

  // A gradient of the wrong shape (the tape refuses it): a failure, not an exception.
  auto shaped = gradcheck(
      [](const std::vector<Tensor>& in) {
        Tensor out;
        {
          autograd::NoGradGuard ng;
          out = mul(in[0], 2.0);
        }
        return autograd::record("shape_test", out, {in[0]},
                                [](const Tensor& g) { return std::vector<Tensor>{sum(g, {}, true)}; });
      },
      {leaf(rand64({3}, 2))});
  CHECK_FALSE(shaped.ok());
  CHECK(shaped.worst.find("backward threw") != std::string::npos);

  // Nothing requires grad (or nothing is f64): nothing checked is a failure, not a pass.
  auto nothing = gradcheck([](const std::vector<Tensor>& in) { return mul(in[0], 2.0); }, {rand64({3}, 3)});
  CHECK(nothing.inputs_checked == 0);
  CHECK_FALSE(nothing.ok());
}

TEST_CASE("gradcheck walks a non-contiguous input in logical order") {
  // x is the transpose of a [3, 2] leaf's storage; logical element 1 is x[0][1].
  Tensor base = rand64({3, 2}, 5);
  Tensor x = leaf(transpose(base, 0, 1));
  Tensor k = vec({1, -1, 1, 1, 1, 1}, {2, 3});
  Tensor c = coeffs_for({1, 1, 1, 1, 1, 1}, {2, 3});
  auto r = gradcheck([c, k](const std::vector<Tensor>& in) { return scale(in[0], c, k); }, {x});
  CHECK(r.failures == 1);
  CHECK(r.worst.find("element 1") != std::string::npos);
}
