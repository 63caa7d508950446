// LayerNorm over the last dim. The forward computes each row's mean and rstd once
// and saves them; the backward is one pass per row that produces dx and this row's
// share of dw/db. Rows stay in cache across a row's passes, so both kernels are
// bound by reading x (and g) once and writing once.
#include "kernels/layer_norm.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/vec_math.h"
#include "platform/threads.h"

namespace bet::kernels::cpu {

using platform::kParallelGrain;
using platform::parallel_for;

namespace {

// Rows [r0, r1) of the forward. The mean and the variance are the fixed-order sums of
// vr:: (kernels/cpu/vec_math.h) and the rest is lane-wise, so the AVX2 and AVX-512 twins
// below give the same bits (tests/test_cpu_isa.cpp).
template <typename T, bool HW, bool HB, int VB>
BET_VINLINE void ln_forward_body(const T* x, const T* w, const T* b, T eps, T* y, T* mean, T* rstd, int64_t D,
                                 int64_t r0, int64_t r1) {
  const T inv_d = T(1) / T(D);
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * D;
    T* yr = y + r * D;
    const T mu = vr::sum16<T, VB>(xr, D) * inv_d;
    // Two-pass variance: no cancellation when |mean| >> std.
    const T v = vr::sumsq_centered16<T, VB>(xr, mu, D);
    const T rs = T(1) / std::sqrt(v * inv_d + eps);
    mean[r] = mu;
    rstd[r] = rs;
#pragma omp simd
    for (int64_t j = 0; j < D; ++j) {
      T h = (xr[j] - mu) * rs;
      if constexpr (HW) h *= w[j];
      if constexpr (HB) h += b[j];
      yr[j] = h;
    }
  }
}

template <typename T, bool HW, bool HB>
void ln_forward_avx2(const T* x, const T* w, const T* b, T eps, T* y, T* mean, T* rstd, int64_t D, int64_t r0,
                     int64_t r1) {
  ln_forward_body<T, HW, HB, vr::kAvx2Bytes>(x, w, b, eps, y, mean, rstd, D, r0, r1);
}
template <typename T, bool HW, bool HB>
BET_AVX512_TARGET void ln_forward_avx512(const T* x, const T* w, const T* b, T eps, T* y, T* mean, T* rstd,
                                         int64_t D, int64_t r0, int64_t r1) {
  ln_forward_body<T, HW, HB, vr::kAvx512Bytes>(x, w, b, eps, y, mean, rstd, D, r0, r1);
}

template <typename T, bool HW, bool HB>
void ln_forward_rows(const T* x, const T* w, const T* b, T eps, T* y, T* mean, T* rstd, int64_t rows, int64_t D) {
  auto* fn = kernel_isa(IsaKernel::LayerNorm) == CpuIsa::Avx512 ? &ln_forward_avx512<T, HW, HB>
                                                                 : &ln_forward_avx2<T, HW, HB>;
  parallel_for(rows, std::max<int64_t>(1, kParallelGrain / D),
               [&](int64_t r0, int64_t r1) { fn(x, w, b, eps, y, mean, rstd, D, r0, r1); });
}

// A fixed row split for the dw/db partial sums (a function of the row count only):
// at most 64 blocks of at least 16 rows, so the partials stay small next to g and x.
constexpr int64_t kMaxBlocks = 64;
constexpr int64_t kMinBlockRows = 16;

// One row of the backward: dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)) with
// gw = g * w, plus this row's share of dw (g * xhat) and db (g). The two row sums have
// the fixed order of vr::Acc16; the rest is lane-wise (same bits on both twins).
template <typename T, bool HW, int VB>
BET_VINLINE void ln_backward_row(const T* __restrict g, const T* __restrict x, const T* __restrict w, T mu, T rs,
                                 T inv_d, int64_t D, T* __restrict dx, T* __restrict pw, T* __restrict pb) {
  if (dx) {
    using A = vr::Acc16<T, VB>;
    using Blk = typename A::Blk;
    A a(T(0)), c(T(0));
    Blk gv, wv, xv;
    int64_t j = 0;
    for (; j + 16 <= D; j += 16) {
      gv.load(g + j);
      if constexpr (HW) {
        wv.load(w + j);
        for (int p = 0; p < Blk::P; ++p) gv.v[p] = gv.v[p] * wv.v[p];
      }
      xv.load(x + j);
      for (int p = 0; p < Blk::P; ++p) xv.v[p] = xv.v[p] - mu;
      a.add(gv);
      c.add_product(gv, xv);
    }
    if (j < D) {  // padding: g = 0 (so gw = 0), x = mu
      gv.load_tail(g + j, D - j, T(0));
      if constexpr (HW) {
        wv.load_tail(w + j, D - j, T(0));
        for (int p = 0; p < Blk::P; ++p) gv.v[p] = gv.v[p] * wv.v[p];
      }
      xv.load_tail(x + j, D - j, mu);
      for (int p = 0; p < Blk::P; ++p) xv.v[p] = xv.v[p] - mu;
      a.add(gv);
      c.add_product(gv, xv);
    }
    const T as = a.sum() * inv_d;
    const T cs = c.sum() * (inv_d * rs * rs);
#pragma omp simd
    for (int64_t k = 0; k < D; ++k) {
      T gh = g[k];
      if constexpr (HW) gh *= w[k];
      dx[k] = rs * (gh - as - (x[k] - mu) * cs);
    }
  }
  if (pw) {
#pragma omp simd
    for (int64_t k = 0; k < D; ++k) pw[k] += g[k] * (x[k] - mu) * rs;
  }
  if (pb) {
#pragma omp simd
    for (int64_t k = 0; k < D; ++k) pb[k] += g[k];
  }
}

// The blocks [b0, b1) of rows (per_blk rows each) of the backward, each adding into its
// own dw/db partial row; compiled twice as the forward.
template <typename T, bool HW, int VB>
BET_VINLINE void ln_backward_body(const T* g, const T* x, const T* w, const T* mean, const T* rstd, T* dx, T* pw,
                                  T* pb, int64_t rows, int64_t D, int64_t per_blk, int64_t b0, int64_t b1) {
  const T inv_d = T(1) / T(D);
  for (int64_t blk = b0; blk < b1; ++blk) {
    T* pwb = pw ? pw + blk * D : nullptr;
    T* pbb = pb ? pb + blk * D : nullptr;
    if (pwb) std::fill(pwb, pwb + D, T(0));
    if (pbb) std::fill(pbb, pbb + D, T(0));
    const int64_t r_end = std::min(rows, (blk + 1) * per_blk);
    for (int64_t r = blk * per_blk; r < r_end; ++r)
      ln_backward_row<T, HW, VB>(g + r * D, x + r * D, w, mean[r], rstd[r], inv_d, D, dx ? dx + r * D : nullptr, pwb,
                             pbb);
  }
}

template <typename T, bool HW>
void ln_backward_avx2(const T* g, const T* x, const T* w, const T* mean, const T* rstd, T* dx, T* pw, T* pb,
                      int64_t rows, int64_t D, int64_t per_blk, int64_t b0, int64_t b1) {
  ln_backward_body<T, HW, vr::kAvx2Bytes>(g, x, w, mean, rstd, dx, pw, pb, rows, D, per_blk, b0, b1);
}
template <typename T, bool HW>
BET_AVX512_TARGET void ln_backward_avx512(const T* g, const T* x, const T* w, const T* mean, const T* rstd, T* dx,
                                          T* pw, T* pb, int64_t rows, int64_t D, int64_t per_blk, int64_t b0,
                                          int64_t b1) {
  ln_backward_body<T, HW, vr::kAvx512Bytes>(g, x, w, mean, rstd, dx, pw, pb, rows, D, per_blk, b0, b1);
}

template <typename T, bool HW>
void ln_backward_rows(const T* g, const T* x, const T* w, const T* mean, const T* rstd, T* dx, T* dw, T* db,
                      int64_t rows, int64_t D) {
  const int64_t per_blk = std::max<int64_t>(kMinBlockRows, (rows + kMaxBlocks - 1) / kMaxBlocks);
  const int64_t nblk = (rows + per_blk - 1) / per_blk;
  const bool want_w = dw != nullptr, want_b = db != nullptr;
  // Partials from the caching allocator (a std::vector here would page-fault and
  // memset on every call); each block zeroes its own slice while it is cache-hot.
  std::optional<ScratchTensor> part;
  if (want_w || want_b) part.emplace(Shape{2, nblk, D}, dtype_of<T>::value, Device::cpu());
  T* pw = want_w ? part->data<T>() : nullptr;
  T* pb = want_b ? part->data<T>() + nblk * D : nullptr;
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(per_blk * D, 1));
  auto* fn = kernel_isa(IsaKernel::LayerNorm) == CpuIsa::Avx512 ? &ln_backward_avx512<T, HW> : &ln_backward_avx2<T, HW>;
  parallel_for(nblk, grain,
               [&](int64_t b0, int64_t b1) { fn(g, x, w, mean, rstd, dx, pw, pb, rows, D, per_blk, b0, b1); });
  auto reduce = [&](const T* partial, T* outp) {
    for (int64_t j = 0; j < D; ++j) outp[j] = T(0);
    for (int64_t blk = 0; blk < nblk; ++blk) {
      const T* p = partial + blk * D;
#pragma omp simd
      for (int64_t j = 0; j < D; ++j) outp[j] += p[j];
    }
  };
  if (want_w) reduce(pw, dw);
  if (want_b) reduce(pb, db);
}

template <typename T>
void ln_forward_t(const TensorRef& x, const TensorRef& w, const TensorRef& b, double eps, const TensorRef& out,
                  const TensorRef& mean, const TensorRef& rstd) {
  const int64_t D = x.shape().back();
  const int64_t rows = D == 0 ? 0 : x.numel() / D;
  if (rows == 0) return;
  const T* xp = x.data<T>();
  const T* wp = w.defined() ? w.data<T>() : nullptr;
  const T* bp = b.defined() ? b.data<T>() : nullptr;
  T* yp = out.data<T>();
  T* mp = mean.data<T>();
  T* rp = rstd.data<T>();
  const T e = T(eps);
  if (wp && bp) ln_forward_rows<T, true, true>(xp, wp, bp, e, yp, mp, rp, rows, D);
  else if (wp) ln_forward_rows<T, true, false>(xp, wp, bp, e, yp, mp, rp, rows, D);
  else if (bp) ln_forward_rows<T, false, true>(xp, wp, bp, e, yp, mp, rp, rows, D);
  else ln_forward_rows<T, false, false>(xp, wp, bp, e, yp, mp, rp, rows, D);
}

template <typename T>
void ln_backward_t(const TensorRef& g, const TensorRef& x, const TensorRef& w, const TensorRef& mean,
                   const TensorRef& rstd, const TensorRef& dx, const TensorRef& dw, const TensorRef& db) {
  const int64_t D = x.shape().back();
  const int64_t rows = D == 0 ? 0 : x.numel() / D;
  T* dwp = dw.defined() ? dw.data<T>() : nullptr;
  T* dbp = db.defined() ? db.data<T>() : nullptr;
  if (rows == 0) {  // no rows: the column sums are empty sums
    for (int64_t j = 0; j < D; ++j) {
      if (dwp) dwp[j] = T(0);
      if (dbp) dbp[j] = T(0);
    }
    return;
  }
  const T* gp = g.data<T>();
  const T* xp = x.data<T>();
  const T* wp = w.defined() ? w.data<T>() : nullptr;
  T* dxp = dx.defined() ? dx.data<T>() : nullptr;
  if (wp) ln_backward_rows<T, true>(gp, xp, wp, mean.data<T>(), rstd.data<T>(), dxp, dwp, dbp, rows, D);
  else ln_backward_rows<T, false>(gp, xp, wp, mean.data<T>(), rstd.data<T>(), dxp, dwp, dbp, rows, D);
}

}  // namespace

void layer_norm_forward(const TensorRef& x, const TensorRef& w, const TensorRef& b, double eps, const TensorRef& out,
                        const TensorRef& mean, const TensorRef& rstd) {
  switch (x.dtype()) {
    case DType::F32: return ln_forward_t<float>(x, w, b, eps, out, mean, rstd);
    case DType::F64: return ln_forward_t<double>(x, w, b, eps, out, mean, rstd);
    default: fail("layer_norm: dtype ", dtype_name(x.dtype()), " not supported on cpu");
  }
}

void layer_norm_backward(const TensorRef& g, const TensorRef& x, const TensorRef& w, const TensorRef& mean,
                         const TensorRef& rstd, const TensorRef& dx, const TensorRef& dw, const TensorRef& db) {
  switch (x.dtype()) {
    case DType::F32: return ln_backward_t<float>(g, x, w, mean, rstd, dx, dw, db);
    case DType::F64: return ln_backward_t<double>(g, x, w, mean, rstd, dx, dw, db);
    default: fail("layer_norm: dtype ", dtype_name(x.dtype()), " not supported on cpu");
  }
}

}  // namespace bet::kernels::cpu
