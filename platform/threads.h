// The one thread pool: OpenMP, the same runtime oneDNN uses, so our kernels and
// oneDNN's never oversubscribe the cores. `set_num_threads` is what --threads sets.
#pragma once
#include <algorithm>
#include <cstdint>

#include <omp.h>

namespace bet::platform {

// Elements below which a kernel stays on one thread (forking costs ~microseconds).
constexpr int64_t kParallelGrain = 32768;

void set_num_threads(int n);
int num_threads();

// Splits [0, n) into contiguous chunks of at least `grain` and runs fn(begin, end)
// on the pool. Chunk boundaries depend only on n, grain and the thread count.
template <typename Fn>
void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t max_chunks = (n + grain - 1) / grain;
  int nt = int(std::min<int64_t>(num_threads(), max_chunks));
  if (nt <= 1 || omp_in_parallel()) {
    fn(int64_t(0), n);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    int t = omp_get_thread_num();
    int64_t chunk = (n + nt - 1) / nt;
    int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b < e) fn(b, e);
  }
}

}  // namespace bet::platform
