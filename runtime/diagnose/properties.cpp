#include "runtime/diagnose/properties.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "runtime/diagnose/fit.h"

namespace bet::diagnose {

namespace {
std::string fmt(const char* f, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}
}  // namespace

Verdict check_bayes_approach(const std::vector<double>& excess, double mean_excess, double efficiency_20, bool quick) {
  Verdict v;
  // Exact Bayes is the least expected log loss of any predictor that does not see the
  // future; a sample mean can dip below it only by its noise. 0.01 nats/token is many
  // standard errors at the sample sizes used here (>= 128 sequences x 31 positions),
  // and what tests/test_learning.cpp allows.
  if (mean_excess < -0.01)
    v.flag(fmt("beats exact Bayes by %.4f nats/token: no causal predictor can, so it sees the future (a leak)",
               -mean_excess));
  if (efficiency_20 > 1.05)
    v.flag(fmt("entropy efficiency %.3f > 1 at position 20: better than exact Bayes, a future leak", efficiency_20));
  // Near the optimum: the quick models train for a few hundred steps, the default ones longer.
  const double max_excess = quick ? 0.05 : 0.03, min_eff = quick ? 0.9 : 0.95;
  if (mean_excess > max_excess)
    v.flag(fmt("%.4f nats/token above exact Bayes (allowed %.2f): not near the optimum", mean_excess, max_excess));
  if (efficiency_20 < min_eff)
    v.flag(fmt("entropy efficiency %.3f at position 20 (needs >= %.2f)", efficiency_20, min_eff));
  double worst = 0;
  for (double e : excess) worst = std::max(worst, e);
  if (worst > 0.2) v.note(fmt("the worst position is %.3f nats above exact Bayes", worst));
  return v;
}

Verdict check_martingale(const std::vector<double>& n, const std::vector<double>& gap) {
  Verdict v;
  if (gap.empty()) {
    v.flag("no measurement");
    return v;
  }
  // The tail: the last third of the n grid, where log n / n is smallest.
  const size_t from = gap.size() - std::max<size_t>(1, gap.size() / 3);
  std::vector<double> tail(gap.begin() + std::ptrdiff_t(from), gap.end());
  const double tail_gap = mean_of(tail);
  double largest = 0;
  for (double g : gap) largest = std::max(largest, g);
  if (largest < 1e-9) {
    v.note("the gap is zero to round-off: an exact martingale");
    return v;
  }
  // A predictor that chases the data (recency) has gaps of 0.1 at every n; a trained
  // causal model's sampling and fitting noise is a few 1e-3.
  if (tail_gap > 0.02)
    v.flag(fmt("martingale gap %.4f at large n (needs <= 0.02): predictions drift in expectation", tail_gap));
  const LineFit f = fit_loglog(n, gap);
  if (f.ok() && f.slope > 0.25 && tail_gap > 0.005)
    v.flag(fmt("the gap grows with n (log-log slope %.2f); the theory has it decay like log n / n", f.slope));
  else if (f.ok() && f.slope > -0.2 && v.passed())
    v.note(fmt("the gap is small (%.4f at large n) but does not decay with n (log-log slope %.2f)", tail_gap, f.slope));
  return v;
}

Verdict check_dispersion(const std::vector<double>& n, const std::vector<double>& dispersion) {
  Verdict v;
  double largest = 0;
  for (double d : dispersion) largest = std::max(largest, d);
  if (dispersion.empty()) {
    v.flag("no measurement");
    return v;
  }
  if (largest <= 1e-6) {
    v.note("order-invariant to round-off: nothing to decay");
    return v;
  }
  // log n / n has a local log-log slope of -(1 - 1/ln n): about -0.7 over n = 2..64.
  // Anything flatter than -0.2 is not a decay.
  const LineFit f = fit_loglog(n, dispersion);
  if (!f.ok() || f.slope > -0.2)
    v.flag(fmt("order dispersion does not decay with n (log-log slope %.2f; log n / n falls with slope about -0.7)",
               f.slope));
  return v;
}

Verdict check_permutation_averaging(const std::vector<double>& k, const std::vector<double>& std_of_mean) {
  Verdict v;
  if (std_of_mean.empty() || !(std_of_mean.front() > 1e-9)) {
    v.flag(fmt("no order spread to average (std at K = 1 is %.2g)", std_of_mean.empty() ? 0.0 : std_of_mean.front()));
    return v;
  }
  // Independent orderings: std(mean of K) = std(1) / sqrt(K), slope -1/2. With 64+
  // repetitions per K the fitted slope's noise is a few hundredths; identical copies
  // give 0, correlated ones something in between.
  const LineFit f = fit_loglog(k, std_of_mean);
  if (!f.ok() || std::fabs(f.slope + 0.5) > 0.15)
    v.flag(
        fmt("the K-averaged prediction's spread falls with log-log slope %.3f, not -1/2: the orderings are not "
            "independent (identical copies give 0)",
            f.slope));
  return v;
}

Verdict check_pe_ablation(const std::vector<PeAblationRow>& rows) {
  Verdict v;
  bool found = false;
  for (const auto& r : rows) {
    const std::string who =
        r.layer + ", pe=" + r.pe + ", " + std::to_string(r.layers) + " layer" + (r.layers > 1 ? "s" : "");
    const bool invariant = r.variance_last_fixed <= kRoundOffVariance;
    if (r.pe == "none" && r.layers == 1 && r.layer == "standard") {
      found = true;
      if (!invariant)
        v.flag(who + fmt(" varies with the order of the prefix (variance %.3g > round-off %.0g): something in it "
                         "reads position",
                         r.variance_last_fixed, kRoundOffVariance));
    } else if (r.pe == "none") {
      v.note(who + (invariant ? ": order-invariant to round-off"
                              : fmt(": order variance %.3g, above round-off with no positional encoding: order "
                                    "reaches it through the causal mask",
                                    r.variance_last_fixed) +
                                    (r.layer == "bet" && r.layers == 1
                                         ? " (in one bet layer, through attention keys built from each earlier "
                                           "position's causal prefix statistics)"
                                         : "")));
    } else if (invariant) {
      v.flag(who + fmt(": order-invariant (variance %.3g): its positional encoding does not reach the prediction",
                       r.variance_last_fixed));
    }
  }
  if (!found) v.flag("no one-layer standard pe=none model measured: the invariant reference is missing");
  return v;
}

Verdict check_calibration(double error_auroc, double ece, bool quick) {
  Verdict v;
  // A model that ignores its input gives every example the same confidence: AUROC 0.5.
  if (!(error_auroc >= 0.6))
    v.flag(fmt("confidence ranks errors at AUROC %.3f (needs >= 0.6; 0.5 is chance)", error_auroc));
  const double max_ece = quick ? 0.1 : 0.05;
  if (!(ece <= max_ece)) v.flag(fmt("ECE %.3f (allowed %.2f)", ece, max_ece));
  return v;
}

Verdict check_cot(const std::vector<double>& n, const std::vector<double>& length, double max_length) {
  Verdict v;
  std::vector<double> xs, ys;
  for (size_t i = 0; i < n.size() && i < length.size(); ++i)
    if (length[i] > 1 + 1e-3 && length[i] < max_length * (1 - 1e-4)) {
      xs.push_back(n[i]);
      ys.push_back(length[i]);
    }
  if (xs.size() < 4 || xs.size() * 2 < n.size()) {
    v.flag(fmt("optimal_length sits at its clamp at %.0f of %.0f positions: no growth to fit",
               double(n.size() - xs.size()), double(n.size())));
    return v;
  }
  const LineFit f = fit_loglog(xs, ys);
  if (std::fabs(f.slope - 0.5) > 0.2) v.flag(fmt("optimal_length grows like n^%.3f, not sqrt(n)", f.slope));
  return v;
}

}  // namespace bet::diagnose
