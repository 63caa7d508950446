// Least-squares fits the experiments compare against the theory: a straight line, a
// straight line on log-log axes (a power law's exponent), and the scale c of a fixed
// curve y = c f(x) fitted on log axes (where the plots show it).
#pragma once
#include <vector>

namespace bet::diagnose {

struct LineFit {
  double slope = 0, intercept = 0;
  double r2 = 0;   // coefficient of determination (NaN when y is constant)
  int points = 0;  // points used (NaN and, for log fits, non-positive ones are skipped)
  bool ok() const { return points >= 2; }
};

LineFit fit_line(const std::vector<double>& x, const std::vector<double>& y);
// log10 y = slope log10 x + intercept, over the points with x > 0 and y > 0.
LineFit fit_loglog(const std::vector<double>& x, const std::vector<double>& y);
// The c minimising sum (ln y - ln(c f))^2 over points with y, f > 0: exp(mean ln(y / f)).
// NaN without such points.
double fit_scale_log(const std::vector<double>& f, const std::vector<double>& y);

// Population mean, standard deviation and variance of v (0 for an empty or single v).
double mean_of(const std::vector<double>& v);
double population_std(const std::vector<double>& v);
double population_variance(const std::vector<double>& v);

// About `count` distinct integers from lo to hi (inclusive), spaced evenly on a log scale.
std::vector<int> log_grid(int lo, int hi, int count);

}  // namespace bet::diagnose
