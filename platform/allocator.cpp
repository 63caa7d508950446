#include "platform/allocator.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <mutex>
#include <new>

#include "platform/arena.h"
#include "platform/error.h"

namespace bet {

namespace {

// A cached block holds the link to the next one of its size class in its own first
// bytes (every block is at least 64 bytes), so caching a block needs no memory: a
// std::map of vectors here once made release() allocate, and when that failed inside
// a destructor unwinding an out-of-memory error, the process aborted.
struct FreeBlock {
  FreeBlock* next;
};

// Size classes (see round_size): 64 B .. 1 MiB in powers of two (15 classes), then four
// per power of two up to kMaxRequest.
constexpr int kSmallClasses = 15;
constexpr int kClasses = kSmallClasses + 4 * (48 - 20);

// The free list of a capacity round_size returned, or -1 for any other value.
int class_index(size_t cap) {
  if (cap < 64 || cap > CachingAllocator::kMaxRequest) return -1;
  if (cap <= (size_t(1) << 20)) return std::has_single_bit(cap) ? std::countr_zero(cap) - 6 : -1;
  const int e = int(std::bit_width(cap - 1)) - 1;  // 2^e < cap <= 2^(e+1)
  const size_t p = size_t(1) << e, step = p / 4;
  if ((cap - p) % step != 0) return -1;
  const int i = kSmallClasses + (e - 20) * 4 + int((cap - p) / step) - 1;
  return i < kClasses ? i : -1;
}

struct HostCache {
  std::mutex mu;
  FreeBlock* free_lists[kClasses] = {};
  AllocatorStats stats;
  uint64_t limit = 0;  // 0: none
};
HostCache& cache() {
  // Leaked on purpose: tensors in static storage may be released after main returns.
  static HostCache* c = new HostCache();
  return *c;
}

// Returns every cached block to the system. Called with c.mu held.
void empty_locked(HostCache& c) noexcept {
  for (FreeBlock*& head : c.free_lists) {
    while (head) {
      FreeBlock* next = head->next;
      std::free(head);
      head = next;
    }
  }
  c.stats.bytes_cached = 0;
}

[[noreturn]] void out_of_memory(size_t nbytes, const AllocatorStats& s, uint64_t limit) {
  if (limit)
    fail("out of memory allocating ", nbytes, " bytes (", s.bytes_in_use, " bytes in use by tensors, limit ", limit,
         ")");
  fail("out of memory allocating ", nbytes, " bytes (", s.bytes_in_use, " bytes in use by tensors)");
}

}  // namespace

CachingAllocator& CachingAllocator::host() {
  static CachingAllocator a;
  return a;
}

size_t CachingAllocator::round_size(size_t n) {
  if (n <= 64) return 64;
  if (n <= (size_t(1) << 20)) return std::bit_ceil(n);  // small: next power of two
  if (n > kMaxRequest) return n;                         // never allocated (see allocate)
  // large: multiples of a quarter of the enclosing power of two keep waste under 25%
  size_t p = size_t(1) << 20;
  while (p <= (n - 1) / 2) p <<= 1;  // p < n <= 2p
  const size_t step = p / 4;
  return (n + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t nbytes, size_t* capacity) {
  auto& c = cache();
  if (nbytes > kMaxRequest) {
    std::lock_guard<std::mutex> lock(c.mu);
    out_of_memory(nbytes, c.stats, c.limit);
  }
  // A thread serving from an arena (arena.h) takes its blocks there first; what the
  // arena cannot hold comes from the cache below (the arena counts it as a miss).
  if (platform::HostArena* a = platform::current_arena())
    if (void* p = a->try_allocate(nbytes, capacity)) return p;
  const size_t cap = round_size(nbytes);
  const int cls = class_index(cap);
  *capacity = cap;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.limit && c.stats.bytes_in_use + cap > c.limit) out_of_memory(nbytes, c.stats, c.limit);
    c.stats.bytes_in_use += cap;
    c.stats.peak_bytes_in_use = std::max(c.stats.peak_bytes_in_use, c.stats.bytes_in_use);
    if (FreeBlock* b = c.free_lists[cls]) {
      c.free_lists[cls] = b->next;
      c.stats.cache_hits++;
      c.stats.bytes_cached -= cap;
      return b;
    }
    c.stats.system_allocs++;
  }
  void* p = std::aligned_alloc(64, cap);
  if (!p) {
    // Cached blocks of other sizes may be what the system lacks.
    empty_cache();
    p = std::aligned_alloc(64, cap);
  }
  if (!p) {
    std::lock_guard<std::mutex> lock(c.mu);
    c.stats.system_allocs--;
    c.stats.bytes_in_use -= cap;
    out_of_memory(nbytes, c.stats, c.limit);
  }
  return p;
}

void CachingAllocator::release(void* ptr, size_t capacity) noexcept {
  if (!ptr) return;
  if (platform::release_to_arena(ptr, capacity)) return;  // an arena's block, from any thread
  auto& c = cache();
  const int cls = class_index(capacity);
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.bytes_in_use -= capacity;
  if (cls < 0) {  // not a capacity this allocator hands out: nothing to cache it under
    std::free(ptr);
    return;
  }
  c.free_lists[cls] = new (ptr) FreeBlock{c.free_lists[cls]};
  c.stats.bytes_cached += capacity;
}

void CachingAllocator::empty_cache() noexcept {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  empty_locked(c);
}

AllocatorStats CachingAllocator::stats() const {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.stats;
}

void CachingAllocator::reset_peak() {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.peak_bytes_in_use = c.stats.bytes_in_use;
}

void CachingAllocator::set_limit(uint64_t max_bytes_in_use) {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.limit = max_bytes_in_use;
}

uint64_t CachingAllocator::limit() const {
  auto& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.limit;
}

}  // namespace bet
