#include "runtime/eval/selective.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "runtime/eval/metrics.h"
#include "engine/error.h"

namespace bet::runtime {

std::vector<double> risk_coverage(const std::vector<double>& uncertainty, const std::vector<bool>& wrong) {
  const size_t n = uncertainty.size();
  BET_CHECK(n > 0, "risk_coverage: no examples");
  BET_CHECK(wrong.size() == n, "risk_coverage: ", n, " scores for ", wrong.size(), " outcomes");
  for (size_t i = 0; i < n; ++i)
    BET_CHECK(!std::isnan(uncertainty[i]), "risk_coverage: the score of example ", i, " is NaN");
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return uncertainty[a] < uncertainty[b]; });
  std::vector<double> risk(n);
  double errors_before = 0;  // errors among the groups already taken
  for (size_t s = 0; s < n;) {
    // A group of equal scores is taken in random order: after j of its g members, the
    // expected number of its errors taken is j * e / g.
    size_t t = s;
    double e = 0;
    while (t < n && uncertainty[order[t]] == uncertainty[order[s]]) e += wrong[order[t++]] ? 1 : 0;
    const double g = double(t - s);
    for (size_t k = s; k < t; ++k) risk[k] = (errors_before + double(k - s + 1) * e / g) / double(k + 1);
    errors_before += e;
    s = t;
  }
  return risk;
}

double aurc(const std::vector<double>& uncertainty, const std::vector<bool>& wrong) {
  const std::vector<double> r = risk_coverage(uncertainty, wrong);
  return std::accumulate(r.begin(), r.end(), 0.0) / double(r.size());
}

double accuracy_at_coverage(const std::vector<double>& uncertainty, const std::vector<bool>& wrong, double coverage) {
  BET_CHECK(coverage > 0 && coverage <= 1, "accuracy_at_coverage: coverage must be in (0, 1], got ", coverage);
  const std::vector<double> r = risk_coverage(uncertainty, wrong);
  // The small tolerance keeps 0.8 * 10 at 8 examples, not 9 through round-off.
  const size_t k = std::max<size_t>(1, size_t(std::ceil(coverage * double(r.size()) - 1e-9)));
  return 1.0 - r[std::min(k, r.size()) - 1];
}

nlohmann::json SelectiveReport::to_json() const {
  auto num = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
  return {{"signal", signal},
          {"error_auroc", num(error_auroc)},
          {"aurc", num(aurc)},
          {"accuracy_at_80", num(accuracy_at_80)},
          {"accuracy_at_90", num(accuracy_at_90)}};
}

SelectiveReport selective_report(const std::string& signal, const std::vector<double>& uncertainty,
                                 const std::vector<bool>& wrong) {
  SelectiveReport r;
  r.signal = signal;
  r.error_auroc = auroc(uncertainty, wrong);
  r.aurc = aurc(uncertainty, wrong);
  r.accuracy_at_80 = accuracy_at_coverage(uncertainty, wrong, 0.8);
  r.accuracy_at_90 = accuracy_at_coverage(uncertainty, wrong, 0.9);
  return r;
}

}  // namespace bet::runtime
