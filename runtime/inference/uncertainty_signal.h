// One uncertainty signal, named the way `betctl eval --signals` reports it: the ensemble
// setting an answer runs under and the quantity read from it, `SETTING:SIGNAL[@K]`:
//   single:1-confidence      mc_dropout:epistemic@8      orderings:order_dispersion@4
// K is the number of members the setting runs (default 8; `single` takes none). It is
// what `betctl calibrate --uncertainty` stores in a checkpoint, what the predictor reports
// as each answer's "uncertainty.score", and what a request that gives neither
// `permutations` nor `mc_dropout` runs by default (predictor.h).
//
// One definition of each rule, shared by the signal report (signal_report.h), calibrate
// and the predictor:
//   - which signals a setting gives (setting_signals): the decomposition (aleatoric,
//     epistemic) needs members; order_dispersion needs orderings; the Beta posterior's
//     variance and the attention dispersion are read from one plain forward;
//   - which of them a model offers (why_not_offered): the last two only with bet layers,
//     and dropout masks only on a model trained with dropout;
//   - how a signal's score is read from a predictor answer (signal_score), higher = more
//     uncertain.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"

namespace bet::inference {

// The ensemble an answer ran (model.md "Uncertainty at inference").
enum class EnsembleSetting {
  kSingle,     // one member: the input as given, no dropout
  kOrderings,  // K orderings of the input's units (permutations = K)
  kMcDropout,  // K dropout masks (mc_dropout = K)
  kBoth        // K members, each an ordering with its own dropout mask
};

// The quantities an answer carries, each read so that higher means more uncertain.
enum class SignalKind {
  kOneMinusConfidence,     // 1 - max pbar
  kTotal,                  // H[pbar]
  kAleatoric,              // mean_k H[p_k]
  kEpistemic,              // mutual information
  kOrderDispersion,        // std_k p_k(argmax pbar) over orderings
  kBetaPosteriorVariance,  // the last layer's Beta posterior variance
  kAttentionDispersion     // the attention diagnostic, averaged over layers
};

std::string_view to_string(EnsembleSetting setting);
std::string_view to_string(SignalKind kind);

// The four settings, in the order the signal report runs them.
const std::vector<EnsembleSetting>& all_settings();
// The signals a setting gives; `bet_layers` adds the two read from a bet layer (single only).
std::vector<SignalKind> setting_signals(EnsembleSetting setting, bool bet_layers);
// The setting of a request that ran `permutations` orderings and `mc_dropout` masks:
// orderings when permutations > 1, dropout masks when mc_dropout > 0.
EnsembleSetting setting_of(int permutations, int mc_dropout);

struct UncertaintySignal {
  static constexpr int kDefaultMembers = 8;

  EnsembleSetting setting = EnsembleSetting::kSingle;
  SignalKind kind = SignalKind::kOneMinusConfidence;
  int members = 1;  // K: 1 for single, else in [2, RequestLimits::kMaxMembers]

  // Strict: throws bet::Error naming what is wrong in `text` and listing what is valid.
  static UncertaintySignal parse(std::string_view text);
  // "SETTING:SIGNAL" for single, else "SETTING:SIGNAL@K"; parse(to_string()) == *this.
  std::string to_string() const;

  // The request fields that run the signal's setting (1 and 0 for single).
  int permutations() const;
  int mc_dropout() const;

  bool operator==(const UncertaintySignal&) const = default;
};

// The model's signal when its checkpoint stores none.
inline UncertaintySignal default_uncertainty_signal() { return {}; }

// JSON form: the string of to_string(). from_json throws bet::Error on anything else.
void to_json(nlohmann::json& j, const UncertaintySignal& s);
void from_json(const nlohmann::json& j, UncertaintySignal& s);

// Why a model of this config cannot give the signal (one sentence), or nullopt when it can.
std::optional<std::string> why_not_offered(const UncertaintySignal& s, const model::ModelConfig& cfg);
inline bool offered_by(const UncertaintySignal& s, const model::ModelConfig& cfg) {
  return !why_not_offered(s, cfg).has_value();
}

// The quantity `kind` in a predictor answer (ModelPredictor::predict's JSON), higher =
// more uncertain; nullopt when the answer does not carry it (no uncertainty asked, no
// bet layers, order_dispersion without orderings).
std::optional<double> read_signal(SignalKind kind, const nlohmann::json& answer);

// The signal's score in an answer to a request that ran `permutations` orderings and
// `mc_dropout` dropout masks: the signal's quantity, or nullopt when those members cannot
// give it as calibration measured it. A signal of the orderings, mc_dropout or both
// setting needs the request's ensemble to be of that setting (any member count); aleatoric
// and epistemic need at least two members; a single signal reads any answer.
std::optional<double> signal_score(const UncertaintySignal& s, const nlohmann::json& answer, int permutations,
                                   int mc_dropout);

}  // namespace bet::inference
