#include "platform/arena.h"

#include <sys/mman.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "platform/error.h"

namespace bet::platform {

namespace {

constexpr int kMinOrder = std::countr_zero(HostArena::kMinBlock);
static_assert((size_t(1) << kMinOrder) == HostArena::kMinBlock);
// The state byte of the first unit of every block: its order, and whether it is free.
constexpr uint8_t kFree = 0x80;
constexpr uint8_t kUsed = 0x40;

// Live arenas' regions, found without a lock by release_to_arena (which runs for every
// host block released, arena or not).
constexpr int kSlots = 64;
struct Slot {
  std::atomic<uintptr_t> begin{0}, end{0};
  std::atomic<HostArena::State*> state{nullptr};
};
Slot g_slots[kSlots];
std::atomic<int> g_slots_used{0};  // slots [0, used) may be live

thread_local HostArena* t_arena = nullptr;

void* map_region(size_t bytes, bool prefault) {
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  if (prefault) flags = (flags & ~MAP_NORESERVE) | MAP_POPULATE;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

}  // namespace

struct HostArena::State {
  struct Node {
    Node* prev;
    Node* next;
  };
  std::mutex mu;
  char* base = nullptr;
  size_t size = 0;
  int max_order = 0;
  uint8_t* map = nullptr;  // one byte per kMinBlock unit; meaningful at block starts
  size_t map_bytes = 0;
  Node* free_lists[64] = {};
  uint64_t nonempty = 0;  // bit o: free_lists[o] has a block
  ArenaStats st;
  int slot = -1;
  bool dead = false;  // the region is unmapped; under mu

  void push(char* b, int o) {
    auto* n = reinterpret_cast<Node*>(b);
    n->prev = nullptr;
    n->next = free_lists[o];
    if (n->next) n->next->prev = n;
    free_lists[o] = n;
    nonempty |= uint64_t(1) << o;
    map[size_t(b - base) >> kMinOrder] = uint8_t(kFree | o);
  }
  void unlink(char* b, int o) {
    auto* n = reinterpret_cast<Node*>(b);
    if (n->prev) n->prev->next = n->next;
    else free_lists[o] = n->next;
    if (n->next) n->next->prev = n->prev;
    if (!free_lists[o]) nonempty &= ~(uint64_t(1) << o);
  }
  void release(void* ptr, size_t capacity) noexcept {
    std::lock_guard<std::mutex> lock(mu);
    release_locked(ptr, capacity);
  }
  // release_to_arena's entry: its lock-free look-up may read a slot while it is being
  // cleared or reused, so ownership is decided here, under the lock, against fields that
  // never change while the state lives (it is never deleted once registered).
  bool try_release(void* ptr, size_t capacity) noexcept {
    std::lock_guard<std::mutex> lock(mu);
    const auto p = reinterpret_cast<uintptr_t>(ptr), b = reinterpret_cast<uintptr_t>(base);
    if (dead || p < b || p >= b + size) return false;
    release_locked(ptr, capacity);
    return true;
  }
  void release_locked(void* ptr, size_t capacity) noexcept {
    int o = std::countr_zero(capacity);
    size_t off = size_t(static_cast<char*>(ptr) - base);
    st.bytes_in_use -= capacity;
    while (o < max_order) {  // merge with the buddy while it is free and whole
      const size_t buddy = off ^ (size_t(1) << o);
      // A buddy past the end: this block is one of the region's tiles (constructor).
      if (std::max(off, buddy) + (size_t(1) << o) > size) break;
      if (map[buddy >> kMinOrder] != uint8_t(kFree | o)) break;
      unlink(base + buddy, o);
      off = std::min(off, buddy);
      ++o;
    }
    push(base + off, o);
  }
};

HostArena::HostArena(size_t bytes, bool prefault) : s_(new State()) {
  BET_CHECK(bytes <= (size_t(1) << 46), "arena: ", bytes, " bytes is more than any machine has");
  const size_t size = (std::max(bytes, kMinBlock) + kMinBlock - 1) / kMinBlock * kMinBlock;
  s_->size = size;
  s_->max_order = int(std::bit_width(size)) - 1;
  s_->map_bytes = std::max<size_t>(size >> kMinOrder, 1);
  s_->base = static_cast<char*>(map_region(size, prefault));
  if (s_->base) s_->map = static_cast<uint8_t*>(map_region(s_->map_bytes, prefault));
  if (!s_->base || !s_->map) {
    const int err = errno;
    if (s_->base) ::munmap(s_->base, size);
    delete s_;
    fail("arena: the system refused ", size, " bytes (", std::strerror(err), ")");
  }
  s_->st.capacity = size;
  // The region as the largest aligned power-of-two blocks that tile it (one when its
  // size is a power of two).
  for (size_t off = 0; off < size;) {
    int o = off ? std::countr_zero(off) : s_->max_order;
    while (off + (size_t(1) << o) > size) --o;
    s_->push(s_->base + off, o);
    off += size_t(1) << o;
  }
  // Registered last: a slot is live once its end is set.
  for (int i = 0; i < kSlots; ++i) {
    State* expected = nullptr;
    if (g_slots[i].state.compare_exchange_strong(expected, s_)) {
      g_slots[i].begin.store(reinterpret_cast<uintptr_t>(s_->base));
      g_slots[i].end.store(reinterpret_cast<uintptr_t>(s_->base) + size);
      int used = g_slots_used.load();
      while (used < i + 1 && !g_slots_used.compare_exchange_weak(used, i + 1)) {
      }
      s_->slot = i;
      break;
    }
  }
  if (s_->slot < 0) {
    ::munmap(s_->base, size);
    ::munmap(s_->map, s_->map_bytes);
    delete s_;
    fail("arena: more than ", kSlots, " arenas at once");
  }
}

HostArena::~HostArena() {
  {
    std::lock_guard<std::mutex> lock(s_->mu);
    // Blocks still in use (a tensor kept past the arena): leak the region, registered,
    // so that their release still finds it.
    if (s_->st.bytes_in_use > 0) return;
    s_->dead = true;  // from here on try_release refuses, whatever a reader saw
  }
  Slot& slot = g_slots[s_->slot];
  slot.end.store(0);
  slot.begin.store(0);
  slot.state.store(nullptr);
  ::munmap(s_->base, s_->size);
  ::munmap(s_->map, s_->map_bytes);
  // The state itself (a few hundred bytes) is never freed: a release_to_arena that
  // loaded it just before the slot was cleared may still lock it and find it dead.
}

void* HostArena::try_allocate(size_t nbytes, size_t* capacity) noexcept {
  State& s = *s_;
  const int order = nbytes <= kMinBlock ? kMinOrder : int(std::bit_width(nbytes - 1));
  std::lock_guard<std::mutex> lock(s.mu);
  const uint64_t fits = order > s.max_order ? 0 : s.nonempty & (~uint64_t(0) << order);
  if (!fits) {
    s.st.misses++;
    return nullptr;
  }
  int o = std::countr_zero(fits);
  char* b = reinterpret_cast<char*>(s.free_lists[o]);
  s.unlink(b, o);
  while (o > order) {  // split, keeping the lower half
    --o;
    s.push(b + (size_t(1) << o), o);
  }
  s.map[size_t(b - s.base) >> kMinOrder] = uint8_t(kUsed | order);
  const size_t cap = size_t(1) << order;
  s.st.allocs++;
  s.st.bytes_in_use += cap;
  s.st.peak_bytes_in_use = std::max(s.st.peak_bytes_in_use, s.st.bytes_in_use);
  *capacity = cap;
  return b;
}

void HostArena::release(void* ptr, size_t capacity) noexcept { s_->release(ptr, capacity); }

bool HostArena::owns(const void* ptr) const noexcept {
  auto p = reinterpret_cast<uintptr_t>(ptr), b = reinterpret_cast<uintptr_t>(s_->base);
  return p >= b && p < b + s_->size;
}

size_t HostArena::capacity() const noexcept { return s_->size; }

ArenaStats HostArena::stats() const noexcept {
  std::lock_guard<std::mutex> lock(s_->mu);
  return s_->st;
}

void HostArena::reset_peak() noexcept {
  std::lock_guard<std::mutex> lock(s_->mu);
  s_->st.peak_bytes_in_use = s_->st.bytes_in_use;
}

ArenaScope::ArenaScope(HostArena* arena) noexcept : prev_(t_arena) { t_arena = arena; }
ArenaScope::~ArenaScope() { t_arena = prev_; }

HostArena* current_arena() noexcept { return t_arena; }

bool release_to_arena(void* ptr, size_t capacity) noexcept {
  const auto p = reinterpret_cast<uintptr_t>(ptr);
  const int used = g_slots_used.load(std::memory_order_acquire);
  for (int i = 0; i < used; ++i) {
    const uintptr_t e = g_slots[i].end.load(std::memory_order_acquire);
    if (p >= e) continue;  // also every free slot (end 0)
    if (p < g_slots[i].begin.load(std::memory_order_acquire)) continue;
    HostArena::State* s = g_slots[i].state.load(std::memory_order_acquire);
    if (!s) continue;
    // The three loads are not one snapshot (the slot may be cleared or reused
    // meanwhile): the state checks ownership under its lock, and a miss keeps looking.
    // The slot holds the state, not the arena object: a leaked region outlives it.
    if (s->try_release(ptr, capacity)) return true;
  }
  return false;
}

void keep_freed_memory_resident() noexcept {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest (64-bit)
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

}  // namespace bet::platform
