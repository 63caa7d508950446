#include "engine/storage.h"

#include "bet_config.h"
#include "engine/allocator.h"
#include "engine/error.h"

#if BET_HAVE_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace bet {

namespace {
#if BET_HAVE_CUDA
// Installed statically rather than registered at start-up: a registration in a
// static library's object file would be dropped by the linker when nothing else
// refers to that object.
DeviceAllocatorHooks g_cuda_hooks{&kernels::cuda::device_allocate, &kernels::cuda::device_release};
#else
DeviceAllocatorHooks g_cuda_hooks;
#endif
}

void register_cuda_allocator(DeviceAllocatorHooks hooks) { g_cuda_hooks = hooks; }

std::shared_ptr<Storage> Storage::allocate(size_t nbytes, Device device) {
  std::shared_ptr<Storage> s(new Storage());
  s->nbytes_ = nbytes;
  s->device_ = device;
  if (device.is_cpu() || cuda_emulated()) {
    BET_CHECK(device.is_cpu() || device.index < cuda_device_count(), "Storage: no device ", device.str());
    s->host_backed_ = true;
    s->data_ = CachingAllocator::host().allocate(nbytes, &s->capacity_);
  } else {
    BET_CHECK(g_cuda_hooks.allocate, "Storage: this build has no CUDA backend (device ", device.str(), ")");
    s->data_ = g_cuda_hooks.allocate(nbytes, device.index, &s->capacity_);
  }
  return s;
}

std::shared_ptr<Storage> Storage::wrap(void* data, size_t nbytes, Device device,
                                       std::function<void(void*)> release) {
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = data;
  s->nbytes_ = nbytes;
  s->device_ = device;
  s->release_ = release ? std::move(release) : [](void*) {};
  return s;
}

Storage::~Storage() {
  if (release_) {
    release_(data_);
  } else if (host_backed_) {
    CachingAllocator::host().release(data_, capacity_);
  } else if (g_cuda_hooks.release) {
    g_cuda_hooks.release(data_, capacity_, device_.index);
  }
}

}  // namespace bet
