#include "runtime/train/checkpointing.h"

#include <cmath>

#include "runtime/train/evaluate.h"

namespace bet::runtime {

nlohmann::json run_state_json(const RunState& st, double lr_scale, uint64_t seed, int64_t total_steps) {
  return {{"step", st.step},
          {"bad_steps", st.bad_steps},
          {"lr_scale", lr_scale},
          {"best", st.best},
          {"evals_without_improvement", st.evals_without_improvement},
          {"seed", seed},
          {"total_steps", total_steps}};
}

RunState run_state_from_json(const nlohmann::json& j) {
  RunState st;
  st.step = j.at("step").get<int64_t>();
  st.bad_steps = j.value("bad_steps", int64_t(0));
  st.best = j.value("best", nlohmann::json::object());
  st.evals_without_improvement = j.value("evals_without_improvement", int64_t(0));
  return st;
}

RunCheckpoints::RunCheckpoints(CheckpointManager& manager, const TrainStep& step, const Tokenizer& tokenizer,
                               uint64_t seed, int64_t total_steps)
    : manager_(manager), step_(step), tokenizer_(tokenizer), seed_(seed), total_steps_(total_steps) {}

Checkpoint RunCheckpoints::make(const std::string& kind, const RunState& st, const nlohmann::json& metrics) const {
  Checkpoint ck =
      make_checkpoint(step_.model(), kind == "training" ? &step_.optimizer() : nullptr, tokenizer_.to_json(), kind);
  ck.training_state = run_state_json(st, step_.lr_scale(), seed_, total_steps_);
  ck.metrics = metrics;
  return ck;
}

void RunCheckpoints::save_training(const RunState& st, const nlohmann::json& metrics) {
  // Every rank makes the checkpoint: with a sharded optimizer, gathering the moments is
  // a collective. Only rank 0 writes it; the others learn the path it writes.
  Checkpoint ck = make("training", st, metrics);
  if (writer_) last_good_ = manager_.save_training(ck, st.step);
  else last_good_ = manager_.training_path(st.step);
}

std::set<std::string> RunCheckpoints::save_milestones(RunState& st, const std::map<std::string, double>& vm,
                                                      const std::vector<std::string>& tracked,
                                                      const nlohmann::json& metrics) {
  std::set<std::string> improved;
  for (const std::string& name : tracked) {
    auto it = vm.find(name);
    if (it == vm.end() || !std::isfinite(it->second)) continue;
    const bool higher_better = higher_is_better(name);
    const bool better = !st.best.contains(name) || (higher_better ? it->second > st.best[name].get<double>()
                                                                  : it->second < st.best[name].get<double>());
    if (!better) continue;
    st.best[name] = it->second;
    if (writer_) manager_.save_milestone(make("milestone", st, metrics), name.substr(4), it->second, higher_better);
    improved.insert(name);
  }
  return improved;
}

}  // namespace bet::runtime
