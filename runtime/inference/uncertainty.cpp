#include "runtime/inference/uncertainty.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace bet::inference {

double entropy(const std::vector<double>& p) {
  double h = 0;
  for (double v : p)
    if (v > 0) h -= v * std::log(v);
  return h;
}

std::vector<double> softmax(const std::vector<double>& logits, double temperature) {
  BET_CHECK(temperature > 0, "softmax: temperature must be positive, got ", temperature);
  BET_CHECK(!logits.empty(), "softmax: no logits");
  std::vector<double> p(logits.size());
  // Subtract the largest logit before dividing: (l - max) / T is <= 0 and the largest
  // is exactly 0, so a tiny temperature gives exp(-inf) = 0 and 1, never inf - inf.
  double mx = -INFINITY;
  for (double v : logits) mx = std::max(mx, v);
  double z = 0;
  for (size_t i = 0; i < logits.size(); ++i) z += (p[i] = std::exp((logits[i] - mx) / temperature));
  for (double& v : p) v /= z;
  return p;
}

EnsembleSummary summarize_members(const std::vector<std::vector<double>>& members, bool orderings) {
  BET_CHECK(!members.empty(), "uncertainty: no members");
  const size_t K = members.size(), C = members[0].size();
  BET_CHECK(C > 0, "uncertainty: empty distribution");
  for (const auto& m : members)
    BET_CHECK(m.size() == C, "uncertainty: members have ", C, " and ", m.size(), " entries");
  EnsembleSummary s;
  s.members = int64_t(K);
  s.pbar.assign(C, 0.0);
  for (const auto& m : members)
    for (size_t c = 0; c < C; ++c) s.pbar[c] += m[c];
  for (double& v : s.pbar) v /= double(K);
  s.argmax = int64_t(std::max_element(s.pbar.begin(), s.pbar.end()) - s.pbar.begin());
  s.confidence = s.pbar[size_t(s.argmax)];
  s.total = entropy(s.pbar);
  if (K == 1) {
    s.aleatoric = s.total;
    s.epistemic = 0;
  } else {
    double a = 0;
    for (const auto& m : members) a += entropy(m);
    s.aleatoric = a / double(K);
    // Mutual information is >= 0 (Jensen); a negative value is only rounding.
    s.epistemic = std::max(0.0, s.total - s.aleatoric);
  }
  if (orderings && K > 1) {
    const double mu = s.confidence;
    double v = 0;
    for (const auto& m : members) {
      const double d = m[size_t(s.argmax)] - mu;
      v += d * d;
    }
    s.order_dispersion = std::sqrt(v / double(K));
  }
  return s;
}

BetaSummary summarize_beta(double alpha, double beta, double posterior_mean, double posterior_variance) {
  BetaSummary b;
  b.alpha = alpha;
  b.beta = beta;
  b.posterior_mean = posterior_mean;
  b.posterior_variance = posterior_variance;
  b.epistemic = posterior_variance;
  b.aleatoric = posterior_mean * (1.0 - posterior_mean);
  return b;
}

nlohmann::json beta_json(const BetaSummary& b) {
  return {{"alpha", b.alpha},
          {"beta", b.beta},
          {"posterior_mean", b.posterior_mean},
          {"posterior_variance", b.posterior_variance},
          {"epistemic", b.epistemic},
          {"aleatoric", b.aleatoric}};
}

nlohmann::json ensemble_json(const EnsembleSummary& s) {
  nlohmann::json j = {{"total", s.total}, {"aleatoric", s.aleatoric}, {"epistemic", s.epistemic}};
  j["order_dispersion"] = s.order_dispersion ? nlohmann::json(*s.order_dispersion) : nlohmann::json(nullptr);
  j["members"] = s.members;
  return j;
}

}  // namespace bet::inference
