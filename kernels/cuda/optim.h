// Optimiser CUDA kernels: the contracts of engine/optim/optim_kernels.h (one fused
// pass per parameter, the same formulas and rounding of the scalars).
#pragma once
#include "engine/optim/optim_kernels.h"
#include "engine/tensor.h"

namespace bet::kernels::cuda {

void adamw_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, const cpu::AdamWScalars& s);
void sgd_step(const Tensor& p, const Tensor& g, const Tensor& buf, const cpu::SGDScalars& s);
// Sum of squares in double over fixed blocks (deterministic); one device-to-host read.
double sum_squares(const Tensor& x);
void scale_(const Tensor& x, double s);

}  // namespace bet::kernels::cuda
