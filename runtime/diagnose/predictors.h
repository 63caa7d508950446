// Predictors of the next Bernoulli outcome, the object the order and Bayes experiments
// measure. A row is a list of outcomes x_1..x_m (0 or 1; token ids 3 and 4 after BOS,
// model.md); a predictor returns, for t = 0..m, the probabilities it gives outcome 0
// and outcome 1 as x_{t+1} after seeing x_1..x_t (a model's full softmax: the two need
// not sum to 1 when it puts mass on other tokens).
//
// Besides a trained model, the experiments' references and negative controls are
// predictors too: exact Bayes (the theory's optimum), a future leak (reads x_{t+1}, so
// it beats exact Bayes, which no causal model can) and a recency predictor (follows the
// last outcome, so its predictions are not a martingale).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/bet_model.h"

namespace bet::diagnose {

using Outcomes = std::vector<int>;  // 0/1 outcomes

struct PositionProbs {
  std::vector<double> p0, p1;  // m + 1 entries: before x_1, ..., after x_m
  // P(next = 1) among the two outcomes: p1 / (p0 + p1).
  double next_one(size_t t) const { return p1[t] / (p0[t] + p1[t]); }
};

class OutcomePredictor {
 public:
  virtual ~OutcomePredictor() = default;
  virtual std::string name() const = 0;
  // Longest row it can read (a model's max_len minus BOS).
  virtual int64_t max_outcomes() const = 0;
  virtual std::vector<PositionProbs> predict(const std::vector<Outcomes>& rows) const = 0;
  // P(next = 1 | whole row), for each row: the prediction after its last outcome.
  std::vector<double> next_after(const std::vector<Outcomes>& rows) const;
};

// (a + heads) / (a + b + t): the posterior predictive under the Beta(a, b) prior.
class ExactBayesPredictor : public OutcomePredictor {
 public:
  explicit ExactBayesPredictor(double a = 1, double b = 1) : a_(a), b_(b) {}
  std::string name() const override { return "exact Bayes"; }
  int64_t max_outcomes() const override { return int64_t(1) << 30; }
  std::vector<PositionProbs> predict(const std::vector<Outcomes>& rows) const override;

 private:
  double a_, b_;
};

// Negative control: mixes exact Bayes with the outcome it is about to predict,
// (1 - w) Bayes + w [x_{t+1} = 1], wherever x_{t+1} is in the row. Only a model that
// sees the future can do this; its log loss is below exact Bayes'.
class FutureLeakPredictor : public OutcomePredictor {
 public:
  explicit FutureLeakPredictor(double weight = 0.5) : w_(weight) {}
  std::string name() const override { return "future leak"; }
  int64_t max_outcomes() const override { return int64_t(1) << 30; }
  std::vector<PositionProbs> predict(const std::vector<Outcomes>& rows) const override;

 private:
  double w_;
  ExactBayesPredictor bayes_;
};

// Negative control: 0.5 + h (2 x_t - 1) after the last outcome x_t (0.5 before any):
// it chases the last outcome, so E[p_{t+1}] != p_t (not a martingale) and its
// prediction depends on the order of the data.
class RecencyPredictor : public OutcomePredictor {
 public:
  explicit RecencyPredictor(double h = 0.35) : h_(h) {}
  std::string name() const override { return "recency"; }
  int64_t max_outcomes() const override { return int64_t(1) << 30; }
  std::vector<PositionProbs> predict(const std::vector<Outcomes>& rows) const override;

 private:
  double h_;
};

// A causal (lm) model: one forward over [BOS, 3 + x_1, ..., 3 + x_m] per row, batched,
// probabilities of ids 3 and 4 from its full softmax at every position.
class ModelOutcomePredictor : public OutcomePredictor {
 public:
  explicit ModelOutcomePredictor(std::shared_ptr<const model::BetModel> m, std::string name = "model");
  std::string name() const override { return name_; }
  int64_t max_outcomes() const override { return model_->config().max_len - 1; }
  std::vector<PositionProbs> predict(const std::vector<Outcomes>& rows) const override;
  // The last layer's optimal_length at every position (n(t) = t + 1 tokens, BOS
  // included): m + 1 entries per row. Empty rows of the result when the last layer is
  // `standard` (it has none).
  std::vector<std::vector<double>> optimal_lengths(const std::vector<Outcomes>& rows) const;
  const model::BetModel& model() const { return *model_; }

 private:
  // Runs `fn(first_row, rows_in_chunk, forward_output, padded_len)` over chunks of rows
  // that fit one forward.
  template <class Fn>
  void for_each_chunk(const std::vector<Outcomes>& rows, Fn fn) const;
  std::shared_ptr<const model::BetModel> model_;
  std::string name_;
};

// Orderings of a prefix for the order experiments: `count` uniformly random permutations
// drawn from a seeded stream. keep_last: x_n stays last and only x_1..x_{n-1} move. A
// causal model reads its prediction at x_n's own position, whose token enters the
// residual stream directly, so only with x_n fixed is a one-layer `pe=none` model
// order-invariant by construction (model.md, PE ablation); without it the ordering also
// changes which token the prediction is read at. identical: `count` copies of one
// ordering (the negative control of the K-averaging experiment).
std::vector<Outcomes> orderings(const Outcomes& prefix, int count, bool keep_last, uint64_t seed,
                                bool identical = false);

// `count` Bernoulli sequences of `length` outcomes, p ~ Beta(a, b) each (runtime/data/
// synthetic.h's generator, so they are the training task's distribution), from `seed`.
std::vector<Outcomes> bernoulli_sequences(int count, int length, uint64_t seed, double a = 1, double b = 1);

}  // namespace bet::diagnose
