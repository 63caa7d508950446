#include "runtime/eval/calibration.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/error.h"

namespace bet::runtime {
namespace {

void check_logits(const char* what, const RowMatrix& logits, const std::vector<int64_t>& labels) {
  BET_CHECK(logits.rows > 0, what, ": no examples");
  BET_CHECK(logits.cols > 0, what, ": zero classes");
  BET_CHECK(static_cast<int64_t>(labels.size()) == logits.rows, what, ": ", labels.size(), " labels for ",
            logits.rows, " rows of logits");
  for (int64_t i = 0; i < logits.rows; ++i) {
    BET_CHECK(labels[i] >= 0 && labels[i] < logits.cols, what, ": label ", labels[i], " of example ", i,
              " is outside [0, ", logits.cols, ")");
    for (int64_t c = 0; c < logits.cols; ++c)
      BET_CHECK(std::isfinite(logits.row(i)[c]), what, ": logit ", logits.row(i)[c], " at [", i, ", ", c,
                "] is not finite");
  }
}

// Mean NLL at T = exp(u), with its first and second derivatives in u. With s = 1/T the NLL
// is mean(logsumexp(s z) - s z_y): dL/ds = mean(E_p z - z_y) and d2L/ds2 = mean(Var_p z) >= 0
// (convex in s); by the chain rule (ds/du = -s) dL/du = -s dL/ds and
// d2L/du2 = s^2 d2L/ds2 + s dL/ds.
struct Objective {
  const RowMatrix& z;
  const std::vector<int64_t>& y;
  int evaluations = 0;

  double value(double u, double* grad = nullptr, double* hess = nullptr) {
    ++evaluations;
    const double s = std::exp(-u);
    const int64_t C = z.cols;
    double loss = 0, d1 = 0, d2 = 0;
    for (int64_t i = 0; i < z.rows; ++i) {
      const double* r = z.row(i);
      const double zmax = *std::max_element(r, r + C);
      // Shifting by the row max changes neither the softmax nor E_p z - z_y nor Var_p z.
      double sum = 0, mean = 0, sq = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double zc = r[c] - zmax;
        const double e = std::exp(s * zc);
        sum += e;
        mean += e * zc;
        sq += e * zc * zc;
      }
      const double zy = r[y[i]] - zmax;
      loss += std::log(sum) - s * zy;
      mean /= sum;
      d1 += mean - zy;
      d2 += std::max(sq / sum - mean * mean, 0.0);
    }
    const double n = static_cast<double>(z.rows);
    loss /= n;
    d1 /= n;
    d2 /= n;
    if (grad) *grad = -s * d1;
    if (hess) *hess = s * s * d2 + s * d1;
    return loss;
  }
};

// Brent's minimiser on [a, b] (Forsythe, Malcolm and Moler's `fmin`): golden-section steps
// with parabolic interpolation when it behaves. Finds the minimum of a unimodal function to
// within about tol + sqrt(eps) |x|.
template <typename F>
double brent_minimise(F&& f, double a, double b, double tol, double* fbest) {
  const double golden = 0.5 * (3.0 - std::sqrt(5.0));
  const double eps = std::sqrt(std::numeric_limits<double>::epsilon());
  double x = a + golden * (b - a), w = x, v = x;
  double fx = f(x), fw = fx, fv = fx;
  double d = 0, e = 0;
  for (int iter = 0; iter < 200; ++iter) {
    const double xm = 0.5 * (a + b);
    const double tol1 = eps * std::abs(x) + tol / 3.0, tol2 = 2.0 * tol1;
    if (std::abs(x - xm) <= tol2 - 0.5 * (b - a)) break;
    bool golden_step = true;
    if (std::abs(e) > tol1) {
      double r = (x - w) * (fx - fv);
      double q = (x - v) * (fx - fw);
      double p = (x - v) * q - (x - w) * r;
      q = 2.0 * (q - r);
      if (q > 0) p = -p;
      q = std::abs(q);
      r = e;
      e = d;
      if (std::abs(p) < std::abs(0.5 * q * r) && p > q * (a - x) && p < q * (b - x)) {
        d = p / q;
        const double u = x + d;
        if (u - a < tol2 || b - u < tol2) d = xm >= x ? tol1 : -tol1;
        golden_step = false;
      }
    }
    if (golden_step) {
      e = x >= xm ? a - x : b - x;
      d = golden * e;
    }
    const double u = std::abs(d) >= tol1 ? x + d : x + (d >= 0 ? tol1 : -tol1);
    const double fu = f(u);
    if (fu <= fx) {
      (u >= x ? a : b) = x;
      v = w, fv = fw;
      w = x, fw = fx;
      x = u, fx = fu;
    } else {
      (u < x ? a : b) = u;
      if (fu <= fw || w == x) {
        v = w, fv = fw;
        w = u, fw = fu;
      } else if (fu <= fv || v == x || v == w) {
        v = u, fv = fu;
      }
    }
  }
  *fbest = fx;
  return x;
}

}  // namespace

double temperature_nll(const RowMatrix& logits, const std::vector<int64_t>& labels, double temperature) {
  check_logits("temperature_nll", logits, labels);
  BET_CHECK(std::isfinite(temperature) && temperature > 0, "temperature_nll: temperature ", temperature,
            " is not a positive number");
  Objective obj{logits, labels};
  return obj.value(std::log(temperature));
}

TemperatureFit fit_temperature(const RowMatrix& logits, const std::vector<int64_t>& labels,
                               const TemperatureFitOptions& options) {
  check_logits("fit_temperature", logits, labels);
  BET_CHECK(options.t_min > 0 && options.t_max > options.t_min && std::isfinite(options.t_max),
            "fit_temperature: bad bracket [", options.t_min, ", ", options.t_max, "]");
  BET_CHECK(options.tolerance > 0, "fit_temperature: tolerance ", options.tolerance, " must be positive");
  Objective obj{logits, labels};
  const double lo = std::log(options.t_min), hi = std::log(options.t_max);

  TemperatureFit fit;
  fit.nll_before = obj.value(0.0);

  double fx = 0;
  double x = brent_minimise([&](double u) { return obj.value(u); }, lo, hi, options.tolerance, &fx);
  // Brent never samples the ends themselves; an optimum beyond the bracket sits on one.
  for (double end : {lo, hi}) {
    const double fe = obj.value(end);
    if (fe <= fx) x = end, fx = fe;
  }

  // Newton in u from Brent's point: quadratic convergence where Brent stalls, since near the
  // minimum the NLL changes by less than its round-off (a step of 1e-8 in u moves it ~1e-17).
  // So a step is kept if it lowers the NLL, or if it leaves it equal within round-off and
  // shrinks the gradient; otherwise the step is halved.
  double g = 0, h = 0;
  obj.value(x, &g, &h);
  for (int k = 0; k < options.newton_steps; ++k) {
    if (!(h > 0) || g == 0) break;
    double step = -g / h;
    bool moved = false;
    for (int halvings = 0; halvings < 4 && !moved; ++halvings, step *= 0.5) {
      const double xn = std::clamp(x + step, lo, hi);
      if (xn == x) break;
      double gn = 0, hn = 0;
      const double fn = obj.value(xn, &gn, &hn);
      const double roundoff = 8 * std::numeric_limits<double>::epsilon() * std::abs(fx);
      if (fn < fx || (fn <= fx + roundoff && std::abs(gn) < std::abs(g))) {
        x = xn, fx = fn, g = gn, h = hn;
        moved = true;
      }
    }
    if (!moved) break;
  }

  if (fx < fit.nll_before) {
    fit.temperature = std::exp(x);
    fit.nll_after = fx;
    const double bound_tol = 1e-6;
    fit.at_bound = x - lo < bound_tol || hi - x < bound_tol;
  } else {
    fit.temperature = 1.0;  // no strict improvement: leave the model as it was
    fit.nll_after = fit.nll_before;
  }
  fit.evaluations = obj.evaluations;
  return fit;
}

RowMatrix apply_temperature(const RowMatrix& logits, double temperature) {
  BET_CHECK(std::isfinite(temperature) && temperature > 0, "apply_temperature: temperature ", temperature,
            " is not a positive number");
  BET_CHECK(logits.cols > 0, "apply_temperature: zero classes");
  RowMatrix out(std::vector<double>(logits.data.size()), logits.cols);
  const double s = 1.0 / temperature;
  for (int64_t i = 0; i < logits.rows; ++i) {
    const double* r = logits.row(i);
    double* o = out.data.data() + i * logits.cols;
    const double zmax = *std::max_element(r, r + logits.cols);
    double sum = 0;
    for (int64_t c = 0; c < logits.cols; ++c) sum += (o[c] = std::exp(s * (r[c] - zmax)));
    for (int64_t c = 0; c < logits.cols; ++c) o[c] /= sum;
  }
  return out;
}

}  // namespace bet::runtime
