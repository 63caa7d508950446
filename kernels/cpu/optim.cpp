// The optimiser kernels on the CPU: one fused, vectorisable pass per parameter.
#include "kernels/optim.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/vec_math.h"
#include "platform/threads.h"

namespace bet::kernels::cpu {

using platform::kParallelGrain;
using platform::parallel_for;

namespace {

// Calls fn(std::bool_constant<b>{}) so a loop-invariant flag becomes a template
// parameter: each loop body is branch-free and vectorises.
template <typename Fn>
void with_bool(bool b, Fn&& fn) {
  if (b) fn(std::true_type{});
  else fn(std::false_type{});
}

// The per-chunk loops are plain functions over restrict pointers: inside a lambda the
// captured pointers live in the closure and GCC will not vectorise across the stores.
// Compiled twice (kernels/cpu/isa.h): the AVX2 and AVX-512 twins below. Lane-wise
// only, the same expressions and FMA contractions on both: the same bits.
template <typename T, bool Small>
BET_VINLINE void adamw_body(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v, int64_t n,
                            T df, T w, T one_minus_w, T b2, T c2, T bc2, T eps, T nss) {
  for (int64_t i = 0; i < n; ++i) {
    const T gi = g[i];
    const T pi = p[i] * df;
    T mi = m[i];
    if constexpr (Small) mi = mi + w * (gi - mi);
    else mi = gi - (gi - mi) * one_minus_w;
    const T vi = v[i] * b2 + c2 * gi * gi;
    const T denom = std::sqrt(vi) / bc2 + eps;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi + (nss * mi) / denom;
  }
}

template <typename T, bool Small>
void adamw_avx2(T* p, const T* g, T* m, T* v, int64_t n, T df, T w, T one_minus_w, T b2, T c2, T bc2, T eps,
                T nss) {
  adamw_body<T, Small>(p, g, m, v, n, df, w, one_minus_w, b2, c2, bc2, eps, nss);
}
template <typename T, bool Small>
BET_AVX512_TARGET void adamw_avx512(T* p, const T* g, T* m, T* v, int64_t n, T df, T w, T one_minus_w, T b2, T c2,
                                    T bc2, T eps, T nss) {
  adamw_body<T, Small>(p, g, m, v, n, df, w, one_minus_w, b2, c2, bc2, eps, nss);
}

template <typename T>
void adamw_typed(const TensorRef& pt, const TensorRef& gt, const TensorRef& mt, const TensorRef& vt,
                 const AdamWScalars& s) {
  T* p = pt.data<T>();
  const T* g = gt.data<T>();
  T* m = mt.data<T>();
  T* v = vt.data<T>();
  const T df = T(s.decay_factor), w = T(s.beta1_weight), one_minus_w = T(1) - w;
  const T b2 = T(s.beta2), c2 = T(s.one_minus_beta2), bc2 = T(s.bias2_sqrt), eps = T(s.eps);
  const T nss = T(s.neg_step_size);
  // torch's lerp switches formula at weight 0.5 for accuracy; follow it.
  const bool avx512 = kernel_isa(IsaKernel::AdamW) == CpuIsa::Avx512;
  with_bool(w < T(0.5), [&](auto small) {
    constexpr bool S = decltype(small)::value;
    auto* fn = avx512 ? &adamw_avx512<T, S> : &adamw_avx2<T, S>;
    parallel_for(pt.numel(), kParallelGrain, [&](int64_t b, int64_t e) {
      fn(p + b, g + b, m + b, v + b, e - b, df, w, one_minus_w, b2, c2, bc2, eps, nss);
    });
  });
}

template <typename T, bool Decay, bool Momentum, bool First, bool Nesterov>
void sgd_range(T* __restrict p, const T* __restrict g, T* __restrict buf, int64_t n, T wd, T mom, T omd,
               T nlr) {
  for (int64_t i = 0; i < n; ++i) {
    T d = g[i];
    if constexpr (Decay) d = d + wd * p[i];
    if constexpr (Momentum) {
      T bi;
      if constexpr (First) bi = d;
      else bi = buf[i] * mom + omd * d;
      buf[i] = bi;
      if constexpr (Nesterov) d = d + mom * bi;
      else d = bi;
    }
    p[i] = p[i] + nlr * d;
  }
}

template <typename T>
void sgd_typed(const TensorRef& pt, const TensorRef& gt, const TensorRef& bt, const SGDScalars& s) {
  T* p = pt.data<T>();
  const T* g = gt.data<T>();
  T* buf = s.momentum != 0.0 ? bt.data<T>() : nullptr;
  const T wd = T(s.weight_decay), mom = T(s.momentum), omd = T(s.one_minus_dampening);
  const T nlr = T(s.neg_lr);
  with_bool(s.weight_decay != 0.0, [&](auto decay) {
    with_bool(s.momentum != 0.0, [&](auto has_mom) {
      with_bool(s.first, [&](auto first) {
        with_bool(s.nesterov, [&](auto nesterov) {
          parallel_for(pt.numel(), kParallelGrain, [&](int64_t b, int64_t e) {
            sgd_range<T, decltype(decay)::value, decltype(has_mom)::value, decltype(first)::value,
                      decltype(nesterov)::value>(p + b, g + b, buf ? buf + b : nullptr, e - b, wd, mom, omd, nlr);
          });
        });
      });
    });
  });
}

constexpr int64_t kSumBlock = 4096;

template <typename T>
double sum_squares_block(const T* __restrict x, int64_t n) {
  // Eight independent lanes: a vectorisable reduction with a fixed order.
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) {
      const double xi = double(x[i + j]);
      acc[j] += xi * xi;
    }
  for (int j = 0; i < n; ++i, ++j) {
    const double xi = double(x[i]);
    acc[j] += xi * xi;
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <typename T>
double sum_squares_typed(const TensorRef& xt) {
  const T* x = xt.data<T>();
  const int64_t n = xt.numel();
  const int64_t nblocks = (n + kSumBlock - 1) / kSumBlock;
  std::vector<double> partial(size_t(nblocks), 0.0);
  parallel_for(nblocks, std::max<int64_t>(1, kParallelGrain / kSumBlock), [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t b = blk * kSumBlock, e = std::min(n, b + kSumBlock);
      partial[size_t(blk)] = sum_squares_block(x + b, e - b);
    }
  });
  double total = 0.0;
  for (double v : partial) total += v;
  return total;
}

template <typename T>
void scale_range(T* __restrict x, int64_t n, T f) {
  for (int64_t i = 0; i < n; ++i) x[i] *= f;
}

template <typename T>
void scale_typed(const TensorRef& xt, double s) {
  T* x = xt.data<T>();
  const T f = T(s);
  parallel_for(xt.numel(), kParallelGrain, [&](int64_t b, int64_t e) { scale_range(x + b, e - b, f); });
}

}  // namespace

void adamw_step(const TensorRef& p, const TensorRef& g, const TensorRef& m, const TensorRef& v,
                const AdamWScalars& s) {
  switch (p.dtype()) {
    case DType::F32: return adamw_typed<float>(p, g, m, v, s);
    case DType::F64: return adamw_typed<double>(p, g, m, v, s);
    default: fail("adamw: dtype ", dtype_name(p.dtype()), " not supported on cpu");
  }
}

void sgd_step(const TensorRef& p, const TensorRef& g, const TensorRef& buf, const SGDScalars& s) {
  switch (p.dtype()) {
    case DType::F32: return sgd_typed<float>(p, g, buf, s);
    case DType::F64: return sgd_typed<double>(p, g, buf, s);
    default: fail("sgd: dtype ", dtype_name(p.dtype()), " not supported on cpu");
  }
}

void sum_squares(const TensorRef& x, const TensorRef& out) {
  double total = 0.0;
  if (x.numel() > 0) {
    switch (x.dtype()) {
      case DType::F32: total = sum_squares_typed<float>(x); break;
      case DType::F64: total = sum_squares_typed<double>(x); break;
      default: fail("grad_norm: dtype ", dtype_name(x.dtype()), " not supported on cpu");
    }
  }
  *out.data<double>() = total;
}

void scale_(const TensorRef& x, double s) {
  if (x.numel() == 0) return;
  switch (x.dtype()) {
    case DType::F32: return scale_typed<float>(x, s);
    case DType::F64: return scale_typed<double>(x, s);
    default: fail("clip_grad_norm: dtype ", dtype_name(x.dtype()), " not supported on cpu");
  }
}

}  // namespace bet::kernels::cpu
