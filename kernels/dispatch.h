// (op, device) -> kernel.
//
// Each op family declares its kernels once, in kernels/<family>.h: one signature per
// kernel, as a function type in namespace kernels::contract, and the two backends
// that implement it with exactly that signature, kernels::cpu (kernels/cpu/
// <family>.cpp) and kernels::cuda (kernels/cuda/<family>.cu):
//
//   namespace contract { using copy = void(const TensorRef& src, const TensorRef& dst); }
//   namespace cpu { contract::copy copy; }    // declares void cpu::copy(const TensorRef&, ...)
//   namespace cuda { contract::copy copy; }
//
// A backend's definition that strays from the contract is a different function, and
// the build fails to link. BET_KERNEL(backend, fn(args...)) calls the backend's fn;
// in a CUDA build both calls are compiled, so they must also agree in type.
//
// The CPU backend runs the kernels of the CPU and of an emulated CUDA device
// (platform/device.h: host memory), inside a DeviceMemoryScope; the CUDA backend
// those of a real GPU, in a build with it.
#pragma once
#include <cstdint>

#include "bet_config.h"
#include "kernels/tensor_ref.h"
#include "platform/device.h"

namespace bet::kernels {

enum class Backend : uint8_t { CPU, CUDA };

// Whether this build has kernels for `d`: the CPU's always (also for an emulated
// device), CUDA's in a build with the CUDA backend.
inline bool has_backend(Device d) { return d.is_cpu() || BET_HAVE_CUDA || cuda_emulated(); }

// The backend that computes on `d`.
inline Backend backend_of(Device d) { return runs_on_gpu(d) ? Backend::CUDA : Backend::CPU; }

}  // namespace bet::kernels

#if BET_HAVE_CUDA
#define BET_KERNEL(backend, call)                         \
  ((backend) == ::bet::kernels::Backend::CUDA             \
       ? ::bet::kernels::cuda::call                       \
       : (::bet::DeviceMemoryScope(), ::bet::kernels::cpu::call))
#else
#define BET_KERNEL(backend, call) ((void)(backend), ::bet::DeviceMemoryScope(), ::bet::kernels::cpu::call)
#endif
