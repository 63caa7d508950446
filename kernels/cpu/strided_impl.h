#pragma once
#include <array>

#include "platform/threads.h"

namespace bet::kernels::cpu {

template <int N, typename Fn>
void for_each_run(const StridedLoop& loop, Fn&& fn, bool parallel) {
  const int64_t rank = int64_t(loop.shape.size());
  const int64_t inner = loop.shape[rank - 1];
  int64_t outer = 1;
  for (int64_t d = 0; d + 1 < rank; ++d) outer *= loop.shape[d];
  if (inner == 0 || outer == 0) return;
  std::array<int64_t, N> inner_strides{};
  for (int k = 0; k < N; ++k) inner_strides[k] = loop.strides[k][rank - 1];

  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      std::array<int64_t, N> off{};
      int64_t rem = o;
      for (int64_t d = rank - 2; d >= 0; --d) {
        int64_t idx = rem % loop.shape[d];
        rem /= loop.shape[d];
        for (int k = 0; k < N; ++k) off[k] += idx * loop.strides[k][d];
      }
      fn(off, inner, inner_strides);
    }
  };
  const int64_t total = outer * inner;
  if (parallel && total >= platform::kParallelGrain && outer > 1) {
    platform::parallel_for(outer, std::max<int64_t>(1, platform::kParallelGrain / std::max<int64_t>(inner, 1)), body);
  } else if (parallel && total >= platform::kParallelGrain && outer == 1) {
    // one long run: split it
    platform::parallel_for(inner, platform::kParallelGrain / 4, [&](int64_t b, int64_t e) {
      std::array<int64_t, N> off{};
      for (int k = 0; k < N; ++k) off[k] = b * inner_strides[k];
      fn(off, e - b, inner_strides);
    });
  } else {
    body(0, outer);
  }
}

}  // namespace bet::kernels::cpu
