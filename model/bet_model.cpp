#include "model/bet_model.h"

#include <string>

namespace bet::model {

BetModel::BetModel(const ModelConfig& cfg_, Generator& g, DType dtype) : cfg(cfg_), dtype_(dtype) {
  cfg.validate();
  const int64_t D = cfg.d_model;
  // state_dict order puts a module's own parameters before its children's.
  temperature = register_parameter("temperature", Tensor::ones({}, dtype));
  temperature.set_requires_grad(false);
  embed = register_module("embed", std::make_shared<Embedding>(cfg.vocab_size, D, g, dtype));
  if (cfg.pe == PosEncoding::Learned) pos = register_module("pos", std::make_shared<Embedding>(cfg.max_len, D, g, dtype));
  if (cfg.pe == PosEncoding::Sinusoidal) sin_table = sinusoidal_table(cfg.max_len, D, dtype);
  for (int64_t i = 0; i < cfg.layers; ++i) {
    const std::string name = "layers." + std::to_string(i);
    if (cfg.layer == LayerKind::Bet)
      bet_layers.push_back(register_module(name, std::make_shared<BetLayer>(cfg, i, g, dtype)));
    else
      standard_layers.push_back(register_module(name, std::make_shared<StandardLayer>(cfg, i, g, dtype)));
  }
  if (cfg.task == Task::Classify)
    head = register_module("head", std::make_shared<Linear>(D, cfg.num_classes, g, true, Linear::Init::Default, dtype));
  else if (!cfg.tie_embeddings)
    head = register_module("head", std::make_shared<Linear>(D, cfg.vocab_size, g, true, Linear::Init::Default, dtype));
}

NamedTensors BetModel::trainable_parameters() const {
  NamedTensors out;
  for (auto& [n, t] : named_parameters())
    if (n != "temperature") out.emplace_back(n, t);
  return out;
}

std::vector<Tensor> BetModel::trainable_tensors() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : trainable_parameters()) out.push_back(t);
  return out;
}

void BetModel::set_temperature(double t) {
  BET_CHECK(t > 0, "temperature must be positive, got ", t);
  temperature.fill_(t);
}

ForwardOutput BetModel::forward(const Tensor& ids, const SeqContext& ctx, const ForwardOptions& opt) const {
  BET_CHECK(ids.dim() == 2, "model: ids must be [B, S], got ", shape_str(ids.shape()));
  const int64_t B = ids.size(0), S = ids.size(1);
  BET_CHECK(ctx.batch() == B && ctx.seq_len() == S, "model: ids ", shape_str(ids.shape()),
            " do not match the context's [", ctx.batch(), ", ", ctx.seq_len(), "]");
  BET_CHECK(ctx.mask.dtype() == dtype_, "model: context is ", dtype_name(ctx.mask.dtype()), ", model is ",
            dtype_name(dtype_));
  BET_CHECK(ctx.causal == cfg.causal(), "model: a ", to_string(cfg.task), " model needs a ",
            cfg.causal() ? "causal" : "bidirectional", " context");
  BET_CHECK(!opt.perm_ids || int64_t(opt.perm_ids->size()) == cfg.layers, "model: perm_ids has ",
            opt.perm_ids ? opt.perm_ids->size() : 0, " entries for ", cfg.layers, " layers");

  ForwardOutput res;
  Tensor x = embed_inputs(*embed, ids, cfg.pe, pos.get(), sin_table, cfg.dropout, ctx);
  if (opt.keep_intermediates) res.embedded = x;
  const Tensor mask = attention_mask(ctx);  // shared by every layer
  Tensor disp_sum;
  for (int64_t i = 0; i < cfg.layers; ++i) {
    LayerDiagnostics d;
    if (cfg.layer == LayerKind::Bet) {
      Tensor ids_i = opt.perm_ids ? (*opt.perm_ids)[size_t(i)] : Tensor();
      BetLayerOutput o = bet_layers[size_t(i)]->forward(x, ctx, ids_i, mask);
      x = o.out;
      d = o.diag;
    } else {
      StandardLayerOutput o = standard_layers[size_t(i)]->forward(x, ctx, mask);
      x = o.out;
      d.order_dispersion = o.order_dispersion;
    }
    disp_sum = disp_sum.defined() ? add(disp_sum, d.order_dispersion) : d.order_dispersion;
    res.layers.push_back(d);
    if (opt.keep_intermediates) res.layer_outputs.push_back(x);
  }
  res.attention_dispersion = mul(disp_sum, 1.0 / double(cfg.layers)).detach();
  res.hidden = x;

  Tensor logits;
  if (cfg.task == Task::Classify) {
    Tensor m = unsqueeze(ctx.mask, 2);
    Tensor pooled = div(sum(mul(x, m), {1}), unsqueeze(ctx.lengths.to(x.dtype()), 1));
    logits = head->forward(pooled);
  } else {
    logits = head ? head->forward(x) : linear(x, embed->weight);
  }
  res.logits = opt.temperature > 0 ? mul(logits, 1.0 / opt.temperature) : div(logits, temperature);
  return res;
}

LossOperands loss_operands(const ForwardOutput& out, const Tensor& targets, const SeqContext& ctx, Task task,
                           int64_t ignore_index) {
  if (task == Task::Classify) {
    BET_CHECK(targets.dim() == 1 && targets.size(0) == out.logits.size(0), "model_loss: classify targets must be [",
              out.logits.size(0), "], got ", shape_str(targets.shape()));
    return {out.logits, targets};
  }
  const int64_t B = out.logits.size(0), S = out.logits.size(1), V = out.logits.size(2);
  BET_CHECK(targets.shape() == Shape({B, S}), "model_loss: lm targets must be [", B, ", ", S, "], got ",
            shape_str(targets.shape()));
  std::vector<int64_t> t = targets.to(DType::I64).to_vector<int64_t>();
  std::vector<double> m = ctx.mask.to(DType::F64).to_vector<double>();
  for (size_t i = 0; i < t.size(); ++i)
    if (m[i] == 0.0) t[i] = ignore_index;
  return {reshape(out.logits, {B * S, V}), Tensor::from_vector<int64_t>(t, {B * S}).to(out.logits.device())};
}

MDLLossOutput model_loss(const ForwardOutput& out, const Tensor& targets, const SeqContext& ctx, Task task,
                         double mdl_beta, int64_t ignore_index) {
  const LossOperands ops = loss_operands(out, targets, ctx, task, ignore_index);
  return mdl_regularized_loss(ops.logits, ops.targets, mdl_beta, ignore_index);
}

Tensor at_last_valid(const Tensor& v, const SeqContext& ctx) {
  BET_CHECK(v.dim() == 2, "at_last_valid: expects [B, S], got ", shape_str(v.shape()));
  std::vector<int64_t> last = ctx.lengths.to(DType::I64).to_vector<int64_t>();
  for (auto& n : last) n -= 1;
  return squeeze(gather(v, 1, Tensor::from_vector<int64_t>(last, {int64_t(last.size()), 1}).to(v.device())), 1);
}

}  // namespace bet::model
