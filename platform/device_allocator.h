// Caching allocator for device memory, independent of the backend that provides the
// memory (the CUDA backend passes cudaMalloc/cudaFree; tests pass malloc). Device
// allocation is slow and synchronising, so freed blocks are kept per (device, size
// class) and handed out again: a steady training loop allocates nothing after its
// first step.
//
// Blocks are reused at once on release. That is safe because every kernel of a
// device runs on one stream in issue order: work that reads a block before its
// release finishes before work issued after a new owner got it.
#pragma once
#include <cstddef>
#include <map>
#include <mutex>
#include <vector>

#include "platform/allocator.h"

namespace bet {

struct DeviceMemoryBackend {
  // Returns nullptr when the device is out of memory (other failures throw).
  void* (*malloc)(size_t nbytes, int device) = nullptr;
  void (*free)(void* ptr, int device) = nullptr;
};

class DeviceCachingAllocator {
 public:
  explicit DeviceCachingAllocator(DeviceMemoryBackend backend) : backend_(backend) {}
  ~DeviceCachingAllocator() = default;  // cached blocks die with the process
  DeviceCachingAllocator(const DeviceCachingAllocator&) = delete;
  DeviceCachingAllocator& operator=(const DeviceCachingAllocator&) = delete;

  // At least `nbytes` (0 allowed) on `device`; `*capacity` receives the block size.
  // On out-of-memory, returns the device's cached blocks to the backend and retries
  // once; then throws bet::Error naming the device and the sizes.
  void* allocate(size_t nbytes, int device, size_t* capacity);
  void release(void* ptr, size_t capacity, int device);
  // Returns every cached (free) block to the backend.
  void empty_cache();
  AllocatorStats stats(int device) const;

  // Size class of a request: 512-byte granules (the alignment of device memory
  // transactions), then the host allocator's classes.
  static size_t round_size(size_t nbytes);

 private:
  struct PerDevice {
    std::map<size_t, std::vector<void*>> free_blocks;
    AllocatorStats stats;
  };
  void empty_locked(int device, PerDevice& d);

  DeviceMemoryBackend backend_;
  mutable std::mutex mu_;
  std::map<int, PerDevice> devices_;
};

}  // namespace bet
