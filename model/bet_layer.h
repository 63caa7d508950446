// The `bet` layer (model.md, "The layer"):
//   st  = SufficientStatsEncoder(x)
//   h   = LN1(x + st.stats)
//   x   = LN2(x + dropout(MartingaleAwareAttention(h)))
//   cot = OptimalCoTLayer(x)
//   x   = x + tanh(W_cot [x, cot.reasoning_entropy, log cot.optimal_length] + b_cot)
//   x   = x + (0.5 tanh(W_g st.stats + b_g) + 0.5) * st.stats
//   x   = PositionalDebiasing(x)
//   x   = LN3(x + dropout(FFN(x)))
// Dropout sits where nn.TransformerEncoderLayer puts it: attention probabilities, the
// FFN hidden layer and the two residual branches (attention, FFN).
#pragma once
#include <memory>

#include "model/martingale_attention.h"
#include "model/optimal_cot.h"
#include "model/positional_debiasing.h"
#include "model/standard_layer.h"
#include "model/sufficient_stats.h"

namespace bet::model {

// What a layer reports besides its output; bet-only fields stay undefined for a
// `standard` layer. All are detached from the graph.
struct LayerDiagnostics {
  Tensor alpha, beta, posterior_mean, posterior_variance;  // [B, S] Beta posterior
  Tensor order_dispersion;                                  // [B]
  Tensor optimal_length, reasoning_entropy;                 // [B, S]
  Tensor artifact_magnitude, correction_magnitude;          // [B]
};

struct BetLayerOutput {
  Tensor out;  // [B, S, D]
  LayerDiagnostics diag;
};

class BetLayer : public Module {
 public:
  BetLayer(const ModelConfig& cfg, int64_t layer, Generator& g, DType dtype = DType::F32);
  // `perm_ids` [k, B, S]: explicit attention relabellings (tests); `mask`: attention_mask(ctx).
  BetLayerOutput forward(const Tensor& x, const SeqContext& ctx, const Tensor& perm_ids = Tensor(),
                         const Tensor& mask = Tensor()) const;

  std::shared_ptr<SufficientStatsEncoder> stats;
  std::shared_ptr<MartingaleAwareAttention> attn;
  std::shared_ptr<OptimalCoTLayer> cot;
  std::shared_ptr<Linear> cot_gate;    // D + 2 -> D, Xavier, zero bias
  std::shared_ptr<Linear> stats_gate;  // D -> 1, Xavier, zero bias
  std::shared_ptr<PositionalDebiasing> debias;
  std::shared_ptr<LayerNorm> norm1, norm2, norm3;
  std::shared_ptr<FeedForward> ffn;
  double dropout;
};

}  // namespace bet::model
