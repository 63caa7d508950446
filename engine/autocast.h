// Automatic mixed precision, torch.autocast's idea: inside an AutocastGuard(BF16),
// matmul and linear on f32 operands compute in bf16 (f32 accumulation, tensor cores
// on a GPU) and hand back f32. Everything else stays f32: softmax, norms, the loss,
// the optimizer and the master weights. The casts are ordinary recorded ops, so
// gradients reach the f32 tensors in f32. bf16 keeps f32's exponent range, so no loss
// scaling is needed (f16 would need it; the engine does not offer f16 autocast).
#pragma once
#include <string>

#include "platform/dtype.h"

namespace bet {

// The compute dtype of matmul/linear on this thread: F32 when autocast is off.
DType autocast_dtype();

class AutocastGuard {
 public:
  // BF16 turns autocast on, F32 off (nests; the previous state comes back on exit).
  explicit AutocastGuard(DType compute);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  DType prev_;
};

// "f32" or "bf16" (a --precision flag) -> the compute dtype; throws naming the value.
DType parse_precision(const std::string& s);

}  // namespace bet
