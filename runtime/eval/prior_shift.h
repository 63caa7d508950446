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

}  // namespace bet::runtime
