// matmul and linear. Operands reach the kernel as strided views (a transposed weight
// or K^T is read in place), so the backward's transposes cost no copies either.
#include "engine/autocast.h"
#include "engine/ops.h"
#include "engine/ops/dispatch.h"
#include "kernels/copy.h"
#include "kernels/matmul.h"

namespace bet {

using ops_detail::dispatch;

namespace {

void check_float_pair(const Tensor& a, const Tensor& b, const char* op) {
  BET_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ: ", dtype_name(a.dtype()), " and ",
            dtype_name(b.dtype()), " (", shape_str(a.shape()), ", ", shape_str(b.shape()), ")");
  BET_CHECK(a.dtype() == DType::F32 || a.dtype() == DType::F64 || a.dtype() == DType::BF16, op, ": dtype ",
            dtype_name(a.dtype()), " not supported (f32, f64 or bf16)");
}

// `t` with leading size-1 dims added up to `rank` (metadata only, not recorded).
Tensor pad_rank(const Tensor& t, int64_t rank) {
  if (t.dim() == rank) return t;
  Shape shape(size_t(rank - t.dim()), 1), st(size_t(rank - t.dim()), 0);
  shape.insert(shape.end(), t.shape().begin(), t.shape().end());
  st.insert(st.end(), t.strides().begin(), t.strides().end());
  return make_view(t, shape, st, t.offset());
}

// Swaps the two innermost dims (metadata only, not recorded).
Tensor mT(const Tensor& t) {
  Shape shape = t.shape(), st = t.strides();
  std::swap(shape[shape.size() - 1], shape[shape.size() - 2]);
  std::swap(st[st.size() - 1], st[st.size() - 2]);
  return make_view(t, shape, st, t.offset());
}

// x [..., C] as a 2-D [rows, C] view when the leading dims merge without a copy,
// else a dense copy (not recorded: the caller records against x itself).
Tensor as_rows(kernels::Backend be, const Tensor& x) {
  const int64_t r = x.dim();
  const int64_t C = x.shape()[r - 1];
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < r; ++d) rows *= x.shape()[d];
  // The leading dims merge when each non-trivial one nests exactly around the next.
  bool ok = true;
  int64_t row_stride = -1, expect = 0;
  for (int64_t d = r - 2; d >= 0; --d) {
    if (x.shape()[d] == 1) continue;
    if (row_stride < 0) row_stride = x.strides()[d];
    else if (x.strides()[d] != expect) ok = false;
    expect = x.strides()[d] * x.shape()[d];
  }
  if (ok) return make_view(x, {rows, C}, {row_stride < 0 ? C : row_stride, x.strides()[r - 1]}, x.offset());
  Tensor c = Tensor::empty(x.shape(), x.dtype(), x.device());
  BET_KERNEL(be, copy(x, c));
  return make_view(c, {rows, C}, {C, 1}, 0);
}

bool autocast_bf16(const Tensor& a, const Tensor& b) {
  return autocast_dtype() == DType::BF16 && a.dtype() == DType::F32 && b.dtype() == DType::F32;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  if (a.defined() && b.defined() && autocast_bf16(a, b))
    return matmul(a.to(DType::BF16), b.to(DType::BF16)).to(DType::F32);
  BET_CHECK(a.defined() && b.defined(), "matmul: undefined operand");
  BET_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: operands must have at least 2 dims, got ",
            shape_str(a.shape()), " @ ", shape_str(b.shape()));
  const kernels::Backend be = dispatch("matmul", {&a, &b});
  check_float_pair(a, b, "matmul");
  const int64_t K = a.shape()[a.dim() - 1];
  BET_CHECK(K == b.shape()[b.dim() - 2], "matmul: inner dims differ: ", shape_str(a.shape()), " @ ",
            shape_str(b.shape()));
  const Shape a_batch(a.shape().begin(), a.shape().end() - 2);
  const Shape b_batch(b.shape().begin(), b.shape().end() - 2);
  Shape out_shape;
  if (a_batch == b_batch) {
    out_shape = a_batch;
  } else {
    size_t n = std::max(a_batch.size(), b_batch.size());
    out_shape.resize(n);
    for (size_t i = 0; i < n; ++i) {
      int64_t da = i < n - a_batch.size() ? 1 : a_batch[i - (n - a_batch.size())];
      int64_t db = i < n - b_batch.size() ? 1 : b_batch[i - (n - b_batch.size())];
      BET_CHECK(da == db || da == 1 || db == 1, "matmul: batch dims do not broadcast: ",
                shape_str(a.shape()), " @ ", shape_str(b.shape()));
      out_shape[i] = da == 1 ? db : da;
    }
  }
  out_shape.push_back(a.shape()[a.dim() - 2]);
  out_shape.push_back(b.shape()[b.dim() - 1]);
  const int64_t rank = int64_t(out_shape.size());

  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  BET_KERNEL(be, matmul(pad_rank(a, rank), pad_rank(b, rank), Tensor(), out));

  if (!autograd::needs_grad({&a, &b})) return out;
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  return autograd::record("matmul", out, {a, b}, [a, b, ga, gb](const Tensor& g) {
    Tensor da, db;
    if (ga) {
      da = sum_to(matmul(g, mT(b)), a.shape());
    }
    if (gb) {
      if (b.dim() == 2 && a.dim() > 2) {
        // One GEMM over every row of every batch instead of a batched GEMM and a sum.
        Tensor a2 = as_rows(dispatch("matmul backward", {&a, &g}), a);
        Tensor g2 = reshape(g, {-1, g.shape()[g.dim() - 1]});
        db = matmul(mT(a2), g2);
      } else {
        db = sum_to(matmul(mT(a), g), b.shape());
      }
    }
    return std::vector<Tensor>{da, db};
  });
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  BET_CHECK(x.defined() && weight.defined(), "linear: undefined operand");
  if (autocast_bf16(x, weight)) {
    // The bias is added in f32 after the bf16 product.
    Tensor y = linear(x.to(DType::BF16), weight.to(DType::BF16), Tensor()).to(DType::F32);
    return bias.defined() ? add(y, bias) : y;
  }
  BET_CHECK(weight.dim() == 2, "linear: weight must be [out, in], got ", shape_str(weight.shape()));
  BET_CHECK(x.dim() >= 1, "linear: input must have at least 1 dim, got ", shape_str(x.shape()));
  const kernels::Backend be = dispatch("linear", {&x, &weight, ops_detail::maybe(bias)});
  check_float_pair(x, weight, "linear");
  const int64_t in = weight.shape()[1], out_f = weight.shape()[0];
  BET_CHECK(x.shape()[x.dim() - 1] == in, "linear: input ", shape_str(x.shape()), " does not match weight ",
            shape_str(weight.shape()), " (in features ", in, ")");
  if (bias.defined()) {
    check_float_pair(x, bias, "linear");
    BET_CHECK(bias.dim() == 1 && bias.shape()[0] == out_f, "linear: bias ", shape_str(bias.shape()),
              " does not match weight ", shape_str(weight.shape()));
  }
  Tensor x2 = as_rows(be, x);
  const int64_t rows = x2.shape()[0];
  Tensor out2 = Tensor::empty({rows, out_f}, x.dtype(), x.device());
  BET_KERNEL(be, matmul(x2, mT(weight), bias, out2));
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  Tensor out = make_view(out2, out_shape, contiguous_strides(out_shape), 0);

  if (!autograd::needs_grad({&x, &weight, &bias})) return out;
  const bool gx = x.requires_grad(), gw = weight.requires_grad(), gbias = bias.defined() && bias.requires_grad();
  Shape x_shape = x.shape();
  return autograd::record("linear", out, {x, weight, bias},
                          [x2, weight, x_shape, gx, gw, gbias, out_f](const Tensor& g) {
    Tensor dx, dw, db;
    Tensor g2 = reshape(g, {-1, out_f});
    if (gx) dx = reshape(matmul(g2, weight), x_shape);
    if (gw) dw = matmul(mT(g2), x2);  // one GEMM over all tokens
    if (gbias) db = sum(g2, {0});
    return std::vector<Tensor>{dx, dw, db};
  });
}

}  // namespace bet
