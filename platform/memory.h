// Memory of a device and copies between devices: what a tensor's Storage (engine)
// and a kernel's scratch space (kernels) allocate through. The CPU and an emulated
// device use the host caching allocator (platform/allocator.h); a GPU the CUDA
// caching allocator, installed as hooks (tests install their own).
#pragma once
#include <cstddef>

#include "platform/device.h"

namespace bet {

// Hook for device backends: the CUDA build installs its caching allocator here.
struct DeviceAllocatorHooks {
  void* (*allocate)(size_t nbytes, int index, size_t* capacity) = nullptr;
  void (*release)(void* ptr, size_t capacity, int index) = nullptr;
};
void register_cuda_allocator(DeviceAllocatorHooks hooks);

namespace platform {

// Host memory stands in for the device's: the CPU, or an emulated device.
bool host_backed(Device device);

// At least `nbytes` (0 allowed) of `device`'s memory, 64-byte aligned; `*capacity`
// receives the block size, which release() takes back. Throws bet::Error when the
// device has no memory to give (naming the device and the sizes).
void* allocate(size_t nbytes, Device device, size_t* capacity);
// Never throws (runs in destructors, also while an out-of-memory error unwinds).
void release(void* ptr, size_t capacity, Device device) noexcept;

// n dense bytes from `src` on `src_device` to `dst` on `dst_device` (either may be
// the CPU); complete when it returns.
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t n);

}  // namespace platform
}  // namespace bet
