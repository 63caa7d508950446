// (op, device) -> kernel. An op calls BET_KERNEL(device, fn(args...)): the CPU
// kernel kernels::cpu::fn, or in a CUDA build, for a tensor on a real GPU, the
// kernel of the same name and contract in kernels::cuda. An emulated CUDA device
// (engine/device.h) runs the CPU kernel, inside a DeviceMemoryScope.
#pragma once
#include "bet_config.h"
#include "engine/tensor.h"

namespace bet {
// The tensor's kernels run on a GPU: a CUDA device in a CUDA build, not emulated.
inline bool runs_on_gpu(const Device& d) {
#if BET_HAVE_CUDA
  return d.is_cuda() && !cuda_emulated();
#else
  (void)d;
  return false;
#endif
}
}  // namespace bet

#if BET_HAVE_CUDA
#define BET_KERNEL(device, call)                 \
  do {                                           \
    if (::bet::runs_on_gpu(device)) {            \
      ::bet::kernels::cuda::call;                \
    } else {                                     \
      ::bet::DeviceMemoryScope bet_dms_;         \
      ::bet::kernels::cpu::call;                 \
    }                                            \
  } while (0)
#else
#define BET_KERNEL(device, call)           \
  do {                                     \
    ::bet::DeviceMemoryScope bet_dms_;     \
    ::bet::kernels::cpu::call;             \
  } while (0)
#endif

namespace bet::ops_detail {

// The tensor lives where this build can compute: the CPU, or a GPU in a CUDA build.
inline void check_device(const Tensor& t, const char* op) {
#if BET_HAVE_CUDA
  (void)t;
  (void)op;
#else
  BET_CHECK(t.device().is_cpu() || cuda_emulated(), op, ": not available on ", t.device().str(), " in this build");
#endif
}

inline void check_same_device(const Tensor& a, const Tensor& b, const char* op) {
  BET_CHECK(a.device() == b.device(), op, ": tensors on different devices: ", a.device().str(), " ",
            shape_str(a.shape()), " and ", b.device().str(), " ", shape_str(b.shape()));
}

}  // namespace bet::ops_detail
