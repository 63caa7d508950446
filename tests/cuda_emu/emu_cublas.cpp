// cuBLAS as kernels/cuda/matmul.cu uses it: cublasGemmStridedBatchedEx with cuBLAS's
// argument checks and column-major contract, computed by a plain host loop.
#include <cmath>
#include <string>

#include "cublas_v2.h"
#include "cuda_bf16.h"
#include "tests/cuda_emu/emu_internal.h"

struct cublasContext {
  int device = 0;
};

namespace {

cublasStatus_t invalid(const std::string& why) {
  emu::set_error(cudaErrorInvalidValue, "cublasGemmStridedBatchedEx: " + why);
  (void)cudaGetLastError();  // cuBLAS reports through its status, not the runtime's error
  return CUBLAS_STATUS_INVALID_VALUE;
}

size_t type_size(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_32F: return 4;
    case CUDA_R_64F: return 8;
    case CUDA_R_16F: case CUDA_R_16BF: return 2;
  }
  return 0;
}

// Bytes spanned by `batch` column-major rows x cols matrices of leading dim ld.
size_t span(int rows, int cols, int ld, long long stride, int batch, size_t es) {
  if (rows == 0 || cols == 0 || batch == 0) return 0;
  const long long last = (long long)(cols - 1) * ld + rows - 1 + (long long)(batch - 1) * stride;
  return size_t(last + 1) * es;
}

float tf32(float x) { return float(emu::round_to_format(x, 10, -126, 127)); }

// `op` reads an operand element (TF32 rounds it), `load` reads C.
template <typename T, typename Acc, typename Op, typename Load, typename Store>
void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, Acc alpha, const T* A, int lda,
          long long sA, const T* B, int ldb, long long sB, Acc beta, T* C, int ldc, long long sC, int batch, Op op,
          Load load, Store store) {
  for (int b = 0; b < batch; ++b) {
    const T* a = A + b * sA;
    const T* bb = B + b * sB;
    T* c = C + b * sC;
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i) {
        Acc acc = 0;
        for (int l = 0; l < k; ++l) {
          const Acc x = op(ta == CUBLAS_OP_N ? a[i + (long long)l * lda] : a[l + (long long)i * lda]);
          const Acc y = op(tb == CUBLAS_OP_N ? bb[l + (long long)j * ldb] : bb[j + (long long)l * ldb]);
          acc = std::fma(x, y, acc);
        }
        T& out = c[i + (long long)j * ldc];
        // beta == 0: C is not read (it may hold anything, NaN included), as cuBLAS.
        store(out, beta == Acc(0) ? alpha * acc : alpha * acc + beta * load(out));
      }
  }
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* h) {
  *h = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t) {
  return h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
const char* cublasGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}
const char* cublasGetStatusString(cublasStatus_t s) { return cublasGetStatusName(s); }

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t transa, cublasOperation_t transb, int m,
                                          int n, int k, const void* alpha, const void* A, cudaDataType_t Atype,
                                          int lda, long long strideA, const void* B, cudaDataType_t Btype, int ldb,
                                          long long strideB, const void* beta, void* C, cudaDataType_t Ctype, int ldc,
                                          long long strideC, int batch, cublasComputeType_t compute,
                                          cublasGemmAlgo_t) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  const bool na = transa == CUBLAS_OP_N, nb = transb == CUBLAS_OP_N;
  if ((!na && transa != CUBLAS_OP_T) || (!nb && transb != CUBLAS_OP_T)) return invalid("transpose op");
  if (m < 0 || n < 0 || k < 0 || batch < 0) return invalid("negative size");
  const int a_rows = na ? m : k, a_cols = na ? k : m, b_rows = nb ? k : n, b_cols = nb ? n : k;
  if (lda < std::max(1, a_rows)) return invalid("lda " + std::to_string(lda) + " < rows of A " + std::to_string(a_rows));
  if (ldb < std::max(1, b_rows)) return invalid("ldb " + std::to_string(ldb) + " < rows of B " + std::to_string(b_rows));
  if (ldc < std::max(1, m)) return invalid("ldc " + std::to_string(ldc) + " < m " + std::to_string(m));
  if (Atype != Btype || Atype != Ctype) return CUBLAS_STATUS_NOT_SUPPORTED;
  const bool f32 = Atype == CUDA_R_32F && (compute == CUBLAS_COMPUTE_32F || compute == CUBLAS_COMPUTE_32F_FAST_TF32);
  const bool f64 = Atype == CUDA_R_64F && compute == CUBLAS_COMPUTE_64F;
  const bool bf = Atype == CUDA_R_16BF && compute == CUBLAS_COMPUTE_32F;
  if (!f32 && !f64 && !bf) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
  const size_t es = type_size(Atype);
  const size_t need_a = k ? span(a_rows, a_cols, lda, strideA, batch, es) : 0;
  const size_t need_b = k ? span(b_rows, b_cols, ldb, strideB, batch, es) : 0;
  const size_t need_c = span(m, n, ldc, strideC, batch, es);
  if ((need_a && emu::check_device_range(A, need_a, "cublasGemmStridedBatchedEx A") != cudaSuccess) ||
      (need_b && emu::check_device_range(B, need_b, "cublasGemmStridedBatchedEx B") != cudaSuccess) ||
      emu::check_device_range(C, need_c, "cublasGemmStridedBatchedEx C") != cudaSuccess)
    return CUBLAS_STATUS_EXECUTION_FAILED;
  emu::DeviceAccess access;
  if (f64) {
    gemm<double, double>(transa, transb, m, n, k, *static_cast<const double*>(alpha), static_cast<const double*>(A),
                         lda, strideA, static_cast<const double*>(B), ldb, strideB, *static_cast<const double*>(beta),
                         static_cast<double*>(C), ldc, strideC, batch, [](double x) { return x; },
                         [](double x) { return x; }, [](double& o, double v) { o = v; });
  } else if (f32) {
    const bool t = compute == CUBLAS_COMPUTE_32F_FAST_TF32;
    gemm<float, float>(transa, transb, m, n, k, *static_cast<const float*>(alpha), static_cast<const float*>(A), lda,
                       strideA, static_cast<const float*>(B), ldb, strideB, *static_cast<const float*>(beta),
                       static_cast<float*>(C), ldc, strideC, batch, [t](float x) { return t ? tf32(x) : x; },
                       [](float x) { return x; }, [](float& o, float v) { o = v; });
  } else {
    gemm<__nv_bfloat16, float>(transa, transb, m, n, k, *static_cast<const float*>(alpha),
                               static_cast<const __nv_bfloat16*>(A), lda, strideA,
                               static_cast<const __nv_bfloat16*>(B), ldb, strideB, *static_cast<const float*>(beta),
                               static_cast<__nv_bfloat16*>(C), ldc, strideC, batch,
                               [](__nv_bfloat16 x) { return float(x); }, [](__nv_bfloat16 x) { return float(x); },
                               [](__nv_bfloat16& o, float v) { o = __float2bfloat16_rn(v); });
  }
  return CUBLAS_STATUS_SUCCESS;
}
