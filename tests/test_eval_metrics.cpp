// Evaluation metrics and temperature calibration (runtime/eval), against numpy/torch
// references from tests/reference/gen_eval_metrics.py.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "bet_config.h"
#include "tests/reference_data.h"
#include "engine/error.h"
#include "runtime/eval/calibration.h"
#include "runtime/eval/metrics.h"
#include "runtime/eval/selective.h"

using namespace bet;
using namespace bet::runtime;
using nlohmann::json;

namespace {

const json& reference() { return bet::testing::reference_file("eval_metrics.json"); }

RowMatrix probs_of(const json& c) { return RowMatrix(c["probs"].get<std::vector<std::vector<double>>>()); }
std::vector<int64_t> labels_of(const json& c) { return c["labels"].get<std::vector<int64_t>>(); }

// Mean-of-sums references agree to round-off only.
constexpr double kTol = 1e-12;

void check_reliability(const std::vector<ReliabilityBin>& bins, const json& ref) {
  REQUIRE(bins.size() == ref["counts"].size());
  for (size_t b = 0; b < bins.size(); ++b) {
    CAPTURE(b);
    CHECK(bins[b].count == ref["counts"][b].get<int64_t>());
    CHECK(bins[b].lower == doctest::Approx(static_cast<double>(b) / 15));
    CHECK(bins[b].upper == doctest::Approx(static_cast<double>(b + 1) / 15));
    if (ref["confidence"][b].is_null()) {
      CHECK(std::isnan(bins[b].confidence));
      CHECK(std::isnan(bins[b].accuracy));
    } else {
      CHECK(bins[b].confidence == doctest::Approx(ref["confidence"][b].get<double>()).epsilon(kTol));
      CHECK(bins[b].accuracy == doctest::Approx(ref["accuracy"][b].get<double>()).epsilon(kTol));
    }
  }
}

// Logits z ~ N(0, scale^2) and labels drawn from softmax(z / t_true).
void synthetic_logits(int64_t n, int64_t c, double scale, double t_true, uint64_t seed, RowMatrix& z,
                      std::vector<int64_t>& y) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, scale);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  std::vector<double> flat(n * c);
  y.assign(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    double* r = flat.data() + i * c;
    double mx = -1e300, sum = 0;
    for (int64_t k = 0; k < c; ++k) mx = std::max(mx, r[k] = normal(gen));
    std::vector<double> p(c);
    for (int64_t k = 0; k < c; ++k) sum += (p[k] = std::exp((r[k] - mx) / t_true));
    double u = unif(gen) * sum;
    int64_t k = 0;
    while (k < c - 1 && u >= p[k]) u -= p[k++];
    y[i] = k;
  }
  z = RowMatrix(std::move(flat), c);
}

}  // namespace

TEST_CASE("metrics match the numpy reference on random predictions") {
  for (const json& c : reference()["prediction_cases"]) {
    const std::string name = c["name"];
    CAPTURE(name);
    const RowMatrix p = probs_of(c);
    const auto y = labels_of(c);
    CHECK(accuracy(p, y) == doctest::Approx(c["accuracy"].get<double>()).epsilon(kTol));
    CHECK(f1_score(p, y) == doctest::Approx(c["f1_macro"].get<double>()).epsilon(kTol));
    CHECK(nll(p, y) == doctest::Approx(c["nll"].get<double>()).epsilon(kTol));
    CHECK(brier(p, y) == doctest::Approx(c["brier"].get<double>()).epsilon(kTol));
    const Reliability r = reliability(p, y);
    CHECK(r.ece == doctest::Approx(c["reliability"]["ece"].get<double>()).epsilon(kTol));
    CHECK(r.mce == doctest::Approx(c["reliability"]["mce"].get<double>()).epsilon(kTol));
    CHECK(ece(p, y) == r.ece);
    CHECK(mce(p, y) == r.mce);
    check_reliability(r.bins, c["reliability"]);

    const ClassificationMetrics m = evaluate(p, y);
    CHECK(m.examples == p.rows);
    CHECK(m.classes == p.cols);
    CHECK(m.f1_kind == "macro");
    CHECK(m.accuracy == accuracy(p, y));
    CHECK(m.ece == r.ece);
    CHECK(m.mean_confidence == doctest::Approx(c["mean_confidence"].get<double>()).epsilon(kTol));
    check_reliability(m.reliability, c["reliability"]);
    if (c["error_auroc"].is_null()) {
      CHECK(!m.error_auroc_defined);
    } else {
      CHECK(m.error_auroc_defined);
      CHECK(m.error_auroc == doctest::Approx(c["error_auroc"].get<double>()).epsilon(kTol));
    }

    // The flat row-major form gives identical numbers.
    const RowMatrix flat(p.data, p.cols);
    CHECK(brier(flat, y) == brier(p, y));
    CHECK(reliability(flat, y).ece == r.ece);
  }
}

TEST_CASE("F1: binary for a chosen positive label versus macro") {
  for (const json& c : reference()["prediction_cases"]) {
    if (!c.contains("f1_binary")) continue;
    CAPTURE(c["name"].get<std::string>());
    const RowMatrix p = probs_of(c);
    const auto y = labels_of(c);
    const auto per_class = c["f1_binary"].get<std::vector<double>>();
    for (int64_t pos : {0, 1}) {
      CHECK(f1_score(p, y, pos) == doctest::Approx(per_class[pos]).epsilon(kTol));
      EvalOptions o;
      o.positive_label = pos;
      const ClassificationMetrics m = evaluate(p, y, o);
      CHECK(m.f1_kind == "binary");
      CHECK(m.positive_label == pos);
      CHECK(m.f1 == f1_score(p, y, pos));
    }
    // Macro over two present classes is the mean of the two binary scores.
    CHECK(f1_score(p, y) == doctest::Approx(0.5 * (per_class[0] + per_class[1])).epsilon(kTol));
  }
  // Exact small case: predictions [1, 1, 0, 0], labels [1, 0, 0, 0].
  const RowMatrix p({{0.2, 0.8}, {0.4, 0.6}, {0.9, 0.1}, {0.7, 0.3}});
  const std::vector<int64_t> y = {1, 0, 0, 0};
  CHECK(f1_score(p, y, 1) == doctest::Approx(2.0 / 3.0));  // TP 1, FP 1, FN 0
  CHECK(f1_score(p, y, 0) == doctest::Approx(0.8));        // TP 2, FP 0, FN 1
  CHECK(f1_score(p, y) == doctest::Approx((2.0 / 3.0 + 0.8) / 2));
  // No positives at all, true or predicted: 0 by convention.
  CHECK(f1_score(RowMatrix({{0.9, 0.1}, {0.8, 0.2}}), {0, 0}, 1) == 0.0);
  CHECK_THROWS_AS(f1_score(RowMatrix({{0.2, 0.3, 0.5}}), {0}, 1), Error);
  CHECK_THROWS_AS(f1_score(p, y, 2), Error);
}

TEST_CASE("ECE bins: an edge goes to the lower bin, 0 to the first") {
  const json& c = reference()["confidence_case"];
  const auto conf = c["confidence"].get<std::vector<double>>();
  const auto bins = c["bins"].get<std::vector<int64_t>>();
  for (size_t i = 0; i < conf.size(); ++i) {
    CAPTURE(conf[i]);
    CHECK(confidence_bin(conf[i]) == bins[i]);
  }
  for (int k = 1; k <= 15; ++k) CHECK(confidence_bin(k / 15.0) == k - 1);
  CHECK(confidence_bin(0.0) == 0);
  CHECK(confidence_bin(std::nextafter(0.0, 1.0)) == 0);
  CHECK(confidence_bin(std::nextafter(1.0 / 15, 1.0)) == 1);
  CHECK(confidence_bin(1.0 + 1e-9) == 14);  // round-off above 1
  CHECK(confidence_bin(0.5, 2) == 0);
  CHECK(confidence_bin(0.5000001, 2) == 1);

  const Reliability r = reliability(conf, c["correct"].get<std::vector<bool>>());
  CHECK(r.ece == doctest::Approx(c["reliability"]["ece"].get<double>()).epsilon(kTol));
  CHECK(r.mce == doctest::Approx(c["reliability"]["mce"].get<double>()).epsilon(kTol));
  check_reliability(r.bins, c["reliability"]);
  CHECK(r.bins[0].count == 2);  // 0 and 1/15; the double just above 1/15 is in bin 1
}

TEST_CASE("ECE and MCE: exact small cases") {
  // All in one bin: ECE = MCE = |accuracy - mean confidence|.
  auto r = reliability(std::vector<double>{0.95, 0.97, 0.99, 0.96}, std::vector<bool>{true, false, true, true});
  CHECK(r.ece == doctest::Approx(std::abs(0.75 - 0.9675)));
  CHECK(r.mce == doctest::Approx(r.ece));
  // Two bins, different sizes: ECE weights by count, MCE takes the worst bin.
  r = reliability(std::vector<double>{0.1, 0.9, 0.9, 0.9}, std::vector<bool>{true, true, true, false});
  CHECK(r.ece == doctest::Approx(0.25 * 0.9 + 0.75 * std::abs(2.0 / 3 - 0.9)));
  CHECK(r.mce == doctest::Approx(0.9));
  // Perfectly calibrated at 1.
  CHECK(ece(RowMatrix({{1.0, 0.0}, {0.0, 1.0}}), {0, 1}) == 0.0);
}

TEST_CASE("AUROC: perfect, reversed, ties and one-sided outcomes") {
  const std::vector<bool> wrong = {false, true, false, true, false};
  CHECK(auroc({0.1, 0.8, 0.2, 0.9, 0.3}, wrong) == 1.0);
  CHECK(auroc({0.9, 0.1, 0.8, 0.2, 0.7}, wrong) == 0.0);
  CHECK(auroc({0.5, 0.5, 0.5, 0.5, 0.5}, wrong) == 0.5);
  // One tie between an error and a correct example counts half: pairs (e, c): 6, 5.5 won.
  CHECK(auroc({0.1, 0.8, 0.2, 0.9, 0.8}, wrong) == doctest::Approx(5.5 / 6));
  CHECK(std::isnan(auroc({0.1, 0.2}, {true, true})));
  CHECK(std::isnan(auroc({0.1, 0.2}, {false, false})));
  CHECK(std::isnan(auroc({}, {})));
  CHECK_THROWS_AS(auroc({0.1}, {true, false}), Error);

  const json& c = reference()["auroc_case"];
  CHECK(auroc(c["score"].get<std::vector<double>>(), c["positive"].get<std::vector<bool>>()) ==
        doctest::Approx(c["auroc"].get<double>()).epsilon(kTol));

  // evaluate: a custom uncertainty that ranks the errors perfectly; all-correct is undefined.
  const RowMatrix p({{0.9, 0.1}, {0.6, 0.4}, {0.3, 0.7}, {0.8, 0.2}});
  const std::vector<int64_t> y = {0, 1, 1, 0};  // example 1 is the only error
  EvalOptions o;
  o.uncertainty = {0.1, 0.9, 0.2, 0.3};
  o.uncertainty_name = "epistemic";
  auto m = evaluate(p, y, o);
  CHECK(m.error_auroc == 1.0);
  CHECK(m.uncertainty == "epistemic");
  m = evaluate(p, {0, 0, 1, 0});
  CHECK(!m.error_auroc_defined);
  CHECK(m.uncertainty == "1-confidence");
  CHECK(m.to_json()["error_auroc"].is_null());
}

TEST_CASE("NLL floor and Brier bounds") {
  const RowMatrix p({{1.0, 0.0}, {0.0, 1.0}});
  CHECK(nll(p, {1, 1}) == doctest::Approx(-0.5 * std::log(1e-12)));
  CHECK(brier(p, {1, 0}) == doctest::Approx(2.0));
  CHECK(brier(p, {0, 1}) == 0.0);
}

TEST_CASE("argument checks name the metric") {
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(message([] { accuracy(RowMatrix({{0.5, 0.5}}), {0, 1}); }).find("accuracy: 2 labels for 1 rows") == 0);
  CHECK(message([] { nll(RowMatrix({{0.5, 0.5}}), {2}); }).find("nll: label 2") == 0);
  CHECK(message([] { brier(RowMatrix({{2.0, -1.0}}), {0}); }).find("brier: probability -1") == 0);
  CHECK(message([] { evaluate(RowMatrix({{3.0, 1.0}}), {0}); }).find("not 1 (probabilities expected") !=
        std::string::npos);
  CHECK(message([] { accuracy(RowMatrix(), {}); }).find("accuracy: no examples") == 0);
  CHECK_THROWS_AS(RowMatrix(std::vector<std::vector<double>>{{0.5, 0.5}, {1.0}}), Error);
  CHECK_THROWS_AS(RowMatrix(std::vector<double>{0.1, 0.2, 0.7}, 2), Error);
  CHECK_THROWS_AS(reliability(std::vector<double>{0.5}, std::vector<bool>{}), Error);
}

TEST_CASE("to_json carries every metric and the reliability table") {
  const json& c = reference()["prediction_cases"][2];  // binary
  EvalOptions o;
  o.positive_label = 1;
  const json j = evaluate(probs_of(c), labels_of(c), o).to_json();
  for (const char* key : {"examples", "classes", "accuracy", "f1", "f1_kind", "nll", "brier", "ece", "mce",
                          "mean_confidence", "error_auroc", "uncertainty", "reliability", "positive_label"})
    CHECK(j.contains(key));
  CHECK(j["f1_kind"] == "binary");
  CHECK(j["reliability"].size() == 15);
  CHECK(j["nll"].get<double>() == doctest::Approx(c["nll"].get<double>()).epsilon(kTol));
  // Empty bins are null, not NaN (which JSON cannot hold).
  CHECK(j["reliability"][0]["count"] == 0);
  CHECK(j["reliability"][0]["accuracy"].is_null());
  CHECK(json::parse(j.dump()) == j);
}

TEST_CASE("temperature: matches the torch reference fit") {
  const json& c = reference()["calibration_case"];
  const RowMatrix z(c["logits"].get<std::vector<std::vector<double>>>());
  const auto y = labels_of(c);
  CHECK(temperature_nll(z, y, 1.0) == doctest::Approx(c["nll_before"].get<double>()).epsilon(kTol));
  const TemperatureFit fit = fit_temperature(z, y);
  CHECK(fit.temperature == doctest::Approx(c["temperature"].get<double>()).epsilon(1e-10));
  CHECK(fit.nll_before == doctest::Approx(c["nll_before"].get<double>()).epsilon(kTol));
  CHECK(fit.nll_after == doctest::Approx(c["nll_after"].get<double>()).epsilon(kTol));
  CHECK(fit.nll_after < fit.nll_before);
  CHECK(!fit.at_bound);

  const RowMatrix p2 = apply_temperature(RowMatrix(std::vector<double>(z.data.begin(), z.data.begin() + 30), 3), 2.0);
  const auto ref = c["probs_at_2"].get<std::vector<std::vector<double>>>();
  for (int64_t i = 0; i < 10; ++i)
    for (int64_t k = 0; k < 3; ++k) CHECK(p2.row(i)[k] == doctest::Approx(ref[i][k]).epsilon(kTol));
}

TEST_CASE("temperature: recovers a known temperature and never raises the NLL") {
  for (double t_true : {2.5, 0.6}) {
    CAPTURE(t_true);
    RowMatrix z;
    std::vector<int64_t> y;
    synthetic_logits(40000, 4, 3.0, t_true, 7, z, y);
    const TemperatureFit fit = fit_temperature(z, y);
    // The estimate's standard error here is about 1% of T; an optimiser that stops early
    // or in the wrong place misses by far more.
    CHECK(fit.temperature == doctest::Approx(t_true).epsilon(0.04));
    CHECK(fit.nll_after <= fit.nll_before);
    CHECK(fit.nll_after == doctest::Approx(temperature_nll(z, y, fit.temperature)).epsilon(1e-14));
    // A true minimum: neighbours on either side, and the true T, are no better.
    for (double f : {0.999, 1.001, 0.99, 1.01})
      CHECK(temperature_nll(z, y, fit.temperature * f) >= fit.nll_after);
    CHECK(temperature_nll(z, y, t_true) >= fit.nll_after);
    // The probabilities it yields are better calibrated than the raw ones.
    CHECK(ece(apply_temperature(z, fit.temperature), y) < ece(apply_temperature(z, 1.0), y));
  }
}

TEST_CASE("temperature: degenerate and bounded cases") {
  // Every row constant: the NLL does not depend on T, so T stays 1.
  const RowMatrix flat({{2.0, 2.0, 2.0}, {-1.0, -1.0, -1.0}});
  TemperatureFit fit = fit_temperature(flat, {0, 2});
  CHECK(fit.temperature == 1.0);
  CHECK(fit.nll_after == fit.nll_before);
  CHECK(fit.nll_before == doctest::Approx(std::log(3.0)));

  // Already calibrated at T = 1 (labels drawn at T = 1): T stays near 1 and the NLL never rises.
  RowMatrix z;
  std::vector<int64_t> y;
  synthetic_logits(300, 3, 2.0, 1.0, 11, z, y);
  fit = fit_temperature(z, y);
  CHECK(fit.nll_after <= fit.nll_before);
  CHECK(fit.temperature == doctest::Approx(1.0).epsilon(0.5));

  // Separable data with every label the argmax: sharper is always better, so T ends on t_min.
  const RowMatrix sep({{1.0, 0.0}, {0.0, 1.0}, {2.0, 0.5}});
  fit = fit_temperature(sep, {0, 1, 0});
  CHECK(fit.at_bound);
  CHECK(fit.temperature == doctest::Approx(0.05).epsilon(1e-5));
  CHECK(fit.nll_after < fit.nll_before);
  // Every label the argmin: flatter is always better, so T ends on t_max.
  fit = fit_temperature(sep, {1, 0, 1});
  CHECK(fit.at_bound);
  CHECK(fit.temperature == doctest::Approx(20.0).epsilon(1e-5));

  // A narrower bracket that excludes 1 still never returns something worse than T = 1.
  TemperatureFitOptions o;
  o.t_min = 3.0;
  o.t_max = 5.0;
  synthetic_logits(2000, 3, 2.0, 0.5, 13, z, y);
  fit = fit_temperature(z, y, o);
  CHECK(fit.temperature == 1.0);
  CHECK(fit.nll_after == fit.nll_before);

  CHECK_THROWS_AS(fit_temperature(RowMatrix({{0.0, NAN}}), {0}), Error);
  CHECK_THROWS_AS(temperature_nll(sep, {0, 1, 0}, 0.0), Error);
  CHECK_THROWS_AS(fit_temperature(sep, {0, 1}), Error);
}

TEST_CASE("risk-coverage: perfect, constant and reversed rankings; AURC and accuracy at coverage") {
  // 10 examples, 3 wrong.
  const std::vector<bool> wrong = {false, true, false, false, true, false, false, false, true, false};
  std::vector<double> perfect(10);
  for (size_t i = 0; i < 10; ++i) perfect[i] = wrong[i] ? 1.0 + double(i) : 0.1 * double(i);
  std::vector<double> r = risk_coverage(perfect, wrong);
  for (size_t k = 0; k < 7; ++k) CHECK(r[k] == 0.0);  // the 7 right answers come first
  CHECK(r[7] == doctest::Approx(1.0 / 8));
  CHECK(r[9] == doctest::Approx(0.3));
  CHECK(aurc(perfect, wrong) == doctest::Approx((1.0 / 8 + 2.0 / 9 + 3.0 / 10) / 10));
  CHECK(accuracy_at_coverage(perfect, wrong, 0.7) == 1.0);
  CHECK(accuracy_at_coverage(perfect, wrong, 0.8) == doctest::Approx(7.0 / 8));
  CHECK(accuracy_at_coverage(perfect, wrong, 1.0) == doctest::Approx(0.7));

  // A score that says nothing: every prefix has the overall error rate, in expectation.
  const std::vector<double> constant(10, 0.5);
  for (double v : risk_coverage(constant, wrong)) CHECK(v == doctest::Approx(0.3));
  CHECK(aurc(constant, wrong) == doctest::Approx(0.3));
  CHECK(accuracy_at_coverage(constant, wrong, 0.8) == doctest::Approx(0.7));

  // The reverse of the perfect ranking is the worst.
  std::vector<double> reversed(perfect);
  for (double& v : reversed) v = -v;
  CHECK(aurc(reversed, wrong) > aurc(constant, wrong));
  CHECK(aurc(constant, wrong) > aurc(perfect, wrong));
  const SelectiveReport rep = selective_report("perfect", perfect, wrong);
  CHECK(rep.error_auroc == 1.0);
  CHECK(rep.aurc == doctest::Approx(aurc(perfect, wrong)));
  CHECK(rep.to_json()["signal"] == "perfect");

  CHECK_THROWS_AS(risk_coverage({}, {}), bet::Error);
  CHECK_THROWS_AS(accuracy_at_coverage(perfect, wrong, 0.0), bet::Error);
  CHECK_THROWS_AS(risk_coverage({0.1, std::nan("")}, {false, true}), bet::Error);
}

TEST_CASE("risk-coverage: ties are taken in random order (checked against every order), input order never matters") {
  // Scores with ties; the tie-aware curve must equal the mean over all orders of the
  // tied examples (enumerated: 4! x 3! orders of the two tie groups).
  const std::vector<double> score = {0.2, 0.5, 0.5, 0.5, 0.5, 0.9, 0.1, 0.9, 0.9};
  const std::vector<bool> wrong = {false, true, false, true, false, true, false, false, true};
  const size_t n = score.size();
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return score[a] < score[b]; });
  std::vector<double> mean(n, 0.0);
  double orders = 0;
  // Permute within each tie group: groups are [2..5] (0.5 x4) and [6..8] (0.9 x3) in `order`.
  std::vector<size_t> g1(order.begin() + 2, order.begin() + 6), g2(order.begin() + 6, order.end());
  std::sort(g1.begin(), g1.end());
  do {
    std::sort(g2.begin(), g2.end());
    do {
      std::vector<size_t> o = {order[0], order[1]};
      o.insert(o.end(), g1.begin(), g1.end());
      o.insert(o.end(), g2.begin(), g2.end());
      double e = 0;
      for (size_t k = 0; k < n; ++k) mean[k] += (e += wrong[o[k]] ? 1 : 0) / double(k + 1);
      orders += 1;
    } while (std::next_permutation(g2.begin(), g2.end()));
  } while (std::next_permutation(g1.begin(), g1.end()));
  const std::vector<double> r = risk_coverage(score, wrong);
  for (size_t k = 0; k < n; ++k) CHECK(r[k] == doctest::Approx(mean[k] / orders).epsilon(1e-12));

  // Shuffled input, same curve.
  std::mt19937 rng(7);
  std::vector<size_t> perm(n);
  for (size_t i = 0; i < n; ++i) perm[i] = i;
  for (int t = 0; t < 5; ++t) {
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<double> s2(n);
    std::vector<bool> w2(n);
    for (size_t i = 0; i < n; ++i) {
      s2[i] = score[perm[i]];
      w2[i] = wrong[perm[i]];
    }
    const std::vector<double> r2 = risk_coverage(s2, w2);
    for (size_t k = 0; k < n; ++k) CHECK(r2[k] == doctest::Approx(r[k]).epsilon(1e-12));
  }
}
