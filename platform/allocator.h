// Caching host allocator. Training loops allocate the same sizes every step; the
// cache hands back a freed block of the same size class instead of calling malloc,
// so a steady loop does no system allocation after its first step.
//
// Running out of memory is an ordinary error: allocate() first returns every cached
// block to the system and retries, then throws bet::Error ("out of memory allocating
// N bytes ..."). release() never allocates and never throws: it runs in destructors,
// also while an out-of-memory error unwinds a half-built model, where a throwing
// release would terminate the process.
#pragma once
#include <cstddef>
#include <cstdint>

namespace bet {

struct AllocatorStats {
  uint64_t system_allocs = 0;  // blocks obtained from the system
  uint64_t cache_hits = 0;     // requests served from the cache
  uint64_t bytes_cached = 0;   // bytes held in free lists
  uint64_t bytes_in_use = 0;   // bytes handed out and not yet returned
  uint64_t peak_bytes_in_use = 0;  // the most bytes_in_use has been since reset_peak()
};

class CachingAllocator {
 public:
  static CachingAllocator& host();

  // Returns at least `nbytes` bytes aligned to 64; `*capacity` receives the block size.
  // Throws bet::Error when neither the system nor the byte limit allows it.
  void* allocate(size_t nbytes, size_t* capacity);
  void release(void* ptr, size_t capacity) noexcept;
  void empty_cache() noexcept;
  AllocatorStats stats() const;
  void reset_peak();

  // Caps the bytes in use (blocks handed out, by capacity); 0 removes the cap. A
  // request past it fails as a system out-of-memory would (tests use it to exercise
  // that path without exhausting the machine; a server may bound itself with it).
  void set_limit(uint64_t max_bytes_in_use);
  uint64_t limit() const;

  // Size class a request is rounded to (exposed for tests).
  static size_t round_size(size_t nbytes);
  // No request above this is attempted (no machine has it; it also keeps the size
  // class arithmetic far from overflow).
  static constexpr size_t kMaxRequest = size_t(1) << 48;
};

}  // namespace bet
