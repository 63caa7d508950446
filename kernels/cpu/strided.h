// Iteration over strided N-d tensors for CPU kernels. Dims are coalesced where
// memory allows, and the innermost dim is handed to the caller as a 1-D run so the
// inner loop is a plain (vectorisable) loop over pointers and strides.
#pragma once
#include <cstdint>
#include <vector>

#include "platform/shape.h"

namespace bet::kernels::cpu {

// Geometry of up to 4 operands sharing one iteration shape (element strides,
// 0 where an operand broadcasts).
struct StridedLoop {
  Shape shape;                            // coalesced iteration shape (rank >= 1)
  std::vector<std::vector<int64_t>> strides;  // per operand, per dim
};

// Builds a loop over `shape` for operands with the given strides (same rank as
// shape), merging adjacent dims that are contiguous for every operand.
StridedLoop make_loop(const Shape& shape, const std::vector<Shape>& strides);

// Calls fn(offsets[], inner_len, inner_strides[]) for every inner run. Runs split
// across the OpenMP pool when the loop is large. `Fn` sees element offsets.
template <int N, typename Fn>
void for_each_run(const StridedLoop& loop, Fn&& fn, bool parallel = true);

}  // namespace bet::kernels::cpu

#include "kernels/cpu/strided_impl.h"
