// Selective prediction: how well an uncertainty score ranks a model's errors, so that
// answering only the most certain examples lowers the error rate. Beside the error AUROC
// of metrics.h: the risk-coverage curve (answer the k most certain examples; risk = their
// error rate), its area (AURC, lower is better; Geifman et al. 2019), and the accuracy at
// a fixed coverage. Examples with equal scores are taken in random order, in expectation,
// so no result depends on the order examples were given in.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace bet::runtime {

// Expected error rate among the k examples with the lowest `uncertainty`, for k = 1..N
// (entry k-1). Needs at least one example; throws on a NaN score.
std::vector<double> risk_coverage(const std::vector<double>& uncertainty, const std::vector<bool>& wrong);

// Mean of the risk-coverage curve over k = 1..N: the area under it, coverage in (0, 1].
double aurc(const std::vector<double>& uncertainty, const std::vector<bool>& wrong);

// Accuracy among the ceil(coverage * N) most certain examples; coverage in (0, 1].
double accuracy_at_coverage(const std::vector<double>& uncertainty, const std::vector<bool>& wrong,
                            double coverage);

// One uncertainty signal's report: error AUROC (NaN without errors or without correct
// answers), AURC, accuracy at 80% and 90% coverage.
struct SelectiveReport {
  std::string signal;
  double error_auroc = 0;
  double aurc = 0;
  double accuracy_at_80 = 0, accuracy_at_90 = 0;
  nlohmann::json to_json() const;  // NaN as null
};
SelectiveReport selective_report(const std::string& signal, const std::vector<double>& uncertainty,
                                 const std::vector<bool>& wrong);

}  // namespace bet::runtime
