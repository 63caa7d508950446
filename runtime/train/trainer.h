// `betctl train`: the training loop. Everything a step does is a pure function of
// (weights, optimizer state, seed, step): batches come from (seed, step), dropout from
// the Philox stream at offset step << 40, relabellings from (seed, step, layer, path,
// sequence). So a checkpoint of weights, optimizer state and step resumes bit-exactly.
#pragma once
#include <nlohmann/json.hpp>

#include "engine/dtype.h"
#include "model/bet_model.h"
#include "model/mdl_loss.h"
#include "runtime/data/batching.h"
#include "runtime/train/train_config.h"

namespace bet::runtime {

struct TrainResult {
  nlohmann::json summary;  // final metrics, paths, steps
  int exit_code = 0;
};

TrainResult train(TrainConfig cfg);

// The forward half of a training step, shared by the trainer and `bench train --data`:
// the batch's context in training mode (relabellings keyed by (seed, step), dropout at
// offset step << 40 of the Philox stream), then forward and MDL loss on the model's
// device, matmuls under autocast `compute`. ctx.dropout_offset points at
// *dropout_offset, which must outlive the step's backward.
struct TrainForward {
  model::SeqContext ctx;
  model::ForwardOutput out;
  model::MDLLossOutput loss;
};
TrainForward train_forward(const model::BetModel& m, const Batch& b, uint64_t seed, int64_t step, DType compute,
                           double mdl_beta, uint64_t* dropout_offset);

// Set by SIGINT/SIGTERM; the loop finishes the step, checkpoints and exits 0.
void install_stop_signal_handlers();
bool stop_requested();

}  // namespace bet::runtime
