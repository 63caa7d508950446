// Softmax / log-softmax over the last dim, and the fused cross-entropy. Every row is
// a few passes over memory that stays in cache after the first, so the kernels run
// near copy bandwidth: read x once, write y once.
#include "kernels/softmax.h"

#include <vector>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/softmax_math.h"
#include "platform/threads.h"

namespace bet::kernels::cpu {

using platform::kParallelGrain;
using platform::parallel_for;

using softmax_math::neg_inf;

namespace {

int64_t last_dim(const TensorRef& t) { return t.dim() == 0 ? 1 : t.shape().back(); }

// Rows per parallel chunk: enough elements per chunk to pay for the fork.
int64_t row_grain(int64_t n) { return std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(n, 1)); }

// The row kernels below are always_inline bodies, compiled twice through the twins
// after them: AVX2 and AVX-512 (kernels/cpu/isa.h). Their sums and maxima are the
// fixed-order ones of vr:: (kernels/cpu/vec_math.h) and everything else is lane-wise, so
// both forms give the same bits, forward and backward (tests/test_cpu_isa.cpp).

// sum of exp(x[j] - m), the exps computed a chunk at a time into a stack buffer (that
// loop vectorises) and summed in the fixed order of vr::Acc16.
template <typename T, int VB>
BET_VINLINE T exp_sum(const T* x, T m, int64_t n, softmax_math::ExpClamp ec) {
  constexpr int64_t kChunk = 256;  // a multiple of 16: chunking leaves the lanes' order
  alignas(64) T buf[kChunk];
  vr::Acc16<T, VB> acc(T(0));
  for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
    const int64_t len = std::min(kChunk, n - j0);
    const T* xj = x + j0;
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) buf[j] = softmax_math::exp(xj[j] - m, ec);
    acc.add(buf, len);
  }
  return acc.sum();
}

template <typename T, int VB>
BET_VINLINE void softmax_row(const T* x, T* y, int64_t n, bool log) {
  const T m = vr::max16<T, VB>(x, n);
  const auto ec = softmax_math::exp_clamp();
  if (!log) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = softmax_math::exp(x[j] - m, ec);
    const T inv = T(1) / vr::sum16<T, VB>(y, n);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] *= inv;
  } else {
    const T c = m + std::log(exp_sum<T, VB>(x, m, n, ec));
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = x[j] - c;
  }
}

// `bias` is the row's mask as 0 / -inf: masked logits become -inf, never reach the
// max, and exp gives exactly 0 for them. y holds the biased logits first.
template <typename T, int VB>
BET_VINLINE void softmax_row_masked(const T* x, const T* bias, T* y, int64_t n, bool log) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] = x[j] + bias[j];
  const T m = vr::max16<T, VB>(y, n);
  if (m == neg_inf<T>()) {  // nothing to normalise over: zeros, not 0/0
    for (int64_t j = 0; j < n; ++j) y[j] = T(0);
    return;
  }
  const auto ec = softmax_math::exp_clamp();
  if (!log) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = softmax_math::exp(y[j] - m, ec);
    const T inv = T(1) / vr::sum16<T, VB>(y, n);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] *= inv;
  } else {
    const T c = m + std::log(exp_sum<T, VB>(y, m, n, ec));
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) y[j] = y[j] - c;
  }
}

template <typename T, int VB>
BET_VINLINE void softmax_backward_row(const T* y, const T* g, T* dx, int64_t n, bool log) {
  if (!log) {
    const T s = vr::dot16<T, VB>(g, y, n);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dx[j] = y[j] * (g[j] - s);
  } else {
    const auto ec = softmax_math::exp_clamp();
    const T s = vr::sum16<T, VB>(g, n);
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dx[j] = g[j] - softmax_math::exp(y[j], ec) * s;
  }
}

// Masked entries are constants of the forward (-inf, or 0 in a fully masked row): no
// gradient, and their incoming gradient stays out of the row sum. exp(y) is 0 there.
template <typename T, int VB>
BET_VINLINE void log_softmax_backward_row_masked(const T* y, const T* g, const T* keep, T* dx, int64_t n) {
  const auto ec = softmax_math::exp_clamp();
  const T s = vr::dot16<T, VB>(keep, g, n);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) dx[j] = keep[j] * (g[j] - softmax_math::exp(y[j], ec) * s);
}

template <typename T, int VB>
BET_VINLINE T row_lse(const T* x, int64_t n) {
  const T m = vr::max16<T, VB>(x, n);
  return m + std::log(exp_sum<T, VB>(x, m, n, softmax_math::exp_clamp()));
}

// d = gs * softmax(x) from the row's logsumexp l (the target's -gs comes after).
template <typename T>
BET_VINLINE void cross_entropy_backward_row(const T* x, T* d, int64_t C, T l, T gs) {
  const auto ec = softmax_math::exp_clamp();
#pragma omp simd
  for (int64_t j = 0; j < C; ++j) d[j] = gs * softmax_math::exp(x[j] - l, ec);
}

// The twins: each row kernel compiled for AVX2 and for AVX-512, picked per call.
template <typename T>
struct RowKernels {
  void (*fwd)(const T*, T*, int64_t, bool);
  void (*fwd_masked)(const T*, const T*, T*, int64_t, bool);
  void (*bwd)(const T*, const T*, T*, int64_t, bool);
  void (*bwd_log_masked)(const T*, const T*, const T*, T*, int64_t);
  T (*lse)(const T*, int64_t);
  void (*ce_bwd)(const T*, T*, int64_t, T, T);
};

#define BET_SOFTMAX_TWIN(ISA, ATTR, VB)                                                                      \
  template <typename T>                                                                                   \
  ATTR void fwd_##ISA(const T* x, T* y, int64_t n, bool log) {                                            \
    softmax_row<T, VB>(x, y, n, log);                                                                         \
  }                                                                                                       \
  template <typename T>                                                                                   \
  ATTR void fwd_masked_##ISA(const T* x, const T* b, T* y, int64_t n, bool log) {                         \
    softmax_row_masked<T, VB>(x, b, y, n, log);                                                               \
  }                                                                                                       \
  template <typename T>                                                                                   \
  ATTR void bwd_##ISA(const T* y, const T* g, T* dx, int64_t n, bool log) {                               \
    softmax_backward_row<T, VB>(y, g, dx, n, log);                                                            \
  }                                                                                                       \
  template <typename T>                                                                                   \
  ATTR void bwd_log_masked_##ISA(const T* y, const T* g, const T* k, T* dx, int64_t n) {                  \
    log_softmax_backward_row_masked<T, VB>(y, g, k, dx, n);                                                   \
  }                                                                                                       \
  template <typename T>                                                                                   \
  ATTR T lse_##ISA(const T* x, int64_t n) {                                                               \
    return row_lse<T, VB>(x, n);                                                                              \
  }                                                                                                       \
  template <typename T>                                                                                   \
  ATTR void ce_bwd_##ISA(const T* x, T* d, int64_t C, T l, T gs) {                                        \
    cross_entropy_backward_row(x, d, C, l, gs);                                                           \
  }                                                                                                       \
  template <typename T>                                                                                   \
  constexpr RowKernels<T> kRows_##ISA = {&fwd_##ISA<T>,            &fwd_masked_##ISA<T>, &bwd_##ISA<T>, \
                                         &bwd_log_masked_##ISA<T>, &lse_##ISA<T>,        &ce_bwd_##ISA<T>};

BET_SOFTMAX_TWIN(avx2, , vr::kAvx2Bytes)
BET_SOFTMAX_TWIN(avx512, BET_AVX512_TARGET, vr::kAvx512Bytes)
#undef BET_SOFTMAX_TWIN

template <typename T>
const RowKernels<T>& row_kernels() {
  return kernel_isa(IsaKernel::Softmax) == CpuIsa::Avx512 ? kRows_avx512<T> : kRows_avx2<T>;
}

template <typename T>
void softmax_forward_t(const TensorRef& x, const TensorRef& mask, const TensorRef& out, bool log) {
  const int64_t n = last_dim(x);
  const int64_t rows = n == 0 ? 0 : x.numel() / n;
  if (rows == 0) return;
  const T* xp = x.data<T>();
  T* yp = out.data<T>();
  const RowKernels<T>& K = row_kernels<T>();
  if (!mask.defined()) {
    parallel_for(rows, row_grain(n), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) K.fwd(xp + r * n, yp + r * n, n, log);
    });
    return;
  }
  softmax_math::RowWalker walk(mask);
  softmax_math::dispatch_any(mask.dtype(), "softmax", [&](auto tag) {
    using M = decltype(tag);
    const M* mp = static_cast<const M*>(mask.raw_data());
    parallel_for(rows, row_grain(n), [&](int64_t b, int64_t e) {
      std::vector<T> bias(static_cast<size_t>(n));
      int64_t loaded = -1;  // rows sharing a broadcast mask row load it once
      for (int64_t r = b; r < e; ++r) {
        const int64_t off = walk.row_offset(r);
        if (off != loaded) softmax_math::load_mask_bias(mp + off, walk.inner_stride, n, bias.data());
        loaded = off;
        K.fwd_masked(xp + r * n, bias.data(), yp + r * n, n, log);
      }
    });
  });
}

template <typename T>
void softmax_backward_t(const TensorRef& y, const TensorRef& g, const TensorRef& mask, const TensorRef& grad_in,
                        bool log) {
  const int64_t n = last_dim(y);
  const int64_t rows = n == 0 ? 0 : y.numel() / n;
  if (rows == 0) return;
  const T* yp = y.data<T>();
  const T* gp = g.data<T>();
  T* dp = grad_in.data<T>();
  const RowKernels<T>& K = row_kernels<T>();
  // Softmax needs no mask: y is 0 wherever it was masked, so y * (...) is 0 there.
  if (!mask.defined() || !log) {
    parallel_for(rows, row_grain(n), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) K.bwd(yp + r * n, gp + r * n, dp + r * n, n, log);
    });
    return;
  }
  softmax_math::RowWalker walk(mask);
  softmax_math::dispatch_any(mask.dtype(), "log_softmax", [&](auto tag) {
    using M = decltype(tag);
    const M* mp = static_cast<const M*>(mask.raw_data());
    parallel_for(rows, row_grain(n), [&](int64_t b, int64_t e) {
      std::vector<T> keep(static_cast<size_t>(n));
      int64_t loaded = -1;
      for (int64_t r = b; r < e; ++r) {
        const int64_t off = walk.row_offset(r);
        if (off != loaded) softmax_math::load_keep(mp + off, walk.inner_stride, n, keep.data());
        loaded = off;
        K.bwd_log_masked(yp + r * n, gp + r * n, keep.data(), dp + r * n, n);
      }
    });
  });
}

template <typename I>
void check_targets(const I* t, int64_t rows, int64_t classes, int64_t ignore_index) {
  for (int64_t i = 0; i < rows; ++i) {
    int64_t v = int64_t(t[i]);
    if (v == ignore_index) continue;
    BET_CHECK(v >= 0 && v < classes, "cross_entropy_sum: target ", v, " at row ", i,
              " is out of range for ", classes, " classes");
  }
}

template <typename T, typename I>
double cross_entropy_forward_t(const TensorRef& logits, const TensorRef& targets, int64_t ignore_index,
                               const TensorRef& lse) {
  const int64_t rows = logits.shape()[0], C = logits.shape()[1];
  const I* tp = targets.data<I>();
  check_targets(tp, rows, C, ignore_index);
  if (rows == 0) return 0.0;
  const T* xp = logits.data<T>();
  T* lp = lse.data<T>();
  // Per-row losses summed serially afterwards: the total does not depend on threads.
  std::vector<double> loss(size_t(rows), 0.0);
  const RowKernels<T>& K = row_kernels<T>();
  parallel_for(rows, row_grain(C), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      int64_t t = int64_t(tp[r]);
      if (t == ignore_index) {
        lp[r] = T(0);
        continue;
      }
      T l = K.lse(xp + r * C, C);
      lp[r] = l;
      loss[size_t(r)] = double(l) - double(xp[r * C + t]);
    }
  });
  double total = 0.0;
  for (double v : loss) total += v;
  return total;
}

template <typename T, typename I>
void cross_entropy_backward_t(const TensorRef& logits, const TensorRef& targets, int64_t ignore_index,
                              const TensorRef& lse, double g, const TensorRef& dlogits) {
  const int64_t rows = logits.shape()[0], C = logits.shape()[1];
  if (rows == 0 || C == 0) return;
  const T* xp = logits.data<T>();
  const I* tp = targets.data<I>();
  const T* lp = lse.data<T>();
  T* dp = dlogits.data<T>();
  const T gs = T(g);
  const RowKernels<T>& K = row_kernels<T>();
  parallel_for(rows, row_grain(C), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t t = int64_t(tp[r]);
      const T* x = xp + r * C;
      T* d = dp + r * C;
      if (t == ignore_index) {
        for (int64_t j = 0; j < C; ++j) d[j] = T(0);
        continue;
      }
      K.ce_bwd(x, d, C, lp[r], gs);
      d[t] -= gs;
    }
  });
}

template <typename Fn>
decltype(auto) dispatch_float(DType dt, const char* op, Fn&& fn) {
  switch (dt) {
    case DType::F32: return fn(float{});
    case DType::F64: return fn(double{});
    default: fail(op, ": dtype ", dtype_name(dt), " not supported on cpu");
  }
}

template <typename Fn>
decltype(auto) dispatch_index(DType dt, const char* op, Fn&& fn) {
  switch (dt) {
    case DType::I32: return fn(int32_t{});
    case DType::I64: return fn(int64_t{});
    default: fail(op, ": targets must be i32 or i64, got ", dtype_name(dt));
  }
}

// The value of a one-element tensor (the upstream gradient of a scalar loss).
double scalar_value(const TensorRef& t, const char* op) {
  BET_CHECK(t.numel() == 1, op, ": gradient of shape ", shape_str(t.shape()), " is not a scalar");
  switch (t.dtype()) {
    case DType::F32: return double(*t.data<float>());
    case DType::F64: return *t.data<double>();
    default: fail(op, ": gradient dtype ", dtype_name(t.dtype()), " not supported on cpu");
  }
}

}  // namespace

void softmax_forward(const TensorRef& x, const TensorRef& mask, const TensorRef& out, bool log) {
  dispatch_float(x.dtype(), log ? "log_softmax" : "softmax", [&](auto tag) {
    softmax_forward_t<decltype(tag)>(x, mask, out, log);
  });
}

void softmax_backward(const TensorRef& y, const TensorRef& g, const TensorRef& mask, const TensorRef& grad_in,
                      bool log) {
  dispatch_float(y.dtype(), log ? "log_softmax" : "softmax", [&](auto tag) {
    softmax_backward_t<decltype(tag)>(y, g, mask, grad_in, log);
  });
}

void cross_entropy_forward(const TensorRef& logits, const TensorRef& targets, int64_t ignore_index,
                           const TensorRef& lse, const TensorRef& out) {
  dispatch_float(logits.dtype(), "cross_entropy_sum", [&](auto tag) {
    using T = decltype(tag);
    const double total = dispatch_index(targets.dtype(), "cross_entropy_sum", [&](auto itag) {
      return cross_entropy_forward_t<T, decltype(itag)>(logits, targets, ignore_index, lse);
    });
    *out.data<T>() = T(total);
  });
}

void cross_entropy_backward(const TensorRef& logits, const TensorRef& targets, int64_t ignore_index,
                            const TensorRef& lse, const TensorRef& g, const TensorRef& dlogits) {
  const double gv = scalar_value(g, "cross_entropy_sum backward");
  dispatch_float(logits.dtype(), "cross_entropy_sum", [&](auto tag) {
    using T = decltype(tag);
    dispatch_index(targets.dtype(), "cross_entropy_sum", [&](auto itag) {
      cross_entropy_backward_t<T, decltype(itag)>(logits, targets, ignore_index, lse, gv, dlogits);
    });
  });
}

int64_t count_valid(const TensorRef& targets, int64_t ignore_index) {
  return dispatch_index(targets.dtype(), "count_valid", [&](auto itag) {
    using I = decltype(itag);
    const I* tp = targets.data<I>();
    int64_t c = 0;
    for (int64_t i = 0, n = targets.numel(); i < n; ++i) c += int64_t(tp[i]) != ignore_index;
    return c;
  });
}

}  // namespace bet::kernels::cpu
