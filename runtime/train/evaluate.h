// Runs a model over encoded sequences without gradients and collects what the
// trainer's validation, `betctl eval` and calibration need.
#pragma once
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "model/bet_model.h"
#include "runtime/data/batching.h"
#include "runtime/data/synthetic.h"

namespace bet::runtime {

struct EvalResult {
  int64_t n = 0;              // targets counted (examples for classify, tokens for lm)
  double loss = 0;            // mean cross-entropy per target (nats)
  double accuracy = NAN;      // classify
  std::vector<std::vector<double>> logits;  // classify: [N][C] (after temperature)
  std::vector<int64_t> labels;              // classify
  double bayes_loss = NAN;    // synthetic lm: exact Bayes' mean loss on the same targets
  std::vector<double> model_loss_at, bayes_loss_at;  // synthetic lm: mean loss per position
  double order_dispersion = 0;       // mean over sequences of attention_dispersion
  double posterior_mean = NAN, posterior_variance = NAN;  // bet: last layer, at the last valid position

  double excess_over_bayes() const { return loss - bayes_loss; }
  double perplexity() const { return std::exp(loss); }
  double bits_per_token() const { return loss / std::log(2.0); }
};

// `spec` (synthetic lm only) enables the exact-Bayes comparison.
EvalResult evaluate(const model::BetModel& m, const std::vector<EncodedSequence>& data, int64_t batch_size,
                    const SyntheticSpec* spec = nullptr);

// Builds the model context of a batch (mask, n(t), positions) in the model's dtype.
model::SeqContext batch_context(const Batch& b, const model::BetModel& m);

// The validation metrics of a training run, by name ("val/loss", "val/accuracy"...):
// what the run logs, milestones track and early stopping watches. `synthetic` adds
// "val/excess_over_bayes".
std::map<std::string, double> validation_metrics(const EvalResult& r, model::Task task, bool synthetic);
// Whether a larger value of `metric` is better (accuracy, F1); else smaller is.
bool higher_is_better(const std::string& metric);
// A metric named by the user ("loss" or "val/loss") as validation_metrics names it.
std::string validation_metric_key(const std::string& user_name);

}  // namespace bet::runtime
