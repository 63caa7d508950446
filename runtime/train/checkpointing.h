// Checkpointing of a training run, in CheckpointManager's layout under OUT/checkpoints/:
// what a checkpoint carries besides the weights and AdamW's moments (RunState, and the
// step's learning-rate scale), training checkpoints (every --checkpoint-every steps, at
// the end, on SIGINT/SIGTERM) and milestones (a validation metric's best so far).
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/checkpoint_manager.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/train/train_step.h"

namespace bet::runtime {

// The loop's state that a checkpoint carries (with TrainStep::lr_scale): everything else a
// step needs is a function of (seed, step).
struct RunState {
  int64_t step = 0;
  int64_t bad_steps = 0;                               // steps the NaN guard skipped
  nlohmann::json best = nlohmann::json::object();      // best value of each tracked metric so far
  int64_t evals_without_improvement = 0;               // early stopping's count
};

// A checkpoint's "training_state": the run state, the step's lr_scale, the seed and the
// run's length. run_state_from_json reads back what run_state_json wrote (older files
// may lack all but "step").
nlohmann::json run_state_json(const RunState& st, double lr_scale, uint64_t seed, int64_t total_steps);
RunState run_state_from_json(const nlohmann::json& j);

class RunCheckpoints {
 public:
  // `step` (model and optimizer) and `tokenizer` must outlive this.
  RunCheckpoints(CheckpointManager& manager, const TrainStep& step, const Tokenizer& tokenizer, uint64_t seed,
                 int64_t total_steps);

  // A checkpoint of the run now: kind "training" carries the optimizer state,
  // "milestone" does not.
  Checkpoint make(const std::string& kind, const RunState& st, const nlohmann::json& metrics) const;
  // Writes training/step-<st.step>.bet, which becomes last_good().
  void save_training(const RunState& st, const nlohmann::json& metrics);
  // After an evaluation: each metric of `tracked` present in `vm` with a finite value
  // that beats st.best (or has none yet) becomes the best and gets a milestone
  // checkpoint (milestone/<metric without "val/">/). Returns the metrics that improved.
  std::set<std::string> save_milestones(RunState& st, const std::map<std::string, double>& vm,
                                        const std::vector<std::string>& tracked, const nlohmann::json& metrics);

  // The newest training checkpoint this run wrote or resumed from; "" when none (what
  // the NaN guard goes back to).
  const std::string& last_good() const { return last_good_; }
  void set_last_good(std::string path) { last_good_ = std::move(path); }

  // false on the ranks other than 0 of a data-parallel run: the bookkeeping (best
  // values, last_good) is kept as rank 0 keeps it, but nothing is written.
  void set_writer(bool w) { writer_ = w; }

 private:
  bool writer_ = true;
  CheckpointManager& manager_;
  const TrainStep& step_;
  const Tokenizer& tokenizer_;
  uint64_t seed_;
  int64_t total_steps_;
  std::string last_good_;
};

}  // namespace bet::runtime
