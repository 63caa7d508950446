// Shapes and strides (in elements), and the helpers every op needs to check them.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace bet {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);
// Normalises a possibly negative axis for a tensor of rank `rank`; throws naming `op`.
int64_t normalize_dim(int64_t dim, int64_t rank, const char* op);
// NumPy broadcasting of two shapes; throws naming `op` and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace bet
