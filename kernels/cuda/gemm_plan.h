// How a strided-view matmul maps onto one cuBLAS strided-batched GEMM. Plain C++
// (no CUDA), so the layout logic is tested on machines without a GPU against the
// CPU matmul (tests/test_cuda_ops.cpp executes a plan with a reference GEMM).
//
// Row-major out[b] = A[b] @ B[b] is computed in cuBLAS's column-major terms as
// out^T = B^T A^T: cuBLAS's "A" is our B and its "B" is our A. A row-major matrix
// [r, c] with row stride ld is, to cuBLAS, its transpose (c x r, leading dim ld);
// a column-major one (unit row stride) is itself.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace bet::kernels::cuda {

struct GemmPlan {
  int64_t m = 0, n = 0, k = 0;  // cuBLAS sizes: m = N, n = M (rows of out), k = K
  bool trans_a = false;         // cuBLAS op on our B
  bool trans_b = false;         // cuBLAS op on our A
  int64_t lda = 1, ldb = 1, ldc = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  // per batch, elements
  int64_t batch = 1;
};

namespace gemm_detail {

// Layout of one [r, c] matrix with strides (sr, sc): row-major (unit column stride)
// or column-major (unit row stride), with a valid leading dim. False: needs a copy.
inline bool layout(int64_t r, int64_t c, int64_t sr, int64_t sc, bool* col_major, int64_t* ld) {
  if ((c == 1 || sc == 1) && (r <= 1 || sr >= std::max<int64_t>(c, 1))) {
    *col_major = false;
    *ld = r <= 1 ? std::max<int64_t>(c, 1) : sr;
    return true;
  }
  if ((r == 1 || sr == 1) && (c <= 1 || sc >= std::max<int64_t>(r, 1))) {
    *col_major = true;
    *ld = c <= 1 ? std::max<int64_t>(r, 1) : sc;
    return true;
  }
  return false;
}

// One stride s with offset(batch b) = b * s over the row-major batch index of
// `out_batch`, for an operand whose batch dims (already padded to the same rank)
// have these sizes (1 = broadcast) and strides. False when none exists.
inline bool batch_stride(const std::vector<int64_t>& out_batch, const std::vector<int64_t>& sizes,
                         const std::vector<int64_t>& strides, int64_t* s) {
  int64_t stride = -1, span = 1;  // span: batches per step of the current dim
  bool all_broadcast = true;
  for (int64_t d = int64_t(out_batch.size()) - 1; d >= 0; --d) {
    const int64_t ob = out_batch[size_t(d)];
    if (ob == 1) continue;
    const int64_t st = sizes[size_t(d)] == 1 ? 0 : strides[size_t(d)];
    if (st != 0) all_broadcast = false;
    if (stride < 0) {
      // The innermost non-trivial dim fixes the per-batch stride.
      if (st % span != 0) return false;
      stride = st / span;
    } else if (st != stride * span) {
      return false;
    }
    span *= ob;
  }
  *s = all_broadcast || stride < 0 ? 0 : stride;
  return true;
}

}  // namespace gemm_detail

// Plans out [batch..., M, N] (contiguous) = a [batch..., M, K] @ b [batch..., K, N],
// a and b of out's rank with batch dims equal to out's or 1. Returns false and sets
// *copy_a / *copy_b when an operand must first be made contiguous (expanded to
// out's batch dims); a contiguous operand always plans.
inline bool plan_gemm(const std::vector<int64_t>& a_shape, const std::vector<int64_t>& a_strides,
                      const std::vector<int64_t>& b_shape, const std::vector<int64_t>& b_strides,
                      const std::vector<int64_t>& out_shape, GemmPlan* plan, bool* copy_a, bool* copy_b) {
  using namespace gemm_detail;
  const size_t r = out_shape.size();
  const int64_t M = out_shape[r - 2], N = out_shape[r - 1], K = a_shape[r - 1];
  const std::vector<int64_t> ob(out_shape.begin(), out_shape.end() - 2);
  int64_t batch = 1;
  for (int64_t x : ob) batch *= x;
  GemmPlan p;
  bool a_col = false, b_col = false;
  int64_t lda_ = 1, ldb_ = 1, sa = 0, sb = 0;
  *copy_a = !layout(M, K, a_strides[r - 2], a_strides[r - 1], &a_col, &lda_) ||
            !batch_stride(ob, std::vector<int64_t>(a_shape.begin(), a_shape.end() - 2),
                          std::vector<int64_t>(a_strides.begin(), a_strides.end() - 2), &sa);
  *copy_b = !layout(K, N, b_strides[r - 2], b_strides[r - 1], &b_col, &ldb_) ||
            !batch_stride(ob, std::vector<int64_t>(b_shape.begin(), b_shape.end() - 2),
                          std::vector<int64_t>(b_strides.begin(), b_strides.end() - 2), &sb);
  if (*copy_a || *copy_b) return false;
  int64_t rows = M;
  // Shared B and row-major A whose batches follow each other at the row stride:
  // one GEMM over batch * M rows instead of a batch of small ones.
  if (batch > 1 && sb == 0 && !a_col && (M == 1 ? sa >= std::max<int64_t>(K, 1) : sa == M * lda_)) {
    rows = batch * M;
    batch = 1;
    if (M == 1) lda_ = sa;
  }
  p.m = N;
  p.n = rows;
  p.k = K;
  p.trans_a = b_col;  // B row-major is B^T to cuBLAS: no op needed
  p.lda = ldb_;
  p.trans_b = a_col;
  p.ldb = lda_;
  p.ldc = std::max<int64_t>(N, 1);
  p.stride_a = sb;
  p.stride_b = sa;
  p.stride_c = M * N;
  p.batch = batch;
  *plan = p;
  return true;
}

}  // namespace bet::kernels::cuda
