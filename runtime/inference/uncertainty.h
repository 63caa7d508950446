// The uncertainty decomposition of model.md ("Uncertainty at inference") as pure
// functions over member probability vectors, so each number a response carries can be
// checked on hand-computable cases without a model.
//
// With K members' predictive distributions p_k and pbar = mean_k p_k:
//   total      = H[pbar]
//   aleatoric  = mean_k H[p_k]
//   epistemic  = total - aleatoric   (mutual information, >= 0 by Jensen; 0 when K = 1)
//   order_dispersion = population std_k of p_k(argmax pbar)   (only with K > 1 orderings)
//   confidence = max pbar
// Entropies are in nats.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

namespace bet::inference {

// Shannon entropy in nats; 0 ln 0 = 0.
double entropy(const std::vector<double>& p);

// Softmax of logits / temperature, in double, max-subtracted.
std::vector<double> softmax(const std::vector<double>& logits, double temperature = 1.0);

struct EnsembleSummary {
  std::vector<double> pbar;
  int64_t argmax = 0;  // of pbar; the first on ties
  double confidence = 0, total = 0, aleatoric = 0, epistemic = 0;
  std::optional<double> order_dispersion;
  int64_t members = 0;
};

// `members` [K][C], K >= 1, every row the same length. `orderings` says the members are
// K orderings of the input (order_dispersion is reported only then, and only for K > 1).
EnsembleSummary summarize_members(const std::vector<std::vector<double>>& members, bool orderings);

struct BetaSummary {
  double alpha = 0, beta = 0, posterior_mean = 0, posterior_variance = 0;
  double epistemic = 0;  // = posterior_variance
  double aleatoric = 0;  // = mu (1 - mu)
};

// From the model's Beta posterior at one position (mean and variance as the model computed them).
BetaSummary summarize_beta(double alpha, double beta, double posterior_mean, double posterior_variance);

// {"alpha", "beta", "posterior_mean", "posterior_variance", "epistemic", "aleatoric"}.
nlohmann::json beta_json(const BetaSummary& b);

// {"total", "aleatoric", "epistemic", "order_dispersion" (null when absent), "members"}.
nlohmann::json ensemble_json(const EnsembleSummary& s);

}  // namespace bet::inference
