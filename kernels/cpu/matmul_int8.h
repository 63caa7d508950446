// The CPU int8 linear (contract and quantisation scheme: kernels/quantized_matmul.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/quantized_matmul.h"

namespace bet::kernels::cpu {

// Per-output-channel symmetric weight quantisation of w [N, K] (row-major).
void quantize_weight_rows(const float* w, int64_t N, int64_t K, int8_t* wq, float* scale);

// Dynamic per-row activation quantisation (asymmetric u8 onto [0, qmax]) of x [M, K]
// (row stride ldx): xq [M, K] contiguous, scale [M], zero point [M]. An all-zero row
// gets scale 0 (its xq are all the zero point, 0).
void quantize_rows_u8(const float* x, int64_t M, int64_t K, int64_t ldx, int qmax, uint8_t* xq, float* scale,
                      int32_t* zp);

// 255 where oneDNN runs int8 on VNNI (avx512_core_vnni, avx2_vnni, AMX) and a
// worst-case probe (every pair of products past s16) comes out exact, else 127 (see
// kernels/quantized_matmul.h). BET_CPU_INT8_QMAX=127|255 overrides (tests).
int activation_qmax();
// "onednn-int8 (avx512_core_vnni), u8 activations [0, 255]" and the like, for bench headers.
const char* int8_matmul_path();

// An int8 linear layer's weights: wq [N, K], scales [N], colsum [N], bias [N] or
// empty. Immutable once built; oneDNN's reordered copy of the weights is made on first
// use and kept (per layout, under a lock), so one object serves any number of threads.
class Int8Linear {
 public:
  Int8Linear(std::vector<int8_t> wq, std::vector<float> scale, std::vector<float> bias, int64_t out_features,
             int64_t in_features);
  ~Int8Linear();
  // Quantises w [N, K] (and copies bias, which may be null).
  static std::shared_ptr<const Int8Linear> quantize(const float* w, const float* bias, int64_t N, int64_t K);
  // The layers' outputs side by side (rows stacked): exact, since every scale is a row's.
  // Layers without a bias contribute zeros when any has one.
  static std::shared_ptr<const Int8Linear> concat(const std::vector<const Int8Linear*>& parts);

  int64_t out_features() const { return N_; }
  int64_t in_features() const { return K_; }
  const std::vector<int8_t>& weight() const { return wq_; }
  const std::vector<float>& scale() const { return scale_; }
  const std::vector<float>& bias() const { return bias_; }
  const std::vector<int32_t>& colsum() const { return colsum_; }
  // w[o, k] = wq[o, k] * scale[o]
  std::vector<float> dequantized() const;

  // acc [M, N] = xq [M, K] (u8) @ wq^T (s32), on oneDNN.
  void gemm_s32(const uint8_t* xq, int64_t M, int32_t* acc) const;
  // y [M, N] f32 (contiguous) for x [M, K] f32 rows of stride ldx.
  void forward(const float* x, int64_t M, int64_t ldx, float* y) const;

 private:
  struct Packed;
  int64_t N_, K_;
  std::vector<int8_t> wq_;
  std::vector<float> scale_, bias_;
  std::vector<int32_t> colsum_;
  mutable std::mutex mu_;
  mutable std::vector<std::shared_ptr<Packed>> packed_;  // per weights layout
  std::shared_ptr<Packed> packed_for(int64_t M) const;
};

// Plain C++ reference (tests): the same quantisation of x, integer dot products, and
// the same float epilogue.
void gemm_s32_reference(const uint8_t* xq, const int8_t* wq, int64_t M, int64_t N, int64_t K, int32_t* acc);
contract::int8_linear int8_linear_reference;
// The kernel behind the contract (oneDNN; builds a throwaway Int8Linear: tests only).
contract::int8_linear int8_linear;

// oneDNN int8 primitives held (tests of the caching).
size_t int8_matmul_cache_size();

}  // namespace bet::kernels::cpu
