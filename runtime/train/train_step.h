// One training step, the object `betctl train`, `betctl bench train` (and --data) and
// the tests all run, on every rank of a data-parallel run: the model, its AdamW, the
// loss and the learning-rate schedule.
//
//   step(batch, n):  `batch` is the GLOBAL batch. This rank takes its rows (an even,
//                    contiguous share), split further into grad_accum micro-batches.
//                    For each: the context in training mode (relabellings keyed by
//                    (seed, n, example), dropout at offset n << 40 of the Philox
//                    stream, laid out by row of the global batch)
//                    -> forward, summed cross-entropy (matmuls under autocast
//                       `compute`) -> backward, gradients accumulating in place
//                    -> gradients summed across ranks (flat buckets, started while the
//                       last backward runs), with the CE sum and the label counts
//                    -> the MDL decision on the global batch, the gradient scaled by
//                       (1 + beta [active]) / N once
//                    -> global gradient norm (clipped to `clip` when > 0)
//                    -> when the loss and the norm are finite: AdamW at
//                       schedule(n) x lr_scale (each rank its shard with
//                       shard_optimizer); otherwise no update (the NaN guard's cue)
//                    -> zero_grad
//
// A step is a pure function of (weights, optimizer state, seed, n, global batch): the
// rank count and grad_accum change it only by float summation order. That is what
// makes resume exact, on any rank count. Asynchronous on a GPU: the loss's item() waits
// for the forward and backward, not for the update (call synchronize(device) to time a
// step).
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/dist/grad_buckets.h"
#include "engine/dist/sharded_adamw.h"
#include "engine/dtype.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/schedule.h"
#include "model/bet_model.h"
#include "model/mdl_loss.h"
#include "runtime/data/batching.h"
#include "runtime/train/train_config.h"

namespace bet::runtime {

// AdamW's weight-decay rule, written once: matrices (embeddings included) decay;
// biases, norms and scalars (fewer than 2 dims) do not.
std::vector<bool> weight_decay_mask(const std::vector<Tensor>& params);

// What a step needs besides the model. Build it with train_step_config (betctl train's
// flags and defaults); tests and benches then change what they vary.
struct TrainStepConfig {
  double lr = 0;            // peak learning rate
  int64_t warmup = 0;       // linear warmup steps (at most half the run)
  int64_t total_steps = 1;  // then cosine decay, reaching 10% of lr here
  double weight_decay = 0;  // AdamW's decoupled decay, on weight_decay_mask's parameters
  double clip = 0;          // global gradient-norm clip; 0: the norm is measured, not clipped
  double mdl_beta = 0;      // MDL penalty weight of the loss
  uint64_t seed = 0;        // keys relabellings and dropout
  DType compute = DType::F32;  // BF16: forward and loss under autocast
  // ---- data parallelism ----
  int64_t grad_accum = 1;        // micro-batches per rank per step
  bool shard_optimizer = false;  // ZeRO-1: AdamW state sharded across ranks
  int64_t bucket_bytes = dist::kDefaultBucketBytes;
};

// The step of `betctl train` with `cfg`'s flags, for a run of `total_steps`.
TrainStepConfig train_step_config(const TrainConfig& cfg, int64_t total_steps, DType compute = DType::F32);

// What a step returns. The context, output and loss parts keep the step's graph alive;
// drop them before the next step.
struct StepMetrics {
  double loss = NAN;       // the objective (standard loss + MDL penalty)
  double grad_norm = NAN;  // global 2-norm before clipping
  double lr = 0;           // the optimizer's learning rate after the step (unchanged when skipped)
  bool applied = false;    // false: loss or gradient norm not finite, so no update was made
  int64_t tokens = 0;      // valid tokens of the global batch
  // This rank's last micro-batch: its context and forward output; `parts` has the
  // global batch's loss terms (its `loss` tensor is undefined).
  model::SeqContext ctx;
  model::ForwardOutput out;
  model::MDLLossOutput parts;
};

// Optional observer of a step's phases (`bench train --profile`): phase_end is called as
// each phase ends, before_backward sees the loss before backward runs.
struct StepObserver {
  enum class Phase { Forward, Loss, Backward, Clip, Update, ZeroGrad };
  virtual ~StepObserver() = default;
  virtual void before_backward(const Tensor& /*loss*/) {}
  virtual void phase_end(Phase /*phase*/) {}
};

class TrainStep {
 public:
  // Creates the optimizer: its moments sit beside the parameters, so move the model to
  // its device first. `model` must outlive the step.
  // `comm`: the ranks this step is data-parallel over (nullptr: this process alone); it
  // must outlive the step.
  TrainStep(model::BetModel& model, const TrainStepConfig& cfg, dist::Communicator* comm = nullptr);
  ~TrainStep();
  TrainStep(const TrainStep&) = delete;
  TrainStep& operator=(const TrainStep&) = delete;

  // Step number `step` on batch `b` (on the host or the model's device).
  StepMetrics step(const Batch& b, int64_t step, StepObserver* observer = nullptr);

  // The learning rate step `step` applies: schedule x lr_scale.
  double lr(int64_t step) const;
  // The NaN guard's factor on the schedule (1 until it halves it); checkpoints carry it.
  double lr_scale() const { return lr_scale_; }
  void set_lr_scale(double s) { lr_scale_ = s; }

  model::BetModel& model() { return model_; }
  const model::BetModel& model() const { return model_; }
  // AdamW, or its sharded form (whose state() and load_state() are collectives).
  optim::Optimizer& optimizer() { return *opt_; }
  const optim::Optimizer& optimizer() const { return *opt_; }
  const std::vector<Tensor>& params() const { return params_; }
  const TrainStepConfig& config() const { return cfg_; }
  dist::Communicator& comm() { return *comm_; }
  // The gradient buckets (nullptr for one rank): their timers say how long steps waited.
  dist::GradBuckets* buckets() { return buckets_.get(); }
  // Rows [begin, end) of a global batch of `rows` that micro-batch `micro` of this rank
  // takes.
  std::pair<int64_t, int64_t> micro_rows(int64_t rows, int64_t micro) const;

 private:
  // The gradients summed over ranks (the buckets' sum, or this rank's shards).
  void reduce_gradients();

  model::BetModel& model_;
  TrainStepConfig cfg_;
  std::unique_ptr<dist::Communicator> own_comm_;  // the local one when none is given
  dist::Communicator* comm_;
  std::unique_ptr<dist::GradBuckets> buckets_;    // more than one rank only
  std::vector<Tensor> params_;
  std::unique_ptr<optim::Optimizer> opt_;
  dist::ShardedAdamW* sharded_ = nullptr;  // opt_, when the optimizer is sharded
  optim::WarmupCosineSchedule schedule_;
  double lr_scale_ = 1.0;
  // ctx.dropout_offset points here: backward replays the dropout masks from it.
  uint64_t dropout_offset_ = 0;
};

}  // namespace bet::runtime
