// The diagnose experiments of model.md ("What the theory lets us test") and issue 13,
// each a pure function from what it measures (a predictor, measured numbers) and its
// sizes to an ExperimentResult whose verdict comes from properties.h. runner.h trains
// or loads the models and calls them; tests call them on references and controls.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/diagnose/predictors.h"
#include "runtime/diagnose/properties.h"
#include "runtime/diagnose/result.h"
#include "runtime/inference/signal_report.h"

namespace bet::diagnose {

// bernoulli: log loss per position against exact Bayes on `sequences` fresh sequences
// of `length` outcomes (the predictor must read length - 1); the entropy efficiency at
// position 20 (exact Bayes' mean loss / the model's there).
ExperimentResult bernoulli_experiment(const OutcomePredictor& p, int sequences, int length, uint64_t seed, bool quick);

// martingale: for prefixes x_1..x_n, gap(n) = E_{x_{n+1} ~ p(.|x_1..n)} p(x_{n+2} = 1 |
// x_1..x_{n+1}) - p(x_{n+1} = 1 | x_1..x_n), its mean absolute value over prefixes at
// each n of `n_grid`, and its decay (log-log slope, the scale of log n / n).
ExperimentResult martingale_experiment(const OutcomePredictor& p, int prefixes, const std::vector<int>& n_grid,
                                       uint64_t seed);

// dispersion: std of p(next) over `orderings` orderings of the same prefix, mean over
// `prefixes` prefixes, at each n of `n_grid`; fitted against log n / n.
ExperimentResult dispersion_experiment(const OutcomePredictor& p, int prefixes, int orderings,
                                       const std::vector<int>& n_grid, uint64_t seed);

// permutations: std over `repetitions` draws of the mean of p(next) over K orderings of
// a prefix of `prefix_length` outcomes, K = 1, 2, 4, ..., max_k (mean over `prefixes`).
// identical: each draw's K orderings are copies of one (the negative control).
ExperimentResult permutations_experiment(const OutcomePredictor& p, int prefixes, int prefix_length, int repetitions,
                                         int max_k, uint64_t seed, bool identical = false);

// pe-ablation: order variance of p(next) within each prefix (x_n in place, and all
// orderings) for models trained alike but for pe and depth.
struct AblationModel {
  std::string layer = "bet";  // "bet", "standard", or a described variant
  std::string pe;
  int layers = 0;
  const OutcomePredictor* predictor = nullptr;
};
ExperimentResult pe_ablation_experiment(const std::vector<AblationModel>& models, int prefixes, int orderings,
                                        int prefix_length, uint64_t seed);

// calibration: a classifier's answers on a held-out set.
struct CalibrationInput {
  std::string source;  // "built-in task" or the files used
  std::vector<std::string> label_names;
  std::vector<std::vector<double>> probs;  // one member, calibrated temperature: [N][C]
  std::vector<int64_t> labels;
  std::vector<inference::SignalRow> signals;  // eval --signals' table (may be empty)
  // Built-in task only: exact Bayes P(label 1) per example, drawn as the reference.
  std::vector<double> reference_prob_one;
};
ExperimentResult calibration_experiment(const CalibrationInput& in, bool quick);

// cot: the last layer's optimal_length against n(t) (BOS included) on `sequences`
// sequences of `length` outcomes, with the fitted exponent over the unclamped positions.
ExperimentResult cot_experiment(const ModelOutcomePredictor& p, int sequences, int length, uint64_t seed);

// Plot helpers shared by the experiments.
report::Series series(std::string name, std::vector<double> x, std::vector<double> y, bool dashed = false,
                      bool markers = true);
// c f(x) for the theory's curve f, as a dashed series without markers.
report::Series theory_series(std::string name, const std::vector<double>& x, double c, double (*f)(double));
double log_n_over_n(double n);
std::string fmt3(double v);  // report::format_number(v, 3)

}  // namespace bet::diagnose
