// The position relabellings of MartingaleAwareAttention's permutation paths.
//
// A relabelling is a pure function of its key (counter-based RNG, engine/random.h), so
// inference is deterministic and independent of batching and request order, and a
// training step is reproducible from (seed, step):
//   training:  key = mix_key(seed, step, layer, path, sequence index in the global batch)
//   inference: key = mix_key(inference_seed, layer, path, n)   bidirectional
//              key = mix_key(inference_seed, layer, path)      causal
// `path` counts the permutation paths from 0 (the standard path has no relabelling).
//
// Bidirectional ids permute 0..n-1 over the n valid positions; padding keeps n..S-1.
// Causal ids are the first S entries of a random permutation of 0..max_len-1, so the
// id of position t depends on t alone, never on what follows it.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"
#include "model/context.h"

namespace bet::model {

uint64_t training_relabel_key(uint64_t seed, uint64_t step, int64_t layer, int64_t path, int64_t sequence);
uint64_t inference_relabel_key(uint64_t inference_seed, int64_t layer, int64_t path, int64_t n);  // bidirectional
uint64_t inference_relabel_key(uint64_t inference_seed, int64_t layer, int64_t path);             // causal

// Ids of one sequence, length S.
std::vector<int64_t> bidirectional_relabelling(uint64_t key, int64_t n, int64_t S);
std::vector<int64_t> causal_relabelling(uint64_t key, int64_t S, int64_t max_len);

// The ids of every permutation path for a batch: [k, B, S] i64, on the CPU whatever the
// batch's device (drawn there, and read there to build positions). Training keys when
// ctx.training, inference keys otherwise (those are memoised in a small cache).
Tensor relabelling_ids(const SeqContext& ctx, int64_t layer, int64_t k, int64_t max_len,
                       uint64_t inference_seed);

}  // namespace bet::model
