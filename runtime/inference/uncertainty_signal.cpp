#include "runtime/inference/uncertainty_signal.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "engine/error.h"
#include "runtime/inference/request.h"

namespace bet::inference {

using nlohmann::json;

namespace {

constexpr EnsembleSetting kSettings[] = {EnsembleSetting::kSingle, EnsembleSetting::kOrderings,
                                         EnsembleSetting::kMcDropout, EnsembleSetting::kBoth};
constexpr SignalKind kKinds[] = {SignalKind::kOneMinusConfidence,    SignalKind::kTotal,
                                 SignalKind::kAleatoric,             SignalKind::kEpistemic,
                                 SignalKind::kOrderDispersion,       SignalKind::kBetaPosteriorVariance,
                                 SignalKind::kAttentionDispersion};

bool has_orderings(EnsembleSetting s) { return s == EnsembleSetting::kOrderings || s == EnsembleSetting::kBoth; }
bool has_masks(EnsembleSetting s) { return s == EnsembleSetting::kMcDropout || s == EnsembleSetting::kBoth; }
bool needs_members(SignalKind k) {
  return k == SignalKind::kAleatoric || k == SignalKind::kEpistemic || k == SignalKind::kOrderDispersion;
}
bool reads_bet_layer(SignalKind k) {
  return k == SignalKind::kBetaPosteriorVariance || k == SignalKind::kAttentionDispersion;
}

template <typename T>
std::string joined(const std::vector<T>& items) {
  std::string out;
  for (const T& item : items) out += (out.empty() ? "" : ", ") + std::string(to_string(item));
  return out;
}

// Every signal some model can give in `setting`: the list a refusal shows.
std::vector<SignalKind> valid_signals(EnsembleSetting setting) { return setting_signals(setting, true); }

// The number at `path` in `j`; nullopt when a key is missing or the value is not a number
// (null included).
std::optional<double> number_at(const json& j, std::initializer_list<const char*> path) {
  const json* v = &j;
  for (const char* key : path) {
    if (!v->is_object()) return std::nullopt;
    auto it = v->find(key);
    if (it == v->end()) return std::nullopt;
    v = &*it;
  }
  if (!v->is_number()) return std::nullopt;
  return v->get<double>();
}

}  // namespace

std::string_view to_string(EnsembleSetting setting) {
  switch (setting) {
    case EnsembleSetting::kSingle: return "single";
    case EnsembleSetting::kOrderings: return "orderings";
    case EnsembleSetting::kMcDropout: return "mc_dropout";
    case EnsembleSetting::kBoth: return "both";
  }
  return "single";
}

std::string_view to_string(SignalKind kind) {
  switch (kind) {
    case SignalKind::kOneMinusConfidence: return "1-confidence";
    case SignalKind::kTotal: return "total";
    case SignalKind::kAleatoric: return "aleatoric";
    case SignalKind::kEpistemic: return "epistemic";
    case SignalKind::kOrderDispersion: return "order_dispersion";
    case SignalKind::kBetaPosteriorVariance: return "beta_posterior_variance";
    case SignalKind::kAttentionDispersion: return "attention_dispersion";
  }
  return "1-confidence";
}

const std::vector<EnsembleSetting>& all_settings() {
  static const std::vector<EnsembleSetting> settings(std::begin(kSettings), std::end(kSettings));
  return settings;
}

std::vector<SignalKind> setting_signals(EnsembleSetting setting, bool bet_layers) {
  std::vector<SignalKind> out = {SignalKind::kOneMinusConfidence, SignalKind::kTotal};
  if (setting != EnsembleSetting::kSingle) {  // the decomposition needs members
    out.push_back(SignalKind::kAleatoric);
    out.push_back(SignalKind::kEpistemic);
  }
  if (has_orderings(setting)) out.push_back(SignalKind::kOrderDispersion);
  // Read from member 0 alone, so only where member 0 is the answer: one plain forward.
  if (setting == EnsembleSetting::kSingle && bet_layers) {
    out.push_back(SignalKind::kBetaPosteriorVariance);
    out.push_back(SignalKind::kAttentionDispersion);
  }
  return out;
}

EnsembleSetting setting_of(int permutations, int mc_dropout) {
  const bool orderings = permutations > 1, masks = mc_dropout > 0;
  if (orderings && masks) return EnsembleSetting::kBoth;
  if (orderings) return EnsembleSetting::kOrderings;
  if (masks) return EnsembleSetting::kMcDropout;
  return EnsembleSetting::kSingle;
}

UncertaintySignal UncertaintySignal::parse(std::string_view text) {
  const std::string quoted = "uncertainty signal '" + std::string(text) + "'";
  const std::string form = "expected SETTING:SIGNAL[@K], e.g. single:1-confidence or mc_dropout:epistemic@8";
  const size_t colon = text.find(':');
  if (text.empty()) fail("uncertainty signal: empty; ", form);
  if (colon == std::string_view::npos) fail(quoted, ": no ':' between setting and signal; ", form);
  const std::string_view setting_name = text.substr(0, colon);
  std::string_view rest = text.substr(colon + 1);
  std::optional<std::string_view> count;
  if (const size_t at = rest.find('@'); at != std::string_view::npos) {
    count = rest.substr(at + 1);
    rest = rest.substr(0, at);
  }

  UncertaintySignal s;
  auto setting = std::find_if(std::begin(kSettings), std::end(kSettings),
                              [&](EnsembleSetting e) { return inference::to_string(e) == setting_name; });
  if (setting == std::end(kSettings))
    fail(quoted, ": unknown setting '", setting_name, "'; valid settings: ", joined(all_settings()));
  s.setting = *setting;
  const std::vector<SignalKind> valid = valid_signals(s.setting);
  auto kind = std::find_if(std::begin(kKinds), std::end(kKinds), [&](SignalKind k) { return inference::to_string(k) == rest; });
  if (kind == std::end(kKinds))
    fail(quoted, ": unknown signal '", rest, "'; valid signals for ", setting_name, ": ", joined(valid));
  if (std::find(valid.begin(), valid.end(), *kind) == valid.end())
    fail(quoted, ": the ", setting_name, " setting has no signal '", rest, "'; valid signals for ", setting_name, ": ",
         joined(valid));
  s.kind = *kind;

  if (s.setting == EnsembleSetting::kSingle) {
    if (count) fail(quoted, ": the single setting runs one member and takes no '@K'; write single:", rest);
    s.members = 1;
    return s;
  }
  s.members = kDefaultMembers;
  if (count) {
    constexpr int K = RequestLimits::kMaxMembers;
    int k = 0;
    const auto [end, ec] = std::from_chars(count->data(), count->data() + count->size(), k);
    if (count->empty() || ec != std::errc() || end != count->data() + count->size() || k < 2 || k > K)
      fail(quoted, ": members after '@' must be an integer in [2, ", K, "], got '", *count, "'");
    s.members = k;
  }
  return s;
}

std::string UncertaintySignal::to_string() const {
  std::string out = std::string(inference::to_string(setting)) + ":" + std::string(inference::to_string(kind));
  if (setting != EnsembleSetting::kSingle) {
    out += '@';
    out += std::to_string(members);
  }
  return out;
}

int UncertaintySignal::permutations() const { return has_orderings(setting) ? members : 1; }
int UncertaintySignal::mc_dropout() const { return has_masks(setting) ? members : 0; }

void to_json(json& j, const UncertaintySignal& s) { j = s.to_string(); }

void from_json(const json& j, UncertaintySignal& s) {
  if (!j.is_string()) fail("uncertainty signal: must be a string such as \"mc_dropout:epistemic@8\", got ", j.dump());
  s = UncertaintySignal::parse(j.get<std::string>());
}

std::optional<std::string> why_not_offered(const UncertaintySignal& s, const model::ModelConfig& cfg) {
  const std::string name = s.to_string();
  const std::vector<SignalKind> valid = valid_signals(s.setting);
  if (std::find(valid.begin(), valid.end(), s.kind) == valid.end())
    return name + ": the " + std::string(to_string(s.setting)) + " setting has no signal '" +
           std::string(to_string(s.kind)) + "'; valid signals for it: " + joined(valid);
  if (s.setting == EnsembleSetting::kSingle ? s.members != 1
                                            : (s.members < 2 || s.members > RequestLimits::kMaxMembers))
    return name + ": " + (s.setting == EnsembleSetting::kSingle
                              ? std::string("the single setting runs one member")
                              : "members must be in [2, " + std::to_string(RequestLimits::kMaxMembers) + "]");
  if (reads_bet_layer(s.kind) && cfg.layer != model::LayerKind::Bet)
    return name + ": " + std::string(to_string(s.kind)) +
           " is read from a bet layer, and this model's layers are standard";
  // Without dropout every mask is the identity: the members would all agree and the
  // signal would be a constant, which ranks nothing.
  if (has_masks(s.setting) && !(cfg.dropout > 0))
    return name + ": dropout masks need a model trained with dropout > 0, and this model has dropout " +
           json(cfg.dropout).dump() + (s.setting == EnsembleSetting::kBoth ? "; use the orderings setting" : "");
  return std::nullopt;
}

std::optional<double> read_signal(SignalKind kind, const json& answer) {
  switch (kind) {
    case SignalKind::kOneMinusConfidence:
      if (auto c = number_at(answer, {"confidence"})) return 1.0 - *c;
      return std::nullopt;
    case SignalKind::kTotal: return number_at(answer, {"uncertainty", "total"});
    case SignalKind::kAleatoric: return number_at(answer, {"uncertainty", "aleatoric"});
    case SignalKind::kEpistemic: return number_at(answer, {"uncertainty", "epistemic"});
    case SignalKind::kOrderDispersion: return number_at(answer, {"uncertainty", "order_dispersion"});
    case SignalKind::kBetaPosteriorVariance: return number_at(answer, {"uncertainty", "beta", "posterior_variance"});
    case SignalKind::kAttentionDispersion: return number_at(answer, {"attention_dispersion"});
  }
  return std::nullopt;
}

std::optional<double> signal_score(const UncertaintySignal& s, const json& answer, int permutations, int mc_dropout) {
  if (s.setting != EnsembleSetting::kSingle && setting_of(permutations, mc_dropout) != s.setting) return std::nullopt;
  if (needs_members(s.kind) && std::max({permutations, mc_dropout, 1}) < 2) return std::nullopt;
  return read_signal(s.kind, answer);
}

}  // namespace bet::inference
