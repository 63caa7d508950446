// Int8 inference ops (`betctl export --quantize int8`): the engine's face of
// kernels/quantized_matmul.h. Inference only: no autograd (an input that needs a
// gradient is an error), CPU f32 inputs (anything else: the caller's f32 path).
#pragma once
#include <memory>

#include "engine/tensor.h"
#include "kernels/cpu/matmul_int8.h"

namespace bet {

using Int8Linear = kernels::cpu::Int8Linear;

// Whether quantized_linear can take x (f32, on the CPU, last dim = in_features).
bool quantized_linear_supports(const Tensor& x, const Int8Linear& q);
// y [..., N] = x [..., K] through the int8 linear q (its bias included).
Tensor quantized_linear(const Tensor& x, const Int8Linear& q);

// The int8 form of weight [N, K] (f32) and bias [N] (f32, or undefined).
std::shared_ptr<const Int8Linear> quantize_linear_weights(const Tensor& weight, const Tensor& bias);

}  // namespace bet
