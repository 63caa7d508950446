// Rotary embedding and dropout on the GPU: the same maps as the CPU kernels, their
// coefficients recomputed rather than stored (cos/sin table per position row; the
// dropout mask from the shared Philox stream).
#include <cmath>
#include <vector>

#include "kernels/rope_dropout.h"

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/philox.h"

namespace bet::kernels::cuda {

namespace {

// cos/sin of pos[r] * inv_freq[i], in double as on the CPU, then rounded to T.
template <typename T>
__global__ void rope_table_kernel(const double* pos, const double* inv_freq, T* cs, T* sn, int64_t rows, int64_t half,
                                  double sign) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= rows * half) return;
  const int64_t r = t / half, i = t - r * half;
  double s, c;
  sincos(pos[r] * inv_freq[i], &s, &c);
  cs[t] = T(c);
  sn[t] = T(sign * s);
}

template <typename T>
__global__ void rope_apply_kernel(const T* x, const T* cs, const T* sn, T* y, int64_t BHS, int64_t H, int64_t S,
                                  int64_t Bp, int64_t half) {
  const int64_t n = BHS * half;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = t / half, i = t - r * half;
    const int64_t bi = r / (H * S), s = r % S;
    const int64_t k = ((Bp == 1 ? 0 : bi) * S + s) * half + i;
    const T c = cs[k], sv = sn[k];
    const T a = x[r * 2 * half + i], b = x[r * 2 * half + half + i];
    // x' = x*cos + rotate_half(x)*sin, rotate_half([x1, x2]) = [-x2, x1]
    y[r * 2 * half + i] = a * c - b * sv;
    y[r * 2 * half + half + i] = b * c + a * sv;
  }
}

// Thread per Philox block: its 4 words decide 4 consecutive elements.
template <typename T>
__global__ void dropout_kernel(const T* x, T* y, int64_t n, uint64_t seed, uint64_t offset, int64_t threshold,
                               Acc<T> scale) {
  const uint64_t first = offset >> 2;
  const uint64_t nblocks = ((offset + uint64_t(n) - 1) >> 2) - first + 1;
  for (uint64_t b = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < nblocks;
       b += uint64_t(gridDim.x) * blockDim.x) {
    const Philox4 r = philox4x32_10(seed, first + b);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const uint64_t c = ((first + b) << 2) + uint64_t(q);
      if (c < offset) continue;
      const uint64_t i = c - offset;
      if (i >= uint64_t(n)) continue;
      // A dropped element is 0 even where x is Inf or NaN, as on the CPU.
      // The scale stays in f32 for bf16: the CPU's f32 product, rounded once.
      y[i] = dropout_keep(r.w[q], threshold) ? convert<T>(convert<Acc<T>>(x[i]) * scale)
                                             : convert<T>(0.0f);
    }
  }
}

}  // namespace

void rope(const TensorRef& x, const TensorRef& positions, double base, bool inverse, const TensorRef& out) {
  const int64_t B = x.shape()[0], H = x.shape()[1], S = x.shape()[2], hd = x.shape()[3];
  const int64_t half = hd / 2, Bp = positions.shape()[0];
  if (x.numel() == 0 || half == 0) return;
  BET_CHECK(positions.dtype() == DType::F64 && positions.device() == x.device(), "rope: positions must be f64 on ",
            x.device().str());
  DeviceGuard dg(x);
  std::vector<double> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv[size_t(i)] = std::pow(base, -2.0 * double(i) / double(hd));
  ScratchTensor inv_d({half}, DType::F64, x.device());
  platform::cuda::copy_host_to_device(inv_d.raw_data(), inv.data(), inv.size() * sizeof(double), x.device().index);
  const int64_t rows = Bp * S;
  dispatch_f32_f64(x.dtype(), "rope", [&](auto tag) {
    using T = decltype(tag);
    ScratchTensor table({2, rows, half}, x.dtype(), x.device());
    T* cs = ptr<T>(table);
    T* sn = cs + rows * half;
    rope_table_kernel<T><<<unsigned((rows * half + kThreads - 1) / kThreads), kThreads>>>(
        ptr<double>(positions), ptr<double>(inv_d), cs, sn, rows, half, inverse ? -1.0 : 1.0);
    BET_CUDA_LAUNCHED("rope");
    rope_apply_kernel<T><<<grid_for(B * H * S * half), kThreads>>>(ptr<T>(x), cs, sn, ptr<T>(out), B * H * S, H, S,
                                                                   Bp, half);
    BET_CUDA_LAUNCHED("rope");
  });
}

void dropout(const TensorRef& x, double p, uint64_t seed, uint64_t offset, const TensorRef& out) {
  const int64_t n = x.numel();
  if (n == 0) return;
  DeviceGuard dg(x);
  const int64_t threshold = dropout_threshold(p);
  dispatch_float(x.dtype(), "dropout", [&](auto tag) {
    using T = decltype(tag);
    const Acc<T> scale = p >= 1.0 ? Acc<T>(0) : Acc<T>(1.0 / (1.0 - p));
    const int64_t nblocks = int64_t(((offset + uint64_t(n) - 1) >> 2) - (offset >> 2) + 1);
    dropout_kernel<T><<<grid_for(nblocks), kThreads>>>(ptr<T>(x), ptr<T>(out), n, seed, offset, threshold, scale);
    BET_CUDA_LAUNCHED("dropout");
  });
}

}  // namespace bet::kernels::cuda
