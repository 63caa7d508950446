// Internals of `betctl bench train` shared by the timing and the profile: one training
// step of the model on a fixed random batch, and the `--profile` breakdown (per phase,
// per module of layer 0, and per autograd op of the backward pass).
#pragma once
#include "engine/autocast.h"
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench/report.h"
#include "engine/optim/optimizer.h"
#include "model/bet_model.h"

namespace bet::bench {

// Seconds per phase of each step run with it; `before_backward` (if set) sees the loss
// before backward runs (the op profile instruments the graph there).
struct PhaseTimes {
  std::vector<double> forward, loss, backward, optimizer, zero_grad;
  std::function<void(const Tensor& loss)> before_backward;
};

// A model, its AdamW, and a fixed batch of full-length random sequences (the peer's
// setup: random ids in 3..V-1, random targets).
struct TrainSetup {
  // On `device`: the model is initialised on the CPU (same weights everywhere), then moved.
  TrainSetup(const model::ModelConfig& cfg, int64_t B, int64_t S, Device device = Device::cpu());
  ~TrainSetup();
  // Keys the step's relabellings and dropout (as the trainer does).
  void begin_step(uint64_t step);
  // forward, model_loss (MDL beta 0.1), backward, AdamW step, zero_grad; returns once the
  // device has finished the step.
  model::MDLLossOutput step(uint64_t step, PhaseTimes* phases = nullptr);

  model::ModelConfig cfg;
  Device device;
  DType compute = DType::F32;  // BF16: forward and loss under autocast
  std::unique_ptr<model::BetModel> model;
  std::vector<Tensor> params;
  std::unique_ptr<optim::AdamW> opt;
  Tensor ids, targets;
  model::SeqContext ctx;
  uint64_t dropout_offset = 0;
};

struct ProfileResult {
  std::vector<Table> tables;
};

// Runs `steps` more steps of `s` (starting at step number `first_step`) with phase
// timers and per-op backward timers, then times layer 0's modules one by one.
ProfileResult profile_training(TrainSetup& s, const std::string& layer, int steps, uint64_t first_step);

}  // namespace bet::bench
