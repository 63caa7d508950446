// From tokenized sequences to padded batches. An epoch's batch order is a pure
// function of (seed, epoch), so the data-order state a checkpoint needs is just
// (epoch, batch index) and resume replays the same batches.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace bet::runtime {

struct EncodedSequence {
  std::vector<int32_t> ids;  // classify: the text's tokens; lm: the outcome/token stream x_1..x_n
  int64_t label = -1;
};

struct Batch {
  Tensor ids;                     // [B, S] i64, PAD (0) after each sequence's length
  std::vector<int64_t> lengths;   // valid tokens per row (>= 1)
  Tensor labels;                  // classify: [B] i64
  Tensor targets;                 // lm: [B, S] i64, -100 where there is no target
  std::vector<int64_t> indices;   // example index of each row (keys the relabellings)
  int64_t tokens() const;
};

// Batches of example indices for one epoch: a seeded shuffle, then length bucketing
// (sort within windows of 50 batches so rows of a batch have similar lengths, which
// cuts padding), then a seeded shuffle of the batches.
std::vector<std::vector<int64_t>> plan_epoch(const std::vector<int64_t>& lengths, int64_t batch_size,
                                             uint64_t seed, int64_t epoch, bool bucket = true);

// Classification batch: tokens truncated to max_len.
Batch make_classify_batch(const std::vector<EncodedSequence>& data, const std::vector<int64_t>& indices,
                          int64_t max_len);
// Language-model batch: input [BOS, x_1 .. x_{n-1}], targets [x_1 .. x_n], n <= max_len.
Batch make_lm_batch(const std::vector<EncodedSequence>& data, const std::vector<int64_t>& indices, int64_t max_len);

// Rows [begin, end) of `b`, padded as `b` is (data parallelism: a rank's share of the
// global batch keeps the global batch's sequence length, so dropout's layout and the
// model's arithmetic do not depend on the split).
Batch slice_rows(const Batch& b, int64_t begin, int64_t end);

// Splits a long token stream into lm windows of at most max_len tokens.
std::vector<EncodedSequence> chunk_stream(const std::vector<int32_t>& stream, int64_t max_len);

}  // namespace bet::runtime
