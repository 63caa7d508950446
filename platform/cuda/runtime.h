// The CUDA runtime as the layers above see it: device discovery, memory, copies
// between host and device. Declarations only (no CUDA headers), so engine/ and the
// kernels' host code compile with the host compiler; the definitions are in
// platform/cuda/runtime.cu (built only with the CUDA backend). Kernels use the
// device-compiler helpers of runtime.cuh.
#pragma once
#include <cstddef>
#include <string>

namespace bet::platform::cuda {

// Number of usable GPUs: 0 when there is no driver or no device. Never throws and
// never prints; the first call initialises the runtime (later calls are cached).
int device_count();

// The caching device allocator (platform/device_allocator.h over cudaMalloc/cudaFree):
// the hooks platform/memory.cpp installs for CUDA storage.
void* device_allocate(size_t nbytes, int device, size_t* capacity);
void device_release(void* ptr, size_t capacity, int device);

// Copies of n contiguous bytes. Host memory is ordinary (pageable); the copies
// complete before they return, so the host may reuse or read its buffer at once.
void copy_host_to_device(void* dst, const void* src, size_t n, int device);
void copy_device_to_host(void* dst, const void* src, size_t n, int device);
void copy_device_to_device(void* dst, int dst_device, const void* src, int src_device, size_t n);

// What a benchmark reports about the card, and its dense bf16 peak (0 when unknown).
struct DeviceInfo {
  std::string name;
  int major = 0, minor = 0, sms = 0;
  double clock_mhz = 0;
  size_t memory_bytes = 0;
  double bf16_peak_tflops = 0;
};
DeviceInfo device_info(int device);

// Waits for every kernel issued to `device`.
void synchronize(int device);

}  // namespace bet::platform::cuda
