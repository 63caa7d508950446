#include "runtime/train/train_step.h"

#include <algorithm>
#include <optional>

#include "engine/autocast.h"
#include "engine/ops.h"
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
  c.grad_accum = cfg.grad_accum;
  c.shard_optimizer = cfg.shard_optimizer;
  c.bucket_bytes = int64_t(cfg.bucket_mb * 1024 * 1024);
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

TrainStep::TrainStep(model::BetModel& model, const TrainStepConfig& cfg, dist::Communicator* comm)
    : model_(model),
      cfg_(cfg),
      own_comm_(comm ? nullptr : dist::local_communicator(model.device())),
      comm_(comm ? comm : own_comm_.get()),
      params_(model.trainable_tensors()),
      // Linear warmup (at most half the run), then cosine decay to 10% of the peak.
      schedule_(cfg.lr, std::min(cfg.warmup, cfg.total_steps / 2), cfg.total_steps, cfg.lr * 0.1) {
  BET_CHECK(cfg.grad_accum >= 1, "--grad-accum must be >= 1, got ", cfg.grad_accum);
  // One rank accumulates in autograd's own gradients; several sum flat buckets.
  if (comm_->size() > 1) buckets_ = std::make_unique<dist::GradBuckets>(params_, *comm_, cfg.bucket_bytes);
  if (cfg.shard_optimizer && buckets_) {
    auto sharded = std::make_unique<dist::ShardedAdamW>(*buckets_, *comm_, adamw_options(cfg), weight_decay_mask(params_));
    sharded_ = sharded.get();
    opt_ = std::move(sharded);
  } else {
    // One rank: nothing to shard (--shard-optimizer changes nothing).
    opt_ = std::make_unique<optim::AdamW>(params_, adamw_options(cfg), weight_decay_mask(params_));
  }
}

TrainStep::~TrainStep() = default;

double TrainStep::lr(int64_t step) const { return schedule_.lr(step) * lr_scale_; }

std::pair<int64_t, int64_t> TrainStep::micro_rows(int64_t rows, int64_t micro) const {
  const int64_t R = comm_->size(), r = comm_->rank(), A = cfg_.grad_accum;
  BET_CHECK(rows >= R * A, "a global batch of ", rows, " rows cannot be split over ", R, " ranks x ", A,
            " micro-batches (--batch-size must be at least ranks x --grad-accum)");
  // Rank r: rows [rows*r/R, rows*(r+1)/R); micro-batch a: the a-th A-th of those.
  const int64_t lo = rows * r / R, hi = rows * (r + 1) / R;
  return {lo + (hi - lo) * micro / A, lo + (hi - lo) * (micro + 1) / A};
}

void TrainStep::reduce_gradients() {
  if (sharded_)
    buckets_->finish_reduce_scatter();
  else if (buckets_)
    buckets_->finish();
}

StepMetrics TrainStep::step(const Batch& b, int64_t step, StepObserver* observer) {
  using Phase = StepObserver::Phase;
  auto phase_end = [&](Phase p) {
    if (observer) observer->phase_end(p);
  };
  StepMetrics m;
  m.tokens = b.tokens();
  const Device device = model_.device();
  const model::ModelConfig& model_cfg = model_.config();
  const int64_t rows = b.ids.size(0);
  const int64_t A = cfg_.grad_accum;
  if (buckets_) buckets_->bind();
  std::vector<Tensor> ce_parts;  // read once all micro-batches are queued (one wait on a GPU)
  std::vector<int64_t> counts;
  for (int64_t a = 0; a < A; ++a) {
    const auto [r0, r1] = micro_rows(rows, a);
    const Batch mb = slice_rows(b, r0, r1);
    m.ctx = batch_context(mb, model_);
    m.ctx.training = true;
    m.ctx.seed = cfg_.seed;
    m.ctx.step = uint64_t(step);
    m.ctx.row0 = r0;
    m.ctx.global_rows = rows;
    // Every micro-batch starts at the step's offset: sites are laid out by global row.
    dropout_offset_ = uint64_t(step) << 40;
    m.ctx.dropout_offset = &dropout_offset_;
    Tensor ce;
    {
      std::optional<AutocastGuard> autocast(std::in_place, cfg_.compute);
      m.out = model_.forward(mb.ids.to(device), m.ctx);
      phase_end(Phase::Forward);
      const Tensor& target = model_cfg.task == model::Task::Classify ? mb.labels : mb.targets;
      const model::LossOperands ops = model::loss_operands(m.out, target.to(device), m.ctx, model_cfg.task);
      ce = cross_entropy_sum(ops.logits, ops.targets, -100);
      const std::vector<int64_t> c = model::target_counts(ops.targets, ops.logits.size(1));
      if (counts.empty()) counts.assign(c.size(), 0);
      for (size_t i = 0; i < c.size(); ++i) counts[i] += c[i];
      autocast.reset();
      phase_end(Phase::Loss);
    }
    if (observer) observer->before_backward(ce);
    {
      // The last backward's gradients are final as they appear: sum them meanwhile.
      std::unique_ptr<autograd::GradReadyScope> scope;
      if (buckets_) scope = buckets_->backward_scope(!sharded_ && a == A - 1);
      ce.backward();
    }
    ce_parts.push_back(ce.detach());
  }
  double ce_sum = 0;
  for (const Tensor& c : ce_parts) ce_sum += c.item();
  reduce_gradients();
  // The global batch's loss terms: CE sum and label counts over every rank (and, with
  // buckets, which parameters any rank gave a gradient).
  std::vector<double> totals{ce_sum};
  totals.insert(totals.end(), counts.begin(), counts.end());
  if (buckets_) totals.insert(totals.end(), buckets_->received().begin(), buckets_->received().end());
  comm_->all_reduce_sum(totals);
  std::vector<int64_t> global_counts(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) global_counts[i] = int64_t(std::llround(totals[i + 1]));
  if (buckets_) {
    // A parameter no rank gave a gradient takes no step, as with one rank (AdamW skips
    // a parameter without a gradient: no decay, no moment update).
    std::vector<bool> got(params_.size());
    for (size_t i = 0; i < params_.size(); ++i) got[i] = totals[1 + counts.size() + i] > 0;
    if (sharded_)
      sharded_->set_stepping(got);
    else
      for (size_t i = 0; i < params_.size(); ++i)
        if (!got[i]) params_[i].set_grad(Tensor());
  }
  m.parts = model::mdl_from_totals(totals[0], global_counts);
  const double scale = model::mdl_gradient_scale(m.parts, cfg_.mdl_beta);
  if (sharded_) {
    sharded_->scale_grads(scale);
  } else if (buckets_) {
    for (int64_t k = 0; k < buckets_->bucket_count(); ++k) optim::scale_in_place(buckets_->flat(k), scale);
  } else {
    optim::scale_grads(params_, scale);
  }
  m.loss = m.parts.n == 0 ? 0.0 : m.parts.standard_loss + cfg_.mdl_beta * m.parts.mdl_penalty;
  phase_end(Phase::Backward);
  if (sharded_)
    m.grad_norm = cfg_.clip > 0 ? sharded_->clip_grad_norm(cfg_.clip) : sharded_->grad_norm();
  else
    m.grad_norm = cfg_.clip > 0 ? optim::clip_grad_norm(params_, cfg_.clip) : optim::grad_norm(params_);
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
