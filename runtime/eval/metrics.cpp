#include "runtime/eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "engine/error.h"

namespace bet::runtime {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void check_predictions(const char* what, const RowMatrix& probs, const std::vector<int64_t>& labels) {
  BET_CHECK(probs.rows > 0, what, ": no examples");
  BET_CHECK(probs.cols > 0, what, ": zero classes");
  BET_CHECK(static_cast<int64_t>(labels.size()) == probs.rows, what, ": ", labels.size(),
            " labels for ", probs.rows, " rows of probabilities");
  for (int64_t i = 0; i < probs.rows; ++i) {
    BET_CHECK(labels[i] >= 0 && labels[i] < probs.cols, what, ": label ", labels[i], " of example ", i,
              " is outside [0, ", probs.cols, ")");
    const double* p = probs.row(i);
    double sum = 0;
    for (int64_t c = 0; c < probs.cols; ++c) {
      BET_CHECK(std::isfinite(p[c]) && p[c] >= 0, what, ": probability ", p[c], " at [", i, ", ", c,
                "] is not a finite non-negative number");
      sum += p[c];
    }
    BET_CHECK(std::abs(sum - 1.0) <= 1e-3, what, ": row ", i, " sums to ", sum,
              ", not 1 (probabilities expected, not logits)");
  }
}

// JSON has no NaN; an undefined value (empty bin, AUROC without errors) is written as null.
nlohmann::json number_or_null(double v) {
  if (std::isnan(v)) return nullptr;
  return v;
}

}  // namespace

RowMatrix::RowMatrix(const std::vector<std::vector<double>>& nested)
    : rows(static_cast<int64_t>(nested.size())), cols(nested.empty() ? 0 : static_cast<int64_t>(nested[0].size())) {
  data.reserve(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < nested.size(); ++i) {
    BET_CHECK(static_cast<int64_t>(nested[i].size()) == cols, "RowMatrix: row ", i, " has ", nested[i].size(),
              " entries, row 0 has ", cols);
    data.insert(data.end(), nested[i].begin(), nested[i].end());
  }
}

RowMatrix::RowMatrix(std::vector<double> flat, int64_t cols_) : data(std::move(flat)), cols(cols_) {
  BET_CHECK(cols > 0, "RowMatrix: ", cols, " columns");
  BET_CHECK(static_cast<int64_t>(data.size()) % cols == 0, "RowMatrix: ", data.size(),
            " values do not fill rows of ", cols);
  rows = static_cast<int64_t>(data.size()) / cols;
}

int64_t argmax_row(const double* p, int64_t cols) {
  int64_t best = 0;
  for (int64_t c = 1; c < cols; ++c)
    if (p[c] > p[best]) best = c;
  return best;
}

double accuracy(const RowMatrix& probs, const std::vector<int64_t>& labels) {
  check_predictions("accuracy", probs, labels);
  int64_t hits = 0;
  for (int64_t i = 0; i < probs.rows; ++i) hits += argmax_row(probs.row(i), probs.cols) == labels[i];
  return static_cast<double>(hits) / static_cast<double>(probs.rows);
}

double f1_score(const RowMatrix& probs, const std::vector<int64_t>& labels, std::optional<int64_t> positive_label) {
  check_predictions("f1", probs, labels);
  const int64_t C = probs.cols;
  if (positive_label) {
    BET_CHECK(C == 2, "f1: a positive label makes F1 binary, which needs 2 classes, not ", C);
    BET_CHECK(*positive_label >= 0 && *positive_label < C, "f1: positive label ", *positive_label,
              " is outside [0, ", C, ")");
  }
  // Per class: true positives, false positives (predicted c, label not c), false negatives.
  std::vector<int64_t> tp(C, 0), fp(C, 0), fn(C, 0);
  for (int64_t i = 0; i < probs.rows; ++i) {
    const int64_t pred = argmax_row(probs.row(i), C), y = labels[i];
    if (pred == y) {
      ++tp[y];
    } else {
      ++fp[pred];
      ++fn[y];
    }
  }
  auto f1_of = [&](int64_t c) {
    const int64_t denom = 2 * tp[c] + fp[c] + fn[c];
    return denom == 0 ? 0.0 : 2.0 * static_cast<double>(tp[c]) / static_cast<double>(denom);
  };
  if (positive_label) return f1_of(*positive_label);
  double sum = 0;
  int64_t present = 0;
  for (int64_t c = 0; c < C; ++c) {
    if (tp[c] + fp[c] + fn[c] == 0) continue;  // neither a label nor a prediction
    sum += f1_of(c);
    ++present;
  }
  return sum / static_cast<double>(present);  // present >= 1 since rows > 0
}

double nll(const RowMatrix& probs, const std::vector<int64_t>& labels) {
  check_predictions("nll", probs, labels);
  double sum = 0;
  for (int64_t i = 0; i < probs.rows; ++i) sum -= std::log(std::max(probs.row(i)[labels[i]], kNllFloor));
  return sum / static_cast<double>(probs.rows);
}

double brier(const RowMatrix& probs, const std::vector<int64_t>& labels) {
  check_predictions("brier", probs, labels);
  double sum = 0;
  for (int64_t i = 0; i < probs.rows; ++i) {
    const double* p = probs.row(i);
    for (int64_t c = 0; c < probs.cols; ++c) {
      const double d = p[c] - (c == labels[i] ? 1.0 : 0.0);
      sum += d * d;
    }
  }
  return sum / static_cast<double>(probs.rows);
}

int64_t confidence_bin(double confidence, int64_t num_bins) {
  BET_CHECK(num_bins > 0, "confidence_bin: ", num_bins, " bins");
  BET_CHECK(!std::isnan(confidence), "confidence_bin: confidence is NaN");
  const double B = static_cast<double>(num_bins);
  // ceil(c * B) - 1 is the bin up to round-off in the product; the edges themselves are the
  // doubles k / B, so settle against those to put a confidence on an edge in the lower bin.
  double guess = std::ceil(confidence * B) - 1.0;
  int64_t b = guess <= 0 ? 0 : guess >= B - 1 ? num_bins - 1 : static_cast<int64_t>(guess);
  while (b > 0 && confidence <= static_cast<double>(b) / B) --b;
  while (b < num_bins - 1 && confidence > static_cast<double>(b + 1) / B) ++b;
  return b;
}

Reliability reliability(const std::vector<double>& confidence, const std::vector<bool>& correct, int64_t num_bins) {
  BET_CHECK(!confidence.empty(), "reliability: no examples");
  BET_CHECK(confidence.size() == correct.size(), "reliability: ", confidence.size(), " confidences for ",
            correct.size(), " outcomes");
  BET_CHECK(num_bins > 0, "reliability: ", num_bins, " bins");
  std::vector<double> conf_sum(num_bins, 0.0), hit_sum(num_bins, 0.0);
  std::vector<int64_t> count(num_bins, 0);
  for (size_t i = 0; i < confidence.size(); ++i) {
    BET_CHECK(std::isfinite(confidence[i]) && confidence[i] >= 0, "reliability: confidence ", confidence[i],
              " of example ", i, " is not a finite non-negative number");
    const int64_t b = confidence_bin(confidence[i], num_bins);
    conf_sum[b] += confidence[i];
    hit_sum[b] += correct[i] ? 1.0 : 0.0;
    ++count[b];
  }
  Reliability r;
  r.bins.resize(num_bins);
  const double N = static_cast<double>(confidence.size());
  for (int64_t b = 0; b < num_bins; ++b) {
    ReliabilityBin& bin = r.bins[b];
    bin.lower = static_cast<double>(b) / static_cast<double>(num_bins);
    bin.upper = static_cast<double>(b + 1) / static_cast<double>(num_bins);
    bin.count = count[b];
    if (count[b] == 0) {
      bin.confidence = bin.accuracy = kNaN;
      continue;
    }
    const double n = static_cast<double>(count[b]);
    bin.confidence = conf_sum[b] / n;
    bin.accuracy = hit_sum[b] / n;
    const double gap = std::abs(bin.accuracy - bin.confidence);
    r.ece += gap * n / N;
    r.mce = std::max(r.mce, gap);
  }
  return r;
}

Reliability reliability(const RowMatrix& probs, const std::vector<int64_t>& labels, int64_t num_bins) {
  check_predictions("reliability", probs, labels);
  std::vector<double> conf(probs.rows);
  std::vector<bool> correct(probs.rows);
  for (int64_t i = 0; i < probs.rows; ++i) {
    const int64_t pred = argmax_row(probs.row(i), probs.cols);
    conf[i] = probs.row(i)[pred];
    correct[i] = pred == labels[i];
  }
  return reliability(conf, correct, num_bins);
}

double ece(const RowMatrix& probs, const std::vector<int64_t>& labels, int64_t num_bins) {
  return reliability(probs, labels, num_bins).ece;
}

double mce(const RowMatrix& probs, const std::vector<int64_t>& labels, int64_t num_bins) {
  return reliability(probs, labels, num_bins).mce;
}

double auroc(const std::vector<double>& score, const std::vector<bool>& positive) {
  BET_CHECK(score.size() == positive.size(), "auroc: ", score.size(), " scores for ", positive.size(), " outcomes");
  const size_t n = score.size();
  for (size_t i = 0; i < n; ++i) BET_CHECK(!std::isnan(score[i]), "auroc: score of example ", i, " is NaN");
  const size_t n_pos = static_cast<size_t>(std::count(positive.begin(), positive.end(), true));
  const size_t n_neg = n - n_pos;
  if (n_pos == 0 || n_neg == 0) return kNaN;
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return score[a] < score[b]; });
  // Mann-Whitney: sum of the positives' 1-based ranks, a tied group sharing its mean rank.
  double pos_rank_sum = 0;
  for (size_t start = 0; start < n;) {
    size_t end = start;
    while (end < n && score[order[end]] == score[order[start]]) ++end;
    const double mean_rank = 0.5 * static_cast<double>(start + 1 + end);
    for (size_t k = start; k < end; ++k)
      if (positive[order[k]]) pos_rank_sum += mean_rank;
    start = end;
  }
  const double P = static_cast<double>(n_pos), Q = static_cast<double>(n_neg);
  return (pos_rank_sum - P * (P + 1) / 2) / (P * Q);
}

ClassificationMetrics evaluate(const RowMatrix& probs, const std::vector<int64_t>& labels, const EvalOptions& options) {
  check_predictions("evaluate", probs, labels);
  const int64_t N = probs.rows;
  BET_CHECK(options.uncertainty.empty() || static_cast<int64_t>(options.uncertainty.size()) == N,
            "evaluate: ", options.uncertainty.size(), " uncertainty scores for ", N, " examples");
  ClassificationMetrics m;
  m.examples = N;
  m.classes = probs.cols;
  m.accuracy = accuracy(probs, labels);
  m.f1 = f1_score(probs, labels, options.positive_label);
  m.f1_kind = options.positive_label ? "binary" : "macro";
  m.positive_label = options.positive_label.value_or(-1);
  m.nll = nll(probs, labels);
  m.brier = brier(probs, labels);

  std::vector<double> conf(N);
  std::vector<bool> correct(N), wrong(N);
  double conf_sum = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t pred = argmax_row(probs.row(i), probs.cols);
    conf[i] = probs.row(i)[pred];
    correct[i] = pred == labels[i];
    wrong[i] = !correct[i];
    conf_sum += conf[i];
  }
  m.mean_confidence = conf_sum / static_cast<double>(N);
  Reliability r = reliability(conf, correct, options.num_bins);
  m.ece = r.ece;
  m.mce = r.mce;
  m.reliability = std::move(r.bins);

  if (options.uncertainty.empty()) {
    std::vector<double> score(N);
    for (int64_t i = 0; i < N; ++i) score[i] = 1.0 - conf[i];
    m.error_auroc = auroc(score, wrong);
    m.uncertainty = options.uncertainty_name.empty() ? "1-confidence" : options.uncertainty_name;
  } else {
    m.error_auroc = auroc(options.uncertainty, wrong);
    m.uncertainty = options.uncertainty_name.empty() ? "custom" : options.uncertainty_name;
  }
  m.error_auroc_defined = !std::isnan(m.error_auroc);
  return m;
}

nlohmann::json ClassificationMetrics::to_json() const {
  nlohmann::json bins = nlohmann::json::array();
  for (const ReliabilityBin& b : reliability)
    bins.push_back({{"lower", b.lower},
                    {"upper", b.upper},
                    {"count", b.count},
                    {"confidence", number_or_null(b.confidence)},
                    {"accuracy", number_or_null(b.accuracy)}});
  nlohmann::json j = {{"examples", examples},
                      {"classes", classes},
                      {"accuracy", accuracy},
                      {"f1", f1},
                      {"f1_kind", f1_kind},
                      {"nll", nll},
                      {"brier", brier},
                      {"ece", ece},
                      {"mce", mce},
                      {"mean_confidence", mean_confidence},
                      {"error_auroc", number_or_null(error_auroc)},
                      {"uncertainty", uncertainty},
                      {"reliability", std::move(bins)}};
  if (positive_label >= 0) j["positive_label"] = positive_label;
  return j;
}

}  // namespace bet::runtime
