// Define-by-run autograd. Each recorded op leaves a Node on its output holding the
// op's inputs and a closure mapping the output's gradient to the inputs' gradients.
// backward() walks the nodes in reverse topological order, summing gradients.
//
// Gradients are computed with the same ops, under no_grad (no double backward).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace bet::autograd {

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out)>;

struct Node {
  const char* name = "";
  std::vector<Tensor> inputs;  // the op's inputs (keeps their graph alive)
  BackwardFn backward;         // returns one gradient per input (undefined = none)
};

// Grad mode is thread-local; NoGradGuard turns recording off for a scope.
bool grad_enabled();
void set_grad_enabled(bool enabled);
struct NoGradGuard {
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when an op over `inputs` must be recorded.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Records `out` as produced by op `name` from `inputs`. No-op when no input needs a
// gradient or grad mode is off. Returns `out` for chaining.
Tensor record(const char* name, Tensor out, std::vector<Tensor> inputs, BackwardFn backward);

// Runs backpropagation from `root` with seed gradient `grad`.
void run_backward(const Tensor& root, const Tensor& grad);

// While a GradReadyScope lives (on this thread), run_backward calls ready(i, received)
// once for each leaf watched[i] as soon as nothing more will be added to its gradient in
// that backward: every node that reads it has run (or received no gradient). `received`
// says whether this backward added a gradient to it. Data parallelism starts summing a
// bucket of gradients across ranks then, while backward computes the rest. Leaves the
// graph does not reach are ready at once, with received false.
class GradReadyScope {
 public:
  GradReadyScope(const std::vector<Tensor>& watched, std::function<void(size_t, bool)> ready);
  ~GradReadyScope();
  GradReadyScope(const GradReadyScope&) = delete;
  GradReadyScope& operator=(const GradReadyScope&) = delete;

  const std::vector<Tensor>& watched() const { return watched_; }
  void ready(size_t i, bool received) const { ready_(i, received); }

 private:
  std::vector<Tensor> watched_;
  std::function<void(size_t, bool)> ready_;
  GradReadyScope* prev_;
};

}  // namespace bet::autograd
