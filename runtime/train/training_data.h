// The data of a training run: tokenizer, encoded training and validation sequences,
// label names, and how to cut batches from them. Batches are a pure function of
// (seed, epoch, index) — or of the step for the endless synthetic stream — so a
// resumed run replays exactly the batches an uninterrupted run would have seen.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "runtime/data/batching.h"
#include "runtime/data/synthetic.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/train/train_config.h"

namespace bet::runtime {

struct TrainingData {
  model::Task task = model::Task::LM;
  bool synthetic = false;
  SyntheticSpec spec;  // synthetic only
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<std::string> labels;
  std::vector<EncodedSequence> train, val;
  std::vector<int64_t> train_lengths;
  int64_t skipped = 0;

  // Batches per epoch (file data); synthetic data has no epochs.
  int64_t batches_per_epoch(int64_t batch_size) const;
  // Batch `index` of `epoch` (file data) — the plan is cached per epoch.
  Batch batch(int64_t epoch, int64_t index, int64_t batch_size, int64_t max_len, uint64_t seed);
  // Synthetic: the batch of global step `step` (sequences step*B .. step*B+B-1).
  Batch synthetic_batch(int64_t step, int64_t batch_size, uint64_t seed) const;

 private:
  int64_t planned_epoch_ = -1;
  std::vector<std::vector<int64_t>> plan_;
};

// Reads and tokenizes what `cfg` names (training spm tokenizers on the training texts,
// unless `tokenizer` is given, as on resume). Fills cfg.model's vocab_size, num_classes
// and labels, and the task if unset.
TrainingData load_training_data(TrainConfig& cfg, std::string* log, std::unique_ptr<Tokenizer> tokenizer = nullptr);

// Encodes texts for a task with a given tokenizer (used by eval and predict too).
std::vector<EncodedSequence> encode_examples(const Tokenizer& tok, const std::vector<std::string>& texts,
                                             const std::vector<int64_t>& labels, model::Task task, int64_t max_len);

}  // namespace bet::runtime
