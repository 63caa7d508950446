#include "kernels/index.h"

#include <algorithm>

#include "kernels/cpu/strided.h"
#include "platform/threads.h"

namespace bet::kernels::cpu {

using platform::kParallelGrain;
using platform::num_threads;
using platform::parallel_for;

namespace {

// Iteration for gather/scatter: positions of the index with `dim` removed (operands:
// 0 = the tensor walked along dim by j, 1 = index, 2 = the tensor addressed by index
// values), cut into work items of (outer position, chunk of the inner run).
struct Plan {
  StridedLoop loop;
  int64_t J = 0;                    // index.size(dim)
  int64_t sj0 = 0, sj1 = 0, sd2 = 0;  // strides along dim: operand 0, index, operand 2
  int64_t outer = 1, inner = 1, chunk = 1, nchunks = 1;
};

Plan make_plan(const TensorRef& walked, const TensorRef& index, const TensorRef& addressed, int64_t dim) {
  Plan p;
  Shape s = index.shape();
  p.J = s[size_t(dim)];
  s[size_t(dim)] = 1;
  p.loop = make_loop(s, {walked.strides(), index.strides(), addressed.strides()});
  p.sj0 = walked.strides()[size_t(dim)];
  p.sj1 = index.strides()[size_t(dim)];
  p.sd2 = addressed.strides()[size_t(dim)];
  const size_t r = p.loop.shape.size();
  p.inner = p.loop.shape[r - 1];
  for (size_t d = 0; d + 1 < r; ++d) p.outer *= p.loop.shape[d];
  // Long inner runs (embedding rows) are cut so that the threads share them; the cut
  // never changes results, since each element belongs to exactly one item.
  const int64_t nt = num_threads();
  p.chunk = p.inner <= 64 ? p.inner : std::max<int64_t>(64, (p.inner + 4 * nt - 1) / (4 * nt));
  p.nchunks = (p.inner + p.chunk - 1) / p.chunk;
  return p;
}

inline void item_offsets(const Plan& p, int64_t o, int64_t (&off)[3]) {
  off[0] = off[1] = off[2] = 0;
  for (int64_t d = int64_t(p.loop.shape.size()) - 2; d >= 0; --d) {
    const int64_t idx = o % p.loop.shape[size_t(d)];
    o /= p.loop.shape[size_t(d)];
    for (int k = 0; k < 3; ++k) off[k] += idx * p.loop.strides[size_t(k)][size_t(d)];
  }
}

template <typename T, typename I>
void gather_typed(const TensorRef& a, int64_t dim, const TensorRef& index, const TensorRef& out) {
  const Plan p = make_plan(out, index, a, dim);
  const T* A = static_cast<const T*>(a.raw_data());
  const I* X = static_cast<const I*>(index.raw_data());
  T* O = static_cast<T*>(out.raw_data());
  const int64_t s0 = p.loop.strides[0].back(), s1 = p.loop.strides[1].back(), s2 = p.loop.strides[2].back();
  const int64_t per_j = p.outer * p.nchunks;
  parallel_for(p.J * per_j, std::max<int64_t>(1, kParallelGrain / p.chunk), [&](int64_t lo, int64_t hi) {
    for (int64_t it = lo; it < hi; ++it) {
      const int64_t j = it / per_j, o = (it % per_j) / p.nchunks, c = it % p.nchunks;
      int64_t off[3];
      item_offsets(p, o, off);
      const int64_t e0 = c * p.chunk, e1 = std::min(p.inner, e0 + p.chunk);
      T* op = O + off[0] + j * p.sj0;
      const I* xp = X + off[1] + j * p.sj1;
      const T* ap = A + off[2];
      if (s1 == 0) {
        // One index value for the whole run: a row copy.
        const T* src = ap + int64_t(xp[0]) * p.sd2;
        if (s0 == 1 && s2 == 1) {
          for (int64_t e = e0; e < e1; ++e) op[e] = src[e];
        } else {
          for (int64_t e = e0; e < e1; ++e) op[e * s0] = src[e * s2];
        }
      } else {
        for (int64_t e = e0; e < e1; ++e) op[e * s0] = ap[e * s2 + int64_t(xp[e * s1]) * p.sd2];
      }
    }
  });
}

template <typename T, typename I>
void scatter_add_typed(const TensorRef& dst, int64_t dim, const TensorRef& index, const TensorRef& src) {
  const Plan p = make_plan(src, index, dst, dim);
  const T* S = static_cast<const T*>(src.raw_data());
  const I* X = static_cast<const I*>(index.raw_data());
  T* D = static_cast<T*>(dst.raw_data());
  const int64_t s0 = p.loop.strides[0].back(), s1 = p.loop.strides[1].back(), s2 = p.loop.strides[2].back();
  const int64_t items = p.outer * p.nchunks;
  // Items own disjoint destination elements (they differ outside `dim`), and j runs
  // in order inside an item: no races, and a fixed summation order.
  const int64_t work = std::max<int64_t>(1, p.J * p.chunk);
  parallel_for(items, std::max<int64_t>(1, kParallelGrain / work), [&](int64_t lo, int64_t hi) {
    for (int64_t it = lo; it < hi; ++it) {
      const int64_t o = it / p.nchunks, c = it % p.nchunks;
      int64_t off[3];
      item_offsets(p, o, off);
      const int64_t e0 = c * p.chunk, e1 = std::min(p.inner, e0 + p.chunk);
      for (int64_t j = 0; j < p.J; ++j) {
        const T* sp = S + off[0] + j * p.sj0;
        const I* xp = X + off[1] + j * p.sj1;
        T* dp = D + off[2];
        if (s1 == 0) {
          T* row = dp + int64_t(xp[0]) * p.sd2;
          if (s0 == 1 && s2 == 1) {
            for (int64_t e = e0; e < e1; ++e) row[e] += sp[e];
          } else {
            for (int64_t e = e0; e < e1; ++e) row[e * s2] += sp[e * s0];
          }
        } else {
          for (int64_t e = e0; e < e1; ++e) dp[e * s2 + int64_t(xp[e * s1]) * p.sd2] += sp[e * s0];
        }
      }
    }
  });
}

template <typename I>
bool find_bad(const TensorRef& index, int64_t n, int64_t* bad) {
  const I* X = static_cast<const I*>(index.raw_data());
  bool found = false;
  StridedLoop loop = make_loop(index.shape(), {index.strides()});
  for_each_run<1>(loop, [&](const std::array<int64_t, 1>& off, int64_t len, const std::array<int64_t, 1>& st) {
    if (found) return;
    const I* xp = X + off[0];
    for (int64_t i = 0; i < len; ++i) {
      const int64_t v = int64_t(xp[i * st[0]]);
      if (v < 0 || v >= n) {
        found = true;
        *bad = v;
        return;
      }
    }
  }, /*parallel=*/false);
  return found;
}

template <typename I>
void gather_index(const TensorRef& a, int64_t dim, const TensorRef& index, const TensorRef& out) {
  switch (a.dtype()) {
    case DType::F32: return gather_typed<float, I>(a, dim, index, out);
    case DType::F64: return gather_typed<double, I>(a, dim, index, out);
    case DType::I32: return gather_typed<int32_t, I>(a, dim, index, out);
    case DType::I64: return gather_typed<int64_t, I>(a, dim, index, out);
    default: fail("gather: dtype ", dtype_name(a.dtype()), " not supported on cpu");
  }
}

template <typename I>
void scatter_index(const TensorRef& dst, int64_t dim, const TensorRef& index, const TensorRef& src) {
  switch (dst.dtype()) {
    case DType::F32: return scatter_add_typed<float, I>(dst, dim, index, src);
    case DType::F64: return scatter_add_typed<double, I>(dst, dim, index, src);
    default: fail("scatter_add: dtype ", dtype_name(dst.dtype()), " not supported on cpu");
  }
}

}  // namespace

void gather(const TensorRef& a, int64_t dim, const TensorRef& index, const TensorRef& out) {
  BET_CHECK(index.shape() == out.shape(), "gather: index ", shape_str(index.shape()), " and out ",
            shape_str(out.shape()), " differ");
  BET_CHECK(a.dtype() == out.dtype(), "gather: dtypes differ");
  if (out.numel() == 0) return;
  switch (index.dtype()) {
    case DType::I32: return gather_index<int32_t>(a, dim, index, out);
    case DType::I64: return gather_index<int64_t>(a, dim, index, out);
    default: fail("gather: index dtype ", dtype_name(index.dtype()), " is not i32 or i64");
  }
}

void scatter_add(const TensorRef& dst, int64_t dim, const TensorRef& index, const TensorRef& src) {
  BET_CHECK(index.shape() == src.shape(), "scatter_add: index ", shape_str(index.shape()), " and src ",
            shape_str(src.shape()), " differ");
  BET_CHECK(dst.dtype() == src.dtype(), "scatter_add: dtypes differ");
  if (src.numel() == 0) return;
  switch (index.dtype()) {
    case DType::I32: return scatter_index<int32_t>(dst, dim, index, src);
    case DType::I64: return scatter_index<int64_t>(dst, dim, index, src);
    default: fail("scatter_add: index dtype ", dtype_name(index.dtype()), " is not i32 or i64");
  }
}

bool find_out_of_range(const TensorRef& index, int64_t n, int64_t* bad) {
  if (index.numel() == 0) return false;
  switch (index.dtype()) {
    case DType::I32: return find_bad<int32_t>(index, n, bad);
    case DType::I64: return find_bad<int64_t>(index, n, bad);
    default: fail("index: dtype ", dtype_name(index.dtype()), " is not i32 or i64");
  }
}

}  // namespace bet::kernels::cpu
