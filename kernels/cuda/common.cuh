// Shared by the .cu files: element types and their arithmetic types, dtype dispatch
// and launch shapes, and the runtime's error checks and device guard
// (platform/cuda/runtime.cuh). Device-compiler only.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/geom.h"
#include "kernels/tensor_ref.h"
#include "platform/cuda/runtime.cuh"

namespace bet::kernels::cuda {

using platform::cuda::sm_count;

// Makes the device of `t` (or `device`) current for the scope.
class DeviceGuard : public platform::cuda::DeviceGuard {
 public:
  explicit DeviceGuard(int device) : platform::cuda::DeviceGuard(device) {}
  explicit DeviceGuard(const TensorRef& t) : platform::cuda::DeviceGuard(t.device().index) {}
};

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

// Threads per row block: a multiple of 32, no more than the row needs.
inline int row_threads(int64_t n) {
  if (n <= 32) return 32;
  if (n <= 64) return 64;
  if (n <= 128) return 128;
  return kThreads;
}

// One block per row: the grid of a row kernel.
inline unsigned rows_grid(int64_t rows) {
  BET_CHECK(rows < (int64_t(1) << 31), "cuda row kernel: ", rows, " rows exceed the grid");
  return unsigned(rows);
}

// Blocks for a grid-stride loop over n items: enough to fill the device, no more.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t want = (n + threads - 1) / threads;
  const int64_t cap = int64_t(sm_count()) * 32;
  return unsigned(want < 1 ? 1 : (want < cap ? want : cap));
}

// Kernels take device tensors only (the dispatcher never hands them others).
inline void check_cuda(const TensorRef& t, const char* op) {
  BET_CHECK(t.device().is_cuda(), op, ": tensor on ", t.device().str(), ", expected a cuda tensor");
}

template <typename T>
T* ptr(const TensorRef& t) {
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
