// The whole model (model.md, "Model"): Embedding(V, D) -> positional encoding -> L
// layers (`bet` or `standard`) -> head (classify: masked mean pool -> Linear(D, C);
// lm: Linear(D, V) with bias, or tied to the embedding), logits divided by the stored
// calibration temperature. Parameter names are PyTorch state_dict names.
#pragma once
#include <memory>
#include <vector>

#include "model/bet_layer.h"
#include "model/embeddings.h"
#include "model/mdl_loss.h"
#include "model/standard_layer.h"

namespace bet::model {

struct ForwardOptions {
  // Explicit attention relabellings per layer ([k, B, S] each), in place of the drawn
  // ones: parity tests against a reference that takes them as input.
  const std::vector<Tensor>* perm_ids = nullptr;
  // > 0: divide the logits by this instead of the stored temperature (a request's override).
  double temperature = 0.0;
  // Keep the embedded input and every layer's output in ForwardOutput (parity tests,
  // diagnostics); off by default so inference frees them as it goes.
  bool keep_intermediates = false;
};

struct ForwardOutput {
  Tensor logits;  // classify [B, C]; lm [B, S, V]; already divided by the temperature
  Tensor hidden;  // last layer's output [B, S, D]
  std::vector<LayerDiagnostics> layers;  // one per layer, detached
  // order_dispersion averaged over layers: [B] (model.md's `attention_dispersion`).
  Tensor attention_dispersion;
  // With ForwardOptions::keep_intermediates: the input of layer 0 and each layer's output.
  Tensor embedded;
  std::vector<Tensor> layer_outputs;
};

class BetModel : public Module {
 public:
  BetModel(const ModelConfig& cfg, Generator& g, DType dtype = DType::F32);

  // ids [B, S] (i32/i64); ctx built for the same B, S, in the parameters' dtype.
  ForwardOutput forward(const Tensor& ids, const SeqContext& ctx, const ForwardOptions& opt = {}) const;

  // The context for a batch of sequences with these lengths padded to S, in the model's
  // dtype and attention mode (training fields left at their inference defaults).
  SeqContext context(const std::vector<int64_t>& lengths, int64_t S) const {
    return SeqContext::from_lengths(lengths, S, cfg.causal(), dtype_);
  }

  // Every parameter except `temperature`, which calibration sets and no optimiser touches.
  NamedTensors trainable_parameters() const;
  std::vector<Tensor> trainable_tensors() const;
  double temperature_value() const { return temperature.item(); }
  void set_temperature(double t);

  const ModelConfig& config() const { return cfg; }
  DType dtype() const { return dtype_; }

  ModelConfig cfg;
  std::shared_ptr<Embedding> embed;
  std::shared_ptr<Embedding> pos;  // learned pe only
  std::vector<std::shared_ptr<BetLayer>> bet_layers;            // layer = bet
  std::vector<std::shared_ptr<StandardLayer>> standard_layers;  // layer = standard
  std::shared_ptr<Linear> head;  // absent when tied
  Tensor temperature;            // shape [], not trained
  Tensor sin_table;              // [max_len, D] for sinusoidal pe (a constant, not a parameter)

 private:
  void move_constants(Device d) override {
    if (sin_table.defined()) sin_table = sin_table.to(d);
  }

 public:

 private:
  DType dtype_;
};

// The training loss of a forward pass: classify uses logits [B, C] and targets [B];
// lm flattens logits to [B*S, V] and targets [B, S] to [B*S], counting only valid
// positions (the rest become `ignore_index`). mdl_beta 0 is plain cross-entropy.
MDLLossOutput model_loss(const ForwardOutput& out, const Tensor& targets, const SeqContext& ctx, Task task,
                         double mdl_beta, int64_t ignore_index = -100);
// What model_loss codes: logits [N, C] and targets [N] (ignore_index where not valid).
struct LossOperands {
  Tensor logits, targets;
};
LossOperands loss_operands(const ForwardOutput& out, const Tensor& targets, const SeqContext& ctx, Task task,
                           int64_t ignore_index = -100);

// v [B, S] -> [B]: v at each sequence's last valid position. For bidirectional
// per-position quantities that are the same at every valid position (the Beta posterior,
// optimal_length) this is also their pooled value.
Tensor at_last_valid(const Tensor& v, const SeqContext& ctx);

}  // namespace bet::model
