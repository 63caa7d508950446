#include "runtime/inference/signal_choice.h"

#include <cmath>

namespace bet::inference {

using nlohmann::json;

UncertaintySignal signal_of(const SignalRow& row, int members) {
  return UncertaintySignal::parse(row.setting == "single" ? row.setting + ":" + row.report.signal
                                                          : row.setting + ":" + row.report.signal + "@" +
                                                                std::to_string(members));
}

SignalChoice choose_signal(const std::vector<SignalRow>& rows, int members, size_t examples,
                           const model::ModelConfig& cfg) {
  SignalChoice choice;
  choice.examples = examples;
  const SignalRow* best = nullptr;
  UncertaintySignal best_signal;
  const SignalRow* fallback = nullptr;  // single:1-confidence, measured
  auto better = [](const SignalRow& a, const UncertaintySignal& as, const SignalRow& b, const UncertaintySignal& bs) {
    if (a.report.error_auroc != b.report.error_auroc) return a.report.error_auroc > b.report.error_auroc;
    if (a.report.aurc != b.report.aurc) return a.report.aurc < b.report.aurc;
    return as.members < bs.members;  // cheaper; equal: the earlier row stays
  };
  for (const SignalRow& row : rows) {
    const UncertaintySignal s = signal_of(row, members);
    if (s == default_uncertainty_signal()) fallback = &row;
    if (!offered_by(s, cfg)) continue;
    ++choice.candidates;
    if (std::isnan(row.report.error_auroc)) continue;
    if (!best || better(row, s, *best, best_signal)) {
      best = &row;
      best_signal = s;
    }
  }
  const SignalRow* chosen = best ? best : fallback;
  if (best) {
    choice.signal = best_signal;
  } else {
    choice.signal = default_uncertainty_signal();
    const double accuracy = fallback ? fallback->accuracy : NAN;
    choice.note = accuracy == 1.0   ? "the calibration data has no errors, so no signal can rank them"
                  : accuracy == 0.0 ? "the calibration data has no right answers, so no signal can rank errors"
                                    : "no signal the model offers could be ranked on the calibration data";
    choice.note += "; kept the default " + choice.signal.to_string();
  }
  if (chosen) {
    choice.measured = *chosen;
    choice.errors = size_t(std::llround((1.0 - chosen->accuracy) * double(examples)));
  }
  return choice;
}

json signal_choice_json(const SignalChoice& choice, bool automatic) {
  auto number = [](double v) { return std::isnan(v) ? json(nullptr) : json(v); };
  json j = {{"signal", choice.signal.to_string()},
            {"chosen", automatic ? "auto" : "given"},
            {"examples", choice.examples},
            {"errors", choice.errors}};
  if (choice.measured) {
    const runtime::SelectiveReport& r = choice.measured->report;
    j["error_auroc"] = number(r.error_auroc);
    j["aurc"] = number(r.aurc);
    j["accuracy_at_80"] = number(r.accuracy_at_80);
    j["accuracy_at_90"] = number(r.accuracy_at_90);
  }
  if (automatic) j["candidates"] = choice.candidates;
  if (!choice.note.empty()) j["note"] = choice.note;
  return j;
}

}  // namespace bet::inference
