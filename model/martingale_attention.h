// MartingaleAwareAttention (model.md): multi-head attention plus averaging over k
// position relabellings. With permutation averaging off it is the plain multi-head
// attention of the `standard` layer (same names: q, k, v, o).
#pragma once
#include <cstdint>
#include <memory>

#include "model/config.h"
#include "model/context.h"
#include "model/module.h"

namespace bet::model {

// One dropout site: draws from the Philox stream (ctx.seed, *ctx.dropout_offset) and
// advances the offset by the elements used, so no two sites share random numbers.
// Identity unless ctx.training and p > 0.
Tensor site_dropout(const Tensor& x, double p, const SeqContext& ctx);

// Which keys each query may read, in the activation dtype (1 = readable): [B, 1, 1, S]
// (key padding) bidirectional, [B, 1, S, S] (key padding and later keys) causal.
Tensor attention_mask(const SeqContext& ctx);

struct AttentionOutput {
  Tensor out;               // [B, S, D]
  Tensor order_dispersion;  // [B], detached: mean over valid tokens and features of the
                            // population std of the k permutation paths' outputs
};

class MartingaleAwareAttention : public Module {
 public:
  // `permutation_averaging` false: plain attention, no lam/gamma parameters, k = 0.
  MartingaleAwareAttention(const ModelConfig& cfg, int64_t layer, Generator& g,
                           bool permutation_averaging = true, DType dtype = DType::F32);

  // x [B, S, D]. `perm_ids` [k, B, S] (any integer dtype) replaces the drawn relabellings
  // when given (parity tests against a reference that takes them as input). `mask` is
  // attention_mask(ctx) when the caller has it already.
  AttentionOutput forward(const Tensor& x, const SeqContext& ctx, const Tensor& perm_ids = Tensor(),
                          const Tensor& mask = Tensor()) const;

  // The relabellings forward() draws for this batch: [k, B, S] i64.
  Tensor relabellings(const SeqContext& ctx) const;

  // The permutation weight w [B, S] of model.md: clamp(lam ln n / n, 0.01, 1), 1 where n <= 1.
  Tensor path_weight(const SeqContext& ctx) const;

  std::shared_ptr<Linear> q, k, v, o;
  Tensor lam, gamma;  // shape []; undefined without permutation averaging
  int64_t heads, head_dim, k_paths, layer, max_len;
  bool use_rope;
  double dropout;
  uint64_t inference_seed;
};

}  // namespace bet::model
