// bernoulli and martingale: how close a causal model's predictive comes to exact Bayes,
// and whether it behaves like one in expectation (the paper's martingale property).
#include <cmath>

#include "runtime/diagnose/experiments.h"
#include "runtime/diagnose/fit.h"

namespace bet::diagnose {

report::Series series(std::string name, std::vector<double> x, std::vector<double> y, bool dashed, bool markers) {
  report::Series s;
  s.name = std::move(name);
  s.x = std::move(x);
  s.y = std::move(y);
  s.dashed = dashed;
  s.markers = markers;
  return s;
}

report::Series theory_series(std::string name, const std::vector<double>& x, double c, double (*f)(double)) {
  std::vector<double> y;
  for (double v : x) y.push_back(c * f(v));
  report::Series s = series(std::move(name), x, std::move(y), true, false);
  s.color = "#555555";
  return s;
}

double log_n_over_n(double n) { return std::log(n) / n; }
std::string fmt3(double v) { return report::format_number(v, 3); }

ExperimentResult bernoulli_experiment(const OutcomePredictor& p, int sequences, int length, uint64_t seed, bool quick) {
  ExperimentResult r;
  r.name = "bernoulli";
  r.title = "Bernoulli microscope: log loss against exact Bayes";
  r.description =
      "A causal model reads Bernoulli sequences (p ~ Beta(1,1) per sequence, outcomes as ids 3 and 4 after BOS). "
      "At each position t it predicts x_t from x_1..x_{t-1}; its log loss there (full softmax) is compared with "
      "the exact Bayes predictive (1 + heads)/(2 + t - 1) on the same fresh sequences. Exact Bayes is the floor "
      "for any predictor that does not see the future; entropy efficiency = Bayes' mean loss / the model's.";
  const std::vector<Outcomes> seqs = bernoulli_sequences(sequences, length, seed);
  std::vector<Outcomes> rows;
  for (const auto& s : seqs) rows.emplace_back(s.begin(), s.end() - 1);
  const std::vector<PositionProbs> model = p.predict(rows);
  const std::vector<PositionProbs> bayes = ExactBayesPredictor().predict(rows);
  std::vector<double> pos, model_loss(size_t(length), 0), bayes_loss(size_t(length), 0), excess;
  double off_mass = 0;
  for (size_t i = 0; i < seqs.size(); ++i)
    for (int t = 0; t < length; ++t) {
      const int x = seqs[i][size_t(t)];
      const auto& m = model[i];
      model_loss[size_t(t)] -= std::log(std::max(1e-300, x ? m.p1[size_t(t)] : m.p0[size_t(t)])) / sequences;
      bayes_loss[size_t(t)] -= std::log(x ? bayes[i].p1[size_t(t)] : bayes[i].p0[size_t(t)]) / sequences;
      off_mass += (1 - m.p0[size_t(t)] - m.p1[size_t(t)]) / (double(sequences) * length);
    }
  for (int t = 0; t < length; ++t) {
    pos.push_back(t + 1);
    excess.push_back(model_loss[size_t(t)] - bayes_loss[size_t(t)]);
  }
  const double mean_excess = mean_of(excess);
  const int at = std::min(20, length);
  const double efficiency = bayes_loss[size_t(at - 1)] / model_loss[size_t(at - 1)];
  r.verdict = check_bayes_approach(excess, mean_excess, efficiency, quick);
  r.headlines = {
      {"mean excess log loss over exact Bayes (nats/token)", fmt3(mean_excess), "0 (the floor; < 0 only with a leak)"},
      {"entropy efficiency at position " + std::to_string(at), fmt3(efficiency), "1"},
      {"model loss at position " + std::to_string(at) + " (nats)", fmt3(model_loss[size_t(at - 1)]),
       fmt3(bayes_loss[size_t(at - 1)]) + " (exact Bayes)"},
      {"probability mass off the two outcomes", fmt3(off_mass), "0"}};
  r.data = {{"predictor", p.name()},        {"sequences", sequences},    {"length", length},
            {"mean_excess", mean_excess},   {"efficiency_position", at}, {"efficiency", efficiency},
            {"off_outcome_mass", off_mass}, {"position", pos},           {"model_loss", model_loss},
            {"bayes_loss", bayes_loss},     {"excess", excess}};
  CsvTable t{"", {"position", "model_loss", "bayes_loss", "excess"}, {}};
  for (int i = 0; i < length; ++i)
    t.rows.push_back({csv_number(pos[size_t(i)]), csv_number(model_loss[size_t(i)]), csv_number(bayes_loss[size_t(i)]),
                      csv_number(excess[size_t(i)])});
  r.tables.push_back(t);
  report::Plot loss = report::make_plot("Log loss per position", "position t", "mean log loss (nats)", false, false);
  loss.series.push_back(series(p.name(), pos, model_loss));
  report::Series b = series("exact Bayes (theory)", pos, bayes_loss, true, false);
  b.color = "#555555";
  loss.series.push_back(b);
  report::Plot ex = report::make_plot("Excess log loss over exact Bayes", "position t", "excess (nats)", false, false);
  ex.series.push_back(series(p.name(), pos, excess));
  report::Series zero = series("exact Bayes = 0 (theory)", {pos.front(), pos.back()}, {0.0, 0.0}, true, false);
  zero.color = "#555555";
  ex.series.push_back(zero);
  r.plots = {loss, ex};
  return r;
}

ExperimentResult martingale_experiment(const OutcomePredictor& p, int prefixes, const std::vector<int>& n_grid,
                                       uint64_t seed) {
  ExperimentResult r;
  r.name = "martingale";
  r.title = "Martingale gap";
  r.description =
      "For exact Bayes the expected next predictive equals the current one: E over x_{n+1} ~ p(.|x_1..n) of "
      "p(x_{n+2}=1 | x_1..x_{n+1}) = p(x_{n+1}=1 | x_1..x_n). The gap is that difference for the model, with the "
      "expectation under the model's own predictive, averaged in absolute value over prefixes of the task. The "
      "theory bounds a transformer's violations by order log n / n.";
  const int max_n = n_grid.empty() ? 1 : n_grid.back();
  const std::vector<Outcomes> seqs = bernoulli_sequences(prefixes, max_n, seed);
  std::vector<Outcomes> rows;
  for (const auto& s : seqs)
    for (int n : n_grid) {
      Outcomes a(s.begin(), s.begin() + n);
      rows.push_back(a);
      a.push_back(0);
      rows.push_back(a);
      a.back() = 1;
      rows.push_back(a);
    }
  auto gaps = [&](const OutcomePredictor& pred, std::vector<double>* signed_gap) {
    const std::vector<PositionProbs> out = pred.predict(rows);
    std::vector<double> abs_gap(n_grid.size(), 0);
    if (signed_gap) signed_gap->assign(n_grid.size(), 0);
    size_t k = 0;
    for (size_t i = 0; i < seqs.size(); ++i)
      for (size_t j = 0; j < n_grid.size(); ++j, k += 3) {
        const size_t n = size_t(n_grid[j]);
        const double now = out[k].next_one(n), q0 = out[k + 1].next_one(n + 1), q1 = out[k + 2].next_one(n + 1);
        const double g = now * q1 + (1 - now) * q0 - now;
        abs_gap[j] += std::fabs(g) / double(seqs.size());
        if (signed_gap) (*signed_gap)[j] += g / double(seqs.size());
      }
    return abs_gap;
  };
  std::vector<double> signed_gap;
  const std::vector<double> gap = gaps(p, &signed_gap);
  const std::vector<double> bayes_gap = gaps(ExactBayesPredictor(), nullptr);
  std::vector<double> n(n_grid.begin(), n_grid.end());
  r.verdict = check_martingale(n, gap);
  const LineFit f = fit_loglog(n, gap);
  std::vector<double> basis;
  for (double v : n) basis.push_back(log_n_over_n(v));
  const double c = fit_scale_log(basis, gap);
  double bayes_max = 0;
  for (double g : bayes_gap) bayes_max = std::max(bayes_max, g);
  r.headlines = {{"mean |gap| at n = " + std::to_string(n_grid.front()), fmt3(gap.front()), "0 (exact Bayes)"},
                 {"mean |gap| at n = " + std::to_string(n_grid.back()), fmt3(gap.back()), "0 (exact Bayes)"},
                 {"log-log slope of |gap| against n", fmt3(f.slope), "decays, like log n / n"},
                 {"fitted c in |gap| = c log n / n", fmt3(c), ""},
                 {"exact Bayes' largest |gap| (same prefixes)", fmt3(bayes_max), "0 (round-off)"}};
  r.data = {{"predictor", p.name()},   {"prefixes", prefixes},          {"n", n},
            {"mean_abs_gap", gap},     {"mean_signed_gap", signed_gap}, {"bayes_mean_abs_gap", bayes_gap},
            {"loglog_slope", f.slope}, {"log_n_over_n_scale", c}};
  CsvTable t{"", {"n", "mean_abs_gap", "mean_signed_gap", "bayes_mean_abs_gap"}, {}};
  for (size_t i = 0; i < n.size(); ++i)
    t.rows.push_back({csv_number(n[i]), csv_number(gap[i]), csv_number(signed_gap[i]), csv_number(bayes_gap[i])});
  r.tables.push_back(t);
  report::Plot pl = report::make_plot("Martingale gap against n", "prefix length n", "mean |gap|", true, true);
  pl.series.push_back(series(p.name(), n, gap));
  std::vector<double> n2;
  for (double v : n)
    if (v >= 2) n2.push_back(v);
  if (std::isfinite(c)) pl.series.push_back(theory_series("c log n / n (theory, c fitted)", n2, c, log_n_over_n));
  r.plots = {pl};
  return r;
}

}  // namespace bet::diagnose
