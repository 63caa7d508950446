// `betctl bench infer`: the predict path as `betctl serve` runs it by default (tokenize,
// one forward with the model's attention paths, softmax with the stored temperature,
// the uncertainty fields, the JSON text; K = 1 ensemble member), as single-request
// latency and as batch throughput, beside the PyTorch peer bench/peer/infer_peer.py on
// the same weights (exported as safetensors), the same texts and the same threads.
//
// Also the pieces `bench serve` shares: the benchmark model, its export for the peers
// and the request texts.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/report.h"
#include "runtime/inference/predictor.h"

namespace bet::bench {

struct InferBenchOptions {
  std::string model;  // a classify checkpoint; empty: the default classifier, init weights
  uint64_t seed = 0;  // init weights of the default classifier
  std::vector<int64_t> tokens{32, 256};            // text lengths (bytes = tokens, byte tokenizer)
  std::vector<int64_t> batch_sizes{1, 8, 32, 64};  // requests per predict_batch call
  int reps = 200;          // timed repetitions per case, at most
  double seconds = 2.0;    // time per case, at most (at least 3 repetitions)
  bool peer = false;       // also run bench/peer/infer_peer.py and print ratios
  // "int8": also time the same model with its Linears int8 (as `betctl export --quantize
  // int8` makes it; kernels/quantized_matmul.h) in the same run, and with --peer the
  // peer's torch.ao.quantization.quantize_dynamic (nn.Linear -> qint8) of its model.
  std::string quantize = "none";
};

// The model both benchmarks serve: a checkpoint, or product.md's default classifier
// (bet, d_model 128, 4 heads, 2 layers, max_len 256, k 3, rope, byte tokenizer, 2
// classes) with its initial weights from `seed`.
struct BenchModel {
  std::shared_ptr<const inference::LoadedModel> loaded;
  std::string description;
};
BenchModel make_bench_model(const std::string& checkpoint, uint64_t seed, Device device = Device::cpu());

// Writes the model's weights with its config and tokenizer (safetensors metadata, the
// `betctl export --format safetensors` layout), which the peers load.
void export_for_peer(const BenchModel& m, const std::string& path);

// {"n": [[[ids] x k] x L]} for each length: the attention paths' position ids the model
// uses at inference for a text of n tokens (empty object when it has no such paths).
nlohmann::json relabellings_json(const model::BetModel& m, const std::vector<int64_t>& lengths);

// Text i of `bytes` bytes: lower-case words, deterministic (a byte tokenizer reads one
// token per byte).
std::string bench_text(int64_t bytes, uint64_t i);

// A fresh private directory under $TMPDIR (or /tmp); removed with remove_tree.
std::string make_temp_dir();
void remove_tree(const std::string& dir);

// Prints the tables (opts.format) to stdout or opts.out. 0; 1 when our side failed;
// 2 for bad options. An unavailable peer is reported in the table, not as a failure.
int run_infer(const BenchOptions& opts, const InferBenchOptions& o);

}  // namespace bet::bench
