// Learning-rate schedules: lr(step) for the optimizer step with 0-based index `step`
// (set it with opt.set_lr(schedule.lr(step)) before that step). This is the
// convention of torch.optim.lr_scheduler.LambdaLR, which sets base*lambda(0) at
// construction and base*lambda(k) after k scheduler.step() calls.
#pragma once
#include <cstdint>
#include <memory>

namespace bet::optim {

class Schedule {
 public:
  virtual ~Schedule() = default;
  virtual double lr(int64_t step) const = 0;
};

// lr = base, or with warmup > 0 (transformers' get_constant_schedule_with_warmup):
// base * step / warmup for step < warmup, then base.
class ConstantSchedule : public Schedule {
 public:
  explicit ConstantSchedule(double base, int64_t warmup = 0);
  double lr(int64_t step) const override;

 private:
  double base_;
  int64_t warmup_;
};

// Linear warmup then cosine decay to a floor, as transformers'
// get_cosine_with_min_lr_schedule_with_warmup (num_cycles = 0.5; with min_lr = 0 it
// is get_cosine_schedule_with_warmup):
//   step < warmup:  lr = base * step / max(1, warmup)        (so lr(0) = 0 when warmup > 0)
//   otherwise:      progress = (step - warmup) / max(1, total - warmup)
//                   f = 0.5 * (1 + cos(pi * progress))
//                   lr = base * (f * (1 - min_lr/base) + min_lr/base) = min_lr + (base - min_lr) * f
// One deviation: progress is clamped to 1, so after `total` steps lr stays at min_lr
// (transformers' formula would rise again along the cosine).
class WarmupCosineSchedule : public Schedule {
 public:
  WarmupCosineSchedule(double base, int64_t warmup, int64_t total, double min_lr = 0.0);
  double lr(int64_t step) const override;

 private:
  double base_, min_lr_;
  int64_t warmup_, total_;
};

}  // namespace bet::optim
