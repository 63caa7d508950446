#include "kernels/cpu/strided.h"

namespace bet::kernels::cpu {

StridedLoop make_loop(const Shape& shape, const std::vector<Shape>& strides) {
  StridedLoop loop;
  const size_t n = strides.size();
  loop.strides.assign(n, {});
  // Drop size-1 dims (their stride never matters), then merge from the inside out.
  Shape sh;
  std::vector<Shape> st(n);
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    sh.push_back(shape[d]);
    for (size_t k = 0; k < n; ++k) st[k].push_back(strides[k][d]);
  }
  if (sh.empty()) {
    loop.shape = {shape_numel(shape)};  // 1, or 0 for an empty tensor
    for (size_t k = 0; k < n; ++k) loop.strides[k] = {1};
    return loop;
  }
  Shape out_shape{sh.back()};
  std::vector<Shape> out_st(n);
  for (size_t k = 0; k < n; ++k) out_st[k] = {st[k].back()};
  for (int64_t d = int64_t(sh.size()) - 2; d >= 0; --d) {
    bool mergeable = true;
    for (size_t k = 0; k < n; ++k)
      if (st[k][d] != out_st[k].front() * out_shape.front()) mergeable = false;
    if (mergeable) {
      out_shape.front() *= sh[d];
    } else {
      out_shape.insert(out_shape.begin(), sh[d]);
      for (size_t k = 0; k < n; ++k) out_st[k].insert(out_st[k].begin(), st[k][d]);
    }
  }
  loop.shape = out_shape;
  loop.strides = out_st;
  return loop;
}

}  // namespace bet::kernels::cpu
