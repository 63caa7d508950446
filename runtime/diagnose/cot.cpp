// cot: the OptimalCoTLayer's optimal_length against the context size n on a trained
// causal model. The theory's optimal chain-of-thought length grows like sqrt(n)
// log(1/eps); the layer computes sqrt(n a / (H R)) log2(1/eps), so its exponent is 1/2
// exactly when the learned H R does not drift with n, and the clamp at max_cot_length
// hides everything above it.
#include <cmath>

#include "runtime/diagnose/experiments.h"
#include "runtime/diagnose/fit.h"

namespace bet::diagnose {

namespace {
double sqrt_fn(double n) { return std::sqrt(n); }
}  // namespace

ExperimentResult cot_experiment(const ModelOutcomePredictor& p, int sequences, int length, uint64_t seed) {
  ExperimentResult r;
  r.name = "cot";
  r.title = "Optimal chain-of-thought length against n";
  r.description =
      "The last layer's optimal_length at every position of Bernoulli sequences, against n(t), the tokens in the "
      "position's causal context (BOS included), averaged over sequences. The theory: it grows like sqrt(n) "
      "(exponent 1/2). Positions at the clamp (1 or max_cot_length) carry no growth and are left out of the fit.";
  const auto& cfg = p.model().config();
  double max_len = 512;
  if (!p.model().bet_layers.empty()) max_len = p.model().bet_layers.back()->cot->max_cot_length;
  const std::vector<Outcomes> seqs = bernoulli_sequences(sequences, length, seed);
  const std::vector<std::vector<double>> lens = p.optimal_lengths(seqs);
  std::vector<double> n, mean_len, fit_n, fit_len;
  if (cfg.layer == model::LayerKind::Bet && !lens.empty() && !lens.front().empty()) {
    for (int t = 0; t <= length; ++t) {
      double s = 0;
      for (const auto& l : lens) s += l[size_t(t)];
      n.push_back(t + 1);
      mean_len.push_back(s / double(lens.size()));
    }
  }
  r.verdict = check_cot(n, mean_len, max_len);
  if (n.empty()) r.verdict.flag("the model's last layer is `standard`: it has no optimal_length");
  for (size_t i = 0; i < n.size(); ++i)
    if (mean_len[i] > 1 + 1e-3 && mean_len[i] < max_len * (1 - 1e-4)) {
      fit_n.push_back(n[i]);
      fit_len.push_back(mean_len[i]);
    }
  const LineFit f = fit_loglog(fit_n, fit_len);
  std::vector<double> basis;
  for (double v : fit_n) basis.push_back(std::sqrt(v));
  const double c = fit_scale_log(basis, fit_len);
  r.headlines = {{"fitted exponent of optimal_length in n", f.ok() ? fmt3(f.slope) : "n/a (clamped)", "1/2"},
                 {"positions off the clamp", std::to_string(fit_n.size()) + " of " + std::to_string(n.size()), "all"},
                 {"optimal_length at n = 1 and n = " + std::to_string(length + 1),
                  n.empty() ? "n/a" : fmt3(mean_len.front()) + " and " + fmt3(mean_len.back()), ""},
                 {"clamp (max_cot_length)", fmt3(max_len), ""}};
  r.data = {{"sequences", sequences},
            {"n", n},
            {"optimal_length", mean_len},
            {"max_cot_length", max_len},
            {"fitted_exponent", f.ok() ? nlohmann::json(f.slope) : nlohmann::json()},
            {"unclamped_points", fit_n.size()},
            {"sqrt_n_scale", std::isfinite(c) ? nlohmann::json(c) : nlohmann::json()}};
  CsvTable t{"", {"n", "optimal_length"}, {}};
  for (size_t i = 0; i < n.size(); ++i) t.rows.push_back({csv_number(n[i]), csv_number(mean_len[i])});
  r.tables.push_back(t);
  report::Plot pl =
      report::make_plot("optimal_length against n", "context tokens n", "mean optimal_length", true, true);
  pl.series.push_back(series(p.name(), n, mean_len));
  if (std::isfinite(c)) pl.series.push_back(theory_series("c sqrt(n) (theory, c fitted off the clamp)", n, c, sqrt_fn));
  if (!n.empty()) {
    report::Series clamp = series("clamp " + fmt3(max_len), {n.front(), n.back()}, {max_len, max_len}, true, false);
    clamp.color = "#999999";
    pl.series.push_back(clamp);
  }
  r.plots = {pl};
  return r;
}

}  // namespace bet::diagnose
