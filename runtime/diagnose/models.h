// The models the experiments measure: either given (--model) or trained here, in
// process, on the built-in tasks, and cached in OUT/models/NAME.bet so that `all` (and
// a second run into the same folder) trains each model once. A cached file is used only
// when its config and training recipe (stored in its training_state) match the spec.
//
// Two tasks:
//  - lm: Bernoulli sequences (runtime/data/synthetic.h, p ~ Beta(1,1), ids 3 and 4),
//    the causal model every order and Bayes experiment reads.
//  - classify: the same sequences, bidirectional, labelled by whether the p that drew
//    them is above 1/2 (labels "low", "high"). Its exact Bayes posterior,
//    P(p > 1/2 | h ones in t) = P(Binomial(t + 1, 1/2) <= h), is the reference the
//    calibration experiment draws beside the model.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/bet_model.h"

namespace bet::diagnose {

using Progress = std::function<void(const std::string&)>;

struct ModelSpec {
  model::Task task = model::Task::LM;
  model::LayerKind layer = model::LayerKind::Bet;
  model::PosEncoding pe = model::PosEncoding::Rope;
  int64_t layers = 2, d_model = 32, heads = 2, k_permutations = 3;
  int64_t seq_len = 32;  // outcomes per training sequence (max_len = seq_len + 1)
  int64_t steps = 300, batch_size = 32, warmup = 30;
  double lr = 3e-3;
  uint64_t seed = 1;

  // "lm-rope-L2-d32-n32-s300-seed1": the cache file's name.
  std::string name() const;
  model::ModelConfig config() const;
  nlohmann::json recipe() const;  // what the cache compares
};

// A labelled classification example of the built-in task.
struct ClassExample {
  std::vector<int> outcomes;
  int64_t label = 0;  // 1: p > 1/2
  double p = 0;       // the p that drew it
};
// `count` examples of `length` outcomes, p ~ Beta(1, 1), from `seed`.
std::vector<ClassExample> classification_examples(int count, int length, uint64_t seed);
// Exact Bayes P(p > 1/2 | outcomes) under the Beta(1, 1) prior.
double bayes_prob_high(const std::vector<int>& outcomes);
// The text the byte tokenizer turns into ids 3 + outcome: bytes 0 and 1.
std::string outcome_text(const std::vector<int>& outcomes);

// Trains `spec` from scratch (deterministic given the spec and thread count), with a
// progress line every so often. The model comes back in eval mode.
std::shared_ptr<model::BetModel> train_model(const ModelSpec& spec, const Progress& progress);

// OUT/models/NAME.bet when it exists and matches the spec; otherwise trains and saves it.
std::shared_ptr<model::BetModel> cached_model(const ModelSpec& spec, const std::string& models_dir,
                                              const Progress& progress);

// A checkpoint file, eval mode (bet::Error naming the file when it cannot be read).
std::shared_ptr<model::BetModel> load_model_file(const std::string& path);

// The byte tokenizer's JSON, which every model trained here carries.
nlohmann::json byte_tokenizer_json();

}  // namespace bet::diagnose
