// The CUDA runtime for device code (kernels/cuda/*.cu): error checks and the device
// guard. Device-compiler only; defined in platform/cuda/runtime.cu.
#pragma once
#include <cuda_runtime.h>

#include "platform/cuda/runtime.h"

namespace bet::platform::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t e, const char* what, const char* file, int line);

#define BET_CUDA_CHECK(expr)                                                            \
  do {                                                                                  \
    cudaError_t bet_cuda_err_ = (expr);                                                 \
    if (bet_cuda_err_ != cudaSuccess)                                                   \
      ::bet::platform::cuda::throw_cuda_error(bet_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a launch: configuration errors surface here, not at the next sync.
#define BET_CUDA_LAUNCHED(op) BET_CUDA_CHECK(cudaGetLastError())

// Makes `device` current for the scope (kernels launch on the current device).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
  int want_ = 0;
};

// Multiprocessor count of the current device (cached per device).
int sm_count();

}  // namespace bet::platform::cuda
