// Softmax and cross-entropy: one block per row (rows are contiguous), the row's
// statistics reduced in a fixed order inside the block.
#include "kernels/softmax.h"

#include <cmath>

#include "kernels/copy.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/reduce.h"

namespace bet::kernels::cuda {

namespace {

int64_t last_dim(const TensorRef& t) { return t.dim() == 0 ? 1 : t.shape().back(); }

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

MaskRows mask_rows(const TensorRef& mask) {
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

}  // namespace

void softmax_forward(const TensorRef& x, const TensorRef& mask, const TensorRef& out, bool log) {
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

void softmax_backward(const TensorRef& y, const TensorRef& g, const TensorRef& mask, const TensorRef& grad_in,
                      bool log) {
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

void cross_entropy_forward(const TensorRef& logits, const TensorRef& targets, int64_t ignore_index,
                           const TensorRef& lse, const TensorRef& out) {
  const int64_t rows = logits.shape()[0], C = logits.shape()[1];
  DeviceGuard dg(logits);
  if (rows == 0 || C == 0) {  // C == 0 only with rows == 0 (the op checks)
    BET_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), 0));
    return;
  }
  ScratchTensor loss({rows}, DType::F64, logits.device()), bad({1}, DType::I64, logits.device());
  fill(bad, double(rows));
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
  ScratchTensor total({1}, DType::F64, logits.device());
  sum(loss, {true}, total);
  const Shape scalar;
  copy(total.ref().view(scalar, scalar), out);
}

void cross_entropy_backward(const TensorRef& logits, const TensorRef& targets, int64_t ignore_index,
                            const TensorRef& lse, const TensorRef& g, const TensorRef& dlogits) {
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

int64_t count_valid(const TensorRef& targets, int64_t ignore_index) {
  const int64_t n = targets.numel();
  if (n == 0) return 0;
  DeviceGuard dg(targets);
  ScratchTensor cnt({1}, DType::I64, targets.device());
  fill(cnt, 0.0);
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
