#include "model/module.h"

#include <cmath>
#include <map>
#include <mutex>
#include <unordered_map>

#include "engine/autograd.h"
#include "engine/quantized.h"

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

void Module::collect_modules(std::vector<std::pair<std::string, Module*>>& out, const std::string& prefix) const {
  for (const auto& [n, c] : children_) {
    out.emplace_back(prefix + n, c.get());
    c->collect_modules(out, prefix + n + ".");
  }
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() const {
  std::vector<std::pair<std::string, Module*>> out;
  collect_modules(out, "");
  return out;
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
  // New values invalidate int8 forms quantised from the old ones (a checkpoint's int8
  // weights are set after its f32 values are loaded).
  if (auto* self = dynamic_cast<Linear*>(this)) self->int8.reset();
  for (auto& [name, l] : named_linears(*this)) l->int8.reset();
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

namespace {

// The concatenated int8 forms of sets of layers fused_linear has seen, by the parts'
// addresses. An entry holds its parts weakly (a reloaded model's weights are not kept
// alive by it) and is used only while every part is alive, so an address reused by
// another layer's int8 form never finds a stale concatenation; dead entries are dropped.
struct FusedInt8 {
  std::vector<std::weak_ptr<const Int8Linear>> parts;
  std::shared_ptr<const Int8Linear> fused;
  bool alive() const {
    for (const auto& p : parts)
      if (p.expired()) return false;
    return true;
  }
};
std::mutex& fused_mu() {
  static std::mutex m;
  return m;
}
std::map<std::vector<const Int8Linear*>, FusedInt8>& fused_cache() {
  static std::map<std::vector<const Int8Linear*>, FusedInt8> c;
  return c;
}

std::shared_ptr<const Int8Linear> fused_int8(const std::vector<const Linear*>& layers) {
  std::vector<const Int8Linear*> key;
  for (const Linear* l : layers) key.push_back(l->int8.get());
  std::lock_guard<std::mutex> lock(fused_mu());
  auto& cache = fused_cache();
  auto it = cache.find(key);
  if (it != cache.end() && it->second.alive()) return it->second.fused;
  std::erase_if(cache, [](const auto& kv) { return !kv.second.alive(); });
  FusedInt8 e;
  for (const Linear* l : layers) e.parts.push_back(l->int8);
  e.fused = Int8Linear::concat(key);
  auto fused = e.fused;
  cache.insert_or_assign(std::move(key), std::move(e));
  return fused;
}

bool int8_path(const Linear& l, const Tensor& x) {
  // A gradient wanted for the input or the layer's own parameters takes the f32 path.
  return l.int8 && quantized_linear_supports(x, *l.int8) && !autograd::needs_grad({&x, &l.weight, &l.bias});
}

}  // namespace

Tensor Linear::forward(const Tensor& x) const {
  if (int8_path(*this, x)) return quantized_linear(x, *int8);
  return linear(x, weight, bias);
}

void Linear::quantize_int8() {
  set_int8(quantize_linear_weights(weight, bias));
}

void Linear::set_int8(std::shared_ptr<const Int8Linear> q) {
  BET_CHECK(q != nullptr, "Linear::set_int8: null");
  BET_CHECK(q->out_features() == out_features && q->in_features() == in_features, "Linear: int8 weight [",
            q->out_features(), ", ", q->in_features(), "] does not match the layer's [", out_features, ", ", in_features,
            "]");
  BET_CHECK(q->bias().empty() == !bias.defined(), "Linear: int8 form ", q->bias().empty() ? "without" : "with",
            " a bias for a layer ", bias.defined() ? "with" : "without", " one");
  autograd::NoGradGuard ng;
  const std::vector<float> deq = q->dequantized();
  Tensor w = Tensor::from_vector(deq, {out_features, in_features});
  weight.copy_(w.to(weight.device()).to(weight.dtype()));
  int8 = std::move(q);
}

std::vector<std::pair<std::string, Linear*>> named_linears(const Module& m) {
  std::vector<std::pair<std::string, Linear*>> out;
  for (auto& [n, mod] : m.named_modules())
    if (auto* l = dynamic_cast<Linear*>(mod)) out.emplace_back(n, l);
  return out;
}

int64_t quantize_int8(Module& m, const std::function<bool(const std::string&)>& skip) {
  int64_t n = 0;
  for (auto& [name, l] : named_linears(m)) {
    if (skip && skip(name)) continue;
    l->quantize_int8();
    ++n;
  }
  return n;
}

bool has_int8(const Module& m) {
  for (auto& [name, l] : named_linears(m))
    if (l->quantized()) return true;
  return false;
}

Tensor fused_linear(const std::vector<const Linear*>& layers, const Tensor& x) {
  BET_CHECK(!layers.empty(), "fused_linear: no layers");
  if (layers.size() == 1) return layers[0]->forward(x);
  bool all_int8 = true;
  for (const Linear* l : layers) all_int8 = all_int8 && int8_path(*l, x);
  if (all_int8) {
    for (const Linear* l : layers)
      BET_CHECK(l->in_features == layers[0]->in_features, "fused_linear: input widths differ (", l->in_features,
                " vs ", layers[0]->in_features, ")");
    return quantized_linear(x, *fused_int8(layers));
  }
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
