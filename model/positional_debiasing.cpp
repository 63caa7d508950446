#include "model/positional_debiasing.h"

#include <cmath>
#include <numbers>
#include <vector>

namespace bet::model {

PositionalDebiasing::PositionalDebiasing(int64_t d, int64_t nh, bool ident, Generator& g, DType dtype)
    : d_model(d), n_harmonics(nh), identity(ident) {
  BET_CHECK(d >= 2, "PositionalDebiasing: d_model must be at least 2, got ", d);
  // Periods 4 * 2^h must fit in int64 for the exact modular reduction below.
  BET_CHECK(nh >= 1 && nh <= 60, "PositionalDebiasing: n_harmonics must be in 1..60, got ", nh);
  harmonic_weights = register_parameter("harmonic_weights", Tensor::ones({nh}, dtype));
  detector = register_module("detector", std::make_shared<MLP2>(d, d / 2, nh, g, dtype));
  gate = register_module("gate", std::make_shared<Linear>(d, d, g, true, Linear::Init::Default, dtype));
  basis = register_module("basis", std::make_shared<Linear>(2 * nh, d, g, false, Linear::Init::Default, dtype));
  init_normal(basis->weight, g, 0.0, 0.02);
}

Tensor PositionalDebiasing::phi_table(const Tensor& positions, int64_t offset, DType dtype) const {
  std::vector<int64_t> pos = positions.to_vector<int64_t>();
  const int64_t nh = n_harmonics;
  std::vector<double> table(pos.size() * size_t(2 * nh));
  for (size_t i = 0; i < pos.size(); ++i) {
    for (int64_t h = 0; h < nh; ++h) {
      // Reduce t mod P_h in integers first: then a shift by any multiple of every
      // period gives bit-identical angles, not merely equal ones up to round-off.
      const int64_t P = period(h);
      int64_t r = (pos[i] % P + offset % P) % P;
      if (r < 0) r += P;
      const double angle = 2.0 * std::numbers::pi * double(r) / double(P);
      table[i * size_t(2 * nh) + size_t(2 * h)] = std::sin(angle);
      table[i * size_t(2 * nh) + size_t(2 * h + 1)] = std::cos(angle);
    }
  }
  Shape shape = positions.shape();
  shape.push_back(2 * nh);
  Tensor t = Tensor::from_vector<double>(table, shape);
  return (dtype == DType::F64 ? t : t.to(dtype)).to(positions.device());
}

DebiasOutput PositionalDebiasing::forward(const Tensor& x, const SeqContext& ctx, int64_t offset) const {
  BET_CHECK(x.dim() == 3 && x.size(2) == d_model, "PositionalDebiasing: expected x [B, S, ", d_model,
            "], got ", shape_str(x.shape()));
  BET_CHECK(ctx.mask.defined() && ctx.mask.dim() == 2 && ctx.mask.size(0) == x.size(0) &&
                ctx.mask.size(1) == x.size(1),
            "PositionalDebiasing: context mask does not match x ", shape_str(x.shape()));
  const int64_t B = x.size(0), S = x.size(1), nh = n_harmonics;
  DebiasOutput out;
  if (identity) {
    out.out = x;
    out.artifact_scores = Tensor::zeros({B, S, nh}, x.dtype(), x.device());
    out.artifact_magnitude = Tensor::zeros({B}, x.dtype(), x.device());
    out.correction_magnitude = Tensor::zeros({B}, x.dtype(), x.device());
    return out;
  }
  Tensor positions = ctx.positions.defined() ? ctx.positions : Tensor::arange(S).to(x.device());
  const bool pos_ok = positions.shape() == Shape{S} || positions.shape() == Shape{B, S};
  BET_CHECK(pos_ok,
            "PositionalDebiasing: positions ", shape_str(positions.shape()), " do not match x ",
            shape_str(x.shape()));
  Tensor phi = phi_table(positions, offset, x.dtype());  // [S, 2nh] or [B, S, 2nh]
  Shape pair_shape = phi.shape();
  pair_shape.back() = nh;
  pair_shape.push_back(2);

  // The detector's hidden layer and the gate both read x: one GEMM over both weights.
  auto first = split(fused_linear({detector->fc1.get(), gate.get()}, x), {d_model / 2, d_model}, 2);
  Tensor a = mul(sigmoid(detector->fc2->forward(relu(first[0]))), harmonic_weights);  // [B, S, nh]
  // psi = (a_0 sin_0, a_0 cos_0, a_1 sin_1, ...): each score scales its (sin, cos) pair.
  Tensor psi = reshape(mul(unsqueeze(a, 3), reshape(phi, pair_shape)), {B, S, 2 * nh});
  Tensor correction = mul(sigmoid(first[1]), basis->forward(psi));
  out.out = sub(x, correction);
  out.artifact_scores = a;

  autograd::NoGradGuard ng;
  Tensor mask = unsqueeze(ctx.mask.dtype() == x.dtype() ? ctx.mask : ctx.mask.to(x.dtype()), 2);
  Tensor n = clamp(sum(mask, {1, 2}), 1.0, INFINITY);  // [B]
  out.artifact_magnitude = div(sum(mul(a.detach(), mask), {1, 2}), mul(n, double(nh)));
  Tensor c = correction.detach();
  Tensor norms = sqrt(sum(mul(c, c), {2}, true));  // [B, S, 1]
  out.correction_magnitude = div(sum(mul(norms, mask), {1, 2}), n);
  return out;
}

}  // namespace bet::model
