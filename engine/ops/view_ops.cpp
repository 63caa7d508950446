// Views: new geometry over the same storage, no copy. Backward maps the gradient
// back through the inverse view (or, for slice and expand, its adjoint).
#include <numeric>

#include "engine/ops.h"
#include "engine/ops/slice_backward.h"

namespace bet {

namespace {

// Strides for viewing a tensor as `shape` without a copy, or empty if impossible
// (the same rule as torch.view: each new dim must lie within one contiguous chunk).
bool view_strides(const Tensor& a, const Shape& shape, Shape* out) {
  if (a.is_contiguous()) {
    *out = contiguous_strides(shape);
    return true;
  }
  const Shape& os = a.shape();
  const Shape& ost = a.strides();
  Shape st(shape.size());
  int64_t view_d = int64_t(shape.size()) - 1;
  int64_t chunk_base = ost.empty() ? 1 : ost.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = int64_t(os.size()) - 1; d >= 0; --d) {
    tensor_numel *= os[d];
    if (d == 0 || (os[d - 1] != 1 && ost[d - 1] != tensor_numel * chunk_base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        st[view_d] = view_numel * chunk_base;
        view_numel *= shape[view_d];
        view_d--;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base = ost[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return false;
  *out = st;
  return true;
}

}  // namespace

Tensor reshape(const Tensor& a, Shape shape) {
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      BET_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(shape));
      infer = int64_t(i);
    } else {
      BET_CHECK(shape[i] >= 0, "reshape: negative dim in ", shape_str(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    BET_CHECK(known != 0 && a.numel() % known == 0, "reshape: cannot infer -1 in ", shape_str(shape),
              " for ", a.numel(), " elements");
    shape[infer] = a.numel() / known;
  }
  BET_CHECK(shape_numel(shape) == a.numel(), "reshape: ", shape_str(a.shape()), " (", a.numel(),
            " elements) cannot become ", shape_str(shape));
  Shape st;
  Tensor out = view_strides(a, shape, &st) ? make_view(a, shape, st, a.offset())
                                           : reshape(a.contiguous(), shape);
  if (out.grad_fn() && !view_strides(a, shape, &st)) return out;  // recorded through contiguous
  Shape in_shape = a.shape();
  return autograd::record("reshape", out, {a}, [in_shape](const Tensor& g) {
    return std::vector<Tensor>{reshape(g, in_shape)};
  });
}

Tensor flatten(const Tensor& a, int64_t start_dim, int64_t end_dim) {
  if (a.dim() == 0) return reshape(a, {1});
  int64_t s = normalize_dim(start_dim, a.dim(), "flatten");
  int64_t e = normalize_dim(end_dim, a.dim(), "flatten");
  Shape shape;
  for (int64_t i = 0; i < s; ++i) shape.push_back(a.shape()[i]);
  int64_t m = 1;
  for (int64_t i = s; i <= e; ++i) m *= a.shape()[i];
  shape.push_back(m);
  for (int64_t i = e + 1; i < a.dim(); ++i) shape.push_back(a.shape()[i]);
  return reshape(a, shape);
}

Tensor permute(const Tensor& a, const std::vector<int64_t>& dims) {
  BET_CHECK(int64_t(dims.size()) == a.dim(), "permute: ", dims.size(), " dims for a tensor of rank ", a.dim());
  std::vector<int64_t> p(dims.size());
  std::vector<bool> used(dims.size(), false);
  Shape shape(dims.size()), st(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = normalize_dim(dims[i], a.dim(), "permute");
    BET_CHECK(!used[d], "permute: dim ", d, " repeated");
    used[d] = true;
    p[i] = d;
    shape[i] = a.shape()[d];
    st[i] = a.strides()[d];
  }
  Tensor out = make_view(a, shape, st, a.offset());
  std::vector<int64_t> inv(p.size());
  for (size_t i = 0; i < p.size(); ++i) inv[p[i]] = int64_t(i);
  return autograd::record("permute", out, {a}, [inv](const Tensor& g) { return std::vector<Tensor>{permute(g, inv)}; });
}

Tensor transpose(const Tensor& a, int64_t d0, int64_t d1) {
  std::vector<int64_t> dims(a.dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[normalize_dim(d0, a.dim(), "transpose")], dims[normalize_dim(d1, a.dim(), "transpose")]);
  return permute(a, dims);
}

Tensor slice(const Tensor& a, int64_t dim, int64_t start, int64_t end, int64_t step) {
  int64_t d = normalize_dim(dim, a.dim(), "slice");
  BET_CHECK(step > 0, "slice: step must be positive, got ", step);
  int64_t n = a.shape()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = a.shape(), st = a.strides();
  shape[d] = (end - start + step - 1) / step;
  st[d] *= step;
  Tensor out = make_view(a, shape, st, a.offset() + start * a.strides()[d]);
  return autograd::record("slice", out, {a}, ops_detail::SliceBackward{a.shape(), d, start, end, step});
}

namespace ops_detail {
Tensor SliceBackward::region(const Tensor& full) const { return slice(full, dim, start, end, step); }
std::vector<Tensor> SliceBackward::operator()(const Tensor& g) const {
  Tensor gi = Tensor::zeros(in_shape, g.dtype(), g.device());
  region(gi).copy_(g);
  return {gi};
}
}  // namespace ops_detail

Tensor select(const Tensor& a, int64_t dim, int64_t index) {
  int64_t d = normalize_dim(dim, a.dim(), "select");
  int64_t n = a.shape()[d];
  if (index < 0) index += n;
  BET_CHECK(index >= 0 && index < n, "select: index ", index, " out of range for dim ", d, " of size ", n);
  return squeeze(slice(a, d, index, index + 1), d);
}

Tensor expand(const Tensor& a, const Shape& shape) {
  BET_CHECK(int64_t(shape.size()) >= a.dim(), "expand: cannot expand ", shape_str(a.shape()), " to ",
            shape_str(shape));
  size_t lead = shape.size() - size_t(a.dim());
  Shape st(shape.size(), 0);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) continue;
    int64_t ad = a.shape()[i - lead];
    BET_CHECK(ad == shape[i] || ad == 1, "expand: cannot expand ", shape_str(a.shape()), " to ", shape_str(shape));
    st[i] = ad == 1 && shape[i] != 1 ? 0 : a.strides()[i - lead];
  }
  if (shape == a.shape()) return a;
  Tensor out = make_view(a, shape, st, a.offset());
  Shape in_shape = a.shape();
  return autograd::record("expand", out, {a}, [in_shape](const Tensor& g) { return std::vector<Tensor>{sum_to(g, in_shape)}; });
}

Tensor unsqueeze(const Tensor& a, int64_t dim) {
  int64_t d = dim < 0 ? dim + a.dim() + 1 : dim;
  BET_CHECK(d >= 0 && d <= a.dim(), "unsqueeze: dim ", dim, " out of range for rank ", a.dim());
  Shape shape = a.shape();
  shape.insert(shape.begin() + d, 1);
  return reshape(a, shape);
}

Tensor squeeze(const Tensor& a, int64_t dim) {
  int64_t d = normalize_dim(dim, a.dim(), "squeeze");
  BET_CHECK(a.shape()[d] == 1, "squeeze: dim ", d, " has size ", a.shape()[d], ", not 1");
  Shape shape = a.shape();
  shape.erase(shape.begin() + d);
  return reshape(a, shape);
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  BET_CHECK(g.dim() >= int64_t(shape.size()), "sum_to: cannot reduce ", shape_str(g.shape()), " to ", shape_str(shape));
  size_t lead = size_t(g.dim()) - shape.size();
  std::vector<int64_t> dims;
  for (size_t i = 0; i < size_t(g.dim()); ++i) {
    if (i < lead) dims.push_back(int64_t(i));
    else if (shape[i - lead] == 1 && g.shape()[i] != 1) dims.push_back(int64_t(i));
  }
  Tensor r = dims.empty() ? g : sum(g, dims, true);
  return reshape(r, shape);
}

}  // namespace bet
