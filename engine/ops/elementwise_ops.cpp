// Elementwise ops: broadcasting binaries, scalar forms, unary maths, select ops.
// Backwards of broadcasting ops reduce the gradient back with sum_to.
#include <cmath>

#include "engine/ops.h"
#include "engine/ops/dispatch.h"
#include "kernels/elementwise.h"

namespace bet {

using kernels::BinaryOp;
using kernels::UnaryOp;
using ops_detail::dispatch;

namespace {

void check_float(const Tensor& t, const char* op) {
  BET_CHECK(is_floating(t.dtype()), op, ": needs a floating tensor, got ", dtype_name(t.dtype()));
}

void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  BET_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ: ", dtype_name(a.dtype()), " ",
            shape_str(a.shape()), " and ", dtype_name(b.dtype()), " ", shape_str(b.shape()));
}

// `t` viewed at the broadcast shape `s` (stride 0 along broadcast dims). Not recorded:
// the op's own backward reduces the gradient.
Tensor broadcast_view(const Tensor& t, const Shape& s) {
  if (t.shape() == s) return t;
  const size_t lead = s.size() - size_t(t.dim());
  Shape st(s.size(), 0);
  for (size_t i = lead; i < s.size(); ++i) {
    const int64_t d = t.shape()[i - lead];
    st[i] = (d == 1 && s[i] != 1) ? 0 : t.strides()[i - lead];
  }
  return make_view(t, s, st, t.offset());
}

bool wants(const Tensor& t) { return t.requires_grad(); }

Tensor run_binary(BinaryOp op, const char* name, const Tensor& a, const Tensor& b) {
  const kernels::Backend be = dispatch(name, {&a, &b});
  check_same_dtype(a, b, name);
  const Shape s = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(s, a.dtype(), a.device());
  BET_KERNEL(be, binary(op, broadcast_view(a, s), broadcast_view(b, s), out));
  return out;
}

Tensor run_unary(UnaryOp op, const char* name, const Tensor& a, double p0 = 0, double p1 = 0) {
  const kernels::Backend be = dispatch(name, {&a});
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  BET_KERNEL(be, unary(op, a, out, p0, p1));
  return out;
}

// g * f'(x) via the fused backward kernel (x is y for ops differentiated from y).
Tensor unary_grad(UnaryOp op, const Tensor& x, const Tensor& g, double p0 = 0, double p1 = 0) {
  const kernels::Backend be = dispatch("unary backward", {&x, &g});
  const Shape s = broadcast_shapes(x.shape(), g.shape(), "unary backward");
  Tensor out = Tensor::empty(s, g.dtype(), g.device());
  BET_KERNEL(be, unary_backward(op, broadcast_view(x, s), broadcast_view(g, s), out, p0, p1));
  return out;
}

// Records a unary op whose gradient is g * f'(saved), saved = input or output.
Tensor record_unary(const char* name, UnaryOp op, const Tensor& a, const Tensor& out, bool from_output,
                    double p0 = 0, double p1 = 0) {
  if (!autograd::needs_grad({&a})) return out;
  Tensor saved = from_output ? out.detach() : a.detach();
  return autograd::record(name, out, {a}, [op, saved, p0, p1](const Tensor& g) {
    return std::vector<Tensor>{unary_grad(op, saved, g, p0, p1)};
  });
}

Tensor float_unary(UnaryOp op, const char* name, const Tensor& a, bool from_output, double p0 = 0,
                   double p1 = 0) {
  dispatch(name, {&a});
  check_float(a, name);
  Tensor out = run_unary(op, name, a, p0, p1);
  return record_unary(name, op, a, out, from_output, p0, p1);
}

}  // namespace

// ---------------- binary ----------------

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = run_binary(BinaryOp::Add, "add", a, b);
  Shape sa = a.shape(), sb = b.shape();
  bool ga = wants(a), gb = wants(b);
  return autograd::record("add", out, {a, b}, [sa, sb, ga, gb](const Tensor& g) {
    return std::vector<Tensor>{ga ? sum_to(g, sa) : Tensor(), gb ? sum_to(g, sb) : Tensor()};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = run_binary(BinaryOp::Sub, "sub", a, b);
  Shape sa = a.shape(), sb = b.shape();
  bool ga = wants(a), gb = wants(b);
  return autograd::record("sub", out, {a, b}, [sa, sb, ga, gb](const Tensor& g) {
    return std::vector<Tensor>{ga ? sum_to(g, sa) : Tensor(), gb ? sum_to(neg(g), sb) : Tensor()};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = run_binary(BinaryOp::Mul, "mul", a, b);
  if (!autograd::needs_grad({&a, &b})) return out;
  bool ga = wants(a), gb = wants(b);
  Tensor da = gb ? a.detach() : Tensor(), db = ga ? b.detach() : Tensor();
  Shape sa = a.shape(), sb = b.shape();
  return autograd::record("mul", out, {a, b}, [da, db, sa, sb](const Tensor& g) {
    return std::vector<Tensor>{db.defined() ? sum_to(mul(g, db), sa) : Tensor(),
                               da.defined() ? sum_to(mul(g, da), sb) : Tensor()};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  dispatch("div", {&a, &b});
  check_float(a, "div");
  Tensor out = run_binary(BinaryOp::Div, "div", a, b);
  if (!autograd::needs_grad({&a, &b})) return out;
  bool ga = wants(a), gb = wants(b);
  Tensor db = b.detach(), dout = gb ? out.detach() : Tensor();
  Shape sa = a.shape(), sb = b.shape();
  return autograd::record("div", out, {a, b}, [ga, db, dout, sa, sb](const Tensor& g) {
    Tensor gq = div(g, db);  // d/da = g / b; d/db = -g * a / b^2 = -(g / b) * out
    return std::vector<Tensor>{ga ? sum_to(gq, sa) : Tensor(),
                               dout.defined() ? sum_to(neg(mul(gq, dout)), sb) : Tensor()};
  });
}

Tensor maximum(const Tensor& a, const Tensor& b) {
  Tensor out = run_binary(BinaryOp::Maximum, "maximum", a, b);
  if (!autograd::needs_grad({&a, &b})) return out;
  Tensor da = a.detach(), db = b.detach();
  Shape sa = a.shape(), sb = b.shape();
  return autograd::record("maximum", out, {a, b}, [da, db, sa, sb](const Tensor& g) {
    const kernels::Backend be = dispatch("maximum backward", {&da, &db, &g});
    const Shape& s = g.shape();
    Tensor ga = Tensor::empty(s, g.dtype(), g.device()), gb = Tensor::empty(s, g.dtype(), g.device());
    BET_KERNEL(be, maximum_backward(broadcast_view(da, s), broadcast_view(db, s), g, ga, gb));
    return std::vector<Tensor>{sum_to(ga, sa), sum_to(gb, sb)};
  });
}

// ---------------- scalar forms ----------------

Tensor add(const Tensor& a, double s) {
  Tensor out = run_unary(UnaryOp::AddScalar, "add", a, s);
  return autograd::record("add_scalar", out, {a}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor mul(const Tensor& a, double s) {
  Tensor out = run_unary(UnaryOp::MulScalar, "mul", a, s);
  return autograd::record("mul_scalar", out, {a}, [s](const Tensor& g) { return std::vector<Tensor>{mul(g, s)}; });
}

Tensor rsub(double s, const Tensor& a) {
  Tensor out = run_unary(UnaryOp::RSubScalar, "rsub", a, s);
  return autograd::record("rsub", out, {a}, [](const Tensor& g) { return std::vector<Tensor>{neg(g)}; });
}

Tensor neg(const Tensor& a) {
  Tensor out = run_unary(UnaryOp::Neg, "neg", a);
  return autograd::record("neg", out, {a}, [](const Tensor& g) { return std::vector<Tensor>{neg(g)}; });
}

// ---------------- unary maths ----------------

Tensor exp(const Tensor& a) { return float_unary(UnaryOp::Exp, "exp", a, true); }
Tensor log(const Tensor& a) { return float_unary(UnaryOp::Log, "log", a, false); }
Tensor sqrt(const Tensor& a) { return float_unary(UnaryOp::Sqrt, "sqrt", a, true); }
Tensor tanh(const Tensor& a) { return float_unary(UnaryOp::Tanh, "tanh", a, true); }
Tensor sigmoid(const Tensor& a) { return float_unary(UnaryOp::Sigmoid, "sigmoid", a, true); }
Tensor gelu(const Tensor& a) { return float_unary(UnaryOp::Gelu, "gelu", a, false); }
Tensor softplus(const Tensor& a) { return float_unary(UnaryOp::Softplus, "softplus", a, false); }

Tensor pow(const Tensor& a, double exponent) { return float_unary(UnaryOp::Pow, "pow", a, false, exponent); }

Tensor relu(const Tensor& a) {
  Tensor out = run_unary(UnaryOp::Relu, "relu", a);
  return record_unary("relu", UnaryOp::Relu, a, out, false);
}

Tensor abs(const Tensor& a) {
  Tensor out = run_unary(UnaryOp::Abs, "abs", a);
  return record_unary("abs", UnaryOp::Abs, a, out, false);
}

Tensor clamp(const Tensor& a, double lo, double hi) {
  BET_CHECK(!(lo > hi), "clamp: lo ", lo, " > hi ", hi);
  Tensor out = run_unary(UnaryOp::Clamp, "clamp", a, lo, hi);
  return record_unary("clamp", UnaryOp::Clamp, a, out, false, lo, hi);
}

// ---------------- selection ----------------

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  const kernels::Backend be = dispatch("where", {&a, &b, &cond});
  check_same_dtype(a, b, "where");
  const Shape s = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = Tensor::empty(s, a.dtype(), a.device());
  BET_KERNEL(be, where(broadcast_view(cond, s), broadcast_view(a, s), broadcast_view(b, s), out));
  if (!autograd::needs_grad({&a, &b})) return out;
  Tensor c = cond.detach();
  Shape sa = a.shape(), sb = b.shape();
  bool ga = wants(a), gb = wants(b);
  return autograd::record("where", out, {a, b}, [c, sa, sb, ga, gb](const Tensor& g) {
    Tensor zero = Tensor::zeros({}, g.dtype(), g.device());
    return std::vector<Tensor>{ga ? sum_to(where(c, g, zero), sa) : Tensor(),
                               gb ? sum_to(where(c, zero, g), sb) : Tensor()};
  });
}

Tensor masked_fill(const Tensor& a, const Tensor& mask, double value) {
  const kernels::Backend be = dispatch("masked_fill", {&a, &mask});
  const Shape s = broadcast_shapes(a.shape(), mask.shape(), "masked_fill");
  BET_CHECK(s == a.shape(), "masked_fill: mask ", shape_str(mask.shape()), " does not broadcast to ",
            shape_str(a.shape()));
  Tensor out = Tensor::empty(s, a.dtype(), a.device());
  BET_KERNEL(be, masked_fill(a, broadcast_view(mask, s), value, out));
  if (!autograd::needs_grad({&a})) return out;
  Tensor m = mask.detach();
  return autograd::record("masked_fill", out, {a}, [m](const Tensor& g) {
    return std::vector<Tensor>{masked_fill(g, m, 0.0)};
  });
}

}  // namespace bet
