// The uncertainty signal's name (runtime/inference/uncertainty_signal.h) and the choice
// `calibrate --uncertainty auto` makes (signal_choice.h), without a model: every valid
// name round trips through its string and JSON forms, every malformed one is refused
// with a message naming what is wrong and what is valid, the offered-by rules, the score
// read from hand-written answers, and the choice's ranking, ties and fallback.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "runtime/inference/request.h"
#include "runtime/inference/signal_choice.h"
#include "runtime/inference/uncertainty_signal.h"

using namespace bet;
using namespace bet::inference;
using nlohmann::json;

namespace {

// The message parse() throws for `text` ("" when it accepts it).
std::string refusal(const std::string& text) {
  try {
    (void)UncertaintySignal::parse(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

model::ModelConfig config(model::LayerKind layer, double dropout = 0.1) {
  model::ModelConfig c;
  c.layer = layer;
  c.dropout = dropout;
  c.num_classes = 2;
  c.labels = {"ham", "spam"};
  return c;
}

SignalRow row(const std::string& setting, const std::string& signal, double auroc, double aurc,
              double accuracy = 0.8) {
  SignalRow r;
  r.setting = setting;
  r.accuracy = accuracy;
  r.nll = 0.5;
  r.report.signal = signal;
  r.report.error_auroc = auroc;
  r.report.aurc = aurc;
  return r;
}

}  // namespace

TEST_CASE("uncertainty signal: every valid name round trips through its string and JSON forms") {
  int names = 0;
  for (EnsembleSetting setting : all_settings()) {
    for (SignalKind kind : setting_signals(setting, /*bet_layers=*/true)) {
      const std::string base = std::string(to_string(setting)) + ":" + std::string(to_string(kind));
      std::vector<std::string> forms = {base};
      if (setting != EnsembleSetting::kSingle) {
        forms.push_back(base + "@2");
        forms.push_back(base + "@" + std::to_string(RequestLimits::kMaxMembers));
      }
      for (const std::string& text : forms) {
        CAPTURE(text);
        const UncertaintySignal s = UncertaintySignal::parse(text);
        CHECK(s.setting == setting);
        CHECK(s.kind == kind);
        // Without @K an ensemble setting runs the default 8 members, and prints them.
        const std::string printed = s.to_string();
        CHECK(printed == (text == base && setting != EnsembleSetting::kSingle ? base + "@8" : text));
        CHECK(UncertaintySignal::parse(printed) == s);
        const json j = s;
        CHECK(j == printed);
        CHECK(j.get<UncertaintySignal>() == s);
        CHECK(json::parse(j.dump()).get<UncertaintySignal>() == s);
        ++names;
      }
    }
  }
  CHECK(names == 4 + 3 * (5 + 4 + 5));
  CHECK(UncertaintySignal::parse("mc_dropout:epistemic").members == UncertaintySignal::kDefaultMembers);
  CHECK(UncertaintySignal::parse("single:total").members == 1);
  // The request fields each setting runs.
  const UncertaintySignal both = UncertaintySignal::parse("both:total@5");
  CHECK(both.permutations() == 5);
  CHECK(both.mc_dropout() == 5);
  CHECK(UncertaintySignal::parse("orderings:total@3").mc_dropout() == 0);
  CHECK(UncertaintySignal::parse("orderings:total@3").permutations() == 3);
  CHECK(UncertaintySignal::parse("mc_dropout:total@4").permutations() == 1);
  CHECK(UncertaintySignal::parse("mc_dropout:total@4").mc_dropout() == 4);
  CHECK(UncertaintySignal::parse("single:1-confidence") == default_uncertainty_signal());
  CHECK(default_uncertainty_signal().to_string() == "single:1-confidence");
}

TEST_CASE("uncertainty signal: every malformed name is refused, naming what is wrong and what is valid") {
  CHECK(contains(refusal(""), "empty"));
  CHECK(contains(refusal("epistemic"), "no ':'"));
  CHECK(contains(refusal("epistemic"), "SETTING:SIGNAL[@K]"));
  // Unknown setting: the valid ones listed.
  std::string m = refusal("dropout:epistemic@8");
  CHECK(contains(m, "unknown setting 'dropout'"));
  CHECK(contains(m, "single, orderings, mc_dropout, both"));
  CHECK(contains(refusal(":total"), "unknown setting ''"));
  CHECK(contains(refusal("Single:total"), "unknown setting 'Single'"));  // case matters
  // Unknown signal: the setting's signals listed.
  m = refusal("mc_dropout:mutual_information@8");
  CHECK(contains(m, "unknown signal 'mutual_information'"));
  CHECK(contains(m, "1-confidence, total, aleatoric, epistemic"));
  CHECK(contains(refusal("single:"), "unknown signal ''"));
  // A signal the setting never gives, on any model.
  m = refusal("single:epistemic");
  CHECK(contains(m, "the single setting has no signal 'epistemic'"));
  CHECK(contains(m, "1-confidence, total, beta_posterior_variance, attention_dispersion"));
  CHECK(contains(refusal("mc_dropout:order_dispersion@8"), "has no signal 'order_dispersion'"));
  CHECK(contains(refusal("orderings:beta_posterior_variance@4"), "has no signal 'beta_posterior_variance'"));
  CHECK(contains(refusal("both:attention_dispersion@4"), "has no signal 'attention_dispersion'"));
  // Members.
  CHECK(contains(refusal("single:total@1"), "takes no '@K'"));
  CHECK(contains(refusal("single:total@8"), "write single:total"));
  const std::string range = "must be an integer in [2, " + std::to_string(RequestLimits::kMaxMembers) + "]";
  for (const char* bad : {"orderings:total@", "orderings:total@1", "orderings:total@0", "orderings:total@-3",
                          "orderings:total@65", "orderings:total@4x", "orderings:total@ 4", "orderings:total@4.0",
                          "orderings:total@99999999999", "orderings:total@4@4"}) {
    CAPTURE(bad);
    m = refusal(bad);
    CHECK(contains(m, range));
    CHECK(contains(m, std::string("'") + bad + "'"));  // the whole name is quoted
  }
  CHECK(contains(refusal("orderings:total "), "unknown signal 'total '"));
  // The JSON form takes a string only, and the same names.
  for (const json& j : {json(8), json::object(), json(nullptr), json::array({"single:total"})}) {
    CAPTURE(j.dump());
    CHECK_THROWS_WITH_AS(j.get<UncertaintySignal>(), doctest::Contains("must be a string"), Error);
  }
  CHECK_THROWS_WITH_AS(json("single:epistemic").get<UncertaintySignal>(), doctest::Contains("has no signal"), Error);
}

TEST_CASE("uncertainty signal: which models offer which signals") {
  const model::ModelConfig bet = config(model::LayerKind::Bet), standard = config(model::LayerKind::Standard);
  const model::ModelConfig no_dropout = config(model::LayerKind::Bet, 0.0);
  // Every name parse accepts is offered by a bet model trained with dropout.
  for (EnsembleSetting setting : all_settings())
    for (SignalKind kind : setting_signals(setting, true)) {
      UncertaintySignal s{setting, kind, setting == EnsembleSetting::kSingle ? 1 : 4};
      CAPTURE(s.to_string());
      CHECK(offered_by(s, bet));
    }
  // The Beta posterior and the attention dispersion are read from bet layers.
  for (const char* name : {"single:beta_posterior_variance", "single:attention_dispersion"}) {
    CAPTURE(name);
    const auto why = why_not_offered(UncertaintySignal::parse(name), standard);
    REQUIRE(why);
    CHECK(contains(*why, "layers are standard"));
  }
  CHECK(setting_signals(EnsembleSetting::kSingle, false) ==
        std::vector<SignalKind>{SignalKind::kOneMinusConfidence, SignalKind::kTotal});
  CHECK(offered_by(UncertaintySignal::parse("single:1-confidence"), standard));
  CHECK(offered_by(UncertaintySignal::parse("orderings:order_dispersion@4"), standard));
  // Dropout masks need a model trained with dropout; orderings do not.
  for (const char* name : {"mc_dropout:epistemic@8", "both:total@4"}) {
    CAPTURE(name);
    const auto why = why_not_offered(UncertaintySignal::parse(name), no_dropout);
    REQUIRE(why);
    CHECK(contains(*why, "dropout > 0"));
  }
  CHECK(offered_by(UncertaintySignal::parse("orderings:epistemic@4"), no_dropout));
  // A value built in code is held to the same rules as a parsed one.
  CHECK(contains(*why_not_offered({EnsembleSetting::kSingle, SignalKind::kEpistemic, 1}, bet), "has no signal"));
  CHECK(contains(*why_not_offered({EnsembleSetting::kMcDropout, SignalKind::kOrderDispersion, 4}, bet),
                 "has no signal"));
  CHECK(contains(*why_not_offered({EnsembleSetting::kSingle, SignalKind::kTotal, 3}, bet), "one member"));
  CHECK(contains(*why_not_offered({EnsembleSetting::kOrderings, SignalKind::kTotal, 1}, bet), "members"));
  CHECK(contains(*why_not_offered({EnsembleSetting::kOrderings, SignalKind::kTotal, 65}, bet), "members"));
}

TEST_CASE("uncertainty signal: the score read from an answer, and when the request's members cannot give it") {
  const json answer = {{"label", "spam"},
                       {"confidence", 0.75},
                       {"attention_dispersion", 0.125},
                       {"uncertainty",
                        {{"total", 0.5},
                         {"aleatoric", 0.375},
                         {"epistemic", 0.125},
                         {"order_dispersion", 0.0625},
                         {"members", 4},
                         {"beta", {{"posterior_variance", 0.03125}}}}}};
  CHECK(*read_signal(SignalKind::kOneMinusConfidence, answer) == 0.25);
  CHECK(*read_signal(SignalKind::kTotal, answer) == 0.5);
  CHECK(*read_signal(SignalKind::kAleatoric, answer) == 0.375);
  CHECK(*read_signal(SignalKind::kEpistemic, answer) == 0.125);
  CHECK(*read_signal(SignalKind::kOrderDispersion, answer) == 0.0625);
  CHECK(*read_signal(SignalKind::kBetaPosteriorVariance, answer) == 0.03125);
  CHECK(*read_signal(SignalKind::kAttentionDispersion, answer) == 0.125);
  // What an answer may lack: no uncertainty asked, no bet layers, no orderings.
  json plain = {{"label", "spam"}, {"confidence", 0.75}};
  CHECK(*read_signal(SignalKind::kOneMinusConfidence, plain) == 0.25);
  CHECK(!read_signal(SignalKind::kTotal, plain));
  CHECK(!read_signal(SignalKind::kAttentionDispersion, plain));
  json no_orderings = answer;
  no_orderings["uncertainty"]["order_dispersion"] = nullptr;
  no_orderings["uncertainty"].erase("beta");
  CHECK(!read_signal(SignalKind::kOrderDispersion, no_orderings));
  CHECK(!read_signal(SignalKind::kBetaPosteriorVariance, no_orderings));
  CHECK(!read_signal(SignalKind::kTotal, json::array()));

  // The request's ensemble must be the signal's setting (any member count)...
  const UncertaintySignal mc = UncertaintySignal::parse("mc_dropout:epistemic@8");
  CHECK(*signal_score(mc, answer, 1, 8) == 0.125);
  CHECK(*signal_score(mc, answer, 1, 3) == 0.125);
  CHECK(!signal_score(mc, answer, 1, 0));  // mc_dropout 0 asked explicitly
  CHECK(!signal_score(mc, answer, 4, 0));  // orderings are another setting
  CHECK(!signal_score(mc, answer, 4, 4));  // and so is both
  CHECK(!signal_score(mc, answer, 1, 1));  // one member has no mutual information
  const UncertaintySignal ord = UncertaintySignal::parse("orderings:order_dispersion@4");
  CHECK(*signal_score(ord, answer, 4, 0) == 0.0625);
  CHECK(!signal_score(ord, answer, 1, 0));
  CHECK(!signal_score(ord, answer, 4, 2));
  CHECK(*signal_score(UncertaintySignal::parse("both:total@4"), answer, 2, 1) == 0.5);
  // ...while a single signal reads any answer.
  const UncertaintySignal conf = default_uncertainty_signal();
  CHECK(*signal_score(conf, answer, 1, 0) == 0.25);
  CHECK(*signal_score(conf, answer, 4, 8) == 0.25);
  CHECK(setting_of(1, 0) == EnsembleSetting::kSingle);
  CHECK(setting_of(2, 0) == EnsembleSetting::kOrderings);
  CHECK(setting_of(1, 1) == EnsembleSetting::kMcDropout);
  CHECK(setting_of(3, 2) == EnsembleSetting::kBoth);
}

TEST_CASE("calibrate --uncertainty auto: the best error AUROC the model offers, ties, NaN and the fallback") {
  const model::ModelConfig bet = config(model::LayerKind::Bet), standard = config(model::LayerKind::Standard);
  std::vector<SignalRow> rows = {row("single", "1-confidence", 0.70, 0.10),
                                 row("single", "beta_posterior_variance", 0.95, 0.05),
                                 row("orderings", "epistemic", 0.80, 0.08),
                                 row("mc_dropout", "epistemic", 0.85, 0.07),
                                 row("both", "total", NAN, 0.2)};
  SignalChoice c = choose_signal(rows, 6, 100, bet);
  CHECK(c.signal.to_string() == "single:beta_posterior_variance");
  CHECK(c.candidates == 5);
  CHECK(c.errors == 20);
  CHECK(c.note.empty());
  // A standard model does not offer the Beta variance: the next best.
  c = choose_signal(rows, 6, 100, standard);
  CHECK(c.signal.to_string() == "mc_dropout:epistemic@6");
  CHECK(c.candidates == 4);
  REQUIRE(c.measured);
  CHECK(c.measured->report.error_auroc == 0.85);
  json j = signal_choice_json(c, true);
  CHECK(j["signal"] == "mc_dropout:epistemic@6");
  CHECK(j["chosen"] == "auto");
  CHECK(j["error_auroc"] == 0.85);
  CHECK(j["aurc"] == 0.07);
  CHECK(j["examples"] == 100);
  CHECK(j["candidates"] == 4);
  CHECK(!j.contains("note"));
  // Nor does a model without dropout offer masks.
  c = choose_signal(rows, 6, 100, config(model::LayerKind::Standard, 0.0));
  CHECK(c.signal.to_string() == "orderings:epistemic@6");

  // Ties: the lower AURC, then the cheaper signal, then the earlier row.
  c = choose_signal({row("both", "total", 0.9, 0.05), row("orderings", "total", 0.9, 0.04)}, 4, 10, bet);
  CHECK(c.signal.to_string() == "orderings:total@4");
  c = choose_signal({row("both", "total", 0.9, 0.05), row("single", "total", 0.9, 0.05)}, 4, 10, bet);
  CHECK(c.signal.to_string() == "single:total");
  c = choose_signal({row("orderings", "aleatoric", 0.9, 0.05), row("mc_dropout", "total", 0.9, 0.05)}, 4, 10, bet);
  CHECK(c.signal.to_string() == "orderings:aleatoric@4");

  // No errors: every AUROC is NaN, so the default, saying why.
  std::vector<SignalRow> perfect = {row("single", "1-confidence", NAN, 0.0, 1.0), row("single", "total", NAN, 0.0, 1.0),
                                    row("mc_dropout", "epistemic", NAN, 0.0, 1.0)};
  c = choose_signal(perfect, 8, 12, bet);
  CHECK(c.signal == default_uncertainty_signal());
  CHECK(contains(c.note, "no errors"));
  CHECK(contains(c.note, "single:1-confidence"));
  CHECK(c.errors == 0);
  j = signal_choice_json(c, true);
  CHECK(j["error_auroc"].is_null());
  CHECK(j["note"] == c.note);
  // No right answers either ranks nothing.
  c = choose_signal({row("single", "1-confidence", NAN, 1.0, 0.0)}, 8, 12, bet);
  CHECK(c.signal == default_uncertainty_signal());
  CHECK(contains(c.note, "no right answers"));
}
