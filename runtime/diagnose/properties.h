// The theory's properties as checks on measured numbers, apart from the experiments
// that measure them, so tests can feed them negative controls (a future leak, K
// identical copies, a model that ignores its input) and see them flagged. Each bound
// is one a broken model fails (model.md, "Known traps": no bounds so wide they pass
// when the property is absent); the numbers and their reasons are in properties.cpp.
#pragma once
#include <string>
#include <vector>

#include "runtime/diagnose/result.h"

namespace bet::diagnose {

// Bernoulli microscope. `excess` per position (model minus exact Bayes, nats), `mean
// excess` over all of them, `efficiency_20` = Bayes loss / model loss at position 20.
Verdict check_bayes_approach(const std::vector<double>& excess, double mean_excess, double efficiency_20, bool quick);

// Martingale gap |E[p_{n+1}] - p_n| (mean over prefixes) against n.
Verdict check_martingale(const std::vector<double>& n, const std::vector<double>& gap);

// Order dispersion (std of p(next) over orderings) against n: it must decay, or be zero
// to round-off (an order-invariant predictor).
Verdict check_dispersion(const std::vector<double>& n, const std::vector<double>& dispersion);

// Standard deviation of the K-averaged prediction against K: log-log slope -1/2.
Verdict check_permutation_averaging(const std::vector<double>& k, const std::vector<double>& std_of_mean);

// PE ablation: one row per model.
struct PeAblationRow {
  std::string layer = "bet";  // bet | standard
  std::string pe;
  int layers = 0;
  double variance_last_fixed = 0;  // orderings of x_1..x_{n-1}, x_n in place
  double variance_all = 0;         // orderings of all n outcomes
};
// Round-off: the largest variance a float32 forward's summation order can make.
constexpr double kRoundOffVariance = 1e-12;
// A one-layer `standard` model with pe=none must be invariant (x_n in place): its
// attention at the last position sees the other tokens' embeddings as a set. Every
// model with an encoding must not be. A one-layer `bet` model with pe=none is measured,
// not assumed: its attention reads keys built from causal prefix statistics (each
// earlier position's stats sum that position's own prefix), so order can reach it.
Verdict check_pe_ablation(const std::vector<PeAblationRow>& rows);

// Calibration: error AUROC of the headline signal (1 - confidence), and the ECE.
Verdict check_calibration(double error_auroc, double ece, bool quick);

// CoT: optimal_length against n; max_length is the clamp.
Verdict check_cot(const std::vector<double>& n, const std::vector<double>& length, double max_length);

}  // namespace bet::diagnose
