// Emulated device memory is host memory that the host may not touch: outside the
// emulator's own accesses it is mapped PROT_NONE, so host code that dereferences a
// device pointer (a tensor's data() on a cuda tensor, say) faults here as it would
// on a GPU, and the emulator's SIGSEGV handler names the address before the process
// dies. On in the -Dcuda=emulated build, off for test_cuda_emu in a CPU-only build;
// BET_CUDA_EMU_HOST_GUARD=1 / =0 forces it either way.
#pragma once

namespace emu {

// While one is alive (on any thread), device memory is readable and writable: kernel
// launches, copies, memsets, the cuBLAS and CUB stand-ins open one.
class DeviceAccess {
 public:
  DeviceAccess();
  ~DeviceAccess();
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;
};

}  // namespace emu
