// dispersion, permutations and pe-ablation: how a model's prediction depends on the
// order of exchangeable data, how averaging over orderings removes that dependence,
// and which positional encodings put it there.
#include <algorithm>
#include <cmath>

#include "runtime/diagnose/experiments.h"
#include "runtime/diagnose/fit.h"

namespace bet::diagnose {

namespace {
double inv_sqrt(double k) { return 1 / std::sqrt(k); }
// Drawn at this floor on log axes: a variance of exactly 0 (round-off can give it) has
// no place on them, and saying "below 1e-18" is the truth.
constexpr double kLogFloor = 1e-18;
}  // namespace

ExperimentResult dispersion_experiment(const OutcomePredictor& p, int prefixes, int orderings_per_prefix,
                                       const std::vector<int>& n_grid, uint64_t seed) {
  ExperimentResult r;
  r.name = "dispersion";
  r.title = "Order dispersion against prefix length";
  r.description =
      "Spread (population standard deviation) of p(next = 1) over random orderings of the same prefix of n outcomes, "
      "averaged over prefixes of the task. Exact Bayes depends on the counts only, so its spread is 0; the theory "
      "says positional encodings make a transformer's spread decay like log n / n.";
  const int max_n = n_grid.empty() ? 1 : n_grid.back();
  const std::vector<Outcomes> seqs = bernoulli_sequences(prefixes, max_n, seed);
  // Both forms of pe-ablation: all orderings (the headline) and x_n in place.
  auto measure = [&](bool keep_last) {
    std::vector<double> d;
    for (int len : n_grid) {
      std::vector<Outcomes> rows;
      for (size_t i = 0; i < seqs.size(); ++i) {
        const Outcomes prefix(seqs[i].begin(), seqs[i].begin() + len);
        for (auto& o : orderings(prefix, orderings_per_prefix, keep_last, seed ^ (uint64_t(len) << 20) ^ i))
          rows.push_back(std::move(o));
      }
      const std::vector<double> next = p.next_after(rows);
      double s = 0;
      for (size_t i = 0; i < seqs.size(); ++i) {
        const auto first = next.begin() + std::ptrdiff_t(i * size_t(orderings_per_prefix));
        s += population_std(std::vector<double>(first, first + orderings_per_prefix));
      }
      d.push_back(s / double(seqs.size()));
    }
    return d;
  };
  std::vector<double> n(n_grid.begin(), n_grid.end());
  const std::vector<double> disp = measure(false);
  std::vector<double> disp_fixed = measure(true);
  for (size_t i = 0; i < n.size(); ++i)
    if (n[i] < 3) disp_fixed[i] = NAN;  // one outcome to move: no orderings to compare
  r.verdict = check_dispersion(n, disp);
  const LineFit f = fit_loglog(n, disp);
  std::vector<double> basis;
  for (double v : n) basis.push_back(log_n_over_n(v));
  const double c = fit_scale_log(basis, disp);
  r.headlines = {{"dispersion at n = " + std::to_string(n_grid.front()), fmt3(disp.front()), ""},
                 {"dispersion at n = " + std::to_string(n_grid.back()), fmt3(disp.back()), ""},
                 {"log-log slope against n", fmt3(f.slope), "log n / n: about -0.7 over this range"},
                 {"fitted c in dispersion = c log n / n", fmt3(c), ""}};
  r.data = {{"predictor", p.name()},
            {"prefixes", prefixes},
            {"orderings", orderings_per_prefix},
            {"n", n},
            {"dispersion", disp},
            {"dispersion_last_fixed", disp_fixed},
            {"loglog_slope", f.slope},
            {"loglog_slope_last_fixed", fit_loglog(n, disp_fixed).slope},
            {"log_n_over_n_scale", c},
            {"loglog_r2", f.r2}};
  CsvTable t{"", {"n", "dispersion", "dispersion_last_fixed", "theory_c_log_n_over_n"}, {}};
  for (size_t i = 0; i < n.size(); ++i)
    t.rows.push_back(
        {csv_number(n[i]), csv_number(disp[i]), csv_number(disp_fixed[i]), csv_number(c * log_n_over_n(n[i]))});
  r.tables.push_back(t);
  report::Plot pl =
      report::make_plot("Order dispersion of p(next) against n", "prefix length n", "std over orderings", true, true);
  pl.series.push_back(series("all orderings", n, disp));
  pl.series.push_back(series("x_n in place", n, disp_fixed));
  if (std::isfinite(c)) pl.series.push_back(theory_series("c log n / n (theory, c fitted)", n, c, log_n_over_n));
  r.plots = {pl};
  return r;
}

ExperimentResult permutations_experiment(const OutcomePredictor& p, int prefixes, int prefix_length, int repetitions,
                                         int max_k, uint64_t seed, bool identical) {
  ExperimentResult r;
  r.name = "permutations";
  r.title = "Permutation averaging against K";
  r.description = "For a prefix of " + std::to_string(prefix_length) +
                  " outcomes, the prediction averaged over K random orderings, drawn afresh " +
                  std::to_string(repetitions) + " times: its standard deviation across draws, for K = 1, 2, 4, ..., " +
                  std::to_string(max_k) +
                  ", averaged over prefixes. Independent orderings make it fall like 1/sqrt(K) (log-log slope -1/2)." +
                  (identical ? " Negative control: each draw's K orderings are copies of one." : "");
  const std::vector<Outcomes> seqs = bernoulli_sequences(prefixes, prefix_length, seed);
  std::vector<double> ks;
  for (int k = 1; k <= max_k; k *= 2) ks.push_back(k);
  std::vector<double> sd(ks.size(), 0);
  for (size_t i = 0; i < seqs.size(); ++i) {
    std::vector<Outcomes> rows;
    for (int rep = 0; rep < repetitions; ++rep)
      for (auto& o : orderings(seqs[i], max_k, false, seed * 7919 + i * 104729 + uint64_t(rep), identical))
        rows.push_back(std::move(o));
    const std::vector<double> next = p.next_after(rows);
    for (size_t j = 0; j < ks.size(); ++j) {
      std::vector<double> means;
      for (int rep = 0; rep < repetitions; ++rep) {
        double s = 0;
        for (int k = 0; k < int(ks[j]); ++k) s += next[size_t(rep * max_k + k)];
        means.push_back(s / ks[j]);
      }
      sd[j] += population_std(means) / double(seqs.size());
    }
  }
  r.verdict = check_permutation_averaging(ks, sd);
  const LineFit f = fit_loglog(ks, sd);
  r.headlines = {{"std of the prediction, K = 1", fmt3(sd.front()), ""},
                 {"std of the K-averaged prediction, K = " + std::to_string(max_k), fmt3(sd.back()),
                  fmt3(sd.front() / std::sqrt(double(max_k))) + " (std(1)/sqrt(K))"},
                 {"fitted log-log slope", fmt3(f.slope), "-1/2"}};
  r.data = {{"predictor", p.name()},      {"prefixes", prefixes},          {"prefix_length", prefix_length},
            {"repetitions", repetitions}, {"identical_copies", identical}, {"k", ks},
            {"std_of_mean", sd},          {"loglog_slope", f.slope},       {"loglog_r2", f.r2}};
  CsvTable t{"", {"k", "std_of_mean", "theory_std1_over_sqrt_k"}, {}};
  for (size_t i = 0; i < ks.size(); ++i)
    t.rows.push_back({csv_number(ks[i]), csv_number(sd[i]), csv_number(sd.front() / std::sqrt(ks[i]))});
  r.tables.push_back(t);
  report::Plot pl =
      report::make_plot("Spread of the K-averaged prediction", "orderings averaged K", "std across draws", true, true);
  pl.series.push_back(series(p.name(), ks, sd));
  pl.series.push_back(theory_series("std(1) / sqrt(K) (theory, slope -1/2)", ks, sd.front(), inv_sqrt));
  r.plots = {pl};
  return r;
}

ExperimentResult pe_ablation_experiment(const std::vector<AblationModel>& models, int prefixes,
                                        int orderings_per_prefix, int prefix_length, uint64_t seed) {
  ExperimentResult r;
  r.name = "pe-ablation";
  r.title = "Positional-encoding ablation";
  r.description =
      "Models trained alike but for their positional encoding and depth (and, as the reference, one-layer standard "
      "models). For prefixes of " +
      std::to_string(prefix_length) +
      " outcomes, the variance of p(next = 1) over random orderings, averaged over prefixes, in two forms: with the "
      "last outcome x_n in place (the prediction is read at its position, so its own token enters the residual "
      "stream; only the others move) and over all orderings. A one-layer standard causal model with pe=none sees "
      "the other tokens as a set (one softmax over their embeddings), so it is invariant to round-off. Anything "
      "that reads an earlier position's state, which is computed from that position's own causal prefix, lets "
      "order back in without any encoding: a second layer does, and so does a single bet layer, whose attention "
      "keys include each position's prefix statistics and whose CoT branch averages the post-attention states. "
      "Variances below 1e-18 are drawn at 1e-18. The row with those two branches zeroed tests that explanation on the "
      "trained one-layer bet model (zeroing "
      "them also changes what it predicts, so only its invariance with x_n in place means anything).";
  const std::vector<Outcomes> seqs = bernoulli_sequences(prefixes, prefix_length, seed);
  std::vector<PeAblationRow> rows;
  std::vector<Outcomes> fixed_rows, all_rows;
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (auto& o : orderings(seqs[i], orderings_per_prefix, true, seed + 31 * i)) fixed_rows.push_back(std::move(o));
    for (auto& o : orderings(seqs[i], orderings_per_prefix, false, seed + 37 * i)) all_rows.push_back(std::move(o));
  }
  auto mean_variance = [&](const std::vector<double>& next) {
    double s = 0;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const auto first = next.begin() + std::ptrdiff_t(i * size_t(orderings_per_prefix));
      s += population_variance(std::vector<double>(first, first + orderings_per_prefix));
    }
    return s / double(seqs.size());
  };
  for (const auto& m : models) {
    PeAblationRow row;
    row.layer = m.layer;
    row.pe = m.pe;
    row.layers = m.layers;
    row.variance_last_fixed = mean_variance(m.predictor->next_after(fixed_rows));
    row.variance_all = mean_variance(m.predictor->next_after(all_rows));
    rows.push_back(row);
  }
  r.verdict = check_pe_ablation(rows);
  report::Table ht;
  ht.columns = {"layer", "pe", "layers", "variance, x_n in place", "variance, all orderings", "paper"};
  CsvTable t{"", {"layer", "pe", "layers", "variance_last_fixed", "variance_all"}, {}};
  nlohmann::json jrows = nlohmann::json::array();
  for (const auto& row : rows) {
    const bool none = row.pe == "none";
    ht.rows.push_back({row.layer, row.pe, std::to_string(row.layers), report::format_number(row.variance_last_fixed, 3),
                       report::format_number(row.variance_all, 3), none ? "round-off" : "1e-8 to 1e-6"});
    t.rows.push_back({row.layer, row.pe, std::to_string(row.layers), csv_number(row.variance_last_fixed),
                      csv_number(row.variance_all)});
    jrows.push_back({{"layer", row.layer},
                     {"pe", row.pe},
                     {"layers", row.layers},
                     {"variance_last_fixed", row.variance_last_fixed},
                     {"variance_all", row.variance_all}});
    if (row.layers == 1 && (row.layer == "bet" || row.layer == "standard"))
      r.headlines.push_back(
          {"order variance, " + row.layer + ", pe=" + row.pe + ", 1 layer (x_n in place)",
           report::format_number(row.variance_last_fixed, 3),
           none ? (row.layer == "standard" ? "round-off (0)" : "round-off (model.md)") : "1e-8 to 1e-6 (paper)"});
  }
  r.html_tables.push_back(ht);
  r.tables.push_back(t);
  r.data = {{"prefixes", prefixes},
            {"orderings", orderings_per_prefix},
            {"prefix_length", prefix_length},
            {"round_off_variance", kRoundOffVariance},
            {"models", jrows}};
  // One plot per form: variance against depth, a series per encoding, the paper's band.
  auto plot = [&](bool fixed) {
    report::Plot pl = report::make_plot(fixed ? "Order variance, x_n in place" : "Order variance, all orderings",
                                        "layers", "variance of p(next)", false, true);
    for (const auto& row : rows)
      if (std::find(pl.x_ticks.begin(), pl.x_ticks.end(), double(row.layers)) == pl.x_ticks.end())
        pl.x_ticks.push_back(row.layers);  // whole layer counts only
    auto key = [](const PeAblationRow& row) { return row.layer + " pe=" + row.pe; };
    std::vector<std::string> keys;
    for (const auto& row : rows)
      if (std::find(keys.begin(), keys.end(), key(row)) == keys.end()) keys.push_back(key(row));
    std::vector<double> all_layers;
    for (const auto& k : keys) {
      std::vector<double> x, y;
      for (const auto& row : rows)
        if (key(row) == k) {
          x.push_back(row.layers);
          y.push_back(std::max(kLogFloor, fixed ? row.variance_last_fixed : row.variance_all));
          all_layers.push_back(row.layers);
        }
      report::Series s = series(k, x, y);
      s.line = x.size() > 1;
      pl.series.push_back(s);
    }
    if (!all_layers.empty()) {
      const double lo = *std::min_element(all_layers.begin(), all_layers.end());
      const double hi = *std::max_element(all_layers.begin(), all_layers.end());
      report::Series band_hi = series("paper: 1e-6", {lo, hi}, {1e-6, 1e-6}, true, false);
      report::Series band_lo = series("paper: 1e-8", {lo, hi}, {1e-8, 1e-8}, true, false);
      band_hi.color = band_lo.color = "#555555";
      report::Series ro = series("round-off bound", {lo, hi}, {kRoundOffVariance, kRoundOffVariance}, true, false);
      ro.color = "#999999";
      pl.series.push_back(band_hi);
      pl.series.push_back(band_lo);
      pl.series.push_back(ro);
    }
    return pl;
  };
  r.plots = {plot(true), plot(false)};
  return r;
}

}  // namespace bet::diagnose
