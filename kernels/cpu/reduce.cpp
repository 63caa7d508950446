#include "kernels/reduce.h"

#include <algorithm>
#include <array>
#include <type_traits>

#include "kernels/copy.h"
#include "kernels/cpu/strided.h"
#include "platform/threads.h"

namespace bet::kernels::cpu {

using platform::kParallelGrain;
using platform::parallel_for;

namespace {

// Floats accumulate in double (as torch's CPU kernels do); integers in int64.
template <typename T>
using Acc = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;

// Elements summed per work item when one reduction is split across threads. Fixed,
// so a result does not depend on the thread count.
constexpr int64_t kBlock = 32768;
constexpr int kMaxRank = 16;
// Below this many output strips, a reduction over leading dims also splits its rows,
// into at most kMaxRowBlocks blocks (bounding the partial-sum buffer).
constexpr int64_t kFewItems = 16;
constexpr int64_t kMaxRowBlocks = 64;
// Strip width (elements of the kept inner dim) for a reduction or scan over a leading
// dim: the accumulators stay in L1, and each row is read in long contiguous runs.
constexpr int64_t kStrip = 1024;
// Block of a row-wise max whose maximum is taken with SIMD before any index search.
constexpr int64_t kMaxBlock = 256;

struct Dim {
  int64_t size;
  int64_t stride;  // input stride, elements
};

// Walks a list of dims (outer to inner) in row-major order, tracking the offset.
struct Odometer {
  int n = 0;
  std::array<int64_t, kMaxRank> size{}, stride{}, idx{};
  int64_t off = 0;

  Odometer(const std::vector<Dim>& dims, int64_t flat) {
    n = int(dims.size());
    for (int i = 0; i < n; ++i) {
      size[i] = dims[i].size;
      stride[i] = dims[i].stride;
    }
    for (int i = n - 1; i >= 0; --i) {
      idx[i] = flat % size[i];
      flat /= size[i];
      off += idx[i] * stride[i];
    }
  }
  void next() {
    for (int i = n - 1; i >= 0; --i) {
      off += stride[i];
      if (++idx[i] < size[i]) return;
      off -= size[i] * stride[i];
      idx[i] = 0;
    }
  }
};

int64_t dims_numel(const std::vector<Dim>& d) {
  int64_t n = 1;
  for (const Dim& x : d) n *= x.size;
  return n;
}

// Sum of n elements at stride s. Partial sums of up to 1024 elements stay in T (so
// the loop vectorises); those partials accumulate in Acc.
template <typename T>
Acc<T> run_sum(const T* p, int64_t n, int64_t s) {
  Acc<T> acc = 0;
  for (int64_t c = 0; c < n; c += 1024) {
    const int64_t m = std::min<int64_t>(1024, n - c);
    T part = 0;
    const T* q = p + c * s;
    if (s == 1) {
#pragma omp simd reduction(+ : part)
      for (int64_t i = 0; i < m; ++i) part += q[i];
    } else {
      for (int64_t i = 0; i < m; ++i) part += q[i * s];
    }
    acc += Acc<T>(part);
  }
  return acc;
}

// The innermost dim is reduced: each output element is a dot-free sum over runs.
template <typename T>
void sum_inner(const T* pa, T* po, const std::vector<Dim>& K, const std::vector<Dim>& R) {
  const Dim rin = R.back();
  const std::vector<Dim> router(R.begin(), R.end() - 1);
  const int64_t NK = dims_numel(K), NR = dims_numel(R), inner = rin.size;

  // Sum over the flat reduced positions [begin, end) for the output at input offset koff.
  auto range_sum = [&](int64_t koff, int64_t begin, int64_t end) {
    Odometer r(router, begin / inner);
    int64_t i = begin % inner;
    Acc<T> acc = 0;
    while (begin < end) {
      const int64_t len = std::min(inner - i, end - begin);
      acc += run_sum(pa + koff + r.off + i * rin.stride, len, rin.stride);
      begin += len;
      i = 0;
      r.next();
    }
    return acc;
  };

  if (NR < 2 * kBlock) {
    parallel_for(NK, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(NR, 1)), [&](int64_t b, int64_t e) {
      Odometer k(K, b);
      for (int64_t o = b; o < e; ++o, k.next()) po[o] = T(range_sum(k.off, 0, NR));
    });
    return;
  }
  // Long reductions: split each into fixed blocks (so short of outputs, the threads
  // still share the work, and the rounding never depends on the thread count).
  const int64_t nb = (NR + kBlock - 1) / kBlock;
  std::vector<Acc<T>> partial(size_t(NK * nb));
  parallel_for(NK * nb, 1, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      const int64_t o = it / nb, j = it % nb;
      Odometer k(K, o);
      partial[size_t(it)] = range_sum(k.off, j * kBlock, std::min(NR, (j + 1) * kBlock));
    }
  });
  for (int64_t o = 0; o < NK; ++o) {
    Acc<T> s = 0;
    for (int64_t j = 0; j < nb; ++j) s += partial[size_t(o * nb + j)];
    po[o] = T(s);
  }
}

// The innermost dim is kept (e.g. a bias gradient summing [N, D] to [D]): add whole
// rows into a strip of accumulators, which vectorises along the kept dim. The strip
// is wide so that each row is read in long contiguous runs.
template <typename T>
void sum_outer(const T* pa, T* po, const std::vector<Dim>& K, const std::vector<Dim>& R) {
  constexpr int64_t W = kStrip;
  const Dim kin = K.back();
  const std::vector<Dim> kouter(K.begin(), K.end() - 1);
  const int64_t NKo = dims_numel(kouter), NR = dims_numel(R), D = kin.size;
  const int64_t nc = (D + W - 1) / W;
  const int64_t items = NKo * nc;
  const int64_t width = std::min(D, W);
  // Few strips: split the rows into blocks too. Decided by shape alone, not the
  // thread count, so results are reproducible across --threads.
  int64_t nrb = 1;
  if (items < kFewItems) nrb = std::clamp<int64_t>(NR * width / kBlock, 1, std::min<int64_t>(NR, kMaxRowBlocks));
  const int64_t rows = (NR + nrb - 1) / nrb;
  std::vector<Acc<T>> partial(nrb > 1 ? size_t(items * nrb * W) : 0);

  auto body = [&](int64_t it) {
    const int64_t item = it / nrb, rb = it % nrb;
    const int64_t ko = item / nc, c = item % nc;
    const int64_t j0 = c * W, w = std::min(W, D - j0);
    const int64_t r0 = std::min(NR, rb * rows), r1 = std::min(NR, r0 + rows);
    const int64_t s = kin.stride;
    Odometer k(kouter, ko);
    const T* base = pa + k.off + j0 * s;
    Acc<T> acc[W];
    for (int64_t j = 0; j < w; ++j) acc[j] = 0;
    Odometer r(R, r0);
    int64_t row = r0;
    // Four rows per pass: a quarter of the accumulator traffic. Floats pair up in T
    // before widening (a few ulp on a 4-term sum); integers widen first.
    for (; row + 4 <= r1; row += 4) {
      const T* __restrict p0 = base + r.off;
      r.next();
      const T* __restrict p1 = base + r.off;
      r.next();
      const T* __restrict p2 = base + r.off;
      r.next();
      const T* __restrict p3 = base + r.off;
      r.next();
      if (s == 1) {
        if constexpr (std::is_floating_point_v<T>) {
#pragma omp simd
          for (int64_t j = 0; j < w; ++j) acc[j] += Acc<T>((p0[j] + p1[j]) + (p2[j] + p3[j]));
        } else {
          for (int64_t j = 0; j < w; ++j)
            acc[j] += (Acc<T>(p0[j]) + Acc<T>(p1[j])) + (Acc<T>(p2[j]) + Acc<T>(p3[j]));
        }
      } else {
        for (int64_t j = 0; j < w; ++j)
          acc[j] += (Acc<T>(p0[j * s]) + Acc<T>(p1[j * s])) + (Acc<T>(p2[j * s]) + Acc<T>(p3[j * s]));
      }
    }
    for (; row < r1; ++row, r.next()) {
      const T* p = base + r.off;
      for (int64_t j = 0; j < w; ++j) acc[j] += Acc<T>(p[j * s]);
    }
    if (nrb == 1) {
      T* o = po + ko * D + j0;
      for (int64_t j = 0; j < w; ++j) o[j] = T(acc[j]);
    } else {
      std::copy(acc, acc + w, partial.begin() + it * W);
    }
  };
  const int64_t work = std::max<int64_t>(1, rows * width);
  parallel_for(items * nrb, std::max<int64_t>(1, kParallelGrain / work), [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) body(it);
  });
  if (nrb == 1) return;
  for (int64_t item = 0; item < items; ++item) {
    const int64_t ko = item / nc, c = item % nc;
    const int64_t j0 = c * W, w = std::min(W, D - j0);
    for (int64_t j = 0; j < w; ++j) {
      Acc<T> sum = 0;
      for (int64_t rb = 0; rb < nrb; ++rb) sum += partial[size_t((item * nrb + rb) * W + j)];
      po[ko * D + j0 + j] = T(sum);
    }
  }
}

template <typename T>
void sum_typed(const TensorRef& a, const std::vector<bool>& reduce, const TensorRef& out) {
  Shape ost = contiguous_strides(out.shape());
  for (size_t d = 0; d < reduce.size(); ++d)
    if (reduce[d]) ost[d] = 0;
  StridedLoop loop = make_loop(a.shape(), {ost, a.strides()});
  BET_CHECK(loop.shape.size() <= size_t(kMaxRank), "sum: rank ", loop.shape.size(), " too large");
  // Coalescing never merges a reduced dim (out stride 0) with a kept one.
  std::vector<Dim> K, R;
  for (size_t d = 0; d < loop.shape.size(); ++d) {
    Dim x{loop.shape[d], loop.strides[1][d]};
    if (loop.strides[0][d] == 0 && loop.shape[d] > 1) R.push_back(x);
    else K.push_back(x);
  }
  const T* pa = static_cast<const T*>(a.raw_data());
  T* po = static_cast<T*>(out.raw_data());
  const bool inner_reduced = !R.empty() && (K.empty() || loop.strides[0].back() == 0);
  if (inner_reduced) sum_inner<T>(pa, po, K, R);
  else sum_outer<T>(pa, po, K, R);
}

template <typename Fn>
void dispatch(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::F32: return fn(float{});
    case DType::F64: return fn(double{});
    case DType::I32: return fn(int32_t{});
    case DType::I64: return fn(int64_t{});
    default: fail(op, ": dtype ", dtype_name(t), " not supported on cpu");
  }
}

// outer x n x inner geometry of a contiguous tensor around `dim`.
struct Split3 {
  int64_t outer = 1, n = 1, inner = 1;
};
Split3 split3(const Shape& s, int64_t dim) {
  Split3 r;
  for (int64_t d = 0; d < int64_t(s.size()); ++d) {
    if (d < dim) r.outer *= s[d];
    else if (d == dim) r.n = s[d];
    else r.inner *= s[d];
  }
  return r;
}

template <typename T>
inline bool beats(T v, T best) {
  if constexpr (std::is_floating_point_v<T>) return v > best || (v != v && best == best);
  else return v > best;
}

// First r < m with pred(q[r]) (one exists), as a vectorisable min-reduction.
template <typename T, typename P>
int64_t first_where(const T* q, int64_t m, P pred) {
  int64_t idx = m;
#pragma omp simd reduction(min : idx)
  for (int64_t r = 0; r < m; ++r) idx = pred(q[r]) && r < idx ? r : idx;
  return idx;
}

template <typename T>
void max_typed(const TensorRef& a, int64_t dim, const TensorRef& values, const TensorRef& indices) {
  const Split3 g = split3(a.shape(), dim);
  const T* pa = static_cast<const T*>(a.raw_data());
  T* pv = values.defined() ? static_cast<T*>(values.raw_data()) : nullptr;
  int64_t* pi = indices.defined() ? static_cast<int64_t*>(indices.raw_data()) : nullptr;
  if (g.inner == 1) {
    parallel_for(g.outer, std::max<int64_t>(1, kParallelGrain / g.n), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        const T* p = pa + o * g.n;
        // Block maxima vectorise; only a block that raises the running max is
        // scanned for its first position (a few blocks per row on typical data).
        T best = p[0];
        int64_t bi = 0;
        for (int64_t c = 0; c < g.n; c += kMaxBlock) {
          const int64_t m = std::min(kMaxBlock, g.n - c);
          const T* q = p + c;
          T bm = q[0];
          int nan = 0;  // int, not bool: a bool reduction does not vectorise
          if constexpr (std::is_floating_point_v<T>) {
#pragma omp simd reduction(max : bm) reduction(| : nan)
            for (int64_t r = 0; r < m; ++r) {
              bm = q[r] > bm ? q[r] : bm;
              nan |= int(q[r] != q[r]);
            }
          } else {
            for (int64_t r = 0; r < m; ++r) bm = q[r] > bm ? q[r] : bm;
          }
          if (nan) {  // the first NaN is the answer
            const int64_t r = first_where(q, m, [](T v) { return v != v; });
            best = q[r];
            bi = c + r;
            break;
          }
          if (c == 0 || bm > best) {
            bi = c + first_where(q, m, [bm](T v) { return v == bm; });
            best = bm;
          }
        }
        if (pv) pv[o] = best;
        if (pi) pi[o] = bi;
      }
    });
    return;
  }
  constexpr int64_t W = kStrip;
  const int64_t nc = (g.inner + W - 1) / W;
  const int64_t work = g.n * std::min(g.inner, W);
  parallel_for(g.outer * nc, std::max<int64_t>(1, kParallelGrain / work), [&](int64_t b, int64_t e) {
    T best[W];
    int64_t bi[W];
    for (int64_t it = b; it < e; ++it) {
      const int64_t o = it / nc, j0 = (it % nc) * W, w = std::min(W, g.inner - j0);
      const T* p = pa + o * g.n * g.inner + j0;
      for (int64_t j = 0; j < w; ++j) best[j] = p[j], bi[j] = 0;
      for (int64_t r = 1; r < g.n; ++r) {
        const T* q = p + r * g.inner;
        for (int64_t j = 0; j < w; ++j) {
          const bool take = beats(q[j], best[j]);
          best[j] = take ? q[j] : best[j];
          bi[j] = take ? r : bi[j];
        }
      }
      if (pv) std::copy(best, best + w, pv + o * g.inner + j0);
      if (pi) std::copy(bi, bi + w, pi + o * g.inner + j0);
    }
  });
}

template <typename T>
void scatter_typed(const TensorRef& gt, const TensorRef& idx, int64_t dim, const TensorRef& out) {
  const Split3 g = split3(out.shape(), dim);
  const T* pg = static_cast<const T*>(gt.raw_data());
  const int64_t* pi = static_cast<const int64_t*>(idx.raw_data());
  T* po = static_cast<T*>(out.raw_data());
  parallel_for(g.outer, std::max<int64_t>(1, kParallelGrain / g.inner), [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o)
      for (int64_t j = 0; j < g.inner; ++j) {
        const int64_t r = pi[o * g.inner + j];
        po[(o * g.n + r) * g.inner + j] = pg[o * g.inner + j];
      }
  });
}

template <typename T>
void cumsum_typed(const TensorRef& a, int64_t dim, bool reverse, const TensorRef& out) {
  const Split3 g = split3(a.shape(), dim);
  const T* pa = static_cast<const T*>(a.raw_data());
  T* po = static_cast<T*>(out.raw_data());
  // Walk rows r = 0..n-1 (or back), element i of row r at (first + r * step) * inner.
  const int64_t first = reverse ? g.n - 1 : 0, step = reverse ? -1 : 1;
  if (g.inner == 1) {
    parallel_for(g.outer, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(g.n, 1)), [&](int64_t b, int64_t e) {
      // Eight rows side by side: eight independent add chains instead of one
      // latency-bound chain.
      constexpr int64_t G = 8;
      int64_t o = b;
      for (; o + G <= e; o += G) {
        const T* p = pa + o * g.n;
        T* q = po + o * g.n;
        Acc<T> acc[G] = {};
        for (int64_t r = 0, i = first; r < g.n; ++r, i += step)
          for (int64_t k = 0; k < G; ++k) {
            acc[k] += Acc<T>(p[k * g.n + i]);
            q[k * g.n + i] = T(acc[k]);
          }
      }
      for (; o < e; ++o) {
        const T* p = pa + o * g.n;
        T* q = po + o * g.n;
        Acc<T> acc = 0;
        for (int64_t r = 0, i = first; r < g.n; ++r, i += step) {
          acc += Acc<T>(p[i]);
          q[i] = T(acc);
        }
      }
    });
    return;
  }
  constexpr int64_t W = kStrip;
  const int64_t nc = (g.inner + W - 1) / W;
  const int64_t work = std::max<int64_t>(1, g.n * std::min(g.inner, W));
  parallel_for(g.outer * nc, std::max<int64_t>(1, kParallelGrain / work), [&](int64_t b, int64_t e) {
    Acc<T> acc[W];
    for (int64_t it = b; it < e; ++it) {
      const int64_t o = it / nc, j0 = (it % nc) * W, w = std::min(W, g.inner - j0);
      const T* p = pa + o * g.n * g.inner + j0;
      T* q = po + o * g.n * g.inner + j0;
      for (int64_t j = 0; j < w; ++j) acc[j] = 0;
      for (int64_t r = 0, i = first; r < g.n; ++r, i += step) {
        const T* pr = p + i * g.inner;
        T* qr = q + i * g.inner;
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) {
          acc[j] += Acc<T>(pr[j]);
          qr[j] = T(acc[j]);
        }
      }
    }
  });
}

}  // namespace

void sum(const TensorRef& a, const std::vector<bool>& reduce, const TensorRef& out) {
  if (a.dtype() == DType::BF16) {
    // The CPU keeps no bf16 kernels: summed in f32 (as the GPU accumulates), then rounded.
    ScratchTensor a32(a.shape(), DType::F32, a.device()), o32(out.shape(), DType::F32, out.device());
    copy(a, a32);
    sum(a32, reduce, o32);
    copy(o32, out);
    return;
  }
  if (out.numel() == 0) return;
  if (a.numel() == 0) {
    fill(out, 0.0);
    return;
  }
  dispatch(a.dtype(), "sum", [&](auto tag) { sum_typed<decltype(tag)>(a, reduce, out); });
}

void max_dim(const TensorRef& a, int64_t dim, const TensorRef& values, const TensorRef& indices) {
  if (a.numel() == 0) return;
  dispatch(a.dtype(), "max", [&](auto tag) { max_typed<decltype(tag)>(a, dim, values, indices); });
}

void scatter_dim(const TensorRef& g, const TensorRef& idx, int64_t dim, const TensorRef& out) {
  if (g.numel() == 0) return;
  dispatch(g.dtype(), "max backward", [&](auto tag) { scatter_typed<decltype(tag)>(g, idx, dim, out); });
}

void cumsum(const TensorRef& a, int64_t dim, bool reverse, const TensorRef& out) {
  if (a.numel() == 0) return;
  dispatch(a.dtype(), "cumsum", [&](auto tag) { cumsum_typed<decltype(tag)>(a, dim, reverse, out); });
}

}  // namespace bet::kernels::cpu
