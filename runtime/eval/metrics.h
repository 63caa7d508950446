// Classification metrics over predictions held as plain doubles (model.md, "Uncertainty at
// inference" and "Calibration"; product.md, "Quality"): accuracy, F1, NLL, Brier, ECE/MCE
// with a reliability table, and the AUROC with which an uncertainty score ranks errors.
// Nothing here touches the engine, so `eval`, `diagnose` and the server share one definition.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace bet::runtime {

// An [N][C] row-major matrix of doubles: probabilities here, logits in calibration.h.
// Either form converts implicitly, so f(nested, labels) and f({flat, C}, labels) both work.
struct RowMatrix {
  std::vector<double> data;
  int64_t rows = 0, cols = 0;

  RowMatrix() = default;
  RowMatrix(const std::vector<std::vector<double>>& nested);  // rows must share one length
  RowMatrix(std::vector<double> flat, int64_t cols);          // size must be a multiple of cols
  const double* row(int64_t i) const { return data.data() + i * cols; }
};

// Index of the largest entry; the first one on ties (as numpy and torch do).
int64_t argmax_row(const double* p, int64_t cols);

// Every metric below checks: at least one example, labels.size() == rows, 0 <= label < C,
// finite non-negative probabilities whose rows sum to 1 within 1e-3 (a model's float32
// softmax passes; logits passed by mistake do not).
double accuracy(const RowMatrix& probs, const std::vector<int64_t>& labels);

// positive_label set: binary F1 of that class (needs C == 2), 2TP / (2TP + FP + FN), taken
// as 0 when there are neither true nor predicted positives (as scikit-learn does). Unset:
// macro F1, the mean over the classes present in the labels or the predictions (a class in
// neither has no F1 to average; scikit-learn's default label set).
double f1_score(const RowMatrix& probs, const std::vector<int64_t>& labels,
                std::optional<int64_t> positive_label = std::nullopt);

constexpr double kNllFloor = 1e-12;
// Mean of -ln max(p[label], 1e-12).
double nll(const RowMatrix& probs, const std::vector<int64_t>& labels);
// Mean over examples of sum_c (p_c - [c == label])^2; in [0, 2].
double brier(const RowMatrix& probs, const std::vector<int64_t>& labels);

// Equal-width confidence bins: bin i holds confidence in (i/B, (i+1)/B], bin 0 also holds 0,
// with the edges the doubles k / B (so a confidence exactly on an edge goes to the lower bin).
// Confidences above 1 (round-off) land in the last bin.
constexpr int64_t kDefaultBins = 15;
int64_t confidence_bin(double confidence, int64_t num_bins = kDefaultBins);

struct ReliabilityBin {
  double lower = 0, upper = 0;  // edges i/B and (i+1)/B
  int64_t count = 0;
  double confidence = 0;        // mean confidence in the bin (NaN when empty)
  double accuracy = 0;          // fraction correct in the bin (NaN when empty)
};

struct Reliability {
  std::vector<ReliabilityBin> bins;
  double ece = 0;  // sum_b |acc_b - conf_b| * n_b / N
  double mce = 0;  // max_b over non-empty bins of |acc_b - conf_b|
};

// From per-example confidence in [0, 1] and correctness (the general form: confidence need
// not be a max probability). Needs at least one example.
Reliability reliability(const std::vector<double>& confidence, const std::vector<bool>& correct,
                        int64_t num_bins = kDefaultBins);
// Confidence = max p, correct = (argmax == label).
Reliability reliability(const RowMatrix& probs, const std::vector<int64_t>& labels,
                        int64_t num_bins = kDefaultBins);
double ece(const RowMatrix& probs, const std::vector<int64_t>& labels, int64_t num_bins = kDefaultBins);
double mce(const RowMatrix& probs, const std::vector<int64_t>& labels, int64_t num_bins = kDefaultBins);

// Area under the ROC curve of `score` as a detector of `positive` (here: of errors, with a
// higher score meaning "more likely wrong"): P(score_pos > score_neg) + P(tie) / 2, computed
// from average ranks. NaN when every outcome is positive or every one negative.
double auroc(const std::vector<double>& score, const std::vector<bool>& positive);

struct EvalOptions {
  std::optional<int64_t> positive_label;  // binary F1 of this class (C == 2); else macro F1
  int64_t num_bins = kDefaultBins;
  // Per-example uncertainty used for the error-ranking AUROC; empty means 1 - confidence.
  std::vector<double> uncertainty;
  std::string uncertainty_name;           // reported name; defaults as above
};

struct ClassificationMetrics {
  int64_t examples = 0, classes = 0;
  double accuracy = 0;
  double f1 = 0;
  std::string f1_kind;           // "binary" or "macro"
  int64_t positive_label = -1;   // -1 for macro
  double nll = 0, brier = 0, ece = 0, mce = 0;
  double mean_confidence = 0;
  double error_auroc = 0;        // NaN when there are no errors or no correct predictions
  bool error_auroc_defined = false;
  std::string uncertainty;       // what error_auroc ranked by
  std::vector<ReliabilityBin> reliability;

  // NaN values are written as null.
  nlohmann::json to_json() const;
};

ClassificationMetrics evaluate(const RowMatrix& probs, const std::vector<int64_t>& labels,
                               const EvalOptions& options = {});

}  // namespace bet::runtime
