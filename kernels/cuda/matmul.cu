// cuBLAS strided-batched GEMM over strided views (kernels/cuda/gemm_plan.h decides
// the layout); an operand cuBLAS cannot describe is copied to a dense expanded one.
// A bias is written into the output first and the GEMM accumulates onto it (beta 1).
#include <cublas_v2.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

#include "kernels/copy.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm_plan.h"
#include "kernels/matmul.h"

namespace bet::kernels::cuda {

namespace {

void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("matmul: cuBLAS ", what, " failed: ", cublasGetStatusString(s));
}

// One handle per (host thread, device): cuBLAS handles are not for concurrent use.
cublasHandle_t handle(int device) {
  thread_local std::vector<cublasHandle_t> handles;
  if (handles.size() <= size_t(device)) handles.resize(size_t(device) + 1, nullptr);
  if (!handles[size_t(device)]) {
    check_cublas(cublasCreate(&handles[size_t(device)]), "cublasCreate");
    check_cublas(cublasSetStream(handles[size_t(device)], 0), "cublasSetStream");
  }
  return handles[size_t(device)];
}

bool tf32_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("BET_CUDA_TF32");
    return v && std::strcmp(v, "1") == 0;
  }();
  return on;
}

// `t` expanded to `shape` (out's batch dims and its own last two) as a dense copy,
// held by *keep.
TensorRef dense(const TensorRef& t, const Shape& shape, std::optional<ScratchTensor>* keep) {
  Shape st(shape.size(), 0);
  for (size_t d = 0; d < shape.size(); ++d) st[d] = t.shape()[d] == 1 && shape[d] != 1 ? 0 : t.strides()[d];
  keep->emplace(shape, t.dtype(), t.device());
  copy(t.view(shape, st), **keep);
  return **keep;
}

}  // namespace

void matmul(const TensorRef& a, const TensorRef& b, const TensorRef& bias, const TensorRef& out) {
  const size_t r = size_t(out.dim());
  const int64_t M = out.shape()[r - 2], N = out.shape()[r - 1], K = a.shape()[r - 1];
  if (out.numel() == 0) return;
  DeviceGuard dg(out);
  const Device dev = out.device();
  BET_CHECK(a.device() == dev && b.device() == dev && (!bias.defined() || bias.device() == dev),
            "matmul: operands on different devices");
  if (bias.defined()) {  // bias [N] broadcast over every row of out
    Shape st(r, 0);
    st[r - 1] = bias.strides()[0];
    copy(bias.view(out.shape(), st), out);
  } else if (K == 0) {
    BET_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), 0));
  }
  if (K == 0) return;

  TensorRef A = a, B = b;
  std::optional<ScratchTensor> a_dense, b_dense;
  GemmPlan p;
  bool copy_a = false, copy_b = false;
  if (!plan_gemm(A.shape(), A.strides(), B.shape(), B.strides(), out.shape(), &p, &copy_a, &copy_b)) {
    Shape sa = out.shape(), sb = out.shape();
    sa[r - 1] = K;
    sb[r - 2] = K;
    if (copy_a) A = dense(A, sa, &a_dense);
    if (copy_b) B = dense(B, sb, &b_dense);
    BET_CHECK(plan_gemm(A.shape(), A.strides(), B.shape(), B.strides(), out.shape(), &p, &copy_a, &copy_b),
              "matmul: no cuBLAS layout for dense operands (", shape_str(A.shape()), " @ ", shape_str(B.shape()), ")");
  }
  cudaDataType_t dt;
  cublasComputeType_t ct;
  const float one_f = 1.0f, beta_f = bias.defined() ? 1.0f : 0.0f;
  const double one_d = 1.0, beta_d = bias.defined() ? 1.0 : 0.0;
  const void* alpha = &one_f;
  const void* beta = &beta_f;
  switch (out.dtype()) {
    case DType::F32:
      dt = CUDA_R_32F;
      ct = tf32_enabled() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
      break;
    case DType::F64:
      dt = CUDA_R_64F;
      ct = CUBLAS_COMPUTE_64F;
      alpha = &one_d;
      beta = &beta_d;
      break;
    case DType::BF16:
      dt = CUDA_R_16BF;
      ct = CUBLAS_COMPUTE_32F;
      break;
    default: fail("matmul: dtype ", dtype_name(out.dtype()), " not supported on cuda");
  }
  const cublasOperation_t op_a = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  BET_CHECK(p.m < (int64_t(1) << 31) && p.n < (int64_t(1) << 31) && p.k < (int64_t(1) << 31) &&
                p.batch < (int64_t(1) << 31),
            "matmul: ", M, "x", N, "x", K, " exceeds cuBLAS's 32-bit sizes");
  check_cublas(cublasGemmStridedBatchedEx(handle(dev.index), op_a, op_b, int(p.m), int(p.n), int(p.k), alpha,
                                          B.raw_data(), dt, int(p.lda), p.stride_a, A.raw_data(), dt, int(p.ldb),
                                          p.stride_b, beta, out.raw_data(), dt, int(p.ldc), p.stride_c, int(p.batch),
                                          ct, CUBLAS_GEMM_DEFAULT),
               "cublasGemmStridedBatchedEx");
}

}  // namespace bet::kernels::cuda
