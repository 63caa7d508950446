// Reductions over arbitrary dims, max/argmax along a dim, and prefix sums.
//
// sum: the input's dims are coalesced and split into kept (K) and reduced (R) sets.
// When the innermost input dim is reduced, a warp (short reductions) or a block
// (long ones) sums each output with coalesced loads; otherwise each thread owns an
// output and walks R, adjacent threads reading adjacent addresses, with R split
// into fixed chunks when there are too few outputs to fill the GPU.
#include "kernels/reduce.h"

#include "kernels/cuda/common.cuh"

namespace bet::kernels::cuda {

namespace {

struct SumPlan {
  Geom<1> K;  // kept dims, input strides; output index = row-major index over K
  Geom<1> R;  // reduced dims, input strides
  bool inner_reduced = false;
};

SumPlan plan_sum(const TensorRef& a, const std::vector<bool>& reduce, const TensorRef& out) {
  Shape ost = contiguous_strides(out.shape());
  for (size_t d = 0; d < reduce.size(); ++d)
    if (reduce[d]) ost[d] = 0;
  const Geom<2> g = geom_of<2>(a.shape(), {&ost, &a.strides()}, "sum");
  // Coalescing never merges a reduced dim (output stride 0) with a kept one.
  Shape ks, kst, rs, rst;
  for (int d = 0; d < g.rank; ++d) {
    if (g.stride[0][d] == 0 && g.size[d] > 1) {
      rs.push_back(g.size[d]);
      rst.push_back(g.stride[1][d]);
    } else {
      ks.push_back(g.size[d]);
      kst.push_back(g.stride[1][d]);
    }
  }
  SumPlan p;
  p.inner_reduced = !rs.empty() && g.stride[0][g.rank - 1] == 0 && g.size[g.rank - 1] > 1;
  if (ks.empty()) ks = {1}, kst = {0};
  if (rs.empty()) rs = {1}, rst = {0};
  // K and R are already coalesced; copy them as they are (make_geom would drop 1s).
  auto fill = [](Geom<1>& G, const Shape& s, const Shape& st) {
    G.rank = int(s.size());
    G.numel = 1;
    for (size_t d = 0; d < s.size(); ++d) {
      G.size[d] = s[d];
      G.stride[0][d] = st[d];
      G.numel *= s[d];
    }
  };
  fill(p.K, ks, kst);
  fill(p.R, rs, rst);
  return p;
}

__device__ __forceinline__ int64_t off1(const Geom<1>& g, int64_t i) {
  int64_t o;
  g.offsets<int64_t>(i, &o);
  return o;
}

// One warp per output (8 per block) or one block per output.
template <typename T, bool kWarp>
__global__ void __launch_bounds__(kThreads) sum_inner_kernel(const T* a, T* out, Geom<1> K, Geom<1> R) {
  using A = SumAcc<T>;
  __shared__ A scratch[32];
  const int64_t NR = R.numel;
  if constexpr (kWarp) {
    const int lane = threadIdx.x & 31;
    const int64_t per_block = blockDim.x / 32;
    for (int64_t o = int64_t(blockIdx.x) * per_block + (threadIdx.x >> 5); o < K.numel; o += int64_t(gridDim.x) * per_block) {
      const int64_t base = off1(K, o);
      A acc = 0;
      for (int64_t r = lane; r < NR; r += 32) acc += A(convert<Acc<T>>(a[base + off1(R, r)]));
      acc = warp_sum(acc);
      if (lane == 0) out[o] = convert<T>(acc);
    }
  } else {
    for (int64_t o = blockIdx.x; o < K.numel; o += gridDim.x) {
      const int64_t base = off1(K, o);
      A acc = 0;
      for (int64_t r = threadIdx.x; r < NR; r += blockDim.x) acc += A(convert<Acc<T>>(a[base + off1(R, r)]));
      acc = block_sum(acc, scratch);
      if (threadIdx.x == 0) out[o] = convert<T>(acc);
    }
  }
}

// Thread per (output, chunk of R). With one chunk the result goes to `out`,
// else to partial[chunk * NK + o].
template <typename T>
__global__ void __launch_bounds__(kThreads) sum_outer_kernel(const T* a, T* out, SumAcc<T>* partial, Geom<1> K,
                                                             Geom<1> R, int64_t chunk) {
  using A = SumAcc<T>;
  const int64_t NK = K.numel, NR = R.numel;
  const int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= NK) return;
  const int64_t c = blockIdx.y;
  const int64_t r0 = c * chunk, r1 = min(NR, r0 + chunk);
  const int64_t base = off1(K, o);
  A acc = 0;
  if (R.rank == 1) {
    const int64_t s = R.stride[0][0];
    for (int64_t r = r0; r < r1; ++r) acc += A(convert<Acc<T>>(a[base + r * s]));
  } else {
    for (int64_t r = r0; r < r1; ++r) acc += A(convert<Acc<T>>(a[base + off1(R, r)]));
  }
  if (partial) partial[c * NK + o] = acc;
  else out[o] = convert<T>(acc);
}

// Few outputs, long reductions: block (c, o) sums chunk c of output o's elements.
template <typename T>
__global__ void __launch_bounds__(kThreads) sum_inner_chunked_kernel(const T* a, SumAcc<T>* partial, Geom<1> K,
                                                                     Geom<1> R, int64_t chunk) {
  using A = SumAcc<T>;
  __shared__ A scratch[32];
  const int64_t c = blockIdx.x, o = blockIdx.y;
  const int64_t r0 = c * chunk, r1 = min(R.numel, r0 + chunk);
  const int64_t base = off1(K, o);
  A acc = 0;
  for (int64_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) acc += A(convert<Acc<T>>(a[base + off1(R, r)]));
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partial[c * K.numel + o] = acc;
}

template <typename T>
__global__ void sum_partials_kernel(const SumAcc<T>* partial, T* out, int64_t NK, int64_t chunks) {
  const int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= NK) return;
  SumAcc<T> acc = 0;
  for (int64_t c = 0; c < chunks; ++c) acc += partial[c * NK + o];
  out[o] = convert<T>(acc);
}

template <typename T>
void sum_t(const TensorRef& a, const std::vector<bool>& reduce, const TensorRef& out) {
  const SumPlan p = plan_sum(a, reduce, out);
  const T* pa = ptr<T>(a);
  T* po = ptr<T>(out);
  const int64_t NK = p.K.numel, NR = p.R.numel;
  if (p.inner_reduced) {
    const int64_t fill = int64_t(sm_count()) * 4;
    if (NK < fill && NR > 65536) {
      const int64_t chunks = std::min<int64_t>((fill + NK - 1) / NK, (NR + 8191) / 8192);
      const int64_t chunk = (NR + chunks - 1) / chunks;
      ScratchTensor part({chunks, NK}, std::is_integral_v<T> ? DType::I64 : DType::F64, out.device());
      auto* pp = static_cast<SumAcc<T>*>(part.raw_data());
      sum_inner_chunked_kernel<T><<<dim3(unsigned(chunks), unsigned(NK)), kThreads>>>(pa, pp, p.K, p.R, chunk);
      BET_CUDA_LAUNCHED("sum");
      sum_partials_kernel<T><<<unsigned((NK + kThreads - 1) / kThreads), kThreads>>>(pp, po, NK, chunks);
      BET_CUDA_LAUNCHED("sum");
      return;
    }
    if (NR <= 4096) {
      const int64_t blocks = std::min<int64_t>((NK + 7) / 8, int64_t(sm_count()) * 64);
      sum_inner_kernel<T, true><<<unsigned(std::max<int64_t>(blocks, 1)), kThreads>>>(pa, po, p.K, p.R);
    } else {
      const int64_t blocks = std::min<int64_t>(NK, int64_t(sm_count()) * 16);
      sum_inner_kernel<T, false><<<unsigned(std::max<int64_t>(blocks, 1)), kThreads>>>(pa, po, p.K, p.R);
    }
    BET_CUDA_LAUNCHED("sum");
    return;
  }
  // Enough threads to fill the device: split R when the outputs alone do not.
  const int64_t want = int64_t(sm_count()) * 512;
  int64_t chunks = 1;
  if (NK < want && NR >= 256) chunks = std::min<int64_t>(std::min<int64_t>((want + NK - 1) / NK, NR / 64), 1024);
  if (chunks < 1) chunks = 1;
  const int64_t chunk = (NR + chunks - 1) / chunks;
  chunks = (NR + chunk - 1) / chunk;
  const dim3 grid(unsigned((NK + kThreads - 1) / kThreads), unsigned(chunks));
  if (chunks == 1) {
    sum_outer_kernel<T><<<grid, kThreads>>>(pa, po, nullptr, p.K, p.R, chunk);
    BET_CUDA_LAUNCHED("sum");
    return;
  }
  ScratchTensor part({chunks, NK}, std::is_integral_v<T> ? DType::I64 : DType::F64, out.device());
  auto* pp = static_cast<SumAcc<T>*>(part.raw_data());
  sum_outer_kernel<T><<<grid, kThreads>>>(pa, po, pp, p.K, p.R, chunk);
  BET_CUDA_LAUNCHED("sum");
  sum_partials_kernel<T><<<unsigned((NK + kThreads - 1) / kThreads), kThreads>>>(pp, po, NK, chunks);
  BET_CUDA_LAUNCHED("sum");
}

struct Split3 {
  int64_t outer = 1, n = 1, inner = 1;
};
Split3 split3(const Shape& s, int64_t dim) {
  Split3 r;
  for (int64_t d = 0; d < int64_t(s.size()); ++d) {
    if (d < dim) r.outer *= s[size_t(d)];
    else if (d == dim) r.n = s[size_t(d)];
    else r.inner *= s[size_t(d)];
  }
  return r;
}

template <typename C>
__device__ __forceinline__ bool is_nan(C v) {
  if constexpr (std::is_floating_point_v<C>) return v != v;
  else return false;
}

// (v, i) is a better maximum than (bv, bi): NaN beats numbers, then larger, then
// the lower index. Associative and commutative, so any combining order gives the
// first NaN if any, else the first maximum.
template <typename C>
__device__ __forceinline__ bool better(C v, int64_t i, C bv, int64_t bi) {
  const bool nv = is_nan(v), nb = is_nan(bv);
  if (nv || nb) return nv && (!nb || i < bi);
  return v > bv || (v == bv && i < bi);
}

// Rows along the last dim: one warp per row.
template <typename T>
__global__ void __launch_bounds__(kThreads) max_rows_kernel(const T* a, T* values, int64_t* indices, int64_t rows,
                                                            int64_t n) {
  using C = Acc<T>;
  const int lane = threadIdx.x & 31;
  const int64_t per_block = blockDim.x / 32;
  for (int64_t r = int64_t(blockIdx.x) * per_block + (threadIdx.x >> 5); r < rows; r += int64_t(gridDim.x) * per_block) {
    const T* p = a + r * n;
    C best = convert<C>(p[0]);
    int64_t bi = 0;
    for (int64_t j = lane; j < n; j += 32) {
      const C v = convert<C>(p[j]);
      if (better(v, j, best, bi)) best = v, bi = j;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const C ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (better(ov, oi, best, bi)) best = ov, bi = oi;
    }
    if (lane == 0) {
      if (values) values[r] = convert<T>(best);
      if (indices) indices[r] = bi;
    }
  }
}

// A dim with inner > 1: thread per (outer, inner) position, serial along the dim.
template <typename T>
__global__ void max_strided_kernel(const T* a, T* values, int64_t* indices, int64_t outer, int64_t n, int64_t inner) {
  using C = Acc<T>;
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= outer * inner) return;
  const int64_t o = t / inner, j = t % inner;
  const T* p = a + o * n * inner + j;
  C best = convert<C>(p[0]);
  int64_t bi = 0;
  for (int64_t r = 1; r < n; ++r) {
    const C v = convert<C>(p[r * inner]);
    if (better(v, r, best, bi)) best = v, bi = r;
  }
  if (values) values[t] = convert<T>(best);
  if (indices) indices[t] = bi;
}

template <typename T>
__global__ void scatter_dim_kernel(const T* g, const int64_t* idx, T* out, int64_t outer, int64_t n, int64_t inner) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= outer * inner) return;
  const int64_t o = t / inner, j = t % inner;
  out[(o * n + idx[t]) * inner + j] = g[t];
}

// Inclusive scan of one row per block: chunks of blockDim elements, a warp scan
// (shuffles) and a scan of the warp totals, carried across chunks in SumAcc.
template <typename T>
__global__ void __launch_bounds__(kThreads) cumsum_rows_kernel(const T* a, T* out, int64_t n, bool reverse) {
  using A = SumAcc<T>;
  __shared__ A warp_tot[32];
  __shared__ A carry_sh;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const T* p = a + int64_t(blockIdx.x) * n;
  T* q = out + int64_t(blockIdx.x) * n;
  A carry = 0;
  for (int64_t c0 = 0; c0 < n; c0 += blockDim.x) {
    const int64_t k = c0 + threadIdx.x;
    const int64_t i = reverse ? n - 1 - k : k;
    A v = k < n ? A(convert<Acc<T>>(p[i])) : A(0);
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const A u = __shfl_up_sync(0xffffffffu, v, o);
      if (lane >= o) v += u;
    }
    if (lane == 31) warp_tot[warp] = v;
    __syncthreads();
    if (warp == 0) {
      A w = lane < nw ? warp_tot[lane] : A(0);
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const A u = __shfl_up_sync(0xffffffffu, w, o);
        if (lane >= o) w += u;
      }
      if (lane < nw) warp_tot[lane] = w;  // inclusive scan of warp totals
      if (lane == nw - 1) carry_sh = w;   // chunk total
    }
    __syncthreads();
    const A before = warp > 0 ? warp_tot[warp - 1] : A(0);
    if (k < n) q[i] = convert<T>(carry + before + v);
    carry += carry_sh;
    __syncthreads();
  }
}

template <typename T>
__global__ void cumsum_strided_kernel(const T* a, T* out, int64_t outer, int64_t n, int64_t inner, bool reverse) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= outer * inner) return;
  const int64_t o = t / inner, j = t % inner;
  const T* p = a + o * n * inner + j;
  T* q = out + o * n * inner + j;
  SumAcc<T> acc = 0;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t i = reverse ? n - 1 - r : r;
    acc += SumAcc<T>(convert<Acc<T>>(p[i * inner]));
    q[i * inner] = convert<T>(acc);
  }
}

unsigned blocks_of(int64_t n, int threads = kThreads) { return unsigned((n + threads - 1) / threads); }

}  // namespace

void sum(const TensorRef& a, const std::vector<bool>& reduce, const TensorRef& out) {
  if (out.numel() == 0) return;
  DeviceGuard dg(out);
  if (a.numel() == 0) {
    BET_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), 0));
    return;
  }
  dispatch_all(a.dtype(), "sum", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, f16>) fail("sum: f16 not supported on cuda");
    else sum_t<T>(a, reduce, out);
  });
}

void max_dim(const TensorRef& a, int64_t dim, const TensorRef& values, const TensorRef& indices) {
  if (a.numel() == 0) return;
  DeviceGuard dg(a);
  const Split3 g = split3(a.shape(), dim);
  dispatch_all(a.dtype(), "max", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, f16>) {
      fail("max: f16 not supported on cuda");
    } else {
      T* pv = values.defined() ? ptr<T>(values) : nullptr;
      int64_t* pi = indices.defined() ? ptr<int64_t>(indices) : nullptr;
      if (g.inner == 1) {
        const int64_t blocks = std::min<int64_t>((g.outer + 7) / 8, int64_t(sm_count()) * 64);
        max_rows_kernel<T><<<unsigned(std::max<int64_t>(blocks, 1)), kThreads>>>(ptr<T>(a), pv, pi, g.outer, g.n);
      } else {
        max_strided_kernel<T><<<blocks_of(g.outer * g.inner), kThreads>>>(ptr<T>(a), pv, pi, g.outer, g.n, g.inner);
      }
      BET_CUDA_LAUNCHED("max");
    }
  });
}

void scatter_dim(const TensorRef& gt, const TensorRef& idx, int64_t dim, const TensorRef& out) {
  if (gt.numel() == 0) return;
  DeviceGuard dg(out);
  const Split3 g = split3(out.shape(), dim);
  dispatch_float(gt.dtype(), "max backward", [&](auto tag) {
    using T = decltype(tag);
    scatter_dim_kernel<T><<<blocks_of(g.outer * g.inner), kThreads>>>(ptr<T>(gt), ptr<int64_t>(idx), ptr<T>(out),
                                                                      g.outer, g.n, g.inner);
    BET_CUDA_LAUNCHED("max backward");
  });
}

void cumsum(const TensorRef& a, int64_t dim, bool reverse, const TensorRef& out) {
  if (a.numel() == 0) return;
  DeviceGuard dg(out);
  const Split3 g = split3(a.shape(), dim);
  dispatch_all(a.dtype(), "cumsum", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, f16>) {
      fail("cumsum: f16 not supported on cuda");
    } else {
      if (g.inner == 1 && g.n > 32) {
        const int threads = g.n >= kThreads ? kThreads : int((g.n + 31) / 32 * 32);
        cumsum_rows_kernel<T><<<unsigned(g.outer), threads>>>(ptr<T>(a), ptr<T>(out), g.n, reverse);
      } else {
        cumsum_strided_kernel<T><<<blocks_of(g.outer * g.inner), kThreads>>>(ptr<T>(a), ptr<T>(out), g.outer, g.n,
                                                                             g.inner, reverse);
      }
      BET_CUDA_LAUNCHED("cumsum");
    }
  });
}

}  // namespace bet::kernels::cuda
