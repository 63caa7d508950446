// Host arenas: a region of memory reserved once (and, unless asked otherwise, faulted
// in at once) from which the host caching allocator (allocator.h) serves the tensors of
// one thread while an ArenaScope for it is open there. A server's inference worker
// keeps one sized for the largest request it admits (runtime/inference/arena.h), so
// that serving requests of any admitted size makes no system allocation and touches no
// new page: the caching allocator alone needs a block of every size class a request
// length produces, and a length never seen before still goes to the system.
//
// Blocks are managed as a binary buddy system: power-of-two blocks from kMinBlock up
// to the largest power of two in the region (which starts tiled by the largest aligned
// ones), split on allocation and merged again on release, so any mix of
// sizes fits as long as the bytes in use (rounded up to powers of two) and their
// fragmentation fit. A request the arena cannot serve (too big, or the arena full)
// goes to the caching allocator as usual and is counted as a miss.
//
// The caching allocator's stats and byte limit (allocator.h) do not count arena
// blocks; the arena's own stats do.
//
// Threads: allocations come from the arena only on a thread with an open ArenaScope;
// a block may be released on any thread (the caching allocator recognises the
// arena's addresses). An arena must outlive its blocks: one destroyed while blocks
// are still in use leaks its region instead of unmapping it under them.
#pragma once
#include <cstddef>
#include <cstdint>

namespace bet::platform {

struct ArenaStats {
  uint64_t capacity = 0;           // bytes of the region
  uint64_t allocs = 0;             // blocks served from the arena
  uint64_t misses = 0;             // requests it could not serve (passed to the caching allocator)
  uint64_t bytes_in_use = 0;       // by block size
  uint64_t peak_bytes_in_use = 0;  // since construction or reset_peak()
};

class HostArena {
 public:
  static constexpr size_t kMinBlock = 256;

  // A region of at least `bytes` (rounded up to a multiple of kMinBlock).
  // `prefault`: its pages are faulted in now (MAP_POPULATE) and stay resident; without
  // it only what is touched is, which suits a large region used once for measuring.
  // Throws bet::Error when the system refuses the region.
  explicit HostArena(size_t bytes, bool prefault = true);
  ~HostArena();
  HostArena(const HostArena&) = delete;
  HostArena& operator=(const HostArena&) = delete;

  // A block of at least `nbytes` (64-byte aligned; *capacity receives its size), or
  // nullptr (counted as a miss) when no free block is large enough. Never throws.
  void* try_allocate(size_t nbytes, size_t* capacity) noexcept;
  // Gives back a block of this arena (`capacity` as try_allocate returned it).
  void release(void* ptr, size_t capacity) noexcept;
  bool owns(const void* ptr) const noexcept;

  size_t capacity() const noexcept;
  ArenaStats stats() const noexcept;
  void reset_peak() noexcept;

  struct State;

 private:
  State* s_;
};

// Makes `arena` the calling thread's arena until the scope ends (nullptr: none), then
// restores the one before. Scopes nest.
class ArenaScope {
 public:
  explicit ArenaScope(HostArena* arena) noexcept;
  ~ArenaScope();
  ArenaScope(const ArenaScope&) = delete;
  ArenaScope& operator=(const ArenaScope&) = delete;

 private:
  HostArena* prev_;
};

// The calling thread's arena, or nullptr.
HostArena* current_arena() noexcept;
// Gives `ptr` back to the arena whose region holds it and returns true, or returns
// false when no arena's region holds it (any thread; finding the arena is lock-free).
bool release_to_arena(void* ptr, size_t capacity) noexcept;

// Makes malloc keep what a request frees for the next one instead of handing it back
// to the system between requests (glibc: a fixed 32 MiB mmap threshold instead of the
// adaptive one, whose large blocks are unmapped on every free, and no automatic trim
// of the heap top). Memory is still returned when asked (malloc_trim). Process-wide;
// a long-running server calls it once. No effect without glibc.
void keep_freed_memory_resident() noexcept;

}  // namespace bet::platform
