// What defines a model: the hyperparameters stored in every checkpoint header.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bet::model {

// Bounds on every field. A config read from outside (a checkpoint header, safetensors
// metadata, `betctl import --config`) is refused past them, naming the field, before
// anything is allocated; each is far above any model this program trains (the training
// CLI has tighter flag ranges of its own), yet keeps every size computed from a config
// far from int64 overflow. The table, with the reason for each, is in config.cpp.
namespace bounds {
constexpr int64_t kMinVocab = 4, kMaxVocab = int64_t(1) << 22;
constexpr int64_t kMinDModel = 2, kMaxDModel = 16384;
constexpr int64_t kMaxHeads = 256;
constexpr int64_t kMaxLayers = 256;
constexpr int64_t kMaxLen = 65536;
constexpr int64_t kMaxPermutations = 64;
constexpr int64_t kMaxHarmonics = 60;
constexpr int64_t kMaxClasses = 65536;
constexpr size_t kMaxLabelBytes = 1024;
constexpr int64_t kMaxParameters = int64_t(1) << 32;  // all parameters together
}  // namespace bounds

enum class Task { Classify, LM };
enum class LayerKind { Bet, Standard };
enum class PosEncoding { Rope, Sinusoidal, Learned, None };
// How a fresh `bet` layer's own branches start (the stats projection, the CoT branch, the
// debiasing basis). `Spec`: as model.md's initialisation section says (Xavier / PyTorch
// defaults), so the branches add noise to the residual stream from step 0. `Zero`: their
// output weights start at zero (as in ReZero, Fixup and SkipInit), so a fresh bet layer
// computes a standard layer's function plus permutation averaging, and the extra parts are
// only learned in where they help. Only the first step depends on it; stored for provenance.
enum class BranchInit { Spec, Zero };
// What the SufficientStatsEncoder's projection reads of its Beta posterior. `Counts`:
// log alpha and log beta, as model.md says; both grow like log n, so the projected vector
// encodes the text's length, and in bidirectional mode (one vector copied to every
// position) its gradient is the coherent sum over every position. `Mean`: log of the
// posterior mean and of its complement (log alpha - log(alpha + beta), log beta -
// log(alpha + beta)), the same posterior read as proportions, which do not grow with n.
enum class StatsFeatures { Counts, Mean };

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
  // bet layers only. The defaults are the alternatives, not model.md's, because they
  // measured better (README, "The bet layer's defaults"): with `spec` the default
  // classifier sat at the majority class for its first epoch on spam; `zero` learns as
  // fast as `standard`. Files that do not name them read as model.md's (config_json.cpp).
  BranchInit branch_init = BranchInit::Zero;
  StatsFeatures stats_features = StatsFeatures::Mean;
  int64_t num_classes = 2;  // classify only
  double dropout = 0.1;
  bool tie_embeddings = false;  // lm only
  uint64_t inference_seed = 0x5eed;  // keys the inference-time relabellings
  std::vector<std::string> labels;   // class names, by index

  bool causal() const { return task == Task::LM; }
  int64_t head_dim() const { return d_model / heads; }
  // Checks every field against `bounds` and the combination (heads divide d_model, rope
  // needs an even head dim, classify labels name every class, the parameter count);
  // throws bet::Error naming the field, its value and the bound ("config.layers:
  // 1000000000 is out of range [1, 256]"). The model constructor calls it, and so does
  // every reader of a config from a file.
  void validate() const;
};

// One parameter of the model a config describes: its state_dict name and shape.
struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every parameter of BetModel(cfg), in named_parameters() order, computed without
// building it: checkpoint readers check a file's tensor table against it before
// allocating anything. cfg must be within `bounds` (validate() calls this last).
std::vector<ParamSpec> parameter_specs(const ModelConfig& cfg);
int64_t parameter_count(const ModelConfig& cfg);

std::string to_string(Task t);
std::string to_string(LayerKind k);
std::string to_string(PosEncoding p);
std::string to_string(BranchInit b);
std::string to_string(StatsFeatures f);
Task parse_task(const std::string& s);
LayerKind parse_layer(const std::string& s);
PosEncoding parse_pe(const std::string& s);
BranchInit parse_branch_init(const std::string& s);
StatsFeatures parse_stats_features(const std::string& s);

}  // namespace bet::model
