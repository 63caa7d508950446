// Built-in exchangeable-sequence generators (model.md, "What the theory lets us test"):
// `bernoulli` draws p ~ Beta(a, b) per sequence and 0/1 outcomes (ids 3 and 4);
// `categorical` draws theta ~ Dirichlet(1..1) over C outcomes (ids 3..3+C-1).
// Sequence i is a pure function of (seed, i), so a data position is just an index.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace bet::runtime {

struct SyntheticSpec {
  std::string kind = "bernoulli";  // bernoulli | categorical
  double a = 1.0, b = 1.0;         // Beta prior (bernoulli)
  int64_t categories = 4;          // categorical
  int64_t length = 64;             // outcomes per sequence

  int64_t outcomes() const { return kind == "bernoulli" ? 2 : categories; }
  void validate() const;
};

// Outcomes of sequence `index` as token ids (3 + outcome), `length` of them.
std::vector<int32_t> synthetic_sequence(const SyntheticSpec& spec, uint64_t seed, uint64_t index);

// Exact Bayes predictive probability of each outcome given the ones before it:
// (a + heads) / (a + b + t) and (1 + count_c) / (C + t). Returns -ln p per position.
std::vector<double> exact_bayes_nll(const SyntheticSpec& spec, const std::vector<int32_t>& ids);
// Predictive distribution over outcomes after `ids` (the exact Bayes posterior predictive).
std::vector<double> exact_bayes_predictive(const SyntheticSpec& spec, const std::vector<int32_t>& ids);

}  // namespace bet::runtime
