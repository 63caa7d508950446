// Module: a node of the model tree. Parameters and children are registered by name,
// so `named_parameters()` yields PyTorch state_dict names ("layers.0.attn.q.weight")
// and checkpoints move to and from PyTorch unchanged.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/ops.h"
#include "engine/random.h"

namespace bet::kernels::cpu {
class Int8Linear;  // kernels/cpu/matmul_int8.h (engine/quantized.h)
}

namespace bet::model {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  virtual ~Module() = default;

  // Parameters of this module and all descendants, in registration order.
  NamedTensors named_parameters() const;
  std::vector<Tensor> parameters() const;
  // This module's descendants (not itself), depth first, under their state_dict
  // prefixes ("layers.0.attn.q").
  std::vector<std::pair<std::string, Module*>> named_modules() const;
  int64_t parameter_count() const;
  // Copies values into the registered tensors (shapes must match; names must all be
  // present unless `strict` is false). Errors name the parameter at fault.
  void load_parameters(const NamedTensors& values, bool strict = true);

  // Moves every parameter (and constant) of the tree to `device`, in place: each
  // parameter keeps its identity, so handles held elsewhere (Linear::weight, an
  // optimizer built afterwards) see the moved data. Gradients are dropped.
  void to(Device device);
  Device device() const;

  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }

 protected:
  // Registers a parameter (made a requires-grad leaf) and returns it.
  Tensor register_parameter(const std::string& name, Tensor t);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }

 private:
  // Constants that are not parameters (tables) move with the module: override.
  virtual void move_constants(Device) {}
  void collect(NamedTensors& out, const std::string& prefix) const;
  void collect_modules(std::vector<std::pair<std::string, Module*>>& out, const std::string& prefix) const;
  NamedTensors params_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// ---- initialisers (in place, from a Generator so a seed fixes the whole model) ----
void init_uniform(Tensor& t, Generator& g, double lo, double hi);
void init_normal(Tensor& t, Generator& g, double mean, double std);
// PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
void init_linear_default(Tensor& weight, Tensor& bias, Generator& g);
// Xavier (Glorot) uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
void init_xavier_uniform(Tensor& weight, Generator& g);

// Linear(in, out): weight [out, in], optional bias [out].
//
// Int8 (`betctl export --quantize int8`, kernels/quantized_matmul.h): a quantised
// Linear holds `int8` (int8 weight per output channel + f32 scales, the bias in f32),
// and its `weight` holds the dequantised values (wq * scale), so code that reads the
// weight directly and the f32 fallback compute with the same weights. forward() runs
// the int8 kernel for f32 CPU inputs that need no gradient, else the f32 linear.
class Linear : public Module {
 public:
  enum class Init { Default, Xavier };  // Xavier: zero bias
  Linear(int64_t in, int64_t out, Generator& g, bool bias = true, Init init = Init::Default,
         DType dtype = DType::F32);
  Tensor forward(const Tensor& x) const;
  // Quantises the weight (and replaces it by its dequantised values).
  void quantize_int8();
  // Installs an int8 form read from a checkpoint (its shape and bias must match this
  // layer's; the bias is this layer's) and sets the weight to its dequantised values.
  void set_int8(std::shared_ptr<const kernels::cpu::Int8Linear> q);
  bool quantized() const { return int8 != nullptr; }
  Tensor weight, bias;
  int64_t in_features, out_features;
  std::shared_ptr<const kernels::cpu::Int8Linear> int8;
};

// The linears `layers` (all reading the same input width) applied to one input x as a
// single GEMM over their stacked weights: the outputs side by side along the last
// dimension, in the order given. Layers that share an input pay one pass over x and
// one larger GEMM (forward and both backward products) instead of several small ones.
// A layer without a bias contributes zeros to the stacked bias. When every layer is
// int8 (and x can take the int8 path) it is one int8 GEMM over their concatenated int8
// weights and scales (exact: the scales are per output channel), built once per set of
// layers and cached.
Tensor fused_linear(const std::vector<const Linear*>& layers, const Tensor& x);

// The Linear layers of a module tree, under their state_dict prefixes.
std::vector<std::pair<std::string, Linear*>> named_linears(const Module& m);
// Quantises every Linear of the tree to int8 except those `skip` names; the count.
int64_t quantize_int8(Module& m, const std::function<bool(const std::string&)>& skip = {});
// Whether any Linear of the tree is int8.
bool has_int8(const Module& m);

class LayerNorm : public Module {
 public:
  LayerNorm(int64_t d, double eps = 1e-5, DType dtype = DType::F32);
  Tensor forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }
  Tensor weight, bias;
  double eps;
};

// Two-layer MLP in -> hidden -> out with ReLU between, named like nn.Sequential(
// Linear, ReLU, Linear): children "0" and "2".
class MLP2 : public Module {
 public:
  MLP2(int64_t in, int64_t hidden, int64_t out, Generator& g, DType dtype = DType::F32);
  Tensor forward(const Tensor& x) const { return fc2->forward(relu(fc1->forward(x))); }
  std::shared_ptr<Linear> fc1, fc2;
};

}  // namespace bet::model
