// The `standard` layer: a post-LN encoder layer laid out like PyTorch's
// nn.TransformerEncoderLayer (norm_first=False, ReLU), with RoPE inside its attention
// when pe = rope, so every BET result has a plain transformer of the same size beside it.
//   x = norm1(x + dropout(attn(x)))
//   x = norm2(x + dropout(ffn(x)))        ffn = Linear(D, 4D), ReLU, dropout, Linear(4D, D)
#pragma once
#include <memory>

#include "model/martingale_attention.h"

namespace bet::model {

// nn.Sequential(Linear(D, 4D), ReLU, Dropout, Linear(4D, D)): children "0" and "3".
class FeedForward : public Module {
 public:
  FeedForward(int64_t d, Generator& g, double dropout, DType dtype = DType::F32);
  Tensor forward(const Tensor& x, const SeqContext& ctx) const;
  std::shared_ptr<Linear> fc1, fc2;
  double dropout;
};

struct StandardLayerOutput {
  Tensor out;               // [B, S, D]
  Tensor order_dispersion;  // [B]: zeros (no permutation paths)
};

class StandardLayer : public Module {
 public:
  StandardLayer(const ModelConfig& cfg, int64_t layer, Generator& g, DType dtype = DType::F32);
  StandardLayerOutput forward(const Tensor& x, const SeqContext& ctx, const Tensor& mask = Tensor()) const;

  std::shared_ptr<MartingaleAwareAttention> attn;
  std::shared_ptr<LayerNorm> norm1, norm2;
  std::shared_ptr<FeedForward> ffn;
  double dropout;
};

}  // namespace bet::model
