// (op, device) -> kernel. An op calls BET_KERNEL(device, fn(args...)): the CPU
// kernel kernels::cpu::fn, or in a CUDA build, for a CUDA tensor, the kernel of the
// same name and contract in kernels::cuda. A CPU-only build compiles to the CPU
// call alone.
#pragma once
#include "bet_config.h"
#include "engine/tensor.h"

#if BET_HAVE_CUDA
#define BET_KERNEL(device, call)              \
  do {                                        \
    if ((device).is_cuda()) {                 \
      ::bet::kernels::cuda::call;             \
    } else {                                  \
      ::bet::kernels::cpu::call;              \
    }                                         \
  } while (0)
#else
#define BET_KERNEL(device, call) ::bet::kernels::cpu::call
#endif

namespace bet::ops_detail {

// The tensor lives where this build can compute: the CPU, or a GPU in a CUDA build.
inline void check_device(const Tensor& t, const char* op) {
#if BET_HAVE_CUDA
  (void)t;
  (void)op;
#else
  BET_CHECK(t.device().is_cpu(), op, ": not available on ", t.device().str(), " in this build");
#endif
}

inline void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  BET_CHECK(a.device() == b.device(), op, ": tensors on different devices: ", a.device().str(), " ",
            shape_str(a.shape()), " and ", b.device().str(), " ", shape_str(b.shape()));
}

}  // namespace bet::ops_detail
