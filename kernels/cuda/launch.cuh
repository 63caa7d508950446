// The one strided loop of the elementwise kernels: a grid-stride loop over the
// output's elements, each thread computing every operand's offset from the
// coalesced geometry (no division at all for contiguous operands, which coalesce to
// rank 1), 32-bit index arithmetic when the tensors allow it.
#pragma once
#include "kernels/cuda/common.cuh"

namespace bet::kernels::cuda {

template <int N, typename Idx, typename F>
__global__ void __launch_bounds__(kThreads) foreach_kernel(Geom<N> g, F f) {
  const Idx n = Idx(g.numel);
  const Idx step = Idx(gridDim.x) * Idx(blockDim.x);
  for (Idx i = Idx(blockIdx.x) * Idx(blockDim.x) + Idx(threadIdx.x); i < n; i += step) {
    Idx off[N];
    g.template offsets<Idx>(i, off);
    f(off);
  }
}

// Runs f(off) for every element; `f` is a __device__ lambda taking a pointer to N
// offsets (int32_t or int64_t: write it generic, `auto* off`).
template <int N, typename F>
void launch_foreach(const Geom<N>& g, F f) {
  if (g.numel == 0) return;
  const unsigned blocks = grid_for(g.numel);
  // 2^30 leaves headroom for i + step in 32 bits.
  if (g.numel < (int64_t(1) << 30) && g.fits_int32())
    foreach_kernel<N, int32_t><<<blocks, kThreads>>>(g, f);
  else
    foreach_kernel<N, int64_t><<<blocks, kThreads>>>(g, f);
  BET_CUDA_LAUNCHED("foreach");
}

// Nonzero test of a mask element of any dtype (a run-time switch: one kernel serves
// every mask dtype, and the branch is uniform across the warp).
__device__ __forceinline__ bool nonzero_at(const void* p, int64_t off, DType dt) {
  switch (dt) {
    case DType::F32: return static_cast<const float*>(p)[off] != 0.0f;
    case DType::F64: return static_cast<const double*>(p)[off] != 0.0;
    case DType::BF16: return float(static_cast<const bf16*>(p)[off]) != 0.0f;
    case DType::F16: return float(static_cast<const f16*>(p)[off]) != 0.0f;
    case DType::I32: return static_cast<const int32_t*>(p)[off] != 0;
    case DType::I64: return static_cast<const int64_t*>(p)[off] != 0;
  }
  return false;
}

}  // namespace bet::kernels::cuda
