// Calibration under a prior shift (label shift): the classes' shares at deployment differ
// from training's (spam: 15% in the training groups, 50% in the test groups), while each
// class's texts look the same. Then Bayes' rule gives the deployment posterior exactly,
// p'(y | x) ∝ p(y | x) pi'(y) / pi(y), and pi' can be estimated from unlabelled deployment
// inputs by EM over that rule (Saerens, Latinne & Decaestecker, Neural Computation 2002).
// The model's probabilities must be calibrated on the training distribution first (a
// temperature fitted on a validation split), or the estimate inherits their bias.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/eval/metrics.h"

namespace bet::runtime {

// Class shares of `labels` over C classes, with one pseudo-count per class so no share is
// 0 (a class absent from a small split would otherwise be impossible forever after).
std::vector<double> class_shares(const std::vector<int64_t>& labels, int64_t classes);

// p'(y | x) ∝ p(y | x) new_prior(y) / train_prior(y), row by row. Priors are C positive
// numbers (normalised here); throws bet::Error naming what is wrong.
RowMatrix reweight_prior(const RowMatrix& probs, const std::vector<double>& train_prior,
                         const std::vector<double>& new_prior);

struct PriorShiftFit {
  std::vector<double> prior;  // the estimated deployment prior
  int iterations = 0;
  bool converged = false;     // max change of a share below tol before max_iterations
};

// EM: start at train_prior, alternate reweighting every row and taking the mean reweighted
// row as the new prior. Each step raises the likelihood of the unlabelled rows, so it
// converges (to the maximum-likelihood prior); rows whose probabilities already follow
// train_prior leave it where it started.
PriorShiftFit estimate_prior_em(const RowMatrix& probs, const std::vector<double>& train_prior,
                                int max_iterations = 1000, double tol = 1e-9);

// Is there a shift at all? EM always finds some prior, and where the classes overlap
// (a 20-topic model at 60% accuracy) the maximum-likelihood prior of a few thousand rows
// is far from the truth even without any shift: on such data re-weighting does harm.
// So `eval --adapt-prior` re-weights only when the model's mean prediction on the new data
// differs from its mean on the calibration data by more than sampling noise: per class,
// z = (mean_new - mean_ref) / sqrt(var_new (1/N_new + 1/N_ref)), with var_new the
// variance of that class's probability over the new rows (standing for both), against
// the two-sided normal quantile at alpha / C (Bonferroni over the C classes). alpha is
// 1e-3: a false alarm costs more than a missed small shift (EM then moves the prior on
// noise), and the shifts worth correcting (spam: 15% to 50%) give |z| in the tens.
std::vector<double> mean_prediction(const RowMatrix& probs);

struct ShiftTest {
  std::vector<double> z;   // per class
  double max_abs_z = 0;
  double threshold = 0;    // |z| beyond it is a shift
  bool shifted = false;
};
ShiftTest detect_prior_shift(const RowMatrix& probs, const std::vector<double>& reference_mean,
                             int64_t reference_examples, double alpha = 1e-3);

// The z with P(|N(0,1)| > z) = p, for p in (0, 1).
double two_sided_normal_quantile(double p);

}  // namespace bet::runtime
