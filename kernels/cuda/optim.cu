// AdamW and SGD updates in one pass over (p, g, state), and the gradient-norm pieces.
#include "kernels/optim.h"

#include "kernels/copy.h"
#include "kernels/cuda/common.cuh"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace bet::kernels::cuda {

namespace {

template <typename T>
__global__ void adamw_kernel(T* p, const T* g, T* m, T* v, int64_t n, T df, T w, T one_minus_w, T b2, T c2, T bc2,
                             T eps, T nss, bool small) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const T gi = g[i];
    const T pi = p[i] * df;
    T mi = m[i];
    // torch's lerp switches formula at weight 0.5 for accuracy; so does the CPU.
    mi = small ? mi + w * (gi - mi) : gi - (gi - mi) * one_minus_w;
    const T vi = v[i] * b2 + c2 * gi * gi;
    const T denom = sqrt(vi) / bc2 + eps;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi + (nss * mi) / denom;
  }
}

template <typename T>
__global__ void sgd_kernel(T* p, const T* g, T* buf, int64_t n, T wd, T mom, T omd, T nlr, bool decay, bool first,
                           bool nesterov) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    T d = g[i];
    if (decay) d = d + wd * p[i];
    if (buf) {
      const T bi = first ? d : buf[i] * mom + omd * d;
      buf[i] = bi;
      d = nesterov ? d + mom * bi : bi;
    }
    p[i] = p[i] + nlr * d;
  }
}

template <typename T>
__global__ void scale_kernel(T* x, int64_t n, T f) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] *= f;
}

}  // namespace

void adamw_step(const TensorRef& pt, const TensorRef& gt, const TensorRef& mt, const TensorRef& vt,
                const AdamWScalars& s) {
  const int64_t n = pt.numel();
  if (n == 0) return;
  DeviceGuard dg(pt);
  dispatch_f32_f64(pt.dtype(), "adamw", [&](auto tag) {
    using T = decltype(tag);
    const T w = T(s.beta1_weight);
    adamw_kernel<T><<<grid_for(n), kThreads>>>(ptr<T>(pt), ptr<T>(gt), ptr<T>(mt), ptr<T>(vt), n, T(s.decay_factor), w,
                                               T(1) - w, T(s.beta2), T(s.one_minus_beta2), T(s.bias2_sqrt), T(s.eps),
                                               T(s.neg_step_size), w < T(0.5));
    BET_CUDA_LAUNCHED("adamw");
  });
}

void sgd_step(const TensorRef& pt, const TensorRef& gt, const TensorRef& bt, const SGDScalars& s) {
  const int64_t n = pt.numel();
  if (n == 0) return;
  DeviceGuard dg(pt);
  dispatch_f32_f64(pt.dtype(), "sgd", [&](auto tag) {
    using T = decltype(tag);
    T* buf = s.momentum != 0.0 ? ptr<T>(bt) : nullptr;
    sgd_kernel<T><<<grid_for(n), kThreads>>>(ptr<T>(pt), ptr<T>(gt), buf, n, T(s.weight_decay), T(s.momentum),
                                             T(s.one_minus_dampening), T(s.neg_lr), s.weight_decay != 0.0, s.first,
                                             s.nesterov);
    BET_CUDA_LAUNCHED("sgd");
  });
}

void sum_squares(const TensorRef& x, const TensorRef& out) {
  // x * x in x's dtype, summed (in double, rounded to x's dtype) and widened: what
  // grad_norm computed with ops before it had this kernel, kept for its numbers.
  ScratchTensor sq(x.shape(), x.dtype(), x.device());
  binary(BinaryOp::Mul, x, x, sq);
  ScratchTensor s(Shape(x.shape().size(), 1), x.dtype(), x.device());
  sum(sq, std::vector<bool>(x.shape().size(), true), s);
  const Shape one{1};
  copy(s.ref().view(one, one), out);
}

void scale_(const TensorRef& x, double s) {
  const int64_t n = x.numel();
  if (n == 0) return;
  DeviceGuard dg(x);
  dispatch_f32_f64(x.dtype(), "scale_", [&](auto tag) {
    using T = decltype(tag);
    scale_kernel<T><<<grid_for(n), kThreads>>>(ptr<T>(x), n, T(s));
    BET_CUDA_LAUNCHED("scale_");
  });
}

}  // namespace bet::kernels::cuda
