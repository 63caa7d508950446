// Optimisers over a list of leaf parameters (f32 or f64, contiguous, on one device),
// with the exact update rules of torch.optim.AdamW / torch.optim.SGD, and global
// gradient-norm clipping as torch.nn.utils.clip_grad_norm_.
//
// Usage per training step:
//   opt.set_lr(schedule.lr(step));
//   loss.backward();
//   double norm = clip_grad_norm(opt.params(), max_norm);   // skip the step if !finite
//   opt.step();
//   opt.zero_grad();
//
// State (moments, momentum buffers, per-parameter step counts) is allocated up front
// and exposed as an ordered list of named tensors, so a checkpoint saves it and
// load_state restores it exactly: a restored optimizer continues bit-identically.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"
#include "kernels/optim.h"

namespace bet::optim {

using StateList = std::vector<std::pair<std::string, Tensor>>;

class Optimizer {
 public:
  // `decay[i]` says whether weight decay applies to params[i] (biases and LayerNorm
  // weights are usually excluded); empty means every parameter decays.
  Optimizer(std::vector<Tensor> params, double lr, std::vector<bool> decay = {});
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient; parameters without one are
  // skipped entirely (no decay, no state change), as in torch.
  virtual void step() = 0;
  // Drops every gradient (torch's zero_grad(set_to_none=True)).
  void zero_grad();

  double lr() const { return lr_; }
  void set_lr(double lr) { lr_ = lr; }
  const std::vector<Tensor>& params() const { return params_; }
  bool decays(size_t i) const { return decay_[i]; }

  // The state, in a fixed order. The tensors ALIAS the optimizer's memory (saving
  // them costs no copy); clone them to keep a snapshot across further steps.
  virtual StateList state() const = 0;
  // Copies `s` into the state. Every name of state() must be present exactly once,
  // with the same shape and dtype; unknown names are errors (a checkpoint from a
  // different model or optimizer must not load silently).
  virtual void load_state(const StateList& s);

 protected:
  std::vector<Tensor> params_;
  std::vector<bool> decay_;
  double lr_;
};

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

// The scalars of one AdamW update of a parameter at its step t (>= 1).
kernels::AdamWScalars adamw_scalars(const AdamWOptions& opt, double lr, bool decay, int64_t t);

// torch.optim.AdamW (amsgrad=False, maximize=False). Per element, step t:
//   p <- p * (1 - lr*wd)                    (decoupled decay, skipped where !decay[i])
//   m <- lerp(m, g, 1 - beta1)
//   v <- beta2*v + (1 - beta2)*g*g
//   p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// in one fused pass over p, g, m, v. State: "adamw.step" (i64 [n_params], the
// per-parameter step counts), then "adamw.m.<i>", "adamw.v.<i>" for each i.
class AdamW : public Optimizer {
 public:
  AdamW(std::vector<Tensor> params, const AdamWOptions& opt = {}, std::vector<bool> decay = {});
  void step() override;
  StateList state() const override;
  const AdamWOptions& options() const { return opt_; }

 private:
  AdamWOptions opt_;
  Tensor steps_;  // i64 [n]
  std::vector<Tensor> m_, v_;
};

struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

// torch.optim.SGD (maximize=False). Per element:
//   d <- g + wd*p                           (coupled L2 decay, skipped where !decay[i])
//   b <- d on the first step, else momentum*b + (1 - dampening)*d
//   d <- nesterov ? d + momentum*b : b       (when momentum != 0)
//   p <- p - lr*d
// State: "sgd.step" (i64 [n_params]) and, when momentum != 0, "sgd.momentum.<i>".
class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, const SGDOptions& opt, std::vector<bool> decay = {});
  void step() override;
  StateList state() const override;
  const SGDOptions& options() const { return opt_; }

 private:
  SGDOptions opt_;
  Tensor steps_;  // i64 [n]
  std::vector<Tensor> buf_;
};

// torch.nn.utils.clip_grad_norm_ with the 2-norm: returns the global norm of all
// gradients (parameters without one are ignored) before clipping, and multiplies every
// gradient by max_norm / (norm + 1e-6) when that factor is below 1 (torch clamps the
// factor at 1, so it scales exactly when norm + 1e-6 > max_norm). A non-finite norm is
// returned without touching the gradients: the caller skips the step.
// The norm is accumulated in double in fixed blocks, so it does not depend on the
// thread count.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
// The global gradient norm alone (no clipping).
double grad_norm(const std::vector<Tensor>& params);
// Multiplies every gradient (or one tensor) by `factor` in place.
void scale_grads(const std::vector<Tensor>& params, double factor);
void scale_in_place(const Tensor& t, double factor);

}  // namespace bet::optim
