#include "runtime/eval/prior_shift.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace bet::runtime {

namespace {

std::vector<double> normalised_prior(const std::vector<double>& p, int64_t classes, const char* what) {
  BET_CHECK(int64_t(p.size()) == classes, what, ": ", p.size(), " shares for ", classes, " classes");
  double z = 0;
  for (double v : p) {
    BET_CHECK(std::isfinite(v) && v > 0, what, ": every share must be positive and finite, got ", v);
    z += v;
  }
  std::vector<double> out(p.size());
  for (size_t i = 0; i < p.size(); ++i) out[i] = p[i] / z;
  return out;
}

}  // namespace

std::vector<double> class_shares(const std::vector<int64_t>& labels, int64_t classes) {
  BET_CHECK(classes >= 1, "class shares: need at least one class, got ", classes);
  std::vector<double> counts(size_t(classes), 1.0);
  for (int64_t y : labels) {
    BET_CHECK(y >= 0 && y < classes, "class shares: label ", y, " is outside [0, ", classes, ")");
    counts[size_t(y)] += 1.0;
  }
  const double n = double(labels.size()) + double(classes);
  for (double& c : counts) c /= n;
  return counts;
}

RowMatrix reweight_prior(const RowMatrix& probs, const std::vector<double>& train_prior,
                         const std::vector<double>& new_prior) {
  const std::vector<double> from = normalised_prior(train_prior, probs.cols, "reweight: training prior");
  const std::vector<double> to = normalised_prior(new_prior, probs.cols, "reweight: new prior");
  RowMatrix out = probs;
  for (int64_t i = 0; i < probs.rows; ++i) {
    double* r = out.data.data() + i * probs.cols;
    double z = 0;
    for (int64_t c = 0; c < probs.cols; ++c) z += r[c] *= to[size_t(c)] / from[size_t(c)];
    BET_CHECK(z > 0 && std::isfinite(z), "reweight: row ", i, " has no probability left");
    for (int64_t c = 0; c < probs.cols; ++c) r[c] /= z;
  }
  return out;
}

PriorShiftFit estimate_prior_em(const RowMatrix& probs, const std::vector<double>& train_prior, int max_iterations,
                                double tol) {
  BET_CHECK(probs.rows >= 1, "prior shift: no examples");
  BET_CHECK(max_iterations >= 1, "prior shift: max_iterations must be at least 1");
  PriorShiftFit fit;
  fit.prior = normalised_prior(train_prior, probs.cols, "prior shift: training prior");
  for (fit.iterations = 1; fit.iterations <= max_iterations; ++fit.iterations) {
    const RowMatrix post = reweight_prior(probs, train_prior, fit.prior);
    std::vector<double> next(size_t(probs.cols), 0.0);
    for (int64_t i = 0; i < post.rows; ++i)
      for (int64_t c = 0; c < post.cols; ++c) next[size_t(c)] += post.row(i)[c];
    double change = 0;
    for (int64_t c = 0; c < probs.cols; ++c) {
      // A floor keeps every share positive, so the next reweighting stays defined.
      next[size_t(c)] = std::max(next[size_t(c)] / double(post.rows), 1e-12);
      change = std::max(change, std::abs(next[size_t(c)] - fit.prior[size_t(c)]));
    }
    fit.prior = next;
    if (change < tol) {
      fit.converged = true;
      break;
    }
  }
  fit.iterations = std::min(fit.iterations, max_iterations);
  return fit;
}

std::vector<double> mean_prediction(const RowMatrix& probs) {
  BET_CHECK(probs.rows >= 1, "mean prediction: no examples");
  std::vector<double> m(size_t(probs.cols), 0.0);
  for (int64_t i = 0; i < probs.rows; ++i)
    for (int64_t c = 0; c < probs.cols; ++c) m[size_t(c)] += probs.row(i)[c];
  for (double& v : m) v /= double(probs.rows);
  return m;
}

double two_sided_normal_quantile(double p) {
  BET_CHECK(p > 0 && p < 1, "normal quantile: p must be in (0, 1), got ", p);
  double lo = 0, hi = 40;  // erfc(40 / sqrt 2) underflows far below any p we take
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (std::erfc(mid / std::sqrt(2.0)) > p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

ShiftTest detect_prior_shift(const RowMatrix& probs, const std::vector<double>& reference_mean,
                             int64_t reference_examples, double alpha) {
  BET_CHECK(probs.rows >= 2, "prior shift test: need at least 2 examples, got ", probs.rows);
  BET_CHECK(int64_t(reference_mean.size()) == probs.cols, "prior shift test: reference mean has ",
            reference_mean.size(), " classes, the predictions ", probs.cols);
  BET_CHECK(reference_examples >= 1, "prior shift test: the reference needs at least one example");
  BET_CHECK(alpha > 0 && alpha < 1, "prior shift test: alpha must be in (0, 1), got ", alpha);
  const std::vector<double> mean = mean_prediction(probs);
  ShiftTest t;
  t.threshold = two_sided_normal_quantile(alpha / double(probs.cols));
  const double n = double(probs.rows);
  for (int64_t c = 0; c < probs.cols; ++c) {
    double var = 0;
    for (int64_t i = 0; i < probs.rows; ++i) {
      const double d = probs.row(i)[c] - mean[size_t(c)];
      var += d * d;
    }
    var /= n - 1;
    const double se = std::sqrt(std::max(var, 1e-18) * (1.0 / n + 1.0 / double(reference_examples)));
    const double z = (mean[size_t(c)] - reference_mean[size_t(c)]) / se;
    t.z.push_back(z);
    t.max_abs_z = std::max(t.max_abs_z, std::abs(z));
  }
  t.shifted = t.max_abs_z > t.threshold;
  return t;
}

}  // namespace bet::runtime
