#include "platform/device_allocator.h"

#include "platform/error.h"

namespace bet {

size_t DeviceCachingAllocator::round_size(size_t nbytes) {
  if (nbytes <= 512) return 512;
  return CachingAllocator::round_size((nbytes + 511) / 512 * 512);
}

void* DeviceCachingAllocator::allocate(size_t nbytes, int device, size_t* capacity) {
  const size_t cap = round_size(nbytes);
  *capacity = cap;
  std::lock_guard<std::mutex> lock(mu_);
  PerDevice& d = devices_[device];
  auto it = d.free_blocks.find(cap);
  if (it != d.free_blocks.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    d.stats.cache_hits++;
    d.stats.bytes_cached -= cap;
    d.stats.bytes_in_use += cap;
    return p;
  }
  void* p = backend_.malloc(cap, device);
  if (!p) {
    // Blocks of other size classes may be what the device lacks.
    empty_locked(device, d);
    p = backend_.malloc(cap, device);
  }
  BET_CHECK(p != nullptr, "device allocator: out of memory on cuda:", device, " allocating ", nbytes,
            " bytes (", d.stats.bytes_in_use, " bytes in use by tensors)");
  d.stats.system_allocs++;
  d.stats.bytes_in_use += cap;
  return p;
}

void DeviceCachingAllocator::release(void* ptr, size_t capacity, int device) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  PerDevice& d = devices_[device];
  // Caching the block needs host memory (a map node, a vector slot). Called while a
  // tensor is destroyed, often during the unwinding of an out-of-memory error, so when
  // that allocation fails the block goes straight back to the device instead.
  try {
    d.free_blocks[capacity].push_back(ptr);
    d.stats.bytes_cached += capacity;
  } catch (...) {
    backend_.free(ptr, device);
  }
  d.stats.bytes_in_use -= capacity;
}

void DeviceCachingAllocator::empty_locked(int device, PerDevice& d) {
  for (auto& [cap, blocks] : d.free_blocks)
    for (void* p : blocks) backend_.free(p, device);
  d.free_blocks.clear();
  d.stats.bytes_cached = 0;
}

void DeviceCachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [dev, d] : devices_) empty_locked(dev, d);
}

AllocatorStats DeviceCachingAllocator::stats(int device) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = devices_.find(device);
  return it == devices_.end() ? AllocatorStats{} : it->second.stats;
}

}  // namespace bet
