// Indexing: embedding, gather, index_select (one gather kernel; backward is its
// adjoint, a deterministic scatter-add), concat and split (copies and slices).
#include <numeric>

#include "engine/ops.h"
#include "engine/ops/dispatch.h"
#include "kernels/copy.h"
#include "kernels/index.h"

namespace bet {

using ops_detail::dispatch;

namespace {

void check_index_dtype(const Tensor& index, const char* op, const char* what) {
  BET_CHECK(index.dtype() == DType::I32 || index.dtype() == DType::I64, op, ": ", what, " must be i32 or i64, got ",
            dtype_name(index.dtype()), " ", shape_str(index.shape()));
}

// `index` (1-D, length = shape[dim]) seen as a tensor of `shape`, constant off `dim`.
Tensor expand_index(const Tensor& index, const Shape& shape, int64_t dim) {
  Shape st(shape.size(), 0);
  st[size_t(dim)] = index.strides()[0];
  return make_view(index, shape, st, index.offset());
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  BET_CHECK(weight.defined() && ids.defined(), "embedding: undefined operand");
  BET_CHECK(weight.dim() == 2, "embedding: weight must be [V, D], got ", shape_str(weight.shape()));
  BET_CHECK(is_floating(weight.dtype()), "embedding: weight must be floating, got ", dtype_name(weight.dtype()));
  check_index_dtype(ids, "embedding", "ids");
  const kernels::Backend be = dispatch("embedding", {&weight, &ids});
  const int64_t V = weight.shape()[0], D = weight.shape()[1];
  int64_t bad = 0;  // range check on the ids' device (on a GPU: one small read back)
  BET_CHECK(!BET_KERNEL(be, find_out_of_range(ids, V, &bad)), "embedding: id ", bad,
            " out of range for vocabulary size V = ", V, " (weight ", shape_str(weight.shape()), ", ids ",
            shape_str(ids.shape()), ")");
  // Flat ids: a view when contiguous, else one small copy.
  Tensor flat;
  const int64_t n = ids.numel();
  if (ids.is_contiguous()) {
    flat = make_view(ids, {n}, {1}, ids.offset());
  } else {
    Tensor c = Tensor::empty(ids.shape(), ids.dtype(), ids.device());
    BET_KERNEL(be, copy(ids, c));
    flat = make_view(c, {n}, {1}, 0);
  }
  Tensor out2 = Tensor::empty({n, D}, weight.dtype(), weight.device());
  BET_KERNEL(be, gather(weight, 0, expand_index(flat, {n, D}, 0), out2));
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor out = make_view(out2, out_shape, contiguous_strides(out_shape), 0);
  return autograd::record("embedding", out, {weight}, [flat, V, D, n](const Tensor& g) {
    const kernels::Backend gbe = dispatch("embedding backward", {&g, &flat});
    Tensor gw = Tensor::zeros({V, D}, g.dtype(), g.device());
    if (n * D == 0) return std::vector<Tensor>{gw};
    Tensor g2 = reshape(g, {n, D});
    BET_KERNEL(gbe, scatter_add(gw, 0, expand_index(flat, {n, D}, 0), g2));
    return std::vector<Tensor>{gw};
  });
}

Tensor gather(const Tensor& a, int64_t dim, const Tensor& index) {
  BET_CHECK(a.defined() && index.defined(), "gather: undefined operand");
  check_index_dtype(index, "gather", "index");
  const kernels::Backend be = dispatch("gather", {&a, &index});
  BET_CHECK(a.dim() >= 1 && index.dim() == a.dim(), "gather: index ", shape_str(index.shape()),
            " must have the rank of the input ", shape_str(a.shape()));
  const int64_t d = normalize_dim(dim, a.dim(), "gather");
  for (int64_t i = 0; i < a.dim(); ++i)
    BET_CHECK(i == d || index.shape()[i] <= a.shape()[i], "gather: index ", shape_str(index.shape()),
              " is larger than input ", shape_str(a.shape()), " in dim ", i);
  int64_t bad = 0;
  BET_CHECK(!BET_KERNEL(be, find_out_of_range(index, a.shape()[d], &bad)), "gather: index ", bad,
            " out of range for dim ", d, " of size ", a.shape()[d], " (input ", shape_str(a.shape()), ")");
  Tensor out = Tensor::empty(index.shape(), a.dtype(), a.device());
  BET_KERNEL(be, gather(a, d, index, out));
  Shape in_shape = a.shape();
  return autograd::record("gather", out, {a}, [index, d, in_shape](const Tensor& g) {
    const kernels::Backend gbe = dispatch("gather backward", {&g, &index});
    Tensor ga = Tensor::zeros(in_shape, g.dtype(), g.device());
    BET_KERNEL(gbe, scatter_add(ga, d, index, g));
    return std::vector<Tensor>{ga};
  });
}

Tensor index_select(const Tensor& a, int64_t dim, const Tensor& index) {
  BET_CHECK(a.defined() && index.defined(), "index_select: undefined operand");
  check_index_dtype(index, "index_select", "index");
  const kernels::Backend be = dispatch("index_select", {&a, &index});
  BET_CHECK(index.dim() == 1, "index_select: index must be 1-D, got ", shape_str(index.shape()));
  BET_CHECK(a.dim() >= 1, "index_select: input must have at least 1 dim, got ", shape_str(a.shape()));
  const int64_t d = normalize_dim(dim, a.dim(), "index_select");
  int64_t bad = 0;
  BET_CHECK(!BET_KERNEL(be, find_out_of_range(index, a.shape()[d], &bad)), "index_select: index ", bad,
            " out of range for dim ", d, " of size ", a.shape()[d], " (input ", shape_str(a.shape()), ")");
  Shape out_shape = a.shape();
  out_shape[size_t(d)] = index.shape()[0];
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  BET_KERNEL(be, gather(a, d, expand_index(index, out_shape, d), out));
  Shape in_shape = a.shape();
  return autograd::record("index_select", out, {a}, [index, d, in_shape](const Tensor& g) {
    const kernels::Backend gbe = dispatch("index_select backward", {&g, &index});
    Tensor ga = Tensor::zeros(in_shape, g.dtype(), g.device());
    BET_KERNEL(gbe, scatter_add(ga, d, expand_index(index, g.shape(), d), g));
    return std::vector<Tensor>{ga};
  });
}

Tensor concat(const std::vector<Tensor>& tensors, int64_t dim) {
  BET_CHECK(!tensors.empty(), "concat: no tensors given");
  const Tensor& first = tensors[0];
  BET_CHECK(first.defined(), "concat: tensor 0 is undefined");
  BET_CHECK(first.dim() >= 1, "concat: tensors must have at least 1 dim, got ", shape_str(first.shape()));
  const kernels::Backend be = dispatch("concat", {&first});
  const int64_t d = normalize_dim(dim, first.dim(), "concat");
  Shape out_shape = first.shape();
  out_shape[size_t(d)] = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    BET_CHECK(t.defined(), "concat: tensor ", i, " is undefined");
    dispatch("concat", {&first, &t});  // one device
    BET_CHECK(t.dtype() == first.dtype(), "concat: tensor ", i, " is ", dtype_name(t.dtype()), ", tensor 0 is ",
              dtype_name(first.dtype()));
    bool ok = t.dim() == first.dim();
    for (int64_t k = 0; ok && k < t.dim(); ++k) ok = k == d || t.shape()[k] == first.shape()[k];
    BET_CHECK(ok, "concat: tensor ", i, " has shape ", shape_str(t.shape()), ", tensor 0 has ",
              shape_str(first.shape()), "; they must agree except in dim ", d);
    out_shape[size_t(d)] += t.shape()[size_t(d)];
  }
  Tensor out = Tensor::empty(out_shape, first.dtype(), first.device());
  std::vector<int64_t> sizes;
  int64_t off = 0;
  for (const Tensor& t : tensors) {
    const int64_t n = t.shape()[size_t(d)];
    sizes.push_back(n);
    Shape sh = out_shape;
    sh[size_t(d)] = n;
    BET_KERNEL(be, copy(t, make_view(out, sh, out.strides(), off * out.strides()[size_t(d)])));
    off += n;
  }
  return autograd::record("concat", out, tensors, [sizes, d](const Tensor& g) {
    std::vector<Tensor> grads;
    int64_t o = 0;
    for (int64_t n : sizes) {
      grads.push_back(slice(g, d, o, o + n));
      o += n;
    }
    return grads;
  });
}

std::vector<Tensor> split(const Tensor& a, const std::vector<int64_t>& sizes, int64_t dim) {
  BET_CHECK(a.defined(), "split: undefined operand");
  BET_CHECK(a.dim() >= 1, "split: input must have at least 1 dim, got ", shape_str(a.shape()));
  const int64_t d = normalize_dim(dim, a.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    BET_CHECK(s >= 0, "split: negative size ", s);
    total += s;
  }
  BET_CHECK(total == a.shape()[size_t(d)], "split: sizes sum to ", total, " but dim ", d, " of ",
            shape_str(a.shape()), " has size ", a.shape()[size_t(d)]);
  std::vector<Tensor> parts;
  parts.reserve(sizes.size());
  int64_t off = 0;
  for (int64_t s : sizes) {
    parts.push_back(slice(a, d, off, off + s));
    off += s;
  }
  return parts;
}

}  // namespace bet
