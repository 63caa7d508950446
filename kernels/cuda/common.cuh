// Shared by the .cu files: error checks, the device guard, element types and their
// arithmetic types, dtype dispatch and launch shapes. Device-compiler only.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "engine/tensor.h"
#include "kernels/cuda/geom.h"

namespace bet::kernels::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t e, const char* what, const char* file, int line);

#define BET_CUDA_CHECK(expr)                                                          \
  do {                                                                                \
    cudaError_t bet_cuda_err_ = (expr);                                               \
    if (bet_cuda_err_ != cudaSuccess)                                                 \
      ::bet::kernels::cuda::throw_cuda_error(bet_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a launch: configuration errors surface here, not at the next sync.
#define BET_CUDA_LAUNCHED(op) BET_CUDA_CHECK(cudaGetLastError())

// Makes `device` current for the scope (kernels launch on the current device).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  explicit DeviceGuard(const Tensor& t) : DeviceGuard(t.device().index) {}
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
  int want_ = 0;
};

// Multiprocessor count of the current device (cached per device).
int sm_count();

using bf16 = __nv_bfloat16;
using f16 = __half;

// The type arithmetic happens in: 16-bit floats compute in f32.
template <typename T> struct AccT { using type = T; };
template <> struct AccT<bf16> { using type = float; };
template <> struct AccT<f16> { using type = float; };
template <typename T> using Acc = typename AccT<T>::type;

// Wide accumulator of sums: doubles for floating types (as the CPU kernels), int64
// for integers.
template <typename T>
using SumAcc = std::conditional_t<std::is_integral_v<T>, int64_t, double>;

template <typename D, typename S>
__host__ __device__ __forceinline__ D convert(S v) {
  if constexpr (std::is_same_v<D, S>) {
    return v;
  } else if constexpr (std::is_same_v<S, bf16> || std::is_same_v<S, f16>) {
    return convert<D>(float(v));
  } else if constexpr (std::is_same_v<D, bf16>) {
    if constexpr (std::is_same_v<S, double>) return __double2bfloat16(v);
    else return __float2bfloat16(float(v));
  } else if constexpr (std::is_same_v<D, f16>) {
    if constexpr (std::is_same_v<S, double>) return __double2half(v);
    else return __float2half(float(v));
  } else {
    return static_cast<D>(v);
  }
}

template <typename T>
__device__ __forceinline__ Acc<T> load(const T* p) {
  return convert<Acc<T>>(*p);
}

// Calls fn(T{}) for T the element type of `dt`.
template <typename Fn>
void dispatch_float(DType dt, const char* op, Fn&& fn) {
  switch (dt) {
    case DType::F32: return fn(float{});
    case DType::F64: return fn(double{});
    case DType::BF16: return fn(bf16{});
    default: fail(op, ": dtype ", dtype_name(dt), " not supported on cuda");
  }
}
template <typename Fn>
void dispatch_f32_f64(DType dt, const char* op, Fn&& fn) {
  switch (dt) {
    case DType::F32: return fn(float{});
    case DType::F64: return fn(double{});
    default: fail(op, ": dtype ", dtype_name(dt), " not supported on cuda (f32 or f64)");
  }
}
template <typename Fn>
void dispatch_all(DType dt, const char* op, Fn&& fn) {
  switch (dt) {
    case DType::F32: return fn(float{});
    case DType::F64: return fn(double{});
    case DType::BF16: return fn(bf16{});
    case DType::F16: return fn(f16{});
    case DType::I32: return fn(int32_t{});
    case DType::I64: return fn(int64_t{});
  }
  fail(op, ": unknown dtype");
}
template <typename Fn>
void dispatch_index(DType dt, const char* op, Fn&& fn) {
  switch (dt) {
    case DType::I32: return fn(int32_t{});
    case DType::I64: return fn(int64_t{});
    default: fail(op, ": index dtype ", dtype_name(dt), " is not i32 or i64");
  }
}

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items: enough to fill the device, no more.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t want = (n + threads - 1) / threads;
  const int64_t cap = int64_t(sm_count()) * 32;
  return unsigned(want < 1 ? 1 : (want < cap ? want : cap));
}

template <typename T>
T* ptr(const Tensor& t) {
  return static_cast<T*>(t.raw_data());
}

// Geometry of `shape` for operands with these strides; throws past kMaxDims.
template <int N>
Geom<N> geom_of(const Shape& shape, std::initializer_list<const Shape*> strides, const char* op) {
  const Shape* st[N];
  int k = 0;
  for (const Shape* s : strides) st[k++] = s;
  Geom<N> g;
  BET_CHECK(make_geom<N>(shape, st, &g), op, ": shape ", shape_str(shape), " has too many non-mergeable dims for cuda");
  return g;
}

// Block-wide sum / max helpers over a block of kThreads threads (warp shuffles,
// then one warp over the warp partials). Fixed order: deterministic.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}
// Result returned to every thread. `scratch` holds 32 values; blockDim.x is a
// multiple of 32.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : T(0);
  return warp_sum(v);
}
template <typename T>
__device__ __forceinline__ T block_max(T v, T* scratch, T lowest) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : lowest;
  return warp_max(v);
}

}  // namespace bet::kernels::cuda
