// Caching host allocator. Training loops allocate the same sizes every step; the
// cache hands back a freed block of the same size class instead of calling malloc,
// so a steady loop does no system allocation after its first step.
#pragma once
#include <cstddef>
#include <cstdint>

namespace bet {

struct AllocatorStats {
  uint64_t system_allocs = 0;  // blocks obtained from the system
  uint64_t cache_hits = 0;     // requests served from the cache
  uint64_t bytes_cached = 0;   // bytes held in free lists
  uint64_t bytes_in_use = 0;   // bytes handed out and not yet returned
};

class CachingAllocator {
 public:
  static CachingAllocator& host();

  // Returns at least `nbytes` bytes aligned to 64; `*capacity` receives the block size.
  void* allocate(size_t nbytes, size_t* capacity);
  void release(void* ptr, size_t capacity);
  void empty_cache();
  AllocatorStats stats() const;

  // Size class a request is rounded to (exposed for tests).
  static size_t round_size(size_t nbytes);
};

}  // namespace bet
