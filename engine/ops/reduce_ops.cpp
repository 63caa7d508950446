// Reductions (sum, mean, max, argmax) and the prefix sum.
#include "engine/ops.h"
#include "engine/ops/dispatch.h"
#include "kernels/reduce.h"

namespace bet {

using ops_detail::dispatch;

namespace {

// Which dims a reduction covers (empty list = all), validated.
std::vector<bool> reduce_mask(const Tensor& a, const std::vector<int64_t>& dims, const char* op) {
  std::vector<bool> m(size_t(a.dim()), dims.empty());
  for (int64_t d : dims) {
    const int64_t n = normalize_dim(d, a.dim(), op);
    if (a.dim() == 0) continue;
    BET_CHECK(!m[size_t(n)], op, ": dim ", d, " repeated for shape ", shape_str(a.shape()));
    m[size_t(n)] = true;
  }
  return m;
}

Shape keep_shape(const Shape& s, const std::vector<bool>& m) {
  Shape k = s;
  for (size_t d = 0; d < s.size(); ++d)
    if (m[d]) k[d] = 1;
  return k;
}

Shape drop_shape(const Shape& s, const std::vector<bool>& m) {
  Shape k;
  for (size_t d = 0; d < s.size(); ++d)
    if (!m[d]) k.push_back(s[d]);
  return k;
}

// The value of `dim`-reduced `t` (keepdim shape) as the caller asked it.
Tensor finish(const Tensor& kept, const Shape& full, const std::vector<bool>& m, bool keepdim) {
  return keepdim ? kept : make_view(kept, drop_shape(full, m), contiguous_strides(drop_shape(full, m)), kept.offset());
}

// Sum without recording (the shared forward of sum and mean).
Tensor sum_raw(kernels::Backend be, const Tensor& a, const std::vector<bool>& m) {
  Tensor out = Tensor::empty(keep_shape(a.shape(), m), a.dtype(), a.device());
  BET_KERNEL(be, sum(a, m, out));
  return out;
}

// The gradient of a reduction: g (reduced shape) broadcast back to the input.
Tensor spread(const Tensor& g, const Shape& in_shape, const Shape& kept_shape, double scale) {
  Tensor gk = reshape(g, kept_shape);
  if (scale != 1.0) gk = mul(gk, scale);
  // Materialised: downstream kernels may expect dense gradients.
  return expand(gk, in_shape).contiguous();
}

}  // namespace

Tensor sum(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  const kernels::Backend be = dispatch("sum", {&a});
  const std::vector<bool> m = reduce_mask(a, dims, "sum");
  Tensor out = finish(sum_raw(be, a, m), a.shape(), m, keepdim);
  Shape in_shape = a.shape(), kept = keep_shape(a.shape(), m);
  return autograd::record("sum", out, {a}, [in_shape, kept](const Tensor& g) {
    return std::vector<Tensor>{spread(g, in_shape, kept, 1.0)};
  });
}

Tensor mean(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  const kernels::Backend be = dispatch("mean", {&a});
  BET_CHECK(is_floating(a.dtype()), "mean: needs a floating tensor, got ", dtype_name(a.dtype()));
  const std::vector<bool> m = reduce_mask(a, dims, "mean");
  int64_t count = 1;
  for (size_t d = 0; d < m.size(); ++d)
    if (m[d]) count *= a.shape()[d];
  const double scale = 1.0 / double(count);  // inf/NaN for an empty reduction, as torch
  Tensor s = sum_raw(be, a, m);
  Tensor scaled;
  {
    autograd::NoGradGuard ng;
    scaled = mul(s, scale);
  }
  Tensor out = finish(scaled, a.shape(), m, keepdim);
  Shape in_shape = a.shape(), kept = keep_shape(a.shape(), m);
  return autograd::record("mean", out, {a}, [in_shape, kept, scale](const Tensor& g) {
    return std::vector<Tensor>{spread(g, in_shape, kept, scale)};
  });
}

namespace {

// values (keepdim) and, when asked, indices of the max along d.
void max_raw(kernels::Backend be, const Tensor& a, int64_t d, Tensor* values, Tensor* indices, const char* op) {
  BET_CHECK(a.dim() == 0 || a.shape()[size_t(d)] > 0, op, ": dim ", d, " of ", shape_str(a.shape()),
            " is empty");
  Shape kept = a.shape();
  if (a.dim() > 0) kept[size_t(d)] = 1;
  Tensor c = a.detach().contiguous();
  if (values) *values = Tensor::empty(kept, a.dtype(), a.device());
  if (indices) *indices = Tensor::empty(kept, DType::I64, a.device());
  BET_KERNEL(be, max_dim(c, a.dim() == 0 ? 0 : d, values ? *values : Tensor(), indices ? *indices : Tensor()));
}

}  // namespace

Tensor max(const Tensor& a, int64_t dim, bool keepdim) {
  const kernels::Backend be = dispatch("max", {&a});
  const int64_t d = normalize_dim(dim, a.dim(), "max");
  std::vector<bool> m(size_t(a.dim()), false);
  if (a.dim() > 0) m[size_t(d)] = true;
  const bool grad = autograd::needs_grad({&a});
  Tensor values, indices;
  max_raw(be, a, d, &values, grad ? &indices : nullptr, "max");
  Tensor out = finish(values, a.shape(), m, keepdim);
  if (!grad) return out;
  Shape in_shape = a.shape(), kept = values.shape();
  return autograd::record("max", out, {a}, [in_shape, kept, indices, d](const Tensor& g) {
    const kernels::Backend gbe = dispatch("max backward", {&g, &indices});
    Tensor gk = reshape(g, kept).contiguous();
    Tensor gi = Tensor::zeros(in_shape, g.dtype(), g.device());
    BET_KERNEL(gbe, scatter_dim(gk, indices, in_shape.empty() ? 0 : d, gi));
    return std::vector<Tensor>{gi};
  });
}

Tensor argmax(const Tensor& a, int64_t dim, bool keepdim) {
  const kernels::Backend be = dispatch("argmax", {&a});
  const int64_t d = normalize_dim(dim, a.dim(), "argmax");
  std::vector<bool> m(size_t(a.dim()), false);
  if (a.dim() > 0) m[size_t(d)] = true;
  Tensor indices;
  max_raw(be, a, d, nullptr, &indices, "argmax");
  return finish(indices, a.shape(), m, keepdim);
}

Tensor cumsum(const Tensor& a, int64_t dim) {
  const kernels::Backend be = dispatch("cumsum", {&a});
  const int64_t d = a.dim() == 0 ? 0 : normalize_dim(dim, a.dim(), "cumsum");
  Tensor c = a.detach().contiguous();
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  BET_KERNEL(be, cumsum(c, d, false, out));
  return autograd::record("cumsum", out, {a}, [d](const Tensor& g) {
    const kernels::Backend gbe = dispatch("cumsum backward", {&g});
    Tensor gc = g.contiguous();
    Tensor gi = Tensor::empty(gc.shape(), gc.dtype(), gc.device());
    BET_KERNEL(gbe, cumsum(gc, d, true, gi));
    return std::vector<Tensor>{gi};
  });
}

}  // namespace bet
