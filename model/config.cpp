#include "model/config.h"

#include "engine/error.h"

namespace bet::model {

void ModelConfig::validate() const {
  BET_CHECK(d_model > 0 && heads > 0, "config: d_model and heads must be positive");
  BET_CHECK(d_model % heads == 0, "config: d_model ", d_model, " is not divisible by heads ", heads);
  BET_CHECK(pe != PosEncoding::Rope || head_dim() % 2 == 0, "config: rope needs an even head dim, got ", head_dim());
  BET_CHECK(layers >= 1, "config: layers must be >= 1, got ", layers);
  BET_CHECK(max_len >= 1, "config: max_len must be >= 1");
  BET_CHECK(vocab_size >= 4, "config: vocab_size ", vocab_size, " too small");
  BET_CHECK(k_permutations >= 0, "config: k_permutations must be >= 0");
  BET_CHECK(dropout >= 0 && dropout < 1, "config: dropout must be in [0, 1), got ", dropout);
  BET_CHECK(task == Task::LM || num_classes >= 2, "config: classify needs >= 2 classes");
  BET_CHECK(!tie_embeddings || task == Task::LM, "config: tie_embeddings applies to lm only");
}

std::string to_string(Task t) { return t == Task::LM ? "lm" : "classify"; }
std::string to_string(LayerKind k) { return k == LayerKind::Bet ? "bet" : "standard"; }
std::string to_string(PosEncoding p) {
  switch (p) {
    case PosEncoding::Rope: return "rope";
    case PosEncoding::Sinusoidal: return "sinusoidal";
    case PosEncoding::Learned: return "learned";
    case PosEncoding::None: return "none";
  }
  return "?";
}
Task parse_task(const std::string& s) {
  if (s == "classify") return Task::Classify;
  if (s == "lm") return Task::LM;
  fail("task: '", s, "' is not one of classify, lm");
}
LayerKind parse_layer(const std::string& s) {
  if (s == "bet") return LayerKind::Bet;
  if (s == "standard") return LayerKind::Standard;
  fail("layer: '", s, "' is not one of bet, standard");
}
PosEncoding parse_pe(const std::string& s) {
  if (s == "rope") return PosEncoding::Rope;
  if (s == "sinusoidal") return PosEncoding::Sinusoidal;
  if (s == "learned") return PosEncoding::Learned;
  if (s == "none") return PosEncoding::None;
  fail("pe: '", s, "' is not one of rope, sinusoidal, learned, none");
}

}  // namespace bet::model
