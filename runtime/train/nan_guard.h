// The NaN/Inf guard of `betctl train`. A step whose loss or gradient norm is not finite
// makes no update (TrainStep) and counts in RunState::bad_steps; after 3 such steps in a
// row the learning-rate scale halves and the run goes back to its last good training
// checkpoint (weights, moments, step), or moves on where it has none yet.
#pragma once
#include <string>

#include "runtime/train/checkpointing.h"
#include "runtime/train/run_log.h"
#include "runtime/train/train_step.h"

namespace bet::runtime {

class NanGuard {
 public:
  static constexpr int kMaxInARow = 3;

  // After step st.step, whose update was `applied` or skipped. Returns true when the
  // loop is to continue from st.step as it is now (a checkpoint was reloaded); false when
  // it moves on to the next step as usual (for a skipped step: without logging,
  // checkpointing or validating it).
  bool after_step(bool applied, TrainStep& step, RunState& st, const std::string& last_good, RunLog& log);

 private:
  int in_a_row_ = 0;  // not checkpointed: a resumed run starts at 0
};

}  // namespace bet::runtime
