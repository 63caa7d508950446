// Rotary embedding and dropout: elementwise maps whose coefficients (the rotation
// angles, the Philox mask) are recomputed rather than stored, so the backward needs
// nothing saved but the positions / (seed, offset). Implemented by
// kernels/cpu/rope_dropout.cpp and kernels/cuda/rope_dropout.cu.
#pragma once
#include <cstdint>

#include "kernels/tensor_ref.h"

namespace bet::kernels {

namespace contract {
// Rotary embedding on contiguous x [B, H, S, hd] with f64 contiguous positions
// [Bp, S] (Bp = B or 1) on x's device. `inverse` rotates by the negative angle (the
// backward). f32 and f64.
using rope = void(const TensorRef& x, const TensorRef& positions, double base, bool inverse, const TensorRef& out);
// out[i] = philox_uniform(seed, offset + i) >= p ? x[i] / (1 - p) : 0 over contiguous
// x: the same mask, bit for bit, on both backends.
using dropout = void(const TensorRef& x, double p, uint64_t seed, uint64_t offset, const TensorRef& out);
}  // namespace contract

namespace cpu {
contract::rope rope;
contract::dropout dropout;
}  // namespace cpu
namespace cuda {
contract::rope rope;
contract::dropout dropout;
}  // namespace cuda

}  // namespace bet::kernels
