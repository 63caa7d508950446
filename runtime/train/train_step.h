// One training step, the object `betctl train`, `betctl bench train` (and --data) and
// the tests all run: the model, its AdamW, the loss and the learning-rate schedule.
//
//   step(batch, n):  the batch's context in training mode (relabellings keyed by
//                    (seed, n), dropout at offset n << 40 of the Philox stream)
//                    -> forward and MDL loss on the model's device, matmuls under
//                       autocast `compute`
//                    -> backward -> global gradient norm (clipped to `clip` when > 0)
//                    -> when the loss and the norm are finite: AdamW at
//                       schedule(n) x lr_scale; otherwise no update (the NaN guard's cue)
//                    -> zero_grad
//
// A step is a pure function of (weights, optimizer state, seed, n, batch), which is
// what makes resume exact. Asynchronous on a GPU: the loss's item() waits for the
// forward and backward, not for the update (call synchronize(device) to time a step).
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

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
  int64_t tokens = 0;      // valid tokens of the batch
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
  TrainStep(model::BetModel& model, const TrainStepConfig& cfg);
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
  optim::AdamW& optimizer() { return *opt_; }
  const optim::AdamW& optimizer() const { return *opt_; }
  const std::vector<Tensor>& params() const { return params_; }
  const TrainStepConfig& config() const { return cfg_; }

 private:
  model::BetModel& model_;
  TrainStepConfig cfg_;
  std::vector<Tensor> params_;
  std::unique_ptr<optim::AdamW> opt_;
  optim::WarmupCosineSchedule schedule_;
  double lr_scale_ = 1.0;
  // ctx.dropout_offset points here: backward replays the dropout masks from it.
  uint64_t dropout_offset_ = 0;
};

}  // namespace bet::runtime
