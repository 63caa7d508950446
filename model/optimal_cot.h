// OptimalCoTLayer (model.md): from the mean of the context, an entropy H and a
// benefit gap R, and the chain-of-thought length the theory calls optimal,
// sqrt(n a / (H R)) log2(1/eps), clamped to [1, max_cot_length] as a float.
#pragma once
#include <cstdint>
#include <memory>

#include "model/context.h"
#include "model/module.h"

namespace bet::model {

struct CoTOutput {
  Tensor optimal_length;     // [B, S]
  Tensor reasoning_entropy;  // [B, S]: H_cot
};

class OptimalCoTLayer : public Module {
 public:
  OptimalCoTLayer(int64_t d_model, Generator& g, DType dtype = DType::F32);
  CoTOutput forward(const Tensor& x, const SeqContext& ctx) const;

  int64_t d_model;
  double a = 1.0, eps = 1e-6, max_cot_length = 512.0;
  std::shared_ptr<MLP2> entropy;  // MLP_H: D -> D/2 -> 1
  std::shared_ptr<MLP2> ratio;    // MLP_R: D -> D/2 -> 1
};

}  // namespace bet::model
