// A reference-counted block of device memory. Views share one Storage.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>

#include "engine/device.h"

namespace bet {

class Storage {
 public:
  // Memory from the device's caching allocator.
  static std::shared_ptr<Storage> allocate(size_t nbytes, Device device);
  // Memory owned elsewhere (a mapped file, a caller's buffer); `release` runs on destruction.
  static std::shared_ptr<Storage> wrap(void* data, size_t nbytes, Device device,
                                       std::function<void(void*)> release = {});

  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  Storage() = default;
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  size_t capacity_ = 0;
  Device device_;
  bool host_backed_ = false;  // from the host allocator (the CPU, or an emulated device)
  std::function<void(void*)> release_;
};

// Hook for device backends: the CUDA build registers its allocator here.
struct DeviceAllocatorHooks {
  void* (*allocate)(size_t nbytes, int index, size_t* capacity) = nullptr;
  void (*release)(void* ptr, size_t capacity, int index) = nullptr;
};
void register_cuda_allocator(DeviceAllocatorHooks hooks);

}  // namespace bet
