// Calibration under a prior shift (runtime/eval/prior_shift.h): Bayes' rule re-weighting
// is exact where the class-conditionals are known, and EM recovers a deployment prior
// from unlabelled predictions, or stays put when there was no shift.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "runtime/eval/prior_shift.h"

using namespace bet::runtime;

namespace {

// Three classes with 1-d Gaussian class-conditionals N(mu_c, 1). Examples are drawn with
// class shares `draw`; their probabilities are the exact posterior under `believed`.
struct Sample {
  RowMatrix probs;
  std::vector<int64_t> labels;
  std::vector<double> xs;
};
const double kMu[3] = {-1.5, 0.0, 1.5};

std::vector<double> posterior(double x, const std::vector<double>& prior) {
  std::vector<double> p(3);
  double z = 0;
  for (int c = 0; c < 3; ++c) z += p[size_t(c)] = prior[size_t(c)] * std::exp(-0.5 * (x - kMu[c]) * (x - kMu[c]));
  for (double& v : p) v /= z;
  return p;
}

Sample draw(const std::vector<double>& draw_prior, const std::vector<double>& believed, int n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::discrete_distribution<int> cls(draw_prior.begin(), draw_prior.end());
  std::normal_distribution<double> noise(0.0, 1.0);
  Sample s;
  std::vector<double> flat;
  for (int i = 0; i < n; ++i) {
    const int y = cls(rng);
    const double x = kMu[y] + noise(rng);
    s.labels.push_back(y);
    s.xs.push_back(x);
    for (double v : posterior(x, believed)) flat.push_back(v);
  }
  s.probs = RowMatrix(flat, 3);
  return s;
}

}  // namespace

TEST_CASE("reweight_prior is Bayes' rule: the posterior under the new prior, exactly") {
  const std::vector<double> train = {0.6, 0.3, 0.1}, deploy = {0.2, 0.3, 0.5};
  Sample s = draw(deploy, train, 50, 1);
  RowMatrix moved = reweight_prior(s.probs, train, deploy);
  for (int64_t i = 0; i < s.probs.rows; ++i) {
    auto truth = posterior(s.xs[size_t(i)], deploy);
    for (int c = 0; c < 3; ++c) CHECK(std::abs(moved.row(i)[c] - truth[size_t(c)]) < 1e-12);
  }
  // The same prior on both sides changes nothing; unnormalised priors mean the same.
  RowMatrix same = reweight_prior(s.probs, {6, 3, 1}, train);
  for (size_t k = 0; k < same.data.size(); ++k) CHECK(std::abs(same.data[k] - s.probs.data[k]) < 1e-12);
  CHECK_THROWS_WITH(reweight_prior(s.probs, {0.5, 0.5}, deploy), doctest::Contains("2 shares for 3 classes"));
  CHECK_THROWS_WITH(reweight_prior(s.probs, train, {0.5, 0.0, 0.5}), doctest::Contains("positive"));
}

TEST_CASE("EM recovers a shifted prior from unlabelled predictions, and improves NLL") {
  const std::vector<double> train = {0.6, 0.3, 0.1}, deploy = {0.15, 0.25, 0.6};
  Sample s = draw(deploy, train, 6000, 2);
  PriorShiftFit fit = estimate_prior_em(s.probs, train);
  CHECK(fit.converged);
  for (int c = 0; c < 3; ++c) CHECK(std::abs(fit.prior[size_t(c)] - deploy[size_t(c)]) < 0.03);
  // Label-free adaptation beats the training prior on the deployment data's NLL, and
  // comes close to knowing the true prior.
  const double before = nll(s.probs, s.labels);
  const double adapted = nll(reweight_prior(s.probs, train, fit.prior), s.labels);
  const double oracle = nll(reweight_prior(s.probs, train, deploy), s.labels);
  CHECK(adapted < before - 0.1);
  CHECK(adapted < oracle + 0.01);
}

TEST_CASE("EM stays at the training prior when there is no shift (negative control)") {
  const std::vector<double> train = {0.6, 0.3, 0.1};
  Sample s = draw(train, train, 6000, 3);
  PriorShiftFit fit = estimate_prior_em(s.probs, train);
  for (int c = 0; c < 3; ++c) CHECK(std::abs(fit.prior[size_t(c)] - train[size_t(c)]) < 0.03);
  const double before = nll(s.probs, s.labels);
  const double adapted = nll(reweight_prior(s.probs, train, fit.prior), s.labels);
  CHECK(std::abs(adapted - before) < 0.01);
}

TEST_CASE("class_shares counts labels with one pseudo-count per class") {
  auto p = class_shares({0, 0, 0, 1}, 3);
  CHECK(p.size() == 3);
  CHECK(std::abs(p[0] - 4.0 / 7) < 1e-15);
  CHECK(std::abs(p[1] - 2.0 / 7) < 1e-15);
  CHECK(std::abs(p[2] - 1.0 / 7) < 1e-15);  // absent, yet not impossible
  CHECK_THROWS_WITH(class_shares({0, 3}, 3), doctest::Contains("label 3"));
}

TEST_CASE("detect_prior_shift: a shifted sample is flagged, a fresh sample of the same prior is not") {
  const std::vector<double> train = {0.6, 0.3, 0.1};
  Sample reference = draw(train, train, 3000, 4);
  const std::vector<double> ref_mean = mean_prediction(reference.probs);
  for (unsigned seed = 10; seed < 15; ++seed) {  // same prior: no shift, seed after seed
    CAPTURE(seed);
    ShiftTest t = detect_prior_shift(draw(train, train, 2000, seed).probs, ref_mean, 3000);
    CHECK_FALSE(t.shifted);
    CHECK(t.max_abs_z < t.threshold);
  }
  ShiftTest moved = detect_prior_shift(draw({0.3, 0.3, 0.4}, train, 2000, 20).probs, ref_mean, 3000);
  CHECK(moved.shifted);
  CHECK(moved.z.size() == 3);
  CHECK(moved.z[2] > moved.threshold);  // class 2 grew from 10% to 40%
  CHECK_THROWS_WITH(detect_prior_shift(reference.probs, {0.5, 0.5}, 10), doctest::Contains("3"));
}

TEST_CASE("two_sided_normal_quantile matches the table") {
  CHECK(two_sided_normal_quantile(0.05) == doctest::Approx(1.959964).epsilon(1e-6));
  CHECK(two_sided_normal_quantile(0.01) == doctest::Approx(2.575829).epsilon(1e-6));
  CHECK(two_sided_normal_quantile(0.01 / 20) == doctest::Approx(3.480756).epsilon(1e-6));
  CHECK_THROWS(two_sided_normal_quantile(0.0));
}
