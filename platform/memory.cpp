#include "platform/memory.h"

#include <cstring>

#include "bet_config.h"
#include "platform/allocator.h"
#include "platform/error.h"

#if BET_HAVE_CUDA
#include "platform/cuda/runtime.h"
#endif

namespace bet {

namespace {
#if BET_HAVE_CUDA
// Installed statically rather than registered at start-up: a registration in a
// static library's object file would be dropped by the linker when nothing else
// refers to that object.
DeviceAllocatorHooks g_cuda_hooks{&platform::cuda::device_allocate, &platform::cuda::device_release};
#else
DeviceAllocatorHooks g_cuda_hooks;
#endif
}  // namespace

void register_cuda_allocator(DeviceAllocatorHooks hooks) { g_cuda_hooks = hooks; }

namespace platform {

bool host_backed(Device device) { return device.is_cpu() || cuda_emulated(); }

void* allocate(size_t nbytes, Device device, size_t* capacity) {
  if (host_backed(device)) {
    BET_CHECK(device.is_cpu() || device.index < cuda_device_count(), "Storage: no device ", device.str());
    return CachingAllocator::host().allocate(nbytes, capacity);
  }
  BET_CHECK(g_cuda_hooks.allocate, "Storage: this build has no CUDA backend (device ", device.str(), ")");
  return g_cuda_hooks.allocate(nbytes, device.index, capacity);
}

void release(void* ptr, size_t capacity, Device device) noexcept {
  if (host_backed(device)) {
    CachingAllocator::host().release(ptr, capacity);
  } else if (g_cuda_hooks.release) {
    g_cuda_hooks.release(ptr, capacity, device.index);
  }
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t n) {
  if (n == 0) return;
#if BET_HAVE_CUDA
  if (runs_on_gpu(src_device) || runs_on_gpu(dst_device)) {
    if (src_device.is_cpu()) cuda::copy_host_to_device(dst, src, n, dst_device.index);
    else if (dst_device.is_cpu()) cuda::copy_device_to_host(dst, src, n, src_device.index);
    else cuda::copy_device_to_device(dst, dst_device.index, src, src_device.index, n);
    return;
  }
#endif
  DeviceMemoryScope scope;  // host-backed on both sides: the CPU or an emulated device
  std::memcpy(dst, src, n);
}

}  // namespace platform
}  // namespace bet
