// Temperature scaling (model.md, "Calibration"): one T > 0 with p = softmax(logits / T),
// fitted by minimising the mean NLL on a validation split of the training distribution.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/eval/metrics.h"

namespace bet::runtime {

struct TemperatureFitOptions {
  double t_min = 0.05, t_max = 20.0;  // search bracket for T
  double tolerance = 1e-10;           // on log T, for the bracketed search
  int newton_steps = 8;               // polish after the bracketed search
};

struct TemperatureFit {
  double temperature = 1.0;
  double nll_before = 0;  // mean NLL at T = 1
  double nll_after = 0;   // mean NLL at `temperature`; never above nll_before
  int evaluations = 0;    // NLL evaluations spent
  bool at_bound = false;  // the optimum sits on t_min or t_max (the bracket cut it short)
};

// Mean of -log softmax(logits / T)[label], computed stably (exact: no 1e-12 floor, so the
// objective stays smooth; it differs from metrics' nll only where p < 1e-12).
// logits: [N][C] finite doubles, labels in [0, C).
double temperature_nll(const RowMatrix& logits, const std::vector<int64_t>& labels, double temperature);

// Minimises temperature_nll over u = ln T in [ln t_min, ln t_max] with Brent's method
// (golden section plus parabolic steps; the objective is convex in 1/T, hence unimodal in
// u), then safeguarded Newton steps in u. Returns T = 1 unless that strictly lowers the NLL.
TemperatureFit fit_temperature(const RowMatrix& logits, const std::vector<int64_t>& labels,
                               const TemperatureFitOptions& options = {});

// softmax(logits / T) row by row.
RowMatrix apply_temperature(const RowMatrix& logits, double temperature);

}  // namespace bet::runtime
