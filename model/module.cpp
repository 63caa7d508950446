#include "model/module.h"

#include <cmath>
#include <unordered_map>

namespace bet::model {

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  t.set_requires_grad(true);
  params_.emplace_back(name, t);
  return t;
}

void Module::collect(NamedTensors& out, const std::string& prefix) const {
  for (const auto& [n, t] : params_) out.emplace_back(prefix + n, t);
  for (const auto& [n, c] : children_) c->collect(out, prefix + n + ".");
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect(out, "");
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::load_parameters(const NamedTensors& values, bool strict) {
  std::unordered_map<std::string, Tensor> by_name;
  for (const auto& [n, t] : values) by_name[n] = t;
  for (auto& [n, p] : named_parameters()) {
    auto it = by_name.find(n);
    if (it == by_name.end()) {
      BET_CHECK(!strict, "load_parameters: missing parameter '", n, "'");
      continue;
    }
    BET_CHECK(it->second.shape() == p.shape(), "load_parameters: '", n, "' has shape ",
              shape_str(it->second.shape()), ", model expects ", shape_str(p.shape()));
    Tensor dst = p;
    dst.copy_(it->second);
  }
}

void Module::to(Device device) {
  for (auto& [n, p] : params_) {
    if (p.device() == device) continue;
    // Every handle to a parameter aliases one TensorImpl, so swapping that impl's
    // storage moves the parameter for all of them (torch's `param.data = ...`).
    Tensor moved = p.detach().contiguous().to(device);
    TensorImpl* impl = p.impl_ptr();
    impl->storage = moved.storage();
    impl->strides = moved.strides();
    impl->offset = moved.offset();
    impl->grad.reset();
  }
  for (auto& [n, c] : children_) c->to(device);
  move_constants(device);
}

Device Module::device() const {
  for (const auto& [n, p] : params_) return p.device();
  for (const auto& [n, c] : children_) return c->device();
  return Device::cpu();
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void init_uniform(Tensor& t, Generator& g, double lo, double hi) { t.copy_(g.uniform(t.shape(), lo, hi, t.dtype())); }
void init_normal(Tensor& t, Generator& g, double mean, double std) { t.copy_(g.normal(t.shape(), mean, std, t.dtype())); }

void init_linear_default(Tensor& weight, Tensor& bias, Generator& g) {
  double fan_in = double(weight.size(1));
  double b = fan_in > 0 ? 1.0 / std::sqrt(fan_in) : 0.0;
  init_uniform(weight, g, -b, b);
  if (bias.defined()) init_uniform(bias, g, -b, b);
}

void init_xavier_uniform(Tensor& weight, Generator& g) {
  double a = std::sqrt(6.0 / double(weight.size(0) + weight.size(1)));
  init_uniform(weight, g, -a, a);
}

Tensor fused_linear(const std::vector<const Linear*>& layers, const Tensor& x) {
  BET_CHECK(!layers.empty(), "fused_linear: no layers");
  if (layers.size() == 1) return layers[0]->forward(x);
  std::vector<Tensor> w, b;
  bool any_bias = false;
  for (const Linear* l : layers) {
    BET_CHECK(l->in_features == layers[0]->in_features, "fused_linear: input widths differ (",
              l->in_features, " vs ", layers[0]->in_features, ")");
    w.push_back(l->weight);
    any_bias = any_bias || l->bias.defined();
  }
  if (any_bias)
    for (const Linear* l : layers)
      b.push_back(l->bias.defined() ? l->bias
                                    : Tensor::zeros({l->out_features}, l->weight.dtype(), l->weight.device()));
  return linear(x, concat(w, 0), any_bias ? concat(b, 0) : Tensor());
}

Linear::Linear(int64_t in, int64_t out, Generator& g, bool with_bias, Init init, DType dtype)
    : in_features(in), out_features(out) {
  weight = Tensor::empty({out, in}, dtype);
  if (with_bias) bias = Tensor::empty({out}, dtype);
  if (init == Init::Xavier) {
    init_xavier_uniform(weight, g);
    if (bias.defined()) bias.fill_(0.0);
  } else {
    init_linear_default(weight, bias, g);
  }
  register_parameter("weight", weight);
  if (bias.defined()) register_parameter("bias", bias);
}

LayerNorm::LayerNorm(int64_t d, double eps_, DType dtype) : eps(eps_) {
  weight = register_parameter("weight", Tensor::ones({d}, dtype));
  bias = register_parameter("bias", Tensor::zeros({d}, dtype));
}

MLP2::MLP2(int64_t in, int64_t hidden, int64_t out, Generator& g, DType dtype) {
  fc1 = register_module("0", std::make_shared<Linear>(in, hidden, g, true, Linear::Init::Default, dtype));
  fc2 = register_module("2", std::make_shared<Linear>(hidden, out, g, true, Linear::Init::Default, dtype));
}

}  // namespace bet::model
