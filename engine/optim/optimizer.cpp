#include "engine/optim/optimizer.h"

#include <cmath>
#include <map>

#include "engine/ops.h"
#include "engine/ops/dispatch.h"
#include "kernels/optim.h"

namespace bet::optim {

using ops_detail::dispatch;

namespace {

// Returns the gradient of `p` in a form the fused kernels take (contiguous, p's
// dtype), or an undefined tensor when p has none.
Tensor usable_grad(const Tensor& p, const char* op, size_t i) {
  Tensor g = p.grad();
  if (!g.defined()) return g;
  BET_CHECK(g.shape() == p.shape(), op, ": gradient of parameter ", i, " has shape ", shape_str(g.shape()),
            ", parameter ", shape_str(p.shape()));
  BET_CHECK(g.dtype() == p.dtype(), op, ": gradient of parameter ", i, " is ", dtype_name(g.dtype()),
            ", parameter ", dtype_name(p.dtype()));
  BET_CHECK(g.device() == p.device(), op, ": gradient of parameter ", i, " is on ", g.device().str(),
            ", parameter on ", p.device().str());
  // Autograd accumulates contiguous gradients; a user-set view is the rare case.
  return g.is_contiguous() ? g : g.detach().contiguous();
}

Tensor zeros_like(const Tensor& p) { return Tensor::zeros(p.shape(), p.dtype(), p.device()); }

}  // namespace

// ---------------- Optimizer ----------------

Optimizer::Optimizer(std::vector<Tensor> params, double lr, std::vector<bool> decay)
    : params_(std::move(params)), decay_(std::move(decay)), lr_(lr) {
  if (decay_.empty()) decay_.assign(params_.size(), true);
  BET_CHECK(decay_.size() == params_.size(), "optimizer: ", decay_.size(), " decay flags for ", params_.size(),
            " parameters");
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    BET_CHECK(p.defined(), "optimizer: parameter ", i, " is undefined");
    BET_CHECK(p.dtype() == DType::F32 || p.dtype() == DType::F64, "optimizer: parameter ", i, " is ",
              dtype_name(p.dtype()), "; only f32 and f64 are supported");
    dispatch("optimizer", {&p});
    BET_CHECK(p.is_contiguous(), "optimizer: parameter ", i, " of shape ", shape_str(p.shape()),
              " is not contiguous");
    BET_CHECK(p.is_leaf() && p.requires_grad(), "optimizer: parameter ", i,
              " is not a leaf that requires grad");
    for (size_t j = 0; j < i; ++j)
      BET_CHECK(!params_[j].same(p), "optimizer: parameter ", i, " is listed twice (also at ", j, ")");
  }
}

void Optimizer::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

void Optimizer::load_state(const StateList& s) {
  StateList mine = state();
  std::map<std::string, const Tensor*> given;
  for (const auto& [name, t] : s) {
    BET_CHECK(given.emplace(name, &t).second, "optimizer load_state: '", name, "' appears twice");
  }
  // Validate everything before copying anything, so a bad checkpoint leaves the
  // optimizer as it was.
  for (const auto& [name, t] : mine) {
    auto it = given.find(name);
    BET_CHECK(it != given.end(), "optimizer load_state: '", name, "' is missing");
    const Tensor& src = *it->second;
    BET_CHECK(src.defined(), "optimizer load_state: '", name, "' is undefined");
    BET_CHECK(src.shape() == t.shape(), "optimizer load_state: '", name, "' has shape ", shape_str(src.shape()),
              ", expected ", shape_str(t.shape()));
    BET_CHECK(src.dtype() == t.dtype(), "optimizer load_state: '", name, "' is ", dtype_name(src.dtype()),
              ", expected ", dtype_name(t.dtype()));
  }
  BET_CHECK(given.size() == mine.size(), "optimizer load_state: ", given.size(), " tensors given, ",
            mine.size(), " expected (unknown names present)");
  for (const auto& [name, t] : mine) {
    Tensor dst = t;
    dst.copy_(*given[name]);
  }
}

// ---------------- AdamW ----------------

AdamW::AdamW(std::vector<Tensor> params, const AdamWOptions& opt, std::vector<bool> decay)
    : Optimizer(std::move(params), opt.lr, std::move(decay)), opt_(opt) {
  BET_CHECK(opt.lr >= 0, "adamw: lr ", opt.lr, " is negative");
  BET_CHECK(opt.eps >= 0, "adamw: eps ", opt.eps, " is negative");
  BET_CHECK(opt.beta1 >= 0 && opt.beta1 < 1, "adamw: beta1 ", opt.beta1, " is not in [0, 1)");
  BET_CHECK(opt.beta2 >= 0 && opt.beta2 < 1, "adamw: beta2 ", opt.beta2, " is not in [0, 1)");
  BET_CHECK(opt.weight_decay >= 0, "adamw: weight_decay ", opt.weight_decay, " is negative");
  steps_ = Tensor::zeros({int64_t(params_.size())}, DType::I64);
  for (const Tensor& p : params_) {
    m_.push_back(zeros_like(p));
    v_.push_back(zeros_like(p));
  }
}

kernels::AdamWScalars adamw_scalars(const AdamWOptions& opt, double lr, bool decay, int64_t t) {
  // Computed in double as torch computes them in Python floats.
  const double bias1 = 1.0 - std::pow(opt.beta1, double(t));
  const double bias2 = 1.0 - std::pow(opt.beta2, double(t));
  kernels::AdamWScalars s;
  s.decay_factor = decay ? 1.0 - lr * opt.weight_decay : 1.0;
  s.beta1_weight = 1.0 - opt.beta1;
  s.beta2 = opt.beta2;
  s.one_minus_beta2 = 1.0 - opt.beta2;
  s.bias2_sqrt = std::sqrt(bias2);
  s.eps = opt.eps;
  s.neg_step_size = -(lr / bias1);
  return s;
}

void AdamW::step() {
  int64_t* steps = steps_.data<int64_t>();
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    Tensor g = usable_grad(p, "adamw", i);
    if (!g.defined()) continue;
    const int64_t t = ++steps[i];
    const kernels::AdamWScalars s = adamw_scalars(opt_, lr_, decay_[i], t);
    BET_KERNEL(dispatch("adamw", {&p, &g, &m_[i], &v_[i]}), adamw_step(p, g, m_[i], v_[i], s));
  }
}

StateList AdamW::state() const {
  StateList out;
  out.reserve(1 + 2 * params_.size());
  out.emplace_back("adamw.step", steps_);
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("adamw.m." + std::to_string(i), m_[i]);
    out.emplace_back("adamw.v." + std::to_string(i), v_[i]);
  }
  return out;
}

// ---------------- SGD ----------------

SGD::SGD(std::vector<Tensor> params, const SGDOptions& opt, std::vector<bool> decay)
    : Optimizer(std::move(params), opt.lr, std::move(decay)), opt_(opt) {
  BET_CHECK(opt.lr >= 0, "sgd: lr ", opt.lr, " is negative");
  BET_CHECK(opt.momentum >= 0, "sgd: momentum ", opt.momentum, " is negative");
  BET_CHECK(opt.weight_decay >= 0, "sgd: weight_decay ", opt.weight_decay, " is negative");
  BET_CHECK(!opt.nesterov || (opt.momentum > 0 && opt.dampening == 0),
            "sgd: nesterov needs momentum > 0 and dampening == 0");
  steps_ = Tensor::zeros({int64_t(params_.size())}, DType::I64);
  if (opt.momentum != 0)
    for (const Tensor& p : params_) buf_.push_back(zeros_like(p));
}

void SGD::step() {
  int64_t* steps = steps_.data<int64_t>();
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    Tensor g = usable_grad(p, "sgd", i);
    if (!g.defined()) continue;
    kernels::SGDScalars s;
    s.weight_decay = decay_[i] ? opt_.weight_decay : 0.0;
    s.momentum = opt_.momentum;
    s.one_minus_dampening = 1.0 - opt_.dampening;
    s.first = steps[i] == 0;  // torch's momentum_buffer is None until the first step
    s.nesterov = opt_.nesterov;
    s.neg_lr = -lr_;
    const Tensor& buf = opt_.momentum != 0 ? buf_[i] : Tensor();
    BET_KERNEL(dispatch("sgd", {&p, &g, ops_detail::maybe(buf)}), sgd_step(p, g, buf, s));
    ++steps[i];
  }
}

StateList SGD::state() const {
  StateList out;
  out.emplace_back("sgd.step", steps_);
  for (size_t i = 0; i < buf_.size(); ++i) out.emplace_back("sgd.momentum." + std::to_string(i), buf_[i]);
  return out;
}

// ---------------- gradient norm ----------------

double grad_norm(const std::vector<Tensor>& params) {
  // Per-parameter sums of squares stay on their device, then one read back per device
  // (a GPU synchronises once per step, not once per parameter); the host adds them in
  // parameter order.
  std::vector<Tensor> parts;
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor g = params[i].grad();
    if (!g.defined()) continue;
    const kernels::Backend be = dispatch("clip_grad_norm", {&g});
    if (!g.is_contiguous()) g = g.detach().contiguous();
    Tensor s = Tensor::empty({1}, DType::F64, g.device());
    BET_KERNEL(be, sum_squares(g, s));
    parts.push_back(s);
  }
  autograd::NoGradGuard ng;
  std::vector<double> values(parts.size());
  std::vector<bool> read(parts.size(), false);
  for (size_t i = 0; i < parts.size(); ++i) {
    if (read[i]) continue;
    std::vector<Tensor> same;  // the parts on parts[i]'s device
    std::vector<size_t> at;
    for (size_t j = i; j < parts.size(); ++j) {
      if (read[j] || parts[j].device() != parts[i].device()) continue;
      same.push_back(parts[j]);
      at.push_back(j);
      read[j] = true;
    }
    const std::vector<double> v = concat(same, 0).to_vector<double>();
    for (size_t k = 0; k < at.size(); ++k) values[at[k]] = v[k];
  }
  double total = 0.0;
  for (double v : values) total += v;
  return std::sqrt(total);
}

void scale_in_place(const Tensor& t, double factor) {
  const kernels::Backend be = dispatch("clip_grad_norm", {&t});
  if (t.is_contiguous()) {
    BET_KERNEL(be, scale_(t, factor));
  } else {
    // Scale a contiguous copy and write it back through the view.
    Tensor c = t.detach().contiguous();
    BET_KERNEL(be, scale_(c, factor));
    const_cast<Tensor&>(t).copy_(c);
  }
}

void scale_grads(const std::vector<Tensor>& params, double factor) {
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (g.defined()) scale_in_place(g, factor);
  }
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  BET_CHECK(max_norm > 0, "clip_grad_norm: max_norm ", max_norm, " is not positive");
  const double norm = grad_norm(params);
  if (!std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef >= 1.0) return norm;
  scale_grads(params, coef);
  return norm;
}

}  // namespace bet::optim
