#include "runtime/train/nan_guard.h"

namespace bet::runtime {

bool NanGuard::after_step(bool applied, TrainStep& step, RunState& st, const std::string& last_good, RunLog& log) {
  if (applied) {
    in_a_row_ = 0;
    return false;
  }
  st.bad_steps++;
  log.message("step " + std::to_string(st.step) + ": non-finite loss or gradient, update skipped");
  if (++in_a_row_ < kMaxInARow) return false;
  in_a_row_ = 0;
  step.set_lr_scale(step.lr_scale() * 0.5);
  if (last_good.empty()) return false;
  Checkpoint ck = load_checkpoint(last_good);
  step.model().load_parameters(ck.weights);
  step.optimizer().load_state(ck.optimizer);
  st.step = ck.training_state.at("step").get<int64_t>();
  log.message("reloaded " + last_good + ", learning rate scale now " + std::to_string(step.lr_scale()));
  return true;
}

}  // namespace bet::runtime
