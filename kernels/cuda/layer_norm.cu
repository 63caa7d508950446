// LayerNorm: one block per row (rows are contiguous), the row's statistics reduced
// in a fixed order inside the block. dw/db are column sums over rows, done as fixed
// row blocks of partials and a second pass.
#include "kernels/layer_norm.h"

#include <algorithm>
#include <cmath>

#include "kernels/cuda/common.cuh"

namespace bet::kernels::cuda {

namespace {

template <typename T>
__global__ void ln_fwd_kernel(const T* x, const T* w, const T* b, double eps, T* y, T* mean, T* rstd, int64_t D) {
  using C = Acc<T>;
  __shared__ C scratch[32];
  const int64_t r = blockIdx.x;
  const T* xr = x + r * D;
  T* yr = y + r * D;
  C s = 0;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) s += convert<C>(xr[j]);
  const C mu = block_sum(s, scratch) / C(D);
  C v = 0;  // two-pass variance: no cancellation when |mean| >> std
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    const C d = convert<C>(xr[j]) - mu;
    v += d * d;
  }
  const C rs = C(1) / sqrt(block_sum(v, scratch) / C(D) + C(eps));
  if (threadIdx.x == 0) {
    mean[r] = convert<T>(mu);
    rstd[r] = convert<T>(rs);
  }
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    C h = (convert<C>(xr[j]) - mu) * rs;
    if (w) h *= convert<C>(w[j]);
    if (b) h += convert<C>(b[j]);
    yr[j] = convert<T>(h);
  }
}

template <typename T>
__global__ void ln_bwd_dx_kernel(const T* g, const T* x, const T* w, const T* mean, const T* rstd, T* dx, int64_t D) {
  using C = Acc<T>;
  __shared__ C scratch[32];
  const int64_t r = blockIdx.x;
  const T* gr = g + r * D;
  const T* xr = x + r * D;
  const C mu = convert<C>(mean[r]), rs = convert<C>(rstd[r]);
  C a = 0, c = 0;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    C gh = convert<C>(gr[j]);
    if (w) gh *= convert<C>(w[j]);
    a += gh;
    c += gh * (convert<C>(xr[j]) - mu);
  }
  a = block_sum(a, scratch) / C(D);
  c = block_sum(c, scratch) / C(D) * rs * rs;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    C gh = convert<C>(gr[j]);
    if (w) gh *= convert<C>(w[j]);
    dx[r * D + j] = convert<T>(rs * (gh - a - (convert<C>(xr[j]) - mu) * c));
  }
}

// partial[blk][j] over rows [blk * per, (blk + 1) * per): dw = sum g * xhat, db = sum g.
template <typename T>
__global__ void ln_bwd_partial_kernel(const T* g, const T* x, const T* mean, const T* rstd, Acc<T>* pw, Acc<T>* pb,
                                      int64_t rows, int64_t D, int64_t per) {
  using C = Acc<T>;
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t blk = blockIdx.y;
  if (j >= D) return;
  const int64_t r0 = blk * per, r1 = min(rows, r0 + per);
  C sw = 0, sb = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const C gv = convert<C>(g[r * D + j]);
    if (pw) sw += gv * (convert<C>(x[r * D + j]) - convert<C>(mean[r])) * convert<C>(rstd[r]);
    sb += gv;
  }
  if (pw) pw[blk * D + j] = sw;
  if (pb) pb[blk * D + j] = sb;
}

template <typename T>
__global__ void ln_bwd_reduce_kernel(const Acc<T>* part, T* outp, int64_t nblk, int64_t D) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= D) return;
  Acc<T> s = 0;
  for (int64_t b = 0; b < nblk; ++b) s += part[b * D + j];
  outp[j] = convert<T>(s);
}

}  // namespace

void layer_norm_forward(const TensorRef& x, const TensorRef& w, const TensorRef& b, double eps, const TensorRef& out,
                        const TensorRef& mean, const TensorRef& rstd) {
  const int64_t D = x.shape().back();
  const int64_t rows = D == 0 ? 0 : x.numel() / D;
  if (rows == 0) return;
  DeviceGuard dg(x);
  dispatch_float(x.dtype(), "layer_norm", [&](auto tag) {
    using T = decltype(tag);
    ln_fwd_kernel<T><<<rows_grid(rows), row_threads(D)>>>(ptr<T>(x), w.defined() ? ptr<T>(w) : nullptr,
                                                          b.defined() ? ptr<T>(b) : nullptr, eps, ptr<T>(out),
                                                          ptr<T>(mean), ptr<T>(rstd), D);
    BET_CUDA_LAUNCHED("layer_norm");
  });
}

void layer_norm_backward(const TensorRef& g, const TensorRef& x, const TensorRef& w, const TensorRef& mean,
                         const TensorRef& rstd, const TensorRef& dx, const TensorRef& dw, const TensorRef& db) {
  const int64_t D = x.shape().back();
  const int64_t rows = D == 0 ? 0 : x.numel() / D;
  DeviceGuard dg(x);
  dispatch_float(x.dtype(), "layer_norm backward", [&](auto tag) {
    using T = decltype(tag);
    if (rows == 0) {  // empty input: the column sums are zero
      for (const TensorRef* t : {&dw, &db})
        if (t->defined() && t->numel() > 0) BET_CUDA_CHECK(cudaMemsetAsync(t->raw_data(), 0, t->nbytes(), 0));
      return;
    }
    if (dx.defined()) {
      ln_bwd_dx_kernel<T><<<rows_grid(rows), row_threads(D)>>>(ptr<T>(g), ptr<T>(x), w.defined() ? ptr<T>(w) : nullptr,
                                                               ptr<T>(mean), ptr<T>(rstd), ptr<T>(dx), D);
      BET_CUDA_LAUNCHED("layer_norm backward");
    }
    if (!dw.defined() && !db.defined()) return;
    // Row blocks: a function of the row count only, so the sums do not depend on
    // the device.
    const int64_t nblk = std::min<int64_t>(256, (rows + 31) / 32);
    const int64_t per = (rows + nblk - 1) / nblk;
    using C = Acc<T>;
    const DType cdt = std::is_same_v<C, double> ? DType::F64 : DType::F32;
    ScratchTensor part({2, nblk, D}, cdt, x.device());
    C* pw = dw.defined() ? static_cast<C*>(part.raw_data()) : nullptr;
    C* pb = db.defined() ? static_cast<C*>(part.raw_data()) + nblk * D : nullptr;
    const dim3 grid(unsigned((D + 127) / 128), unsigned(nblk));
    ln_bwd_partial_kernel<T><<<grid, 128>>>(ptr<T>(g), ptr<T>(x), ptr<T>(mean), ptr<T>(rstd), pw, pb, rows, D, per);
    BET_CUDA_LAUNCHED("layer_norm backward");
    if (pw) ln_bwd_reduce_kernel<T><<<unsigned((D + 127) / 128), 128>>>(pw, ptr<T>(dw), nblk, D);
    if (pb) ln_bwd_reduce_kernel<T><<<unsigned((D + 127) / 128), 128>>>(pb, ptr<T>(db), nblk, D);
    BET_CUDA_LAUNCHED("layer_norm backward");
  });
}

}  // namespace bet::kernels::cuda
