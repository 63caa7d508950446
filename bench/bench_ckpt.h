// `betctl bench ckpt`: save and load throughput of the native .bet checkpoint (the
// runtime/checkpoint code `betctl train` writes with), beside the disk's raw write+fsync
// and read of the same bytes, and (--peer) torch.save/torch.load of the same tensors
// (bench/peer/ckpt_peer.py). Every load is compared bit for bit with what was saved.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bench/report.h"
#include "engine/autograd.h"
#include "runtime/checkpoint/bet_format.h"

namespace bet::bench {

struct CkptBenchOptions {
  // Model shapes "DxL" (d_model x layers), comma separated; bet layer, classify, byte
  // vocabulary, max_len 256, 4 heads, k 3 (the bench train model at each width).
  std::string shapes = "256x4,512x4";
  int reps = 5;           // timed repetitions of each operation (median reported)
  int train_steps = 3;    // AdamW steps before the "after training" rows (non-zero moments)
  int zstd_level = 1;     // what save_checkpoint uses for `betctl train`
  std::string dir;        // where files go; empty: a fresh folder in the system temp dir
  bool drop_cache = false;  // evict each file from the page cache before reading it
  bool peer = false;        // also run bench/peer/ckpt_peer.py on the same tensors
};

// "" when `got` holds the same tensors as `want` (names in order, dtype, shape and
// every byte), else what differs first. Bytes, not values: -0.0 != 0.0 and NaN
// payloads count, as a checkpoint must restore exactly.
inline std::string tensor_list_mismatch(const runtime::NamedTensorList& want, const runtime::NamedTensorList& got) {
  autograd::NoGradGuard ng;  // contiguous() of a parameter must not record a graph
  if (want.size() != got.size())
    return std::to_string(got.size()) + " tensors loaded, " + std::to_string(want.size()) + " saved";
  for (size_t i = 0; i < want.size(); ++i) {
    const auto& [wn, wt] = want[i];
    const auto& [gn, gt] = got[i];
    if (wn != gn) return "tensor " + std::to_string(i) + " is '" + gn + "', expected '" + wn + "'";
    if (wt.dtype() != gt.dtype()) return "'" + wn + "': dtype " + dtype_name(gt.dtype()) + ", saved " + dtype_name(wt.dtype());
    if (wt.shape() != gt.shape()) return "'" + wn + "': shape " + shape_str(gt.shape()) + ", saved " + shape_str(wt.shape());
    Tensor a = wt.contiguous(), b = gt.contiguous();
    if (a.nbytes() != b.nbytes() || (a.nbytes() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) != 0))
      return "'" + wn + "': bytes differ";
  }
  return "";
}

// Parses CkptBenchOptions::shapes; throws std::invalid_argument naming the bad item.
std::vector<std::pair<int64_t, int64_t>> parse_ckpt_shapes(const std::string& spec);

// Prints the table (opts.format) to stdout or opts.out. Returns 0; 1 when a row failed
// (an error, or a load that differs from what was saved); 2 for bad options.
int run_ckpt(const BenchOptions& opts, const CkptBenchOptions& c);

}  // namespace bet::bench
