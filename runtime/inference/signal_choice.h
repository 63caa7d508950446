// `betctl calibrate --uncertainty auto`: which uncertainty signal a model should report,
// chosen from a signal report (signal_report.h) on the calibration data, and the record
// calibrate stores in the checkpoint (metrics.calibration.uncertainty) and the predictor
// reads back.
//
// The rule: among the rows the model offers (why_not_offered), the highest error AUROC;
// ties go to the lower AURC, then to the cheaper signal (fewer forward passes: single
// before any ensemble), then to the report's order. A row whose AUROC is NaN (the data
// has no errors, or no right answers) cannot rank anything and is never chosen; when no
// row can be ranked the choice falls back to single:1-confidence, and `note` says why.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "runtime/inference/signal_report.h"
#include "runtime/inference/uncertainty_signal.h"

namespace bet::inference {

struct SignalChoice {
  UncertaintySignal signal;
  std::optional<SignalRow> measured;  // the row of the chosen signal, when the report has it
  size_t examples = 0, errors = 0;    // of the calibration data, in the chosen signal's setting
  size_t candidates = 0;              // rows the model offers
  std::string note;                   // set when the choice fell back to the default
};

// `rows` from signal_report(..., members, ...) on `examples` labelled texts.
SignalChoice choose_signal(const std::vector<SignalRow>& rows, int members, size_t examples,
                           const model::ModelConfig& cfg);

// The SignalRow's signal: setting "single" has no members, the others `members`.
UncertaintySignal signal_of(const SignalRow& row, int members);

// What calibrate stores: {"signal", "chosen" ("auto" | "given"), "examples", "errors",
// "error_auroc" (null when NaN), "aurc", "accuracy_at_80", "accuracy_at_90", "note"?}.
nlohmann::json signal_choice_json(const SignalChoice& choice, bool automatic);

}  // namespace bet::inference
