#include "runtime/diagnose/predictors.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "runtime/data/synthetic.h"
#include "runtime/tokenizer/tokenizer.h"

namespace bet::diagnose {

namespace {
// Tokens per forward: lm logits are [rows, S, V] floats, so this bounds them to
// 8192 x 259 x 4 bytes (8.5 MB) for the byte vocabulary.
constexpr int64_t kTokensPerForward = 8192;
}  // namespace

std::vector<double> OutcomePredictor::next_after(const std::vector<Outcomes>& rows) const {
  std::vector<PositionProbs> p = predict(rows);
  std::vector<double> out(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) out[i] = p[i].next_one(rows[i].size());
  return out;
}

std::vector<PositionProbs> ExactBayesPredictor::predict(const std::vector<Outcomes>& rows) const {
  std::vector<PositionProbs> out(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    const Outcomes& x = rows[r];
    double heads = 0;
    for (size_t t = 0; t <= x.size(); ++t) {
      const double p1 = (a_ + heads) / (a_ + b_ + double(t));
      out[r].p1.push_back(p1);
      out[r].p0.push_back(1 - p1);
      if (t < x.size()) heads += x[t];
    }
  }
  return out;
}

std::vector<PositionProbs> FutureLeakPredictor::predict(const std::vector<Outcomes>& rows) const {
  std::vector<PositionProbs> out = bayes_.predict(rows);
  for (size_t r = 0; r < rows.size(); ++r)
    for (size_t t = 0; t < rows[r].size(); ++t) {  // x_{t+1} is rows[r][t]
      const double p1 = (1 - w_) * out[r].p1[t] + w_ * rows[r][t];
      out[r].p1[t] = p1;
      out[r].p0[t] = 1 - p1;
    }
  return out;
}

std::vector<PositionProbs> RecencyPredictor::predict(const std::vector<Outcomes>& rows) const {
  std::vector<PositionProbs> out(rows.size());
  for (size_t r = 0; r < rows.size(); ++r)
    for (size_t t = 0; t <= rows[r].size(); ++t) {
      const double p1 = t == 0 ? 0.5 : 0.5 + h_ * (2 * rows[r][t - 1] - 1);
      out[r].p1.push_back(p1);
      out[r].p0.push_back(1 - p1);
    }
  return out;
}

ModelOutcomePredictor::ModelOutcomePredictor(std::shared_ptr<const model::BetModel> m, std::string name)
    : model_(std::move(m)), name_(std::move(name)) {
  BET_CHECK(model_->config().task == model::Task::LM,
            "diagnose: the Bernoulli experiments need a causal (lm) model; this one is a classifier");
}

template <class Fn>
void ModelOutcomePredictor::for_each_chunk(const std::vector<Outcomes>& rows, Fn fn) const {
  autograd::NoGradGuard no_grad;
  const model::BetModel& m = *model_;
  size_t first = 0;
  while (first < rows.size()) {
    // Greedy chunk: rows while the padded token count stays within the budget.
    size_t last = first;
    int64_t S = 0;
    while (last < rows.size()) {
      const int64_t len = int64_t(rows[last].size()) + 1;
      BET_CHECK(len <= m.config().max_len, "diagnose: a row of ", rows[last].size(),
                " outcomes does not fit the model (max_len ", m.config().max_len, ")");
      const int64_t s = std::max(S, len);
      if (last > first && s * int64_t(last - first + 1) > kTokensPerForward) break;
      S = s;
      ++last;
    }
    const int64_t B = int64_t(last - first);
    std::vector<int64_t> ids(static_cast<size_t>(B * S), runtime::kPad), lengths(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      const Outcomes& x = rows[first + size_t(b)];
      ids[size_t(b * S)] = runtime::kBos;
      for (size_t t = 0; t < x.size(); ++t) ids[size_t(b * S) + 1 + t] = runtime::kFirstTokenId + (x[t] ? 1 : 0);
      lengths[size_t(b)] = int64_t(x.size()) + 1;
    }
    model::SeqContext ctx = model::SeqContext::from_lengths(lengths, S, true, m.dtype(), m.device());
    model::ForwardOptions opt;
    opt.temperature = 1.0;  // the model's own predictive, not a calibrated one
    model::ForwardOutput out = m.forward(Tensor::from_vector<int64_t>(ids, {B, S}).to(m.device()), ctx, opt);
    fn(first, B, out, S);
    first = last;
  }
}

std::vector<PositionProbs> ModelOutcomePredictor::predict(const std::vector<Outcomes>& rows) const {
  std::vector<PositionProbs> res(rows.size());
  for_each_chunk(rows, [&](size_t first, int64_t B, const model::ForwardOutput& out, int64_t S) {
    // Log-softmax over the whole vocabulary, then the two outcome ids.
    const std::vector<double> lp =
        slice(log_softmax(out.logits, 2), 2, runtime::kFirstTokenId, runtime::kFirstTokenId + 2).to_vector<double>();
    for (int64_t b = 0; b < B; ++b) {
      PositionProbs& p = res[first + size_t(b)];
      const int64_t n = int64_t(rows[first + size_t(b)].size()) + 1;
      for (int64_t t = 0; t < n; ++t) {
        p.p0.push_back(std::exp(lp[size_t((b * S + t) * 2)]));
        p.p1.push_back(std::exp(lp[size_t((b * S + t) * 2 + 1)]));
      }
    }
  });
  return res;
}

std::vector<std::vector<double>> ModelOutcomePredictor::optimal_lengths(const std::vector<Outcomes>& rows) const {
  std::vector<std::vector<double>> res(rows.size());
  for_each_chunk(rows, [&](size_t first, int64_t B, const model::ForwardOutput& out, int64_t S) {
    const Tensor& len = out.layers.back().optimal_length;
    if (!len.defined()) return;
    const std::vector<double> v = len.to_vector<double>();
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = int64_t(rows[first + size_t(b)].size()) + 1;
      res[first + size_t(b)].assign(v.begin() + b * S, v.begin() + b * S + n);
    }
  });
  return res;
}

std::vector<Outcomes> orderings(const Outcomes& prefix, int count, bool keep_last, uint64_t seed, bool identical) {
  std::mt19937_64 rng(seed);
  std::vector<Outcomes> out;
  const size_t movable = keep_last && !prefix.empty() ? prefix.size() - 1 : prefix.size();
  Outcomes x = prefix;
  for (int i = 0; i < count; ++i) {
    if (!identical || i == 0) {
      x = prefix;
      std::shuffle(x.begin(), x.begin() + std::ptrdiff_t(movable), rng);
    }
    out.push_back(x);
  }
  return out;
}

std::vector<Outcomes> bernoulli_sequences(int count, int length, uint64_t seed, double a, double b) {
  runtime::SyntheticSpec spec;
  spec.a = a;
  spec.b = b;
  spec.length = length;
  std::vector<Outcomes> out;
  for (int i = 0; i < count; ++i) {
    const std::vector<int32_t> ids = runtime::synthetic_sequence(spec, seed, uint64_t(i));
    Outcomes x(ids.size());
    for (size_t t = 0; t < ids.size(); ++t) x[t] = ids[t] - runtime::kFirstTokenId;
    out.push_back(std::move(x));
  }
  return out;
}

}  // namespace bet::diagnose
