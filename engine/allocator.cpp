#include "engine/allocator.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

namespace bet {

namespace {
struct HostCache {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free_blocks;  // capacity -> blocks
  AllocatorStats stats;
};
HostCache& cache() {
  // Leaked on purpose: tensors in static storage may be released after main returns.
  static HostCache* c = new HostCache();
  return *c;
}
}  // namespace

CachingAllocator& CachingAllocator::host() {
  static CachingAllocator a;
  return a;
}

size_t CachingAllocator::round_size(size_t n) {
  if (n <= 64) return 64;
  if (n <= (size_t(1) << 20)) {  // small: next power of two
    size_t s = 64;
    while (s < n) s <<= 1;
    return s;
  }
  // large: multiples of 1/8 of the enclosing power of two keep waste under 12.5%
  size_t p = size_t(1) << 20;
  while (p * 2 < n) p <<= 1;
  size_t step = p / 4;
  return (n + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t nbytes, size_t* capacity) {
  size_t cap = round_size(nbytes);
  *capacity = cap;
  auto& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free_blocks.find(cap);
    if (it != c.free_blocks.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      c.stats.cache_hits++;
      c.stats.bytes_cached -= cap;
      c.stats.bytes_in_use += cap;
      return p;
    }
    c.stats.system_allocs++;
    c.stats.bytes_in_use += cap;
  }
  void* p = std::aligned_alloc(64, cap);
  if (!p) throw std::bad_alloc();
  return p;
}

void CachingAllocator::release(void* ptr, size_t capacity) {
  if (!ptr) return;
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.free_blocks[capacity].push_back(ptr);
  c.stats.bytes_cached += capacity;
  c.stats.bytes_in_use -= capacity;
}

void CachingAllocator::empty_cache() {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [cap, blocks] : c.free_blocks)
    for (void* p : blocks) std::free(p);
  c.free_blocks.clear();
  c.stats.bytes_cached = 0;
}

AllocatorStats CachingAllocator::stats() const {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.stats;
}

}  // namespace bet
