// `betctl train`: the training loop. Everything a step does is a pure function of
// (weights, optimizer state, seed, step): batches come from (seed, step), dropout from
// the Philox stream at offset step << 40, relabellings from (seed, step, layer, path,
// sequence). So a checkpoint of weights, optimizer state and step resumes bit-exactly.
//
// The parts, a file each: the step (train_step.h), resume (resume.h), checkpoints and
// milestones (checkpointing.h), early stopping (early_stopping.h), the NaN guard
// (nan_guard.h), the ranks of a data-parallel run (ranks.h); trainer.cpp sets them up
// and runs the loop, its logging and validation. Under mpirun every rank runs this loop
// on the same global batches and ends each step with the same weights; every rank
// validates (so early stopping decides alike without a message); rank 0 alone writes.
#pragma once
#include <nlohmann/json.hpp>

#include "runtime/train/train_config.h"

namespace bet::runtime {

struct TrainResult {
  nlohmann::json summary;  // final metrics, paths, steps
  int exit_code = 0;
  bool writer = true;      // false on ranks other than 0: they print nothing
};

TrainResult train(TrainConfig cfg);

// Set by SIGINT/SIGTERM (and SIGUSR1, which mpirun forwards from betctl train --nproc);
// the loop finishes the step, checkpoints and exits 0 (every rank at the same step).
void install_stop_signal_handlers();
bool stop_requested();

}  // namespace bet::runtime
