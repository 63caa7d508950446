// Strided geometry for the CUDA kernels: up to N operands walked over one iteration
// shape. Plain C++ (host and device), so the index arithmetic is also compiled and
// tested on machines without a GPU (tests/test_cuda_ops.cpp).
#pragma once
#include <cstdint>
#include <vector>

#if defined(__CUDACC__)
#define BET_HD __host__ __device__ __forceinline__
#else
#define BET_HD inline
#endif

namespace bet::kernels::cuda {

// Coalesced rank limit. Tensors in this project have rank <= 6; size-1 dims are
// dropped and mergeable dims merged first, so 8 is never reached in practice.
constexpr int kMaxDims = 8;

template <int N>
struct Geom {
  int rank = 1;
  int64_t numel = 0;
  int64_t size[kMaxDims] = {};
  int64_t stride[N][kMaxDims] = {};

  // Element offsets of every operand at row-major linear index i. Idx is int32_t
  // when numel and every offset fit (cheaper division on the GPU), else int64_t.
  template <typename Idx>
  BET_HD void offsets(Idx i, Idx* off) const {
    for (int k = 0; k < N; ++k) off[k] = 0;
    for (int d = rank - 1; d > 0; --d) {
      const Idx s = Idx(size[d]);
      const Idx q = i / s;
      const Idx idx = i - q * s;
      i = q;
      for (int k = 0; k < N; ++k) off[k] += idx * Idx(stride[k][d]);
    }
    for (int k = 0; k < N; ++k) off[k] += i * Idx(stride[k][0]);
  }

  // True when every operand is addressed with 32-bit offsets without overflow.
  bool fits_int32() const {
    if (numel >= (int64_t(1) << 31)) return false;
    for (int k = 0; k < N; ++k) {
      int64_t hi = 0;
      for (int d = 0; d < rank; ++d) {
        if (stride[k][d] < 0) return false;
        hi += (size[d] - 1) * stride[k][d];
      }
      if (hi >= (int64_t(1) << 31)) return false;
    }
    return true;
  }
};

// Builds the geometry of `shape` for operands with the given element strides (each
// of shape's rank). Size-1 dims are dropped; a dim merges into the next inner one
// when that is contiguous with it for every operand. Returns false when the
// coalesced rank exceeds kMaxDims.
template <int N>
inline bool make_geom(const std::vector<int64_t>& shape, const std::vector<int64_t>* const* strides, Geom<N>* g) {
  Geom<N> r;
  r.numel = 1;
  for (int64_t s : shape) r.numel *= s;
  std::vector<int64_t> sh;
  std::vector<std::vector<int64_t>> st(N);
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    sh.push_back(shape[d]);
    for (int k = 0; k < N; ++k) st[k].push_back((*strides[k])[d]);
  }
  if (sh.empty()) {  // a scalar, or an empty tensor with size-1 dims only
    r.rank = 1;
    r.size[0] = r.numel;
    for (int k = 0; k < N; ++k) r.stride[k][0] = 1;
    *g = r;
    return true;
  }
  // Merge from the inside out into reversed lists.
  std::vector<int64_t> osh{sh.back()};
  std::vector<std::vector<int64_t>> ost(N);
  for (int k = 0; k < N; ++k) ost[k] = {st[k].back()};
  for (int64_t d = int64_t(sh.size()) - 2; d >= 0; --d) {
    bool merge = true;
    for (int k = 0; k < N; ++k)
      if (st[k][size_t(d)] != ost[k].back() * osh.back()) merge = false;
    if (merge) {
      osh.back() *= sh[size_t(d)];
    } else {
      osh.push_back(sh[size_t(d)]);
      for (int k = 0; k < N; ++k) ost[k].push_back(st[k][size_t(d)]);
    }
  }
  if (osh.size() > size_t(kMaxDims)) return false;
  r.rank = int(osh.size());
  for (int d = 0; d < r.rank; ++d) {
    r.size[d] = osh[osh.size() - 1 - size_t(d)];
    for (int k = 0; k < N; ++k) r.stride[k][d] = ost[k][osh.size() - 1 - size_t(d)];
  }
  *g = r;
  return true;
}

}  // namespace bet::kernels::cuda
