// What every layer needs to know about the batch it is processing, computed once per
// forward by the model and passed down (layers never recompute masks or counts).
#pragma once
#include <cstdint>

#include <vector>

#include "engine/tensor.h"

namespace bet::model {

struct SeqContext {
  // [B, S] in the activation dtype: 1 at valid tokens, 0 at padding (padding only at the end).
  Tensor mask;
  // [B] i64: n_b, the number of valid tokens of each sequence (>= 1).
  Tensor lengths;
  // [B, S] in the activation dtype: n(t) = |P(t)|, the size of position t's context
  // (causal: number of valid s <= t; bidirectional: n_b). Padding positions hold
  // what the formula gives; nothing downstream reads them.
  Tensor n_ctx;
  // [S] i64: 0..S-1, the token index in the sequence.
  Tensor positions;
  bool causal = false;

  // Training state. Dropout draws from the Philox stream (dropout_seed, *offset);
  // each dropout site advances *offset by the elements it used, so sites never share
  // random numbers and a step is reproducible. `step` keys the training relabellings.
  bool training = false;
  // Monte Carlo dropout at inference: dropout sites active while everything else
  // (relabelling keys included) stays in inference mode.
  bool mc_dropout = false;
  bool dropout_active() const { return training || mc_dropout; }
  uint64_t seed = 0;
  uint64_t step = 0;
  uint64_t* dropout_offset = nullptr;
  // Index of each sequence of this batch in the global batch (relabelling keys); [B] i64
  // or undefined for 0..B-1.
  Tensor sequence_index;
  // Data parallelism: this batch is rows [row0, row0 + batch()) of a global batch of
  // global_rows rows (0: this batch is the global batch). Dropout draws each row's
  // numbers where the global batch would draw them, so the masks, and so the step, do
  // not depend on how many ranks or micro-batches share the batch.
  int64_t row0 = 0;
  int64_t global_rows = 0;
  int64_t dropout_rows() const { return global_rows > 0 ? global_rows : batch(); }

  int64_t batch() const { return mask.size(0); }
  int64_t seq_len() const { return mask.size(1); }
  // Builds mask, lengths, n_ctx and positions from per-sequence lengths.
  static SeqContext from_lengths(const std::vector<int64_t>& lengths, int64_t seq_len, bool causal,
                                 DType dtype = DType::F32, Device device = Device::cpu());
  // The same context with its tensors on `device`.
  SeqContext to(Device device) const;
};

}  // namespace bet::model
