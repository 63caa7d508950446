#include "engine/optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "platform/error.h"

namespace bet::optim {

ConstantSchedule::ConstantSchedule(double base, int64_t warmup) : base_(base), warmup_(warmup) {
  BET_CHECK(base >= 0, "constant schedule: lr ", base, " is negative");
  BET_CHECK(warmup >= 0, "constant schedule: warmup ", warmup, " is negative");
}

double ConstantSchedule::lr(int64_t step) const {
  BET_CHECK(step >= 0, "constant schedule: step ", step, " is negative");
  if (step < warmup_) return base_ * (double(step) / double(std::max<int64_t>(1, warmup_)));
  return base_;
}

WarmupCosineSchedule::WarmupCosineSchedule(double base, int64_t warmup, int64_t total, double min_lr)
    : base_(base), min_lr_(min_lr), warmup_(warmup), total_(total) {
  BET_CHECK(base > 0, "cosine schedule: lr ", base, " is not positive");
  BET_CHECK(min_lr >= 0 && min_lr <= base, "cosine schedule: min_lr ", min_lr, " is not in [0, lr = ", base, "]");
  BET_CHECK(warmup >= 0, "cosine schedule: warmup ", warmup, " is negative");
  BET_CHECK(total >= warmup, "cosine schedule: total steps ", total, " < warmup ", warmup);
}

double WarmupCosineSchedule::lr(int64_t step) const {
  BET_CHECK(step >= 0, "cosine schedule: step ", step, " is negative");
  // The factor is formed as transformers forms it, then multiplied by base as
  // LambdaLR does, so the values agree to the last bit or two.
  if (step < warmup_) return base_ * (double(step) / double(std::max<int64_t>(1, warmup_)));
  double progress = double(step - warmup_) / double(std::max<int64_t>(1, total_ - warmup_));
  progress = std::min(progress, 1.0);
  const double min_rate = min_lr_ / base_;
  double f = 0.5 * (1.0 + std::cos(std::numbers::pi * 0.5 * 2.0 * progress));
  f = f * (1.0 - min_rate) + min_rate;
  return base_ * std::max(0.0, f);
}

}  // namespace bet::optim
