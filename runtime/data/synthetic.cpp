#include "runtime/data/synthetic.h"

#include <cmath>

#include "engine/error.h"
#include "engine/random.h"

namespace bet::runtime {

namespace {

// Scalar draws from one Philox stream (key, counter).
struct Stream {
  uint64_t key, counter = 0;
  double uniform() {
    auto r = philox4x32(key, counter++, 7);
    return uints_to_unit_double(r[0], r[1]);
  }
  double normal() {
    auto r = philox4x32(key, counter++, 8);
    double u1 = uints_to_unit_double(r[0], r[1]), u2 = uints_to_unit_double(r[2], r[3]);
    return std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(2.0 * M_PI * u2);
  }
  // Marsaglia-Tsang; shape < 1 by the boost Gamma(a+1) * U^(1/a).
  double gamma(double shape) {
    if (shape < 1.0) return gamma(shape + 1.0) * std::pow(1.0 - uniform(), 1.0 / shape);
    const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    while (true) {
      double x = normal(), v = 1.0 + c * x;
      if (v <= 0) continue;
      v = v * v * v;
      double u = uniform();
      if (std::log(1.0 - u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
    }
  }
};

}  // namespace

void SyntheticSpec::validate() const {
  BET_CHECK(kind == "bernoulli" || kind == "categorical", "synthetic: kind '", kind,
            "' is not one of bernoulli, categorical");
  BET_CHECK(a > 0 && b > 0, "synthetic: Beta(a, b) needs a, b > 0");
  BET_CHECK(categories >= 2, "synthetic: categorical needs >= 2 categories");
  BET_CHECK(length >= 1, "synthetic: length must be >= 1");
}

std::vector<int32_t> synthetic_sequence(const SyntheticSpec& spec, uint64_t seed, uint64_t index) {
  Stream s{mix_key({seed, index, 0xda7a})};
  std::vector<int32_t> ids(size_t(spec.length));
  if (spec.kind == "bernoulli") {
    double x = s.gamma(spec.a), y = s.gamma(spec.b);
    double p = x / (x + y);
    for (auto& id : ids) id = 3 + (s.uniform() < p ? 1 : 0);
  } else {
    std::vector<double> theta(size_t(spec.categories));
    double tot = 0;
    for (auto& t : theta) tot += (t = s.gamma(1.0));
    for (auto& id : ids) {
      double u = s.uniform() * tot, acc = 0;
      int32_t c = 0;
      for (; c + 1 < int32_t(theta.size()); ++c) {
        acc += theta[size_t(c)];
        if (u < acc) break;
      }
      id = 3 + c;
    }
  }
  return ids;
}

std::vector<double> exact_bayes_predictive(const SyntheticSpec& spec, const std::vector<int32_t>& ids) {
  const int64_t C = spec.outcomes();
  std::vector<double> counts(size_t(C), 0.0);
  for (int32_t id : ids) counts[size_t(id - 3)] += 1;
  const double t = double(ids.size());
  std::vector<double> p(static_cast<size_t>(C));
  if (spec.kind == "bernoulli") {
    p[1] = (spec.a + counts[1]) / (spec.a + spec.b + t);
    p[0] = 1.0 - p[1];
  } else {
    for (int64_t c = 0; c < C; ++c) p[size_t(c)] = (1.0 + counts[size_t(c)]) / (double(C) + t);
  }
  return p;
}

std::vector<double> exact_bayes_nll(const SyntheticSpec& spec, const std::vector<int32_t>& ids) {
  const int64_t C = spec.outcomes();
  std::vector<double> counts(size_t(C), 0.0), nll(ids.size());
  for (size_t t = 0; t < ids.size(); ++t) {
    const size_t c = size_t(ids[t] - 3);
    double p = spec.kind == "bernoulli"
                   ? (c == 1 ? spec.a + counts[1] : spec.b + counts[0]) / (spec.a + spec.b + double(t))
                   : (1.0 + counts[c]) / (double(C) + double(t));
    nll[t] = -std::log(p);
    counts[c] += 1;
  }
  return nll;
}

}  // namespace bet::runtime
