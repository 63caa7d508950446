#include "runtime/inference/signal_report.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "engine/error.h"
#include "runtime/eval/metrics.h"
#include "runtime/inference/uncertainty.h"
#include "runtime/inference/uncertainty_signal.h"

namespace bet::inference {

using nlohmann::json;

std::vector<SignalRow> setting_report(ModelPredictor& predictor, const std::vector<std::string>& texts,
                                      const std::vector<int64_t>& labels, EnsembleSetting setting, int members,
                                      size_t batch) {
  BET_CHECK(!texts.empty(), "signal report: no examples");
  BET_CHECK(texts.size() == labels.size(), "signal report: ", texts.size(), " texts for ", labels.size(), " labels");
  BET_CHECK(setting == EnsembleSetting::kSingle || (members >= 2 && members <= RequestLimits::kMaxMembers),
            "signal report: members must be in [2, ", RequestLimits::kMaxMembers, "], got ", members);
  const auto loaded = predictor.current();
  BET_CHECK(loaded != nullptr, "signal report: no model loaded");
  const model::ModelConfig& cfg = loaded->model->config();
  BET_CHECK(cfg.task == model::Task::Classify, "signal report: the model is not a classifier");
  batch = std::max<size_t>(1, batch);

  // Each signal of the setting, read from the answers as the predictor reads its score.
  std::vector<UncertaintySignal> signals;
  for (SignalKind kind : setting_signals(setting, cfg.layer == model::LayerKind::Bet))
    signals.push_back({setting, kind, setting == EnsembleSetting::kSingle ? 1 : members});
  const int permutations = signals.front().permutations(), mc_dropout = signals.front().mc_dropout();

  // Per example: wrong, -ln p(label), and each signal's score (NaN where not given).
  std::vector<bool> wrong;
  double nll = 0;
  std::vector<double> probs;  // [N][C] in label order, for ECE and Brier
  std::vector<std::vector<double>> scores(signals.size());
  for (size_t at = 0; at < texts.size(); at += batch) {
    std::vector<PredictRequest> reqs;
    for (size_t i = at; i < std::min(texts.size(), at + batch); ++i) {
      PredictRequest r;
      r.text = texts[i];
      r.permutations = permutations;
      r.mc_dropout = mc_dropout;
      reqs.push_back(std::move(r));
    }
    std::vector<PredictOutcome> outs = predictor.predict_batch(reqs);
    for (size_t j = 0; j < outs.size(); ++j) {
      const size_t i = at + j;
      BET_CHECK(outs[j].ok(), "signal report: example ", i, ": ", outs[j].issue->message);
      const json& a = outs[j].answer;
      const std::string& truth = cfg.labels.at(size_t(labels[i]));
      wrong.push_back(a["label"].get<std::string>() != truth);
      nll -= std::log(std::max(a["probabilities"][truth].get<double>(), 1e-12));
      for (const std::string& name : cfg.labels) probs.push_back(a["probabilities"][name].get<double>());
      for (size_t s = 0; s < signals.size(); ++s)
        scores[s].push_back(signal_score(signals[s], a, permutations, mc_dropout).value_or(NAN));
    }
  }
  const double n = double(wrong.size());
  const double accuracy = 1.0 - double(std::count(wrong.begin(), wrong.end(), true)) / n;
  const runtime::RowMatrix pm(std::move(probs), int64_t(cfg.labels.size()));
  const double ece = runtime::ece(pm, labels), brier = runtime::brier(pm, labels);
  std::vector<SignalRow> rows;
  for (size_t s = 0; s < signals.size(); ++s) {
    const std::vector<double>& v = scores[s];
    if (std::any_of(v.begin(), v.end(), [](double x) { return std::isnan(x); })) continue;  // not offered
    rows.push_back({std::string(to_string(setting)), accuracy, nll / n, ece, brier,
                    runtime::selective_report(std::string(to_string(signals[s].kind)), v, wrong)});
  }
  return rows;
}

std::vector<SignalRow> signal_report(ModelPredictor& predictor, const std::vector<std::string>& texts,
                                     const std::vector<int64_t>& labels, int members, size_t batch) {
  BET_CHECK(members >= 2 && members <= RequestLimits::kMaxMembers, "signal report: members must be in [2, ",
            RequestLimits::kMaxMembers, "], got ", members);
  std::vector<SignalRow> rows;
  for (EnsembleSetting setting : all_settings()) {
    std::vector<SignalRow> more = setting_report(predictor, texts, labels, setting, members, batch);
    rows.insert(rows.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
  }
  return rows;
}

EnsembleResult deep_ensemble(const std::vector<ModelPredictor*>& models, const std::vector<std::string>& texts,
                             const std::vector<int64_t>& labels, size_t batch) {
  BET_CHECK(!models.empty(), "deep ensemble: no models");
  BET_CHECK(!texts.empty(), "deep ensemble: no examples");
  BET_CHECK(texts.size() == labels.size(), "deep ensemble: ", texts.size(), " texts for ", labels.size(), " labels");
  std::vector<std::string> names;
  for (size_t m = 0; m < models.size(); ++m) {
    const auto loaded = models[m]->current();
    BET_CHECK(loaded != nullptr, "deep ensemble: model ", m + 1, " is not loaded");
    const model::ModelConfig& cfg = loaded->model->config();
    BET_CHECK(cfg.task == model::Task::Classify, "deep ensemble: ", loaded->path, " is not a classifier");
    if (m == 0) names = cfg.labels;
    BET_CHECK(cfg.labels == names, "deep ensemble: ", loaded->path, " has other labels than ",
              models[0]->current()->path);
  }
  batch = std::max<size_t>(1, batch);
  const size_t N = texts.size(), C = names.size();
  // members[i][m]: model m's probabilities for text i, in label order.
  std::vector<std::vector<std::vector<double>>> members(N);
  for (ModelPredictor* model : models) {
    for (size_t at = 0; at < N; at += batch) {
      std::vector<PredictRequest> reqs;
      for (size_t i = at; i < std::min(N, at + batch); ++i) {
        PredictRequest r;
        r.text = texts[i];
        r.return_uncertainty = false;
        reqs.push_back(std::move(r));
      }
      std::vector<PredictOutcome> outs = model->predict_batch(reqs);
      for (size_t j = 0; j < outs.size(); ++j) {
        BET_CHECK(outs[j].ok(), "deep ensemble: example ", at + j, ": ", outs[j].issue->message);
        std::vector<double> p(C);
        for (size_t c = 0; c < C; ++c) p[c] = outs[j].answer["probabilities"][names[c]].get<double>();
        members[at + j].push_back(std::move(p));
      }
    }
  }
  EnsembleResult res;
  std::map<std::string, std::vector<double>> scores;
  std::vector<bool> wrong;
  double nll = 0;
  for (size_t i = 0; i < N; ++i) {
    const EnsembleSummary s = summarize_members(members[i], /*orderings=*/false);
    res.probabilities.push_back(s.pbar);
    wrong.push_back(s.argmax != labels[i]);
    nll -= std::log(std::max(s.pbar[size_t(labels[i])], 1e-12));
    scores["1-confidence"].push_back(1.0 - s.confidence);
    scores["total"].push_back(s.total);
    scores["aleatoric"].push_back(s.aleatoric);
    scores["epistemic"].push_back(s.epistemic);
  }
  const double accuracy = 1.0 - double(std::count(wrong.begin(), wrong.end(), true)) / double(N);
  const runtime::RowMatrix pm(res.probabilities);
  const double ece = runtime::ece(pm, labels), brier = runtime::brier(pm, labels);
  for (auto& [signal, v] : scores)
    res.signals.push_back(
        {"deep_ensemble", accuracy, nll / double(N), ece, brier, runtime::selective_report(signal, v, wrong)});
  return res;
}

json signal_report_json(const std::vector<SignalRow>& rows) {
  json out = json::array();
  for (const SignalRow& r : rows) {
    json j = r.report.to_json();
    j["setting"] = r.setting;
    j["accuracy"] = r.accuracy;
    j["nll"] = r.nll;
    j["ece"] = r.ece;
    j["brier"] = r.brier;
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace bet::inference
