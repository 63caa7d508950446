// Kernels that exercise the emulator itself (tests/cuda_emu/test_cuda_emu_selftest.cpp):
// correct uses of its features, and deliberately broken ones it must report. Written
// as CUDA and translated like kernels/cuda/*.cu.
#include <cuda_runtime.h>

#include <cstdint>

#include "tests/cuda_emu/emu_selftest.h"

namespace emu_selftest {

namespace {

// Block-wide inclusive scan in shared memory (Hillis-Steele), then a warp-shuffle
// reduction of each warp: uses static shared memory, barriers and shuffles.
__global__ void __launch_bounds__(256) scan_kernel(const int* in, int* scan, int* warp_sums, int n) {
  __shared__ int buf[2][256];
  const int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  int v = i < n ? in[i] : 0;
  int cur = 0;
  buf[cur][t] = v;
  __syncthreads();
  for (int o = 1; o < int(blockDim.x); o <<= 1) {
    const int x = buf[cur][t] + (t >= o ? buf[cur][t - o] : 0);
    cur ^= 1;
    buf[cur][t] = x;
    __syncthreads();
  }
  if (i < n) scan[i] = buf[cur][t];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if ((t & 31) == 0) warp_sums[i / 32] = v;
}

// Dynamic shared memory reversed through the block; `sync` false drops the barrier
// between the writes and the reads (a race: some reads see the poison).
__global__ void reverse_kernel(const float* in, float* out, bool sync) {
  extern __shared__ float tile[];
  const int t = threadIdx.x;
  tile[t] = in[blockIdx.x * blockDim.x + t];
  if (sync) __syncthreads();
  out[blockIdx.x * blockDim.x + t] = tile[blockDim.x - 1 - t];
}

// Odd threads wait at a different __syncthreads than even ones.
__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x & 1) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// Lane 31 exits before the full-mask shuffle of the others.
__global__ void exited_lane_shuffle_kernel(int* out) {
  if (threadIdx.x == 31) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, int(threadIdx.x), 1);
}

__global__ void __launch_bounds__(64) bounded_kernel(int* out) { out[threadIdx.x] = 1; }

__global__ void atomics_kernel(unsigned long long* count, int* lowest, const int* v, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  atomicAdd(count, 1ull);
  atomicMin(lowest, v[i]);
}

__global__ void dims_kernel(int* out) {
  const int b = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const int t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  out[b * blockDim.x * blockDim.y * blockDim.z + t] = b * 1000 + t;
}

}  // namespace

cudaError_t scan(const int* in, int* scan_out, int* warp_sums, int n) {
  scan_kernel<<<(n + 255) / 256, 256>>>(in, scan_out, warp_sums, n);
  return cudaGetLastError();
}

cudaError_t reverse(const float* in, float* out, int blocks, int threads, bool sync) {
  reverse_kernel<<<blocks, threads, threads * sizeof(float)>>>(in, out, sync);
  return cudaGetLastError();
}

cudaError_t divergent_barrier(int* out) {
  divergent_barrier_kernel<<<1, 64>>>(out);
  return cudaGetLastError();
}

cudaError_t exited_lane_shuffle(int* out) {
  exited_lane_shuffle_kernel<<<1, 32>>>(out);
  return cudaGetLastError();
}

cudaError_t bounded(int* out, int threads) {
  bounded_kernel<<<1, threads>>>(out);
  return cudaGetLastError();
}

cudaError_t launch_config(int* out, unsigned grid_y, unsigned threads, size_t smem) {
  dims_kernel<<<dim3(1, grid_y), threads, smem>>>(out);
  return cudaGetLastError();
}

cudaError_t atomics(unsigned long long* count, int* lowest, const int* v, int n) {
  atomics_kernel<<<(n + 127) / 128, 128>>>(count, lowest, v, n);
  return cudaGetLastError();
}

cudaError_t dims(int* out, dim3 grid, dim3 block) {
  dims_kernel<<<grid, block>>>(out);
  return cudaGetLastError();
}

}  // namespace emu_selftest
