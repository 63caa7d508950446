// Softmax, LayerNorm and cross-entropy: one block per row (rows are contiguous), the
// row's statistics reduced in a fixed order inside the block. LayerNorm's dw/db are
// column sums over rows, done as fixed row blocks of partials and a second pass.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/nn.h"
#include "kernels/cuda/reduce.h"

namespace bet::kernels::cuda {

namespace {

int64_t last_dim(const Tensor& t) { return t.dim() == 0 ? 1 : t.shape().back(); }

// Threads per row block: a multiple of 32, no more than the row needs.
int row_threads(int64_t n) {
  if (n <= 32) return 32;
  if (n <= 64) return 64;
  if (n <= 128) return 128;
  return kThreads;
}

template <typename C>
__device__ __forceinline__ C neg_inf() {
  return -C(INFINITY);
}

// Where a row's mask lives: row-major row index over the leading dims -> offset.
struct MaskRows {
  const void* p = nullptr;
  DType dtype = DType::F32;
  Geom<1> rows;
  int64_t inner = 0;

  // Offset of a row's mask (once per row), then the test of entry j of that row.
  __device__ __forceinline__ int64_t row(int64_t r) const {
    int64_t o = 0;
    if (p) rows.offsets<int64_t>(r, &o);
    return o;
  }
  __device__ __forceinline__ bool keep(int64_t row_off, int64_t j) const {
    return nonzero_at(p, row_off + j * inner, dtype);
  }
};

MaskRows mask_rows(const Tensor& mask) {
  MaskRows m;
  if (!mask.defined()) return m;
  m.p = mask.raw_data();
  m.dtype = mask.dtype();
  Shape lead(mask.shape().begin(), mask.shape().end() - (mask.dim() > 0 ? 1 : 0));
  Shape lst(mask.strides().begin(), mask.strides().end() - (mask.dim() > 0 ? 1 : 0));
  if (lead.empty()) lead = {1}, lst = {0};
  m.rows = geom_of<1>(lead, {&lst}, "softmax mask");
  m.inner = mask.dim() > 0 ? mask.strides().back() : 0;
  return m;
}

template <typename T>
__global__ void softmax_fwd_kernel(const T* x, T* y, int64_t n, MaskRows mask, bool log) {
  using C = Acc<T>;
  __shared__ C scratch[32];
  const int64_t r = blockIdx.x;
  const T* xr = x + r * n;
  T* yr = y + r * n;
  const bool masked = mask.p != nullptr;
  const int64_t mo = mask.row(r);
  C m = neg_inf<C>();
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const C v = convert<C>(xr[j]);
    if ((!masked || mask.keep(mo, j)) && (v > m || v != v)) m = v;
  }
  m = block_max(m, scratch, neg_inf<C>());
  if (masked && m == neg_inf<C>()) {  // every entry masked: zeros, not 0/0
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = convert<T>(C(0));
    return;
  }
  C s = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
    if (!masked || mask.keep(mo, j)) s += exp(convert<C>(xr[j]) - m);
  s = block_sum(s, scratch);
  if (log) {
    const C c = m + ::log(s);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      yr[j] = convert<T>((!masked || mask.keep(mo, j)) ? convert<C>(xr[j]) - c : neg_inf<C>());
  } else {
    const C inv = C(1) / s;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      yr[j] = convert<T>((!masked || mask.keep(mo, j)) ? exp(convert<C>(xr[j]) - m) * inv : C(0));
  }
}

template <typename T>
__global__ void softmax_bwd_kernel(const T* y, const T* g, T* dx, int64_t n, MaskRows mask, bool log) {
  using C = Acc<T>;
  __shared__ C scratch[32];
  const int64_t r = blockIdx.x;
  const T* yr = y + r * n;
  const T* gr = g + r * n;
  T* dr = dx + r * n;
  // Softmax needs no mask: y is 0 wherever it was masked. Masked log-softmax entries
  // are constants: no gradient, and their incoming gradient stays out of the sum.
  const bool masked = log && mask.p != nullptr;
  const int64_t mo = masked ? mask.row(r) : 0;
  C s = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    if (masked && !mask.keep(mo, j)) continue;
    s += log ? convert<C>(gr[j]) : convert<C>(gr[j]) * convert<C>(yr[j]);
  }
  s = block_sum(s, scratch);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const C yv = convert<C>(yr[j]), gv = convert<C>(gr[j]);
    C d;
    if (!log) d = yv * (gv - s);
    else if (masked && !mask.keep(mo, j)) d = C(0);
    else d = gv - exp(yv) * s;
    dr[j] = convert<T>(d);
  }
}

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

template <typename T, typename I>
__global__ void ce_fwd_kernel(const T* x, const I* t, int64_t C_, int64_t ignore, T* lse, double* loss,
                              unsigned long long* bad_row) {
  using C = Acc<T>;
  __shared__ C scratch[32];
  const int64_t r = blockIdx.x;
  const int64_t tr = int64_t(t[r]);
  if (tr == ignore) {
    if (threadIdx.x == 0) {
      lse[r] = convert<T>(C(0));
      loss[r] = 0.0;
    }
    return;
  }
  if (tr < 0 || tr >= C_) {
    if (threadIdx.x == 0) {
      atomicMin(bad_row, (unsigned long long)r);
      lse[r] = convert<T>(C(0));
      loss[r] = 0.0;
    }
    return;
  }
  const T* xr = x + r * C_;
  C m = neg_inf<C>();
  for (int64_t j = threadIdx.x; j < C_; j += blockDim.x) {
    const C v = convert<C>(xr[j]);
    if (v > m || v != v) m = v;
  }
  m = block_max(m, scratch, neg_inf<C>());
  C s = 0;
  for (int64_t j = threadIdx.x; j < C_; j += blockDim.x) s += exp(convert<C>(xr[j]) - m);
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) {
    const C l = m + ::log(s);
    lse[r] = convert<T>(l);
    // The CPU rounds lse to T before subtracting; so does this.
    loss[r] = double(convert<C>(convert<T>(l))) - double(convert<C>(xr[tr]));
  }
}

template <typename T, typename I>
__global__ void ce_bwd_kernel(const T* x, const I* t, const T* lse, const T* g, T* dx, int64_t rows, int64_t C_,
                              int64_t ignore) {
  using C = Acc<T>;
  const C gs = convert<C>(*g);
  const int64_t n = rows * C_;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / C_, j = i - r * C_;
    const int64_t tr = int64_t(t[r]);
    C d = 0;
    if (tr != ignore) {
      d = gs * exp(convert<C>(x[i]) - convert<C>(lse[r]));
      if (j == tr) d -= gs;
    }
    dx[i] = convert<T>(d);
  }
}

template <typename I>
__global__ void count_valid_kernel(const I* t, int64_t n, int64_t ignore, unsigned long long* count) {
  __shared__ int64_t scratch[32];
  int64_t c = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    c += int64_t(t[i]) != ignore;
  c = block_sum(c, scratch);
  if (threadIdx.x == 0) atomicAdd(count, (unsigned long long)c);  // integer: order-free
}

unsigned rows_grid(int64_t rows) {
  BET_CHECK(rows < (int64_t(1) << 31), "cuda row kernel: ", rows, " rows exceed the grid");
  return unsigned(rows);
}

}  // namespace

void softmax_forward(const Tensor& x, const Tensor& mask, const Tensor& out, bool log) {
  const int64_t n = last_dim(x);
  const int64_t rows = n == 0 ? 0 : x.numel() / n;
  if (rows == 0) return;
  DeviceGuard dg(x);
  const MaskRows m = mask_rows(mask);
  dispatch_float(x.dtype(), log ? "log_softmax" : "softmax", [&](auto tag) {
    using T = decltype(tag);
    softmax_fwd_kernel<T><<<rows_grid(rows), row_threads(n)>>>(ptr<T>(x), ptr<T>(out), n, m, log);
    BET_CUDA_LAUNCHED("softmax");
  });
}

void softmax_backward(const Tensor& y, const Tensor& g, const Tensor& mask, const Tensor& grad_in, bool log) {
  const int64_t n = last_dim(y);
  const int64_t rows = n == 0 ? 0 : y.numel() / n;
  if (rows == 0) return;
  DeviceGuard dg(y);
  const MaskRows m = mask_rows(mask);
  dispatch_float(y.dtype(), log ? "log_softmax" : "softmax", [&](auto tag) {
    using T = decltype(tag);
    softmax_bwd_kernel<T><<<rows_grid(rows), row_threads(n)>>>(ptr<T>(y), ptr<T>(g), ptr<T>(grad_in), n, m, log);
    BET_CUDA_LAUNCHED("softmax backward");
  });
}

void layer_norm_forward(const Tensor& x, const Tensor& w, const Tensor& b, double eps, const Tensor& out,
                        const Tensor& mean, const Tensor& rstd) {
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

void layer_norm_backward(const Tensor& g, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd,
                         const Tensor& dx, const Tensor& dw, const Tensor& db) {
  const int64_t D = x.shape().back();
  const int64_t rows = D == 0 ? 0 : x.numel() / D;
  DeviceGuard dg(x);
  dispatch_float(x.dtype(), "layer_norm backward", [&](auto tag) {
    using T = decltype(tag);
    if (rows == 0) {  // empty input: the column sums are zero
      for (const Tensor* t : {&dw, &db})
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
    Tensor part = Tensor::empty({2, nblk, D}, cdt, x.device());
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

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& lse,
                           const Tensor& out) {
  const int64_t rows = logits.shape()[0], C = logits.shape()[1];
  DeviceGuard dg(logits);
  if (rows == 0 || C == 0) {  // C == 0 only with rows == 0 (the op checks)
    BET_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), 0));
    return;
  }
  Tensor loss = Tensor::empty({rows}, DType::F64, logits.device());
  Tensor bad = Tensor::full({1}, double(rows), DType::I64, logits.device());
  auto* pbad = static_cast<unsigned long long*>(bad.raw_data());
  dispatch_float(logits.dtype(), "cross_entropy_sum", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index(targets.dtype(), "cross_entropy_sum", [&](auto itag) {
      using I = decltype(itag);
      ce_fwd_kernel<T, I><<<rows_grid(rows), row_threads(C)>>>(ptr<T>(logits), ptr<I>(targets), C, ignore_index,
                                                               ptr<T>(lse), ptr<double>(loss), pbad);
      BET_CUDA_LAUNCHED("cross_entropy_sum");
    });
  });
  int64_t bad_row = rows;
  BET_CUDA_CHECK(cudaMemcpy(&bad_row, bad.raw_data(), sizeof(int64_t), cudaMemcpyDeviceToHost));
  if (bad_row < rows) {
    int64_t v = 0;
    const size_t es = dtype_size(targets.dtype());
    BET_CUDA_CHECK(cudaMemcpy(&v, static_cast<const char*>(targets.raw_data()) + bad_row * int64_t(es), es,
                              cudaMemcpyDeviceToHost));
    if (targets.dtype() == DType::I32) v = int64_t(int32_t(v));
    fail("cross_entropy_sum: target ", v, " at row ", bad_row, " is out of range for ", C, " classes");
  }
  // Summed in double in a fixed order, then rounded to the logits' dtype.
  Tensor total = Tensor::empty({1}, DType::F64, logits.device());
  sum(loss, {true}, total);
  copy(make_view(total, {}, {}, 0), out);
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& lse,
                            const Tensor& g, const Tensor& dlogits) {
  const int64_t rows = logits.shape()[0], C = logits.shape()[1];
  if (rows == 0 || C == 0) return;
  DeviceGuard dg(logits);
  BET_CHECK(g.device() == logits.device() && g.dtype() == logits.dtype(), "cross_entropy_sum backward: gradient on ",
            g.device().str(), " ", dtype_name(g.dtype()));
  dispatch_float(logits.dtype(), "cross_entropy_sum", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index(targets.dtype(), "cross_entropy_sum", [&](auto itag) {
      using I = decltype(itag);
      ce_bwd_kernel<T, I><<<grid_for(rows * C), kThreads>>>(ptr<T>(logits), ptr<I>(targets), ptr<T>(lse), ptr<T>(g),
                                                            ptr<T>(dlogits), rows, C, ignore_index);
      BET_CUDA_LAUNCHED("cross_entropy_sum backward");
    });
  });
}

int64_t count_valid(const Tensor& targets, int64_t ignore_index) {
  const int64_t n = targets.numel();
  if (n == 0) return 0;
  DeviceGuard dg(targets);
  Tensor cnt = Tensor::zeros({1}, DType::I64, targets.device());
  dispatch_index(targets.dtype(), "count_valid", [&](auto itag) {
    using I = decltype(itag);
    count_valid_kernel<I><<<grid_for(n), kThreads>>>(ptr<I>(targets), n, ignore_index,
                                                     static_cast<unsigned long long*>(cnt.raw_data()));
    BET_CUDA_LAUNCHED("count_valid");
  });
  int64_t c = 0;
  BET_CUDA_CHECK(cudaMemcpy(&c, cnt.raw_data(), sizeof(int64_t), cudaMemcpyDeviceToHost));
  return c;
}

}  // namespace bet::kernels::cuda
