// Resuming a run (--resume auto | FILE). The checkpoint's model config and tokenizer win
// over the flags; its weights, AdamW state, learning-rate scale and RunState continue
// where it stopped. Batches, dropout and relabellings are functions of (seed, step), so
// with the same --seed the resumed run is bit-identical to one never interrupted.
#pragma once
#include <string>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/checkpoint_manager.h"
#include "runtime/train/checkpointing.h"
#include "runtime/train/train_config.h"
#include "runtime/train/train_step.h"

namespace bet::runtime {

struct ResumePoint {
  std::string path;  // "": a fresh start
  Checkpoint checkpoint;
  bool found() const { return !path.empty(); }
};

// The checkpoint `spec` names, loaded: "" is a fresh start; "auto" the newest training
// checkpoint under the manager's folder that loads (none: a fresh start); anything else
// a file, which must load. Throws bet::Error for a file that does not load or holds no
// optimizer state.
ResumePoint find_resume(const std::string& spec, const CheckpointManager& manager);

// Copies the checkpoint's weights and optimizer state into `step` (whose model was built
// from the checkpoint's config), sets its learning-rate scale and returns the run state.
// Throws when the checkpoint was trained with another seed.
RunState resume_into(const ResumePoint& from, TrainStep& step, uint64_t seed);

}  // namespace bet::runtime
