// Device discovery, the caching device allocator and host<->device copies.
#include <cuda_runtime.h>

#include <mutex>
#include <string>
#include <vector>

#include "platform/cuda/runtime.cuh"
#include "platform/device_allocator.h"
#include "platform/error.h"

namespace bet::platform::cuda {

void throw_cuda_error(cudaError_t e, const char* what, const char* file, int line) {
  fail("cuda: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ") in ", what, " at ", file, ":", line);
}

int device_count() {
  // cudaGetDeviceCount fails cleanly without a driver (cudaErrorInsufficientDriver)
  // or without a GPU (cudaErrorNoDevice); the sticky error is cleared so that it
  // does not surface at an unrelated later call.
  static const int n = [] {
    int c = 0;
    const cudaError_t e = cudaGetDeviceCount(&c);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return c;
  }();
  return n;
}

namespace {

void check_device(int device) {
  BET_CHECK(device >= 0 && device < device_count(), "cuda:", device, ": no such device (",
            device_count() == 0 ? std::string("no CUDA device available") : std::to_string(device_count()) + " found",
            ")");
}

void* backend_malloc(size_t n, int device) {
  DeviceGuard g(device);
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, n);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    return nullptr;
  }
  BET_CUDA_CHECK(e);
  return p;
}

void backend_free(void* p, int device) {
  DeviceGuard g(device);
  // Errors here mean a dead context (e.g. at exit); there is nothing to recover.
  (void)cudaFree(p);
  (void)cudaGetLastError();
}

DeviceCachingAllocator& allocator() {
  // Leaked: tensors in static storage may be released after the runtime shuts down.
  static DeviceCachingAllocator* a = new DeviceCachingAllocator({&backend_malloc, &backend_free});
  return *a;
}

}  // namespace

DeviceGuard::DeviceGuard(int device) : want_(device) {
  check_device(device);
  int cur = 0;
  BET_CUDA_CHECK(cudaGetDevice(&cur));
  if (cur != device) {
    BET_CUDA_CHECK(cudaSetDevice(device));
    prev_ = cur;
  }
}

DeviceGuard::~DeviceGuard() {
  if (prev_ >= 0) (void)cudaSetDevice(prev_);
}

int sm_count() {
  static std::mutex mu;
  static std::vector<int> counts;
  int dev = 0;
  BET_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  if (counts.empty()) counts.assign(size_t(device_count() > 0 ? device_count() : 1), 0);
  if (counts[size_t(dev)] == 0) {
    int n = 0;
    BET_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    counts[size_t(dev)] = n > 0 ? n : 1;
  }
  return counts[size_t(dev)];
}

void* device_allocate(size_t nbytes, int device, size_t* capacity) {
  check_device(device);
  return allocator().allocate(nbytes, device, capacity);
}

void device_release(void* ptr, size_t capacity, int device) { allocator().release(ptr, capacity, device); }

void copy_host_to_device(void* dst, const void* src, size_t n, int device) {
  if (n == 0) return;
  DeviceGuard g(device);
  BET_CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice));
}

void copy_device_to_host(void* dst, const void* src, size_t n, int device) {
  if (n == 0) return;
  DeviceGuard g(device);
  BET_CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost));
}

void copy_device_to_device(void* dst, int dst_device, const void* src, int src_device, size_t n) {
  if (n == 0) return;
  if (dst_device == src_device) {
    DeviceGuard g(dst_device);
    BET_CUDA_CHECK(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToDevice));
  } else {
    DeviceGuard g(dst_device);
    BET_CUDA_CHECK(cudaMemcpyPeer(dst, dst_device, src, src_device, n));
  }
}

void synchronize(int device) {
  DeviceGuard g(device);
  BET_CUDA_CHECK(cudaDeviceSynchronize());
}

DeviceInfo device_info(int device) {
  check_device(device);
  cudaDeviceProp p{};
  BET_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  int clock_khz = 0;
  (void)cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device);
  (void)cudaGetLastError();
  DeviceInfo d;
  d.name = p.name;
  d.major = p.major;
  d.minor = p.minor;
  d.sms = p.multiProcessorCount;
  d.clock_mhz = clock_khz / 1000.0;
  d.memory_bytes = p.totalGlobalMem;
  // Dense bf16 tensor-core FLOPs per SM per clock: 4096 on Hopper (989 TFLOP/s on an
  // H100 SXM: 132 SMs at 1.83 GHz), 2048 on Ampere A100; others unknown (0).
  const double per_sm_clock = d.major == 9 ? 4096.0 : (d.major == 8 && d.minor == 0) ? 2048.0 : 0.0;
  d.bf16_peak_tflops = per_sm_clock * d.sms * d.clock_mhz * 1e6 * 1e-12;
  return d;
}

}  // namespace bet::platform::cuda
