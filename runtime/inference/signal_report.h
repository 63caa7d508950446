// How well each uncertainty signal a model offers ranks its errors (issue: "uncertainty
// that ranks errors"). For labelled texts, the predictor answers every text under four
// ensemble settings, each with its own prediction and errors:
//   single       one member: 1 - confidence, entropy, the Beta posterior's variance and
//                the attention dispersion (bet layers);
//   orderings    K orderings of the input: 1 - confidence, total, aleatoric, epistemic
//                (mutual information) and order dispersion;
//   mc_dropout   K dropout masks: 1 - confidence, total, aleatoric, epistemic;
//   both         K members, each an ordering with its own dropout mask.
// Each (setting, signal) gets a SelectiveReport (error AUROC, AURC, accuracy at 80% and
// 90% coverage), beside the setting's accuracy, NLL, ECE and Brier score.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/eval/selective.h"
#include "runtime/inference/predictor.h"
#include "runtime/inference/uncertainty_signal.h"

namespace bet::inference {

struct SignalRow {
  std::string setting;     // single, orderings, mc_dropout, both
  double accuracy = 0, nll = 0;
  double ece = 0, brier = 0;  // of the setting's (ensemble-mean) probabilities, metrics.h's definitions
  runtime::SelectiveReport report;
};

// `labels` index the model's labels (config().labels order). K >= 2. Texts are answered
// in batches of `batch` requests.
std::vector<SignalRow> signal_report(ModelPredictor& predictor, const std::vector<std::string>& texts,
                                     const std::vector<int64_t>& labels, int members, size_t batch = 32);
// One setting's rows: every signal it gives on this model (setting_signals), scored as the
// predictor scores answers (signal_score). `members` is ignored for single.
std::vector<SignalRow> setting_report(ModelPredictor& predictor, const std::vector<std::string>& texts,
                                      const std::vector<int64_t>& labels, EnsembleSetting setting, int members,
                                      size_t batch = 32);

// A deep ensemble (Lakshminarayanan et al. 2017): each text answered by every model
// (one member each, its own calibrated temperature), the probabilities averaged. The
// models must be classifiers with the same labels in the same order.
struct EnsembleResult {
  std::vector<std::vector<double>> probabilities;  // [N][C]: the members' mean
  std::vector<SignalRow> signals;  // setting "deep_ensemble": 1-confidence, total, aleatoric, epistemic
};
EnsembleResult deep_ensemble(const std::vector<ModelPredictor*>& models, const std::vector<std::string>& texts,
                             const std::vector<int64_t>& labels, size_t batch = 32);

nlohmann::json signal_report_json(const std::vector<SignalRow>& rows);

}  // namespace bet::inference
