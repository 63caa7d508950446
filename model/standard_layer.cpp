#include "model/standard_layer.h"

namespace bet::model {

FeedForward::FeedForward(int64_t d, Generator& g, double dropout_, DType dtype) : dropout(dropout_) {
  fc1 = register_module("0", std::make_shared<Linear>(d, 4 * d, g, true, Linear::Init::Default, dtype));
  fc2 = register_module("3", std::make_shared<Linear>(4 * d, d, g, true, Linear::Init::Default, dtype));
}

Tensor FeedForward::forward(const Tensor& x, const SeqContext& ctx) const {
  return fc2->forward(site_dropout(relu(fc1->forward(x)), dropout, ctx));
}

StandardLayer::StandardLayer(const ModelConfig& cfg, int64_t layer, Generator& g, DType dtype)
    : dropout(cfg.dropout) {
  attn = register_module("attn", std::make_shared<MartingaleAwareAttention>(cfg, layer, g, false, dtype));
  norm1 = register_module("norm1", std::make_shared<LayerNorm>(cfg.d_model, 1e-5, dtype));
  norm2 = register_module("norm2", std::make_shared<LayerNorm>(cfg.d_model, 1e-5, dtype));
  ffn = register_module("ffn", std::make_shared<FeedForward>(cfg.d_model, g, cfg.dropout, dtype));
}

StandardLayerOutput StandardLayer::forward(const Tensor& x, const SeqContext& ctx, const Tensor& mask) const {
  AttentionOutput a = attn->forward(x, ctx, Tensor(), mask);
  Tensor h = norm1->forward(add(x, site_dropout(a.out, dropout, ctx)));
  h = norm2->forward(add(h, site_dropout(ffn->forward(h, ctx), dropout, ctx)));
  return {h, a.order_dispersion};
}

}  // namespace bet::model
