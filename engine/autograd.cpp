#include "engine/autograd.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "engine/ops.h"
#include "engine/ops/slice_backward.h"

namespace bet::autograd {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool enabled) { g_grad_enabled = enabled; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Tensor record(const char* name, Tensor out, std::vector<Tensor> inputs, BackwardFn backward) {
  if (!needs_grad(inputs)) return out;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs = std::move(inputs);
  node->backward = std::move(backward);
  TensorImpl* impl = out.impl_ptr();
  impl->grad_fn = std::move(node);
  impl->requires_grad = true;
  return out;
}

namespace {

thread_local GradReadyScope* t_ready_scope = nullptr;

void accumulate(std::shared_ptr<TensorImpl>& slot, const Tensor& g) {
  if (!slot) {
    // Own the memory: a gradient may alias a tensor the caller still uses.
    slot = g.contiguous().impl_shared();
    if (slot == g.impl_shared()) slot = g.clone().impl_shared();
  } else {
    Tensor acc(slot);
    acc.copy_(add(acc, g));
  }
}

}  // namespace

GradReadyScope::GradReadyScope(const std::vector<Tensor>& watched, std::function<void(size_t, bool)> ready)
    : watched_(watched), ready_(std::move(ready)), prev_(t_ready_scope) {
  t_ready_scope = this;
}

GradReadyScope::~GradReadyScope() { t_ready_scope = prev_; }

void run_backward(const Tensor& root, const Tensor& seed) {
  BET_CHECK(root.requires_grad(), "backward: tensor does not require grad");
  NoGradGuard no_grad;

  // Reverse topological order of the nodes reachable from root (iterative DFS).
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  if (root.grad_fn()) {
    std::vector<std::pair<Node*, size_t>> stack{{root.grad_fn().get(), 0}};
    seen.insert(root.grad_fn().get());
    while (!stack.empty()) {
      auto& [node, i] = stack.back();
      if (i < node->inputs.size()) {
        const Tensor& in = node->inputs[i++];
        if (in.defined() && in.grad_fn() && !seen.count(in.grad_fn().get())) {
          seen.insert(in.grad_fn().get());
          stack.push_back({in.grad_fn().get(), 0});
        }
      } else {
        order.push_back(node);
        stack.pop_back();
      }
    }
  }

  // Readiness of the watched leaves (GradReadyScope): the node inputs still to run per
  // leaf, and whether it received a gradient.
  const GradReadyScope* scope = t_ready_scope;
  std::unordered_map<TensorImpl*, size_t> watched_index;
  std::vector<int64_t> readers;
  std::vector<char> received;
  if (scope) {
    const auto& w = scope->watched();
    readers.assign(w.size(), 0);
    received.assign(w.size(), 0);
    for (size_t i = 0; i < w.size(); ++i) watched_index.emplace(w[i].impl_ptr(), i);
  }

  // Pending gradients keyed by the tensor that produced them.
  std::unordered_map<TensorImpl*, Tensor> pending;
  auto add_grad = [&](const Tensor& t, const Tensor& g) {
    if (!g.defined() || !t.requires_grad()) return;
    if (scope && t.is_leaf()) {
      auto f = watched_index.find(t.impl_ptr());
      if (f != watched_index.end()) received[f->second] = 1;
    }
    BET_CHECK(g.shape() == t.shape(), "backward: gradient shape ", shape_str(g.shape()),
              " does not match tensor shape ", shape_str(t.shape()));
    TensorImpl* impl = t.impl_ptr();
    if (t.is_leaf() || impl->retains_grad) accumulate(impl->grad, g);
    if (!t.is_leaf()) {
      auto it = pending.find(impl);
      if (it == pending.end())
        pending.emplace(impl, g);
      else
        it->second = add(it->second, g);
    }
  };
  // Slices' gradients of a non-leaf (one that does not retain its gradient; leaves take
  // the dense path, for their accumulation and readiness), kept as pieces until the
  // sliced tensor's own node runs: then they are written once into one full-size
  // gradient (engine/ops/slice_backward.h).
  std::unordered_map<TensorImpl*, std::vector<std::pair<ops_detail::SliceBackward, Tensor>>> pieces;
  auto add_slice_grad = [&](const ops_detail::SliceBackward& sb, const Tensor& in, Tensor g) -> bool {
    if (!in.defined() || !in.requires_grad() || in.is_leaf() || in.impl_ptr()->retains_grad) return false;
    if (g.dtype() != in.dtype()) g = g.to(in.dtype());
    pieces[in.impl_ptr()].emplace_back(sb, std::move(g));
    return true;
  };
  auto assemble = [&](TensorImpl* impl) {
    auto f = pieces.find(impl);
    if (f == pieces.end()) return;
    auto ps = std::move(f->second);
    pieces.erase(f);
    // Disjoint unit-step pieces along one dim (split's parts): each region written once,
    // only the gaps zeroed. Anything else: zeros, each piece added into its region.
    std::sort(ps.begin(), ps.end(), [](const auto& a, const auto& b) { return a.first.start < b.first.start; });
    const ops_detail::SliceBackward& s0 = ps[0].first;
    const Tensor& g0 = ps[0].second;
    bool disjoint = true;
    for (size_t i = 0; i < ps.size() && disjoint; ++i)
      disjoint = ps[i].first.dim == s0.dim && ps[i].first.step == 1 &&
                 (i == 0 || ps[i].first.start >= ps[i - 1].first.end);
    Tensor full;
    if (disjoint) {
      full = Tensor::empty(s0.in_shape, g0.dtype(), g0.device());
      int64_t covered = 0;
      for (auto& [sb, g] : ps) {
        if (sb.start > covered) slice(full, s0.dim, covered, sb.start).fill_(0.0);
        sb.region(full).copy_(g);
        covered = sb.end;
      }
      if (covered < s0.in_shape[size_t(s0.dim)]) slice(full, s0.dim, covered, s0.in_shape[size_t(s0.dim)]).fill_(0.0);
    } else {
      full = Tensor::zeros(s0.in_shape, g0.dtype(), g0.device());
      for (auto& [sb, g] : ps) {
        Tensor r = sb.region(full);
        r.copy_(add(r, g));
      }
    }
    auto it = pending.find(impl);
    if (it == pending.end())
      pending.emplace(impl, std::move(full));
    else
      it->second = add(it->second, full);
  };

  add_grad(root, seed);
  // Map node -> output tensor impl: the node is owned by exactly one output.
  std::unordered_map<Node*, TensorImpl*> owner;
  owner[root.grad_fn().get()] = root.impl_ptr();
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = *it;
    for (const Tensor& in : node->inputs)
      if (in.defined() && in.grad_fn()) owner[in.grad_fn().get()] = in.impl_ptr();
  }

  if (scope) {
    const auto& w = scope->watched();
    for (Node* node : order)
      for (const Tensor& in : node->inputs)
        if (in.defined()) {
          auto f = watched_index.find(in.impl_ptr());
          if (f != watched_index.end()) readers[f->second]++;
        }
    for (size_t i = 0; i < w.size(); ++i)
      if (readers[i] == 0) scope->ready(i, received[i]);
  }
  auto node_done = [&](Node* node) {
    if (!scope) return;
    for (const Tensor& in : node->inputs)
      if (in.defined()) {
        auto f = watched_index.find(in.impl_ptr());
        if (f != watched_index.end() && --readers[f->second] == 0) scope->ready(f->second, received[f->second]);
      }
  };

  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = *it;
    assemble(owner[node]);
    auto p = pending.find(owner[node]);
    if (p == pending.end()) {  // no gradient flowed here
      node_done(node);
      continue;
    }
    Tensor g = std::move(p->second);
    pending.erase(p);
    if (const auto* sb = node->backward.target<ops_detail::SliceBackward>();
        sb && add_slice_grad(*sb, node->inputs[0], g)) {
      node_done(node);
      continue;
    }
    std::vector<Tensor> grads = node->backward(g);
    BET_CHECK(grads.size() == node->inputs.size(), "backward of ", node->name, ": returned ",
              grads.size(), " gradients for ", node->inputs.size(), " inputs");
    for (size_t i = 0; i < grads.size(); ++i) {
      if (!grads[i].defined()) continue;
      const Tensor& in = node->inputs[i];
      if (!in.defined()) continue;
      Tensor gi = grads[i];
      if (gi.dtype() != in.dtype() && is_floating(in.dtype())) gi = gi.to(in.dtype());
      add_grad(in, gi);
    }
    node_done(node);
  }
}

}  // namespace bet::autograd
