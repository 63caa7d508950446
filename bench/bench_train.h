// `betctl bench train`: the trainer's training step (runtime/train/train_step.h: forward,
// MDL loss, backward, clipping, AdamW) of the model for each layer kind, as tokens/s and
// MFU against the FMA peak measured in the same run, beside the PyTorch eager peer of
// bench/peer/ (same math, same threads).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bench/report.h"
#include "engine/device.h"
#include "engine/dtype.h"
#include "model/config.h"

namespace bet::bench {

struct TrainBenchOptions {
  std::string layer = "both";  // bet | standard | both
  std::string task = "classify";
  std::string pe = "rope";
  int64_t d_model = 256, heads = 4, layers = 4, seq_len = 128, batch_size = 32;
  int64_t k_permutations = 3;
  int steps = 10;   // timed steps
  int warmup = 3;   // untimed steps first
  bool peer = false;     // also run bench/peer/train_peer.py with the same shape and threads
  bool profile = false;  // per-phase, per-module and per-op (backward) time breakdown
  // --data: end to end on a real file instead (bench_train_data.h); seq_len is then the
  // sequence cap (max_len).
  std::string data, val;
  std::string tokenizer = "byte";
  // f32 | bf16 (autocast) | auto: bf16 on a GPU, f32 on the CPU.
  std::string precision = "auto";
};

// Where a bench run trains and in which precision: --device, and --precision with
// auto = bf16 on a real GPU, f32 elsewhere (an emulated device included). Throws
// bet::Error naming a bad flag.
struct TrainPlacement {
  Device device;
  DType compute = DType::F32;
  bool gpu = false;  // a real GPU (not the emulated device)
};
TrainPlacement train_placement(const BenchOptions& opts, const TrainBenchOptions& t);
// The bench headers' "precision" line: f32, or bf16 autocast and (on the CPU) which
// path its products take (kernels/cpu/matmul.h).
std::string precision_text(DType compute, bool gpu);

// The checks of bench train's own options (format, layer, steps and sizes): false,
// with the reason on stderr, when one is bad (the caller exits 2).
bool train_options_valid(const BenchOptions& opts, const TrainBenchOptions& t);

// The model of a bench run (the peer's defaults for everything the flags do not set).
model::ModelConfig train_bench_config(const TrainBenchOptions& t, model::LayerKind layer);

// Matrix-product FLOPs (a multiply-add counts 2) of one forward pass over B sequences
// of S tokens, by component: every Linear (the stats, CoT and debiasing MLPs, gates and
// projections included, each over the rows it actually runs on), the attention
// products QK^T and PV of every path computed (the standard path, plus the k
// permutation paths when pe = rope), and the head. Nothing else counts (no softmax,
// norms, elementwise work). A training step is 3x the total (forward, and backward's
// two products per forward product).
std::vector<std::pair<std::string, double>> matmul_flops_forward(const model::ModelConfig& cfg, int64_t B,
                                                                 int64_t S);
double matmul_flops_per_step(const model::ModelConfig& cfg, int64_t B, int64_t S);

// Prints the tables (opts.format) to stdout or opts.out. Returns 0; 1 when a layer's
// run failed (its row says why); 2 for bad options or an unwritable --out. An
// unavailable peer (no torch) is reported in its row, not as a failure.
int run_train(const BenchOptions& opts, const TrainBenchOptions& t);

}  // namespace bet::bench
