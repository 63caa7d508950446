#include "model/mdl_loss.h"

#include <cmath>
#include <vector>

namespace bet::model {

std::vector<int64_t> target_counts(const Tensor& targets, int64_t classes, int64_t ignore_index) {
  // Host side: N values, C counters.
  std::vector<int64_t> counts(size_t(classes), 0);
  for (int64_t y : targets.to_vector<int64_t>()) {
    if (y == ignore_index) continue;
    BET_CHECK(y >= 0 && y < classes, "mdl_regularized_loss: target ", y, " out of range for ", classes, " classes");
    ++counts[size_t(y)];
  }
  return counts;
}

MDLLossOutput mdl_from_totals(double ce_val, const std::vector<int64_t>& counts) {
  MDLLossOutput out;
  int64_t N = 0;
  for (int64_t c : counts) N += c;
  out.n = N;
  if (N == 0) return out;
  // Empirical distribution of the valid targets.
  double H = 0;
  for (int64_t c : counts) {
    if (c == 0) continue;
    const double q = double(c) / double(N);
    H -= q * std::log(q);
  }
  const double Nd = double(N);
  const double optimal = N > 1 ? Nd * H + std::sqrt(Nd * std::log(Nd)) : 0.0;
  out.mdl_active = ce_val > optimal;
  out.empirical_entropy = H;
  out.optimal_complexity = optimal;
  out.actual_complexity = ce_val;
  out.standard_loss = ce_val / Nd;
  out.mdl_penalty = out.mdl_active ? (ce_val - optimal) / Nd : 0.0;
  out.compression_efficiency = ce_val > 0 ? optimal / ce_val : 0.0;
  return out;
}

double mdl_gradient_scale(const MDLLossOutput& totals, double beta) {
  if (totals.n == 0) return 0.0;
  return (1.0 + (totals.mdl_active ? beta : 0.0)) / double(totals.n);
}

MDLLossOutput mdl_regularized_loss(const Tensor& logits, const Tensor& targets, double beta,
                                   int64_t ignore_index) {
  BET_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0),
            "mdl_regularized_loss: expected logits [N, C] and targets [N], got ", shape_str(logits.shape()),
            " and ", shape_str(targets.shape()));
  BET_CHECK(is_integer(targets.dtype()), "mdl_regularized_loss: targets must be i32 or i64, got ",
            dtype_name(targets.dtype()));
  BET_CHECK(std::isfinite(beta) && beta >= 0, "mdl_regularized_loss: beta must be >= 0, got ", beta);
  const int64_t C = logits.size(1);
  const std::vector<int64_t> counts = target_counts(targets, C, ignore_index);
  int64_t N = 0;
  for (int64_t c : counts) N += c;
  if (N == 0) {
    MDLLossOutput out;
    // Nothing to code. Keep the loss attached to the logits so backward() still runs
    // (and gives zeros) for a batch made only of ignored targets.
    out.loss = logits.size(0) > 0 ? mul(cross_entropy_sum(logits, targets, ignore_index), 0.0)
                                  : mul(sum(logits), 0.0);
    return out;
  }
  Tensor ce = cross_entropy_sum(logits, targets, ignore_index);
  MDLLossOutput out = mdl_from_totals(ce.item(), counts);
  const double Nd = double(N), optimal = out.optimal_complexity;

  Tensor loss = mul(ce, 1.0 / Nd);
  // max(0, CE - optimal) has gradient 1 where active and 0 elsewhere; `optimal` is a
  // plain number, so the branch is the exact gradient, not an approximation.
  if (out.mdl_active && beta != 0) loss = add(loss, mul(add(ce, -optimal), beta / Nd));
  out.loss = loss;
  return out;
}

}  // namespace bet::model
