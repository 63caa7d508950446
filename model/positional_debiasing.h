// PositionalDebiasing (model.md): removes periodic positional artefacts. Each token
// scores how strongly each of n_harmonics periods (4, 8, ..., 4 * 2^(nh-1)) shows in
// it; the scores weight that period's (sin, cos) at the token's position, a learned
// basis U maps them to D, and a gate decides how much to subtract.
// With pe = none there is nothing to remove: the module is the identity (its
// parameters stay registered so checkpoints have the same names).
#pragma once
#include <cstdint>
#include <memory>

#include "model/context.h"
#include "model/module.h"

namespace bet::model {

struct DebiasOutput {
  Tensor out;                   // [B, S, D]
  Tensor artifact_scores;       // [B, S, nh]
  // [B], not differentiable: mean score over valid tokens and harmonics; mean L2 norm
  // of the correction over valid tokens.
  Tensor artifact_magnitude, correction_magnitude;
};

class PositionalDebiasing : public Module {
 public:
  PositionalDebiasing(int64_t d_model, int64_t n_harmonics, bool identity, Generator& g,
                      DType dtype = DType::F32);
  // `position_offset` is added to every position (t = ctx.positions + offset).
  DebiasOutput forward(const Tensor& x, const SeqContext& ctx, int64_t position_offset = 0) const;

  // phi for the given positions (any shape P, integer dtype) -> [P..., 2 nh] in `dtype`,
  // interleaved (sin_0, cos_0, sin_1, cos_1, ...).
  Tensor phi_table(const Tensor& positions, int64_t position_offset, DType dtype) const;
  static int64_t period(int64_t h) { return int64_t(4) << h; }

  int64_t d_model, n_harmonics;
  bool identity;
  std::shared_ptr<MLP2> detector;  // MLP_A: D -> D/2 -> nh
  Tensor harmonic_weights;         // [nh], ones
  std::shared_ptr<Linear> gate;    // W_p, b_p: D -> D
  std::shared_ptr<Linear> basis;   // U: 2 nh -> D, no bias, N(0, 0.02)
};

}  // namespace bet::model
