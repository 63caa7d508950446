// What defines a model: the hyperparameters stored in every checkpoint header.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace bet::model {

enum class Task { Classify, LM };
enum class LayerKind { Bet, Standard };
enum class PosEncoding { Rope, Sinusoidal, Learned, None };

struct ModelConfig {
  Task task = Task::Classify;
  LayerKind layer = LayerKind::Bet;
  PosEncoding pe = PosEncoding::Rope;
  int64_t vocab_size = 259;  // byte tokenizer: 3 specials + 256 bytes
  int64_t d_model = 128;
  int64_t heads = 4;
  int64_t layers = 2;
  int64_t max_len = 256;
  int64_t k_permutations = 3;
  int64_t n_harmonics = 8;
  int64_t num_classes = 2;  // classify only
  double dropout = 0.1;
  bool tie_embeddings = false;  // lm only
  uint64_t inference_seed = 0x5eed;  // keys the inference-time relabellings
  std::vector<std::string> labels;   // class names, by index

  bool causal() const { return task == Task::LM; }
  int64_t head_dim() const { return d_model / heads; }
  // Validates the combination; throws bet::Error naming the field at fault.
  void validate() const;
};

std::string to_string(Task t);
std::string to_string(LayerKind k);
std::string to_string(PosEncoding p);
Task parse_task(const std::string& s);
LayerKind parse_layer(const std::string& s);
PosEncoding parse_pe(const std::string& s);

}  // namespace bet::model
