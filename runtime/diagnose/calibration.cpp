// calibration: the uncertainty table (eval --signals' machinery: error AUROC, AURC,
// accuracy at 80/90% coverage per signal and ensemble setting) and the calibration
// metrics and reliability diagram of metrics.h, for a classifier on held-out data.
#include <cmath>

#include "engine/error.h"
#include "runtime/diagnose/experiments.h"
#include "runtime/diagnose/runner.h"
#include "runtime/eval/metrics.h"
#include "runtime/eval/selective.h"
#include "runtime/inference/predictor.h"

namespace bet::diagnose {

CalibrationInput measure_classifier(std::shared_ptr<const model::BetModel> m, const nlohmann::json& tokenizer,
                                    const std::vector<std::string>& texts, const std::vector<int64_t>& labels,
                                    int members, const Progress& progress) {
  BET_CHECK(m->config().task == model::Task::Classify, "diagnose calibration: the model is not a classifier");
  BET_CHECK(!texts.empty(), "diagnose calibration: no held-out examples");
  CalibrationInput in;
  in.label_names = m->config().labels;
  in.labels = labels;
  inference::ModelPredictor predictor(inference::wrap_model(m, tokenizer));
  // One member at the stored temperature: the serving path's answer (predict_batch).
  constexpr size_t kBatch = 32;
  for (size_t first = 0; first < texts.size(); first += kBatch) {
    std::vector<inference::PredictRequest> reqs;
    for (size_t i = first; i < std::min(texts.size(), first + kBatch); ++i) {
      inference::PredictRequest q;
      q.text = texts[i];
      q.return_uncertainty = false;
      reqs.push_back(q);
    }
    for (const auto& o : predictor.predict_batch(reqs)) {
      BET_CHECK(o.ok(), "diagnose calibration: the model cannot answer held-out example ", in.probs.size() + 1, ": ",
                o.issue->message);
      std::vector<double> row;
      for (const auto& name : in.label_names) row.push_back(o.answer["probabilities"][name].get<double>());
      in.probs.push_back(row);
    }
  }
  if (progress) progress("calibration: ranking errors by every signal (" + std::to_string(members) + " members)");
  in.signals = inference::signal_report(predictor, texts, labels, members);
  return in;
}

ExperimentResult calibration_experiment(const CalibrationInput& in, bool quick) {
  ExperimentResult r;
  r.name = "calibration";
  r.title = "Calibration and the uncertainty table";
  r.description =
      "A classifier on held-out data (" + in.source +
      "): accuracy, NLL, ECE (15 equal-width confidence bins), Brier, and how well each uncertainty signal ranks its "
      "errors (error AUROC, AURC, accuracy at 80% and 90% coverage) under one member and K-member ensembles of "
      "orderings and MC-dropout masks (eval --signals). The verdict reads one-member confidence: it must rank "
      "errors (AUROC >= 0.6; a model that ignores its input scores 0.5) and be calibrated.";
  const runtime::RowMatrix probs(in.probs);
  const runtime::ClassificationMetrics cm = runtime::evaluate(probs, in.labels);
  r.verdict = check_calibration(cm.error_auroc, cm.ece, quick);
  std::vector<double> unc;
  std::vector<bool> wrong;
  for (int64_t i = 0; i < probs.rows; ++i) {
    const double* row = probs.row(i);
    const int64_t pred = runtime::argmax_row(row, probs.cols);
    unc.push_back(1 - row[pred]);
    wrong.push_back(pred != in.labels[size_t(i)]);
  }
  const runtime::SelectiveReport sel = runtime::selective_report("1 - confidence", unc, wrong);
  r.headlines = {{"accuracy", fmt3(cm.accuracy), ""},
                 {"NLL", fmt3(cm.nll), ""},
                 {"ECE (15 bins)", fmt3(cm.ece), "0"},
                 {"Brier", fmt3(cm.brier), ""},
                 {"error AUROC of 1 - confidence", fmt3(cm.error_auroc), "> 0.5 (0.5: chance)"},
                 {"AURC of 1 - confidence", fmt3(sel.aurc), ""}};
  r.data = {{"source", in.source},
            {"examples", probs.rows},
            {"metrics", cm.to_json()},
            {"selective", sel.to_json()},
            {"signals", inference::signal_report_json(in.signals)}};

  // Reference: exact Bayes on the same examples, where the task has one.
  runtime::ClassificationMetrics ref;
  const bool has_ref = in.reference_prob_one.size() == in.labels.size() && probs.cols == 2;
  if (has_ref) {
    std::vector<std::vector<double>> rp;
    for (double p : in.reference_prob_one) rp.push_back({1 - p, p});
    ref = runtime::evaluate(runtime::RowMatrix(rp), in.labels);
    r.headlines.push_back({"exact Bayes accuracy / NLL / ECE",
                           fmt3(ref.accuracy) + " / " + fmt3(ref.nll) + " / " + fmt3(ref.ece), "the task's optimum"});
    r.data["exact_bayes"] = ref.to_json();
  }

  report::Table st;
  st.caption = "How each uncertainty signal ranks errors (eval --signals)";
  st.columns = {"setting", "signal", "accuracy", "NLL", "error AUROC", "AURC", "acc@80%", "acc@90%"};
  CsvTable sig{"signals",
               {"setting", "signal", "accuracy", "nll", "error_auroc", "aurc", "accuracy_at_80", "accuracy_at_90"},
               {}};
  auto add_row = [&](const std::string& setting, double acc, double nll, const runtime::SelectiveReport& s) {
    st.rows.push_back({setting, s.signal, fmt3(acc), fmt3(nll), fmt3(s.error_auroc), fmt3(s.aurc),
                       fmt3(s.accuracy_at_80), fmt3(s.accuracy_at_90)});
    sig.rows.push_back({setting, s.signal, csv_number(acc), csv_number(nll), csv_number(s.error_auroc),
                        csv_number(s.aurc), csv_number(s.accuracy_at_80), csv_number(s.accuracy_at_90)});
  };
  if (in.signals.empty()) add_row("single", cm.accuracy, cm.nll, sel);
  for (const auto& row : in.signals) add_row(row.setting, row.accuracy, row.nll, row.report);
  r.html_tables.push_back(st);
  r.tables.push_back(sig);

  // Reliability diagram: accuracy against mean confidence per non-empty bin.
  CsvTable rel{"", {"bin_lower", "bin_upper", "count", "mean_confidence", "accuracy"}, {}};
  std::vector<double> cx, cy;
  for (const auto& b : cm.reliability) {
    rel.rows.push_back({csv_number(b.lower), csv_number(b.upper), std::to_string(b.count), csv_number(b.confidence),
                        csv_number(b.accuracy)});
    if (b.count > 0) {
      cx.push_back(b.confidence);
      cy.push_back(b.accuracy);
    }
  }
  r.tables.insert(r.tables.begin(), rel);
  report::Plot pl =
      report::make_plot("Reliability diagram (15 bins)", "mean confidence in bin", "accuracy in bin", false, false);
  pl.series.push_back(series("model", cx, cy));
  if (has_ref) {
    std::vector<double> rx, ry;
    for (const auto& b : ref.reliability)
      if (b.count > 0) {
        rx.push_back(b.confidence);
        ry.push_back(b.accuracy);
      }
    pl.series.push_back(series("exact Bayes posterior", rx, ry, false, true));
  }
  report::Series diag = series("perfect calibration", {0.5, 1.0}, {0.5, 1.0}, true, false);
  if (probs.cols > 2)
    diag = series("perfect calibration", {1.0 / double(probs.cols), 1.0}, {1.0 / double(probs.cols), 1.0}, true, false);
  diag.color = "#555555";
  pl.series.push_back(diag);
  // Risk-coverage curve of 1 - confidence: the error rate among the most confident.
  const std::vector<double> risk = runtime::risk_coverage(unc, wrong);
  std::vector<double> cov, rk;
  const size_t step = std::max<size_t>(1, risk.size() / 25);
  for (size_t k = 0; k < risk.size(); k += step) {
    cov.push_back(double(k + 1) / double(risk.size()));
    rk.push_back(risk[k]);
  }
  cov.push_back(1.0);
  rk.push_back(risk.back());
  report::Plot rc = report::make_plot("Risk against coverage (1 - confidence)", "coverage", "error rate among answered",
                                      false, false);
  rc.series.push_back(series("model", cov, rk));
  report::Series base = series("error rate at full coverage", {0.0, 1.0}, {risk.back(), risk.back()}, true, false);
  base.color = "#555555";
  rc.series.push_back(base);
  r.plots = {pl, rc};
  return r;
}

}  // namespace bet::diagnose
