// The emulator itself: its barriers, shuffles, shared memory, atomics and launch
// geometry compute what CUDA defines (emu_selftest.cu), and the faults it exists to
// catch (a race on shared memory, divergent barriers, a shuffle with an exited lane,
// launch limits, host pointers, wrong copy directions) are reported, not passed over.
// Also the 16-bit conversions and the cuBLAS / CUB stand-ins' contracts.
#include <doctest/doctest.h>

#include <cub/device/device_radix_sort.cuh>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/bf16.h"
#include "tests/cuda_emu/emu_selftest.h"
#include "tests/cuda_emu/emu_stats.h"

namespace {

template <typename T>
T* dev_alloc(size_t n) {
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess);
  return static_cast<T*>(p);
}
template <typename T>
T* upload(const std::vector<T>& v) {
  T* p = dev_alloc<T>(v.size());
  REQUIRE(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  return p;
}
template <typename T>
std::vector<T> download(const T* p, size_t n) {
  std::vector<T> v(n);
  REQUIRE(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  return v;
}

// Runs `f`, which must return `want` and make the runtime report exactly one error
// (also left as the last error unless f read it).
template <typename F>
void expect_error(cudaError_t want, F f) {
  const long before = emu::stats().errors;
  CHECK(f() == want);
  CHECK(emu::stats().errors == before + 1);
  const cudaError_t last = cudaGetLastError();
  CHECK((last == want || last == cudaSuccess));
  CHECK(cudaGetLastError() == cudaSuccess);
}

}  // namespace

TEST_CASE("emulator: block scan through shared memory and barriers, warp shuffles") {
  const int n = 1000;
  std::vector<int> in(n);
  for (int i = 0; i < n; ++i) in[size_t(i)] = (i * 7919) % 13 - 6;
  int* din = upload(in);
  int* dscan = dev_alloc<int>(n);
  int* dwarp = dev_alloc<int>(1024 / 32);
  REQUIRE(emu_selftest::scan(din, dscan, dwarp, n) == cudaSuccess);
  const std::vector<int> scan = download(dscan, n), warp = download(dwarp, 1024 / 32);
  int run = 0;
  for (int i = 0; i < n; ++i) {
    run = (i % 256 == 0 ? 0 : run) + in[size_t(i)];
    CHECK(scan[size_t(i)] == run);
  }
  for (int w = 0; w < n / 32 + 1; ++w) {
    int s = 0;
    for (int i = 32 * w; i < std::min(n, 32 * w + 32); ++i) s += in[size_t(i)];
    CHECK(warp[size_t(w)] == s);
  }
  for (void* p : {static_cast<void*>(din), static_cast<void*>(dscan), static_cast<void*>(dwarp)})
    CHECK(cudaFree(p) == cudaSuccess);
}

TEST_CASE("emulator: dynamic shared memory; a missing __syncthreads reads the poison") {
  const int blocks = 3, threads = 96;
  std::vector<float> in(blocks * threads);
  for (size_t i = 0; i < in.size(); ++i) in[i] = float(i);
  float* din = upload(in);
  float* dout = dev_alloc<float>(in.size());
  REQUIRE(emu_selftest::reverse(din, dout, blocks, threads, true) == cudaSuccess);
  std::vector<float> out = download(dout, in.size());
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t) CHECK(out[size_t(b * threads + t)] == in[size_t(b * threads + threads - 1 - t)]);
  REQUIRE(emu_selftest::reverse(din, dout, blocks, threads, false) == cudaSuccess);
  out = download(dout, in.size());
  // Without the barrier a thread reads its partner's slot before the partner wrote it
  // in one of the two resume orders (even blocks forward, odd reversed): in every block.
  for (int b = 0; b < blocks; ++b) {
    int nan = 0;
    for (int t = 0; t < threads; ++t) nan += std::isnan(out[size_t(b * threads + t)]);
    CHECK(nan == threads / 2);
  }
  CHECK(cudaFree(din) == cudaSuccess);
  CHECK(cudaFree(dout) == cudaSuccess);
}

TEST_CASE("emulator: faults of device code fail the launch") {
  int* d = dev_alloc<int>(256);
  expect_error(cudaErrorLaunchFailure, [&] { return emu_selftest::divergent_barrier(d); });
  expect_error(cudaErrorLaunchFailure, [&] { return emu_selftest::exited_lane_shuffle(d); });
  CHECK(emu_selftest::bounded(d, 64) == cudaSuccess);
  expect_error(cudaErrorLaunchFailure, [&] { return emu_selftest::bounded(d, 128); });
  CHECK(cudaFree(d) == cudaSuccess);
}

TEST_CASE("emulator: launch limits, shared memory opt-in, kernel arguments that are not device memory") {
  int* d = dev_alloc<int>(4096);
  CHECK(emu_selftest::launch_config(d, 2, 1024, 48 * 1024) == cudaSuccess);
  expect_error(cudaErrorInvalidConfiguration, [&] { return emu_selftest::launch_config(d, 70000, 32, 0); });
  expect_error(cudaErrorInvalidConfiguration, [&] { return emu_selftest::launch_config(d, 1, 2048, 0); });
  expect_error(cudaErrorInvalidConfiguration, [&] { return emu_selftest::launch_config(d, 0, 32, 0); });
  expect_error(cudaErrorInvalidValue, [&] { return emu_selftest::launch_config(d, 1, 32, 48 * 1024 + 4); });
  std::vector<int> host(64);
  expect_error(cudaErrorIllegalAddress, [&] { return emu_selftest::launch_config(host.data(), 1, 32, 0); });
  CHECK(cudaFree(d) == cudaSuccess);
}

TEST_CASE("emulator: atomics and 3-d grid / block indices") {
  const int n = 1000;
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[size_t(i)] = (i * 37) % 1001 - 500;
  int* dv = upload(v);
  unsigned long long* count = upload(std::vector<unsigned long long>{5});
  int* lowest = upload(std::vector<int>{1000});
  REQUIRE(emu_selftest::atomics(count, lowest, dv, n) == cudaSuccess);
  CHECK(download(count, 1)[0] == 5 + n);
  CHECK(download(lowest, 1)[0] == *std::min_element(v.begin(), v.end()));
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  int* d = dev_alloc<int>(12 * 24);
  REQUIRE(emu_selftest::dims(d, grid, block) == cudaSuccess);
  const std::vector<int> out = download(d, 12 * 24);
  for (int i = 0; i < 12 * 24; ++i) CHECK(out[size_t(i)] == (i / 24) * 1000 + i % 24);
  for (void* p : {static_cast<void*>(dv), static_cast<void*>(count), static_cast<void*>(lowest), static_cast<void*>(d)})
    CHECK(cudaFree(p) == cudaSuccess);
}

TEST_CASE("emulator: copies and frees check the kind of memory") {
  int* d = dev_alloc<int>(16);
  std::vector<int> h(16, 1);
  expect_error(cudaErrorInvalidValue, [&] { return cudaMemcpy(d, h.data(), 64, cudaMemcpyDeviceToHost); });
  expect_error(cudaErrorInvalidValue, [&] { return cudaMemcpy(h.data(), d, 64, cudaMemcpyHostToDevice); });
  expect_error(cudaErrorInvalidValue, [&] { return cudaMemcpy(d, h.data(), 68, cudaMemcpyHostToDevice); });
  expect_error(cudaErrorInvalidValue, [&] { return cudaMemset(h.data(), 0, 4); });
  expect_error(cudaErrorInvalidValue, [&] { return cudaFree(h.data()); });
  CHECK(cudaMemcpy(d, h.data(), 64, cudaMemcpyHostToDevice) == cudaSuccess);
  CHECK(cudaFree(d) == cudaSuccess);
  expect_error(cudaErrorInvalidValue, [&] { return cudaFree(d); });  // twice
}

TEST_CASE("emulator: bf16 and f16 conversions round to nearest even") {
  // f32 -> bf16 against the CPU's BF16 (the engine's own rounding), on random bit
  // patterns and every tie of one binade; NaN becomes the device's canonical 0x7fff.
  std::mt19937 rng(7);
  int bf16_wrong = 0;
  for (int i = 0; i < 200000; ++i) {
    const uint32_t u = rng();
    float f;
    std::memcpy(&f, &u, 4);
    const uint16_t got = __bfloat16_as_ushort(__float2bfloat16_rn(f));
    bf16_wrong += std::isnan(f) ? got != 0x7fff : got != bet::kernels::cpu::BF16(f).bits;
    bf16_wrong += !std::isnan(f) && __bfloat162float(__float2bfloat16(f)) != float(bet::kernels::cpu::BF16(f));
  }
  CHECK(bf16_wrong == 0);
  for (uint32_t m = 0; m < 128; ++m) {  // 1 + (m + 1/2) 2^-7: the tie goes to the even neighbour
    const float tie = 1.0f + (float(m) + 0.5f) * 0x1p-7f;
    const float even = 1.0f + float(m + (m & 1)) * 0x1p-7f;
    CHECK(__bfloat162float(__float2bfloat16_rn(tie)) == even);
  }
  // f16: every finite half survives a round trip; every midpoint between neighbours
  // goes to the one with an even last bit.
  int half_wrong = 0;
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const float f = __half2float(__ushort_as_half(uint16_t(h)));
    half_wrong += __half_as_ushort(__float2half_rn(f)) != h;
    half_wrong += __half_as_ushort(__float2half_rn(-f)) != (h | 0x8000u);
    if (h + 1 < 0x7c00) {
      const float next = __half2float(__ushort_as_half(uint16_t(h + 1)));
      const double mid = (double(f) + double(next)) / 2;
      half_wrong += __half_as_ushort(__double2half(mid)) != ((h & 1) ? h + 1 : h);
    }
  }
  CHECK(half_wrong == 0);
  CHECK(__half_as_ushort(__float2half_rn(65520.0f)) == 0x7c00);
  CHECK(__half_as_ushort(__float2half_rn(-1e6f)) == 0xfc00);
}

TEST_CASE("emulator: the cuBLAS stand-in checks its arguments; the CUB sort is stable") {
  cublasHandle_t h;
  REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
  float* a = upload(std::vector<float>(64, 1.0f));
  const float one = 1.0f, zero = 0.0f;
  // m = 4, n = 4, k = 4; lda must be >= m for op N.
  CHECK(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, a, CUDA_R_32F, 4, 0, a, CUDA_R_32F, 4,
                                   0, &zero, a + 32, CUDA_R_32F, 4, 0, 1, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
  CHECK(download(a + 32, 16) == std::vector<float>(16, 4.0f));
  CHECK(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, a, CUDA_R_32F, 3, 0, a, CUDA_R_32F, 4,
                                   0, &zero, a + 32, CUDA_R_32F, 4, 0, 1, CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
  CHECK(cudaFree(a) == cudaSuccess);
  CHECK(cublasDestroy(h) == CUBLAS_STATUS_SUCCESS);

  const std::vector<int64_t> keys{5, 3, 5, 0, 3, 5, 1, 0};
  int64_t* k_in = upload(keys);
  int64_t* v_in = upload(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7});
  int64_t* k_out = dev_alloc<int64_t>(8);
  int64_t* v_out = dev_alloc<int64_t>(8);
  size_t temp = 0;
  REQUIRE(cub::DeviceRadixSort::SortPairs(nullptr, temp, k_in, k_out, v_in, v_out, 8, 0, 3) == cudaSuccess);
  void* t = nullptr;
  REQUIRE(cudaMalloc(&t, temp) == cudaSuccess);
  size_t short_temp = temp - 1;
  CHECK(cub::DeviceRadixSort::SortPairs(t, short_temp, k_in, k_out, v_in, v_out, 8, 0, 3) == cudaErrorInvalidValue);
  REQUIRE(cub::DeviceRadixSort::SortPairs(t, temp, k_in, k_out, v_in, v_out, 8, 0, 3) == cudaSuccess);
  CHECK(download(k_out, 8) == std::vector<int64_t>{0, 0, 1, 3, 3, 5, 5, 5});
  CHECK(download(v_out, 8) == std::vector<int64_t>{3, 7, 6, 1, 4, 0, 2, 5});
  for (void* p : {static_cast<void*>(k_in), static_cast<void*>(v_in), static_cast<void*>(k_out),
                  static_cast<void*>(v_out), t})
    CHECK(cudaFree(p) == cudaSuccess);
}
