// Softmax, LayerNorm, cross-entropy, RoPE and dropout. Each forward is one fused
// kernel over contiguous rows; each backward is the matching fused kernel, fed with
// what the forward saved (softmax output, LayerNorm mean/rstd, log-sum-exp) or can
// recompute for free (rotation angles, the Philox mask).
#include "engine/ops.h"
#include "engine/ops/dispatch.h"
#include "kernels/layer_norm.h"
#include "kernels/rope_dropout.h"
#include "kernels/softmax.h"

namespace bet {

using ops_detail::dispatch;
using ops_detail::maybe;

namespace {

void expect_float(const Tensor& t, const char* op, const char* what) {
  BET_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64, op, ": ", what, " must be f32 or f64, got ",
            dtype_name(t.dtype()));
}

// A contiguous copy that the tape does not see: the op records its own backward
// against the original input, so the copy must not add a node of its own.
Tensor contig(const Tensor& t) { return t.is_contiguous() ? t : t.detach().contiguous(); }

// `mask` as a view with a's shape (stride 0 along broadcast dims); not differentiable.
Tensor expand_mask(const Tensor& mask, const Tensor& a, const char* op) {
  Shape bs = broadcast_shapes(mask.shape(), a.shape(), op);
  BET_CHECK(bs == a.shape(), op, ": mask ", shape_str(mask.shape()), " does not broadcast to input ",
            shape_str(a.shape()));
  const size_t lead = a.shape().size() - mask.shape().size();
  Shape st(a.shape().size(), 0);
  for (size_t i = lead; i < st.size(); ++i) st[i] = mask.shape()[i - lead] == 1 ? 0 : mask.strides()[i - lead];
  return make_view(mask, a.shape(), st, mask.offset());
}

Tensor swap_dims_view(const Tensor& t, int64_t d0, int64_t d1) {
  Shape sh = t.shape(), st = t.strides();
  std::swap(sh[size_t(d0)], sh[size_t(d1)]);
  std::swap(st[size_t(d0)], st[size_t(d1)]);
  return make_view(t, sh, st, t.offset());
}

Tensor softmax_impl(const Tensor& a, int64_t dim, const Tensor& mask, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  const kernels::Backend be = dispatch(op, {&a, maybe(mask)});
  expect_float(a, op, "input");
  if (a.dim() == 0) {
    BET_CHECK(dim == 0 || dim == -1, op, ": dim ", dim, " out of range for a 0-d tensor");
    Tensor m = mask.defined() ? reshape(expand_mask(mask, a, op), {1}) : Tensor();
    return reshape(softmax_impl(reshape(a, {1}), 0, m, log), {});
  }
  const int64_t d = normalize_dim(dim, a.dim(), op);
  Tensor m = mask.defined() ? expand_mask(mask, a, op) : Tensor();
  const int64_t last = a.dim() - 1;
  if (d != last) {
    // The kernel reduces over the last dim; move `dim` there through recorded views.
    Tensor mt = m.defined() ? swap_dims_view(m, d, last) : Tensor();
    return transpose(softmax_impl(transpose(a, d, last), last, mt, log), d, last);
  }
  Tensor x = contig(a);
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  BET_KERNEL(be, softmax_forward(x, m, out, log));
  if (!autograd::needs_grad({&a})) return out;
  Tensor y = out.detach();  // not `out` itself: its node would keep itself alive
  return autograd::record(op, out, {a}, [y, m, log, op](const Tensor& g) {
    const kernels::Backend gbe = dispatch(op, {&y, &g, maybe(m)});
    Tensor gi = Tensor::empty(y.shape(), y.dtype(), y.device());
    BET_KERNEL(gbe, softmax_backward(y, contig(g), m, gi, log));
    return std::vector<Tensor>{gi};
  });
}

}  // namespace

Tensor softmax(const Tensor& a, int64_t dim, const Tensor& mask) { return softmax_impl(a, dim, mask, false); }

Tensor log_softmax(const Tensor& a, int64_t dim, const Tensor& mask) { return softmax_impl(a, dim, mask, true); }

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  const kernels::Backend be = dispatch("layer_norm", {&x, maybe(weight), maybe(bias)});
  expect_float(x, "layer_norm", "input");
  BET_CHECK(x.dim() >= 1, "layer_norm: input must have at least one dim, got a 0-d tensor");
  BET_CHECK(eps >= 0, "layer_norm: eps must be >= 0, got ", eps);
  const int64_t D = x.shape().back();
  for (const Tensor* p : {&weight, &bias}) {
    if (!p->defined()) continue;
    const char* what = p == &weight ? "weight" : "bias";
    BET_CHECK(p->shape() == Shape{D}, "layer_norm: ", what, " ", shape_str(p->shape()), " does not match [", D,
              "] (input ", shape_str(x.shape()), ")");
    BET_CHECK(p->dtype() == x.dtype(), "layer_norm: ", what, " is ", dtype_name(p->dtype()), ", input is ",
              dtype_name(x.dtype()));
  }
  Tensor xc = contig(x);
  Tensor wc = weight.defined() ? contig(weight) : Tensor();
  Tensor bc = bias.defined() ? contig(bias) : Tensor();
  const int64_t rows = D == 0 ? 0 : x.numel() / D;
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({rows}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({rows}, x.dtype(), x.device());
  BET_KERNEL(be, layer_norm_forward(xc, wc, bc, eps, out, mean, rstd));
  if (!autograd::needs_grad({&x, &weight, &bias})) return out;
  const bool want_x = x.requires_grad();
  const bool want_w = weight.defined() && weight.requires_grad();
  const bool want_b = bias.defined() && bias.requires_grad();
  Tensor xs = xc.detach(), ws = wc.defined() ? wc.detach() : Tensor();
  return autograd::record("layer_norm", out, {x, weight, bias},
                          [xs, ws, mean, rstd, want_x, want_w, want_b](const Tensor& g) {
                            const kernels::Backend gbe = dispatch("layer_norm backward", {&xs, &g});
                            const int64_t Dg = xs.shape().back();
                            const Device dev = xs.device();
                            Tensor dx = want_x ? Tensor::empty(xs.shape(), xs.dtype(), dev) : Tensor();
                            Tensor dw = want_w ? Tensor::empty({Dg}, xs.dtype(), dev) : Tensor();
                            Tensor db = want_b ? Tensor::empty({Dg}, xs.dtype(), dev) : Tensor();
                            BET_KERNEL(gbe, layer_norm_backward(contig(g), xs, ws, mean, rstd, dx, dw, db));
                            return std::vector<Tensor>{dx, dw, db};
                          });
}

Tensor cross_entropy_sum(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  const kernels::Backend be = dispatch("cross_entropy_sum", {&logits, &targets});
  expect_float(logits, "cross_entropy_sum", "logits");
  BET_CHECK(logits.dim() == 2, "cross_entropy_sum: logits must be [N, C], got ", shape_str(logits.shape()));
  BET_CHECK(targets.dtype() == DType::I32 || targets.dtype() == DType::I64,
            "cross_entropy_sum: targets must be i32 or i64, got ", dtype_name(targets.dtype()));
  BET_CHECK(targets.dim() == 1 && targets.shape()[0] == logits.shape()[0], "cross_entropy_sum: targets ",
            shape_str(targets.shape()), " do not match logits ", shape_str(logits.shape()));
  BET_CHECK(logits.shape()[1] > 0 || logits.shape()[0] == 0, "cross_entropy_sum: logits ",
            shape_str(logits.shape()), " have no classes");
  Tensor lc = contig(logits), tc = contig(targets);
  Tensor lse = Tensor::empty({logits.shape()[0]}, logits.dtype(), logits.device());
  // The loss stays on the logits' device: no sync per step.
  Tensor out = Tensor::empty({}, logits.dtype(), logits.device());
  BET_KERNEL(be, cross_entropy_forward(lc, tc, ignore_index, lse, out));
  if (!autograd::needs_grad({&logits})) return out;
  Tensor ls = lc.detach();
  return autograd::record("cross_entropy_sum", out, {logits}, [ls, tc, lse, ignore_index](const Tensor& g) {
    const kernels::Backend gbe = dispatch("cross_entropy_sum backward", {&ls, &g});
    Tensor dl = Tensor::empty(ls.shape(), ls.dtype(), ls.device());
    BET_KERNEL(gbe, cross_entropy_backward(ls, tc, ignore_index, lse, g.contiguous(), dl));
    return std::vector<Tensor>{dl};
  });
}

int64_t count_valid(const Tensor& targets, int64_t ignore_index) {
  const kernels::Backend be = dispatch("count_valid", {&targets});
  BET_CHECK(targets.dtype() == DType::I32 || targets.dtype() == DType::I64,
            "count_valid: targets must be i32 or i64, got ", dtype_name(targets.dtype()));
  return BET_KERNEL(be, count_valid(contig(targets), ignore_index));
}

Tensor rope(const Tensor& x, const Tensor& positions, double base) {
  const kernels::Backend be = dispatch("rope", {&x, &positions});
  expect_float(x, "rope", "input");
  BET_CHECK(x.dim() == 4, "rope: input must be [B, H, S, hd], got ", shape_str(x.shape()));
  const int64_t B = x.shape()[0], S = x.shape()[2], hd = x.shape()[3];
  BET_CHECK(hd % 2 == 0, "rope: head dim must be even, got ", hd, " in ", shape_str(x.shape()));
  BET_CHECK(base > 0, "rope: base must be positive, got ", base);
  const bool per_row = positions.dim() == 2;
  BET_CHECK((positions.dim() == 1 && positions.shape()[0] == S) ||
                (per_row && positions.shape()[1] == S && (positions.shape()[0] == B || positions.shape()[0] == 1)),
            "rope: positions ", shape_str(positions.shape()), " must be [B, S] or [S] for input ",
            shape_str(x.shape()));
  Tensor pos = contig(positions.detach().to(DType::F64).to(x.device()));
  pos = make_view(pos, {per_row ? positions.shape()[0] : 1, S}, {S, 1}, pos.offset());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  BET_KERNEL(be, rope(contig(x), pos, base, false, out));
  return autograd::record("rope", out, {x}, [pos, base](const Tensor& g) {
    const kernels::Backend gbe = dispatch("rope backward", {&g, &pos});
    Tensor gi = Tensor::empty(g.shape(), g.dtype(), g.device());
    BET_KERNEL(gbe, rope(contig(g), pos, base, true, gi));
    return std::vector<Tensor>{gi};
  });
}

Tensor dropout(const Tensor& a, double p, bool training, uint64_t seed, uint64_t offset) {
  BET_CHECK(p >= 0.0 && p <= 1.0, "dropout: p must be in [0, 1], got ", p);
  if (!training || p == 0.0) return a;
  const kernels::Backend be = dispatch("dropout", {&a});
  expect_float(a, "dropout", "input");
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  BET_KERNEL(be, dropout(contig(a), p, seed, offset, out));
  // The backward applies the same mask: same (seed, offset), same logical order.
  return autograd::record("dropout", out, {a}, [p, seed, offset](const Tensor& g) {
    const kernels::Backend gbe = dispatch("dropout backward", {&g});
    Tensor gi = Tensor::empty(g.shape(), g.dtype(), g.device());
    BET_KERNEL(gbe, dropout(contig(g), p, seed, offset, gi));
    return std::vector<Tensor>{gi};
  });
}

}  // namespace bet
