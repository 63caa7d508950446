#include "runtime/train/resume.h"

#include "engine/error.h"

namespace bet::runtime {

ResumePoint find_resume(const std::string& spec, const CheckpointManager& manager) {
  ResumePoint r;
  if (spec.empty()) return r;
  if (spec == "auto") {
    r.path = manager.find_resume("auto", &r.checkpoint);
  } else {
    r.path = spec;
    r.checkpoint = load_checkpoint(spec);
  }
  if (r.found())
    BET_CHECK(r.checkpoint.quantize.empty(), r.path, ": an ", r.checkpoint.quantize,
              " (quantized) checkpoint is for inference only (predict, serve, eval); resume from a training "
              "checkpoint");
  if (r.found())
    BET_CHECK(r.checkpoint.kind == "training", r.path, ": a ", r.checkpoint.kind,
              " checkpoint has no optimizer state; resume needs a training checkpoint");
  return r;
}

RunState resume_into(const ResumePoint& from, TrainStep& step, uint64_t seed) {
  const Checkpoint& ck = from.checkpoint;
  const nlohmann::json& ts = ck.training_state;
  BET_CHECK(ts.value("seed", seed) == seed, from.path, ": was trained with --seed ", ts.value("seed", seed), ", not ",
            seed, "; exact resume needs the same seed");
  step.model().load_parameters(ck.weights);
  step.optimizer().load_state(ck.optimizer);
  step.set_lr_scale(ts.value("lr_scale", 1.0));
  return run_state_from_json(ts);
}

}  // namespace bet::runtime
