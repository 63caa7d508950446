// The replaceable global operator new and delete, with two test hooks: counting the
// allocations of one chosen thread (the server's event loop, a parser under test) and
// making one thread's allocations fail (out-of-memory paths). Include it in exactly one
// file of a test executable: it defines the operators.
#pragma once
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <thread>

namespace bet::test {
// Allocations made by g_counted_thread are added to g_counted_allocs.
inline std::atomic<std::thread::id> g_counted_thread{};
inline std::atomic<uint64_t> g_counted_allocs{0};
// While set, operator new on this thread throws std::bad_alloc.
inline thread_local bool t_fail_new = false;
}  // namespace bet::test

void* operator new(size_t n) {
  if (bet::test::t_fail_new) throw std::bad_alloc();
  if (std::this_thread::get_id() == bet::test::g_counted_thread.load(std::memory_order_relaxed))
    bet::test::g_counted_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return ::operator new(n); }
// Paired with the operator new above (malloc), so sanitizers see matching calls. GCC
// cannot tell that these deletes only ever receive that operator's pointers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
