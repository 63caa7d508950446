#include "runtime/diagnose/fit.h"

#include <algorithm>
#include <cmath>

namespace bet::diagnose {

LineFit fit_line(const std::vector<double>& x, const std::vector<double>& y) {
  LineFit f;
  double sx = 0, sy = 0;
  std::vector<std::pair<double, double>> pts;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i)
    if (std::isfinite(x[i]) && std::isfinite(y[i])) pts.emplace_back(x[i], y[i]);
  f.points = int(pts.size());
  if (f.points < 2) {
    f.slope = f.intercept = f.r2 = NAN;
    return f;
  }
  for (auto& [a, b] : pts) sx += a, sy += b;
  const double mx = sx / f.points, my = sy / f.points;
  double sxx = 0, sxy = 0, syy = 0;
  for (auto& [a, b] : pts) {
    sxx += (a - mx) * (a - mx);
    sxy += (a - mx) * (b - my);
    syy += (b - my) * (b - my);
  }
  f.slope = sxx > 0 ? sxy / sxx : NAN;
  f.intercept = my - f.slope * mx;
  f.r2 = syy > 0 && sxx > 0 ? sxy * sxy / (sxx * syy) : NAN;
  return f;
}

LineFit fit_loglog(const std::vector<double>& x, const std::vector<double>& y) {
  std::vector<double> lx, ly;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i)
    if (x[i] > 0 && y[i] > 0 && std::isfinite(x[i]) && std::isfinite(y[i])) {
      lx.push_back(std::log10(x[i]));
      ly.push_back(std::log10(y[i]));
    }
  return fit_line(lx, ly);
}

double fit_scale_log(const std::vector<double>& f, const std::vector<double>& y) {
  double s = 0;
  int n = 0;
  for (size_t i = 0; i < f.size() && i < y.size(); ++i)
    if (f[i] > 0 && y[i] > 0 && std::isfinite(f[i]) && std::isfinite(y[i])) {
      s += std::log(y[i] / f[i]);
      ++n;
    }
  return n ? std::exp(s / n) : NAN;
}

double mean_of(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (double x : v) s += x;
  return s / double(v.size());
}

double population_variance(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return s / double(v.size());
}

double population_std(const std::vector<double>& v) { return std::sqrt(population_variance(v)); }

std::vector<int> log_grid(int lo, int hi, int count) {
  std::vector<int> g;
  if (hi < lo) return g;
  const double a = std::log(double(std::max(lo, 1))), b = std::log(double(std::max(hi, 1)));
  for (int i = 0; i < count; ++i) {
    const int v = int(std::lround(std::exp(a + (b - a) * i / std::max(1, count - 1))));
    if (g.empty() || v > g.back()) g.push_back(std::clamp(v, lo, hi));
  }
  if (g.back() != hi) g.push_back(hi);
  return g;
}

}  // namespace bet::diagnose
