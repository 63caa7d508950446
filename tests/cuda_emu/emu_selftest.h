// Host entry points of tests/cuda_emu/emu_selftest.cu (each launches one kernel and
// returns cudaGetLastError()).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

namespace emu_selftest {
cudaError_t scan(const int* in, int* scan_out, int* warp_sums, int n);
cudaError_t reverse(const float* in, float* out, int blocks, int threads, bool sync);
cudaError_t divergent_barrier(int* out);
cudaError_t exited_lane_shuffle(int* out);
cudaError_t bounded(int* out, int threads);
cudaError_t launch_config(int* out, unsigned grid_y, unsigned threads, size_t smem);
cudaError_t atomics(unsigned long long* count, int* lowest, const int* v, int n);
cudaError_t dims(int* out, dim3 grid, dim3 block);
}  // namespace emu_selftest
