// A reference-counted block of device memory. Views share one Storage.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>

#include "platform/device.h"
#include "platform/memory.h"  // DeviceAllocatorHooks, register_cuda_allocator

namespace bet {

class Storage {
 public:
  // Memory from the device's caching allocator (platform/memory.h).
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
  std::function<void(void*)> release_;
};

}  // namespace bet
