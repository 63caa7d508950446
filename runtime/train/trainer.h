// `betctl train`: the training loop. Everything a step does is a pure function of
// (weights, optimizer state, seed, step): batches come from (seed, step), dropout from
// the Philox stream at offset step << 40, relabellings from (seed, step, layer, path,
// sequence). So a checkpoint of weights, optimizer state and step resumes bit-exactly.
//
// The parts, a file each: the step (train_step.h), resume (resume.h), checkpoints and
// milestones (checkpointing.h), early stopping (early_stopping.h), the NaN guard
// (nan_guard.h); trainer.cpp sets them up and runs the loop, its logging and validation.
#pragma once
#include <nlohmann/json.hpp>

#include "runtime/train/train_config.h"

namespace bet::runtime {

struct TrainResult {
  nlohmann::json summary;  // final metrics, paths, steps
  int exit_code = 0;
};

TrainResult train(TrainConfig cfg);

// Set by SIGINT/SIGTERM; the loop finishes the step, checkpoints and exits 0.
void install_stop_signal_handlers();
bool stop_requested();

}  // namespace bet::runtime
