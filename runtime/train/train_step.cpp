#include "runtime/train/train_step.h"

#include <algorithm>
#include <optional>

#include "engine/autocast.h"
#include "runtime/train/evaluate.h"

namespace bet::runtime {

std::vector<bool> weight_decay_mask(const std::vector<Tensor>& params) {
  std::vector<bool> decay;
  decay.reserve(params.size());
  for (const Tensor& p : params) decay.push_back(p.dim() >= 2);
  return decay;
}

TrainStepConfig train_step_config(const TrainConfig& cfg, int64_t total_steps, DType compute) {
  TrainStepConfig c;
  c.lr = cfg.lr;
  c.warmup = cfg.warmup;
  c.total_steps = total_steps;
  c.weight_decay = cfg.weight_decay;
  c.clip = cfg.clip;
  c.mdl_beta = cfg.mdl_beta;
  c.seed = cfg.seed;
  c.compute = compute;
  return c;
}

namespace {

optim::AdamWOptions adamw_options(const TrainStepConfig& c) {
  optim::AdamWOptions o;
  o.lr = c.lr;
  o.weight_decay = c.weight_decay;
  return o;
}

}  // namespace

TrainStep::TrainStep(model::BetModel& model, const TrainStepConfig& cfg)
    : model_(model),
      cfg_(cfg),
      params_(model.trainable_tensors()),
      opt_(std::make_unique<optim::AdamW>(params_, adamw_options(cfg), weight_decay_mask(params_))),
      // Linear warmup (at most half the run), then cosine decay to 10% of the peak.
      schedule_(cfg.lr, std::min(cfg.warmup, cfg.total_steps / 2), cfg.total_steps, cfg.lr * 0.1) {}

TrainStep::~TrainStep() = default;

double TrainStep::lr(int64_t step) const { return schedule_.lr(step) * lr_scale_; }

StepMetrics TrainStep::step(const Batch& b, int64_t step, StepObserver* observer) {
  using Phase = StepObserver::Phase;
  auto phase_end = [&](Phase p) {
    if (observer) observer->phase_end(p);
  };
  StepMetrics m;
  m.tokens = b.tokens();
  const Device device = model_.device();
  const model::ModelConfig& model_cfg = model_.config();
  m.ctx = batch_context(b, model_);
  m.ctx.training = true;
  m.ctx.seed = cfg_.seed;
  m.ctx.step = uint64_t(step);
  dropout_offset_ = uint64_t(step) << 40;
  m.ctx.dropout_offset = &dropout_offset_;
  {
    std::optional<AutocastGuard> autocast(std::in_place, cfg_.compute);
    m.out = model_.forward(b.ids.to(device), m.ctx);
    phase_end(Phase::Forward);
    const Tensor& target = model_cfg.task == model::Task::Classify ? b.labels : b.targets;
    m.parts = model::model_loss(m.out, target.to(device), m.ctx, model_cfg.task, cfg_.mdl_beta);
    autocast.reset();
    phase_end(Phase::Loss);
  }
  if (observer) observer->before_backward(m.parts.loss);
  m.parts.loss.backward();
  phase_end(Phase::Backward);
  m.grad_norm = cfg_.clip > 0 ? optim::clip_grad_norm(params_, cfg_.clip) : optim::grad_norm(params_);
  m.loss = m.parts.loss.item();
  phase_end(Phase::Clip);
  m.applied = std::isfinite(m.loss) && std::isfinite(m.grad_norm);
  if (m.applied) {
    opt_->set_lr(lr(step));
    opt_->step();
  }
  phase_end(Phase::Update);
  opt_->zero_grad();
  phase_end(Phase::ZeroGrad);
  m.lr = opt_->lr();
  return m;
}

}  // namespace bet::runtime
