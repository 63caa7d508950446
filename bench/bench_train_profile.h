// Internals of `betctl bench train` shared by the timing and the profile: the trainer's
// step on a fixed random batch, and the `--profile` breakdown (per phase, per module of
// layer 0, and per autograd op of the backward pass).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench/report.h"
#include "model/bet_model.h"
#include "runtime/data/batching.h"
#include "runtime/train/train_step.h"

namespace bet::bench {

// The step a bench run times: `betctl train`'s (runtime/train/train_step.h) with its
// defaults (runtime/train/train_config.h: learning rate, weight decay, clipping, MDL
// beta, seed 0), except the schedule: the peak learning rate throughout, as the peer's
// constant-lr AdamW, so every step makes a full-size update.
runtime::TrainStepConfig bench_step_config(DType compute);

// The fixed batch of a bench run (the peer's setup): B full-length sequences of random
// ids in 3..V-1 with random labels (classify) or targets (lm), on the host as the
// trainer's batches are.
runtime::Batch random_batch(const model::ModelConfig& cfg, int64_t B, int64_t S);

// A model and the trainer's step over a fixed random batch: what `bench train` times and
// `--profile` breaks down, and what `bench ckpt` trains a few steps.
struct TrainSetup {
  // On `device`: the model is initialised on the CPU (same weights everywhere, those of
  // betctl train --seed 0), then moved.
  TrainSetup(const model::ModelConfig& cfg, int64_t B, int64_t S, Device device = Device::cpu(),
             DType compute = DType::F32);
  ~TrainSetup();
  // Step number `step` of the trainer on the batch; returns once the device has
  // finished it.
  runtime::StepMetrics step(int64_t step, runtime::StepObserver* observer = nullptr);

  model::ModelConfig cfg;
  Device device;
  std::unique_ptr<model::BetModel> model;
  runtime::Batch batch;
  std::unique_ptr<runtime::TrainStep> trainer;
};

struct ProfileResult {
  std::vector<Table> tables;
};

// Runs `steps` more steps of `s` (starting at step number `first_step`) with phase
// timers and per-op backward timers, then times layer 0's modules one by one.
ProfileResult profile_training(TrainSetup& s, const std::string& layer, int steps, int64_t first_step);

}  // namespace bet::bench
