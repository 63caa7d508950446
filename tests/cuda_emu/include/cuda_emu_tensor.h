// Tensor factories that fill on an emulated CUDA device (see cu2cpp.py: the .cu
// files' Tensor::full / zeros / ones are rewritten to these).
#pragma once
#include "engine/tensor.h"

namespace emu {
bet::Tensor tensor_full(const bet::Shape& shape, double value, bet::DType dtype, bet::Device device);
bet::Tensor tensor_zeros(const bet::Shape& shape, bet::DType dtype, bet::Device device);
bet::Tensor tensor_ones(const bet::Shape& shape, bet::DType dtype, bet::Device device);
}  // namespace emu
