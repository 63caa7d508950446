// Fused scaled-dot-product attention. On the CPU (and on an emulated CUDA device, and
// on a GPU where the fused kernels do not apply) it IS the composition the model used
// before the op existed, so its values and gradients stay bit-identical to that code
// (bf16 there: the composite in f32, rounded); on a GPU it runs the fused
// flash-attention kernels of kernels/cuda/attention.cu, which never materialise the
// S x S scores and record one backward node.
#include "engine/ops.h"
#include "engine/ops/dispatch.h"
#include "kernels/attention.h"

namespace bet {

using ops_detail::dispatch;

namespace {

// The [P, B, H, S, hd] contract; every message names the op and the shapes. Returns
// the backend of the operands' device.
kernels::Backend check_attention_args(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                                      double p) {
  BET_CHECK(q.defined() && k.defined() && v.defined(), "attention: q, k and v must be defined");
  BET_CHECK(q.dim() == 5, "attention: q must be [P, B, H, S, hd], got ", shape_str(q.shape()));
  BET_CHECK(k.shape() == q.shape(), "attention: k ", shape_str(k.shape()), " does not match q ",
            shape_str(q.shape()));
  const Shape& qs = q.shape();
  BET_CHECK(v.dim() == 5 && (v.shape()[0] == qs[0] || v.shape()[0] == 1) &&
                Shape(v.shape().begin() + 1, v.shape().end()) == Shape(qs.begin() + 1, qs.end()),
            "attention: v ", shape_str(v.shape()), " must be [", qs[0], " or 1, ", qs[1], ", ", qs[2], ", ", qs[3],
            ", ", qs[4], "] for q ", shape_str(qs));
  BET_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype(), "attention: dtypes differ: q ", dtype_name(q.dtype()),
            ", k ", dtype_name(k.dtype()), ", v ", dtype_name(v.dtype()));
  BET_CHECK(q.dtype() == DType::F32 || q.dtype() == DType::F64 || q.dtype() == DType::BF16, "attention: dtype ",
            dtype_name(q.dtype()), " not supported (f32, f64 or bf16)");
  const kernels::Backend be = dispatch("attention", {&q, &k, &v, ops_detail::maybe(mask)});
  if (mask.defined()) {
    const Shape scores{qs[0], qs[1], qs[2], qs[3], qs[3]};
    bool ok = mask.dim() <= 5;
    for (int64_t d = 0; ok && d < mask.dim(); ++d) {
      const int64_t m = mask.shape()[size_t(d)], s = scores[size_t(5 - mask.dim() + d)];
      ok = m == s || m == 1;
    }
    BET_CHECK(ok, "attention: mask ", shape_str(mask.shape()), " does not broadcast to the scores ",
              shape_str(scores), " (q ", shape_str(qs), ")");
  }
  BET_CHECK(p >= 0.0 && p <= 1.0, "attention: dropout p must be in [0, 1], got ", p);
  return be;
}

// Exactly the model's former sequence of ops (model/martingale_attention.cpp).
Tensor attention_composite(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, double p,
                           bool training, uint64_t seed, uint64_t offset) {
  Tensor scores = matmul(q, transpose(k, 3, 4));
  Tensor probs = softmax(scores, 4, mask);
  probs = dropout(probs, p, training, seed, offset);
  return matmul(probs, v);
}

// The kernels read rows of hd elements with unit stride; anything else is copied (off
// the tape: the op records against the original).
Tensor unit_last(const Tensor& t) {
  return t.shape()[4] == 1 || t.strides()[4] == 1 ? t.detach() : t.detach().contiguous();
}

// `mask` viewed as [P, B, H, S, S] with stride 0 along the dims it broadcasts over.
Tensor mask_view(const Tensor& mask, const Shape& scores) {
  const size_t lead = scores.size() - mask.shape().size();
  Shape st(scores.size(), 0);
  for (size_t i = lead; i < st.size(); ++i) st[i] = mask.shape()[i - lead] == 1 ? 0 : mask.strides()[i - lead];
  return make_view(mask.detach(), scores, st, mask.offset());
}

Tensor attention_fused(kernels::Backend be, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                       double p, uint64_t seed, uint64_t offset) {
  const Shape& qs = q.shape();
  Tensor qc = unit_last(q), kc = unit_last(k), vc = unit_last(v);
  Tensor m = mask.defined() ? mask_view(mask, {qs[0], qs[1], qs[2], qs[3], qs[3]}) : Tensor();
  Tensor out = Tensor::empty(qs, q.dtype(), q.device());
  Tensor lse = Tensor::empty({qs[0] * qs[1] * qs[2] * qs[3]}, DType::F32, q.device());
  BET_KERNEL(be, attention_forward(qc, kc, vc, m, p, seed, offset, out, lse));
  if (!autograd::needs_grad({&q, &k, &v})) return out;
  const bool gq = q.requires_grad(), gk = k.requires_grad(), gv = v.requires_grad();
  Tensor o = out.detach();  // not `out` itself: its node would keep itself alive
  return autograd::record("attention", out, {q, k, v},
                          [qc, kc, vc, m, o, lse, p, seed, offset, gq, gk, gv](const Tensor& g) {
                            const kernels::Backend gbe = dispatch("attention backward", {&qc, &g});
                            const Device dev = qc.device();
                            Tensor dq = gq ? Tensor::empty(qc.shape(), qc.dtype(), dev) : Tensor();
                            Tensor dk = gk || gv ? Tensor::empty(kc.shape(), kc.dtype(), dev) : Tensor();
                            Tensor dv = gk || gv ? Tensor::empty(vc.shape(), vc.dtype(), dev) : Tensor();
                            BET_KERNEL(gbe, attention_backward(qc, kc, vc, m, o, lse, g.contiguous(), p, seed,
                                                               offset, dq, dk, dv));
                            return std::vector<Tensor>{dq, gk ? dk : Tensor(), gv ? dv : Tensor()};
                          });
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, double dropout_p,
                 bool training, uint64_t seed, uint64_t offset) {
  const kernels::Backend be = check_attention_args(q, k, v, mask, dropout_p);
  if (BET_KERNEL(be, has_fused_attention(q)))
    return attention_fused(be, q, k, v, mask, training ? dropout_p : 0.0, seed, offset);
  if (q.dtype() == DType::BF16) {
    // softmax and dropout have no bf16 kernels: the composite runs in f32 (the casts
    // are recorded, so the gradients come back as bf16).
    return attention_composite(q.to(DType::F32), k.to(DType::F32), v.to(DType::F32), mask, dropout_p, training, seed,
                               offset)
        .to(DType::BF16);
  }
  return attention_composite(q, k, v, mask, dropout_p, training, seed, offset);
}

}  // namespace bet
