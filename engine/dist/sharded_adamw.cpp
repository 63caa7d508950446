#include "engine/dist/sharded_adamw.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "engine/ops.h"
#include "engine/ops/dispatch.h"
#include "kernels/optim.h"

namespace bet::dist {

using ops_detail::dispatch;

namespace {

// Elements [begin, begin + len) of a contiguous tensor, as a flat view.
Tensor flat_piece(const Tensor& t, int64_t begin, int64_t len) { return make_view(t, {len}, {1}, t.offset() + begin); }

}  // namespace

ShardedAdamW::ShardedAdamW(GradBuckets& buckets, Communicator& comm, const optim::AdamWOptions& opt,
                           std::vector<bool> decay)
    : Optimizer(buckets.params(), opt.lr, std::move(decay)), buckets_(buckets), comm_(comm), opt_(opt) {
  for (const Tensor& p : params_) BET_CHECK(p.is_contiguous(), "sharded optimizer: parameters must be contiguous");
  const int64_t r = comm.rank();
  for (int64_t b = 0; b < buckets.bucket_count(); ++b) {
    const int64_t c = buckets.chunk(b), lo = r * c, hi = lo + c;
    const Tensor& flat = buckets.flat(b);
    m_.push_back(Tensor::zeros({c}, flat.dtype(), flat.device()));
    v_.push_back(Tensor::zeros({c}, flat.dtype(), flat.device()));
    for (size_t i = 0; i < params_.size(); ++i) {
      if (buckets.bucket_of(i) != b) continue;
      const int64_t o = buckets.offset_of(i), n = params_[i].numel();
      const int64_t a = std::max(o, lo), e = std::min(o + n, hi);
      if (a < e) segments_.push_back({i, b, a - o, e - a, a - lo});
    }
  }
  steps_.assign(params_.size(), 0);
  stepping_.assign(params_.size(), true);
}

Tensor ShardedAdamW::param_piece(const Segment& s) const { return flat_piece(params_[s.param], s.param_begin, s.len); }

double ShardedAdamW::grad_norm() const {
  // Sums of squares of this rank's shards (padding is zero), then over the ranks.
  std::vector<Tensor> parts;
  for (int64_t b = 0; b < buckets_.bucket_count(); ++b) {
    const Tensor& g = buckets_.shard(b);
    Tensor s = Tensor::empty({1}, DType::F64, g.device());
    BET_KERNEL(dispatch("clip_grad_norm", {&g}), sum_squares(g, s));
    parts.push_back(s);
  }
  std::vector<double> total{0.0};
  for (double v : concat(parts, 0).to_vector<double>()) total[0] += v;
  comm_.all_reduce_sum(total);
  return std::sqrt(total[0]);
}

void ShardedAdamW::scale_grads(double factor) {
  for (int64_t b = 0; b < buckets_.bucket_count(); ++b) optim::scale_in_place(buckets_.shard(b), factor);
}

double ShardedAdamW::clip_grad_norm(double max_norm) {
  const double norm = grad_norm();
  if (!std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) scale_grads(coef);
  return norm;
}

void ShardedAdamW::step() {
  std::vector<kernels::AdamWScalars> scalars(params_.size());
  for (size_t i = 0; i < params_.size(); ++i)
    if (stepping_[i]) scalars[i] = optim::adamw_scalars(opt_, lr_, decay_[i], ++steps_[i]);
  // This rank's elements: updated in place in the parameters.
  for (const Segment& s : segments_) {
    if (!stepping_[s.param]) continue;
    Tensor p = param_piece(s);
    Tensor g = flat_piece(buckets_.shard(s.bucket), s.shard_begin, s.len);
    Tensor m = flat_piece(m_[size_t(s.bucket)], s.shard_begin, s.len);
    Tensor v = flat_piece(v_[size_t(s.bucket)], s.shard_begin, s.len);
    BET_KERNEL(dispatch("adamw", {&p, &g, &m, &v}), adamw_step(p, g, m, v, scalars[s.param]));
  }
  // Everyone's elements: all-gather the chunks, copy them into the parameters.
  for (int64_t b = 0; b < buckets_.bucket_count(); ++b) {
    const Tensor& flat = buckets_.flat(b);
    const int64_t c = buckets_.chunk(b);
    Tensor mine = Tensor::zeros({c}, flat.dtype(), flat.device());
    for (const Segment& s : segments_)
      if (s.bucket == b) flat_piece(mine, s.shard_begin, s.len).copy_(param_piece(s));
    Tensor all = Tensor::empty({c * comm_.size()}, flat.dtype(), flat.device());
    comm_.all_gather(mine, all);
    for (size_t i = 0; i < params_.size(); ++i) {
      if (buckets_.bucket_of(i) != b) continue;
      Tensor p = params_[i];
      p.copy_(reshape(flat_piece(all, buckets_.offset_of(i), p.numel()), p.shape()));
    }
  }
}

optim::StateList ShardedAdamW::state() const {
  optim::StateList out;
  Tensor steps = Tensor::zeros({int64_t(params_.size())}, DType::I64);
  for (size_t i = 0; i < params_.size(); ++i) steps.data<int64_t>()[i] = steps_[i];
  out.emplace_back("adamw.step", steps);
  std::vector<Tensor> m_all, v_all;
  for (int64_t b = 0; b < buckets_.bucket_count(); ++b) {
    const int64_t c = buckets_.chunk(b);
    Tensor ma = Tensor::empty({c * comm_.size()}, m_[size_t(b)].dtype(), m_[size_t(b)].device());
    Tensor va = Tensor::empty({c * comm_.size()}, v_[size_t(b)].dtype(), v_[size_t(b)].device());
    comm_.all_gather(m_[size_t(b)], ma);
    comm_.all_gather(v_[size_t(b)], va);
    m_all.push_back(ma);
    v_all.push_back(va);
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t b = buckets_.bucket_of(i), o = buckets_.offset_of(i), n = params_[i].numel();
    out.emplace_back("adamw.m." + std::to_string(i),
                     reshape(flat_piece(m_all[size_t(b)], o, n), params_[i].shape()).contiguous());
    out.emplace_back("adamw.v." + std::to_string(i),
                     reshape(flat_piece(v_all[size_t(b)], o, n), params_[i].shape()).contiguous());
  }
  return out;
}

void ShardedAdamW::load_state(const optim::StateList& s) {
  std::map<std::string, const Tensor*> given;
  for (const auto& [name, t] : s)
    BET_CHECK(given.emplace(name, &t).second, "optimizer load_state: '", name, "' appears twice");
  BET_CHECK(given.size() == 1 + 2 * params_.size(), "optimizer load_state: ", given.size(), " tensors given, ",
            1 + 2 * params_.size(), " expected");
  auto find = [&](const std::string& name, const Shape& shape, DType dt) -> const Tensor& {
    auto it = given.find(name);
    BET_CHECK(it != given.end(), "optimizer load_state: '", name, "' is missing");
    BET_CHECK(it->second->defined() && it->second->shape() == shape && it->second->dtype() == dt,
              "optimizer load_state: '", name, "' has the wrong shape or dtype");
    return *it->second;
  };
  const Tensor& steps = find("adamw.step", {int64_t(params_.size())}, DType::I64);
  for (size_t i = 0; i < params_.size(); ++i) {
    find("adamw.m." + std::to_string(i), params_[i].shape(), params_[i].dtype());
    find("adamw.v." + std::to_string(i), params_[i].shape(), params_[i].dtype());
  }
  // Validated: copy this rank's chunk of each.
  const std::vector<int64_t> st = steps.to_vector<int64_t>();
  for (size_t i = 0; i < params_.size(); ++i) steps_[i] = st[i];
  for (const Segment& seg : segments_) {
    const Tensor m = given["adamw.m." + std::to_string(seg.param)]->to(params_[seg.param].device()).contiguous();
    const Tensor v = given["adamw.v." + std::to_string(seg.param)]->to(params_[seg.param].device()).contiguous();
    flat_piece(m_[size_t(seg.bucket)], seg.shard_begin, seg.len).copy_(flat_piece(m, seg.param_begin, seg.len));
    flat_piece(v_[size_t(seg.bucket)], seg.shard_begin, seg.len).copy_(flat_piece(v, seg.param_begin, seg.len));
  }
}

}  // namespace bet::dist
