// The kernel-level CUDA emulator: what device code sees. Every CUDA thread of a block
// runs as a fiber (its own small stack) on the calling host thread; a fiber runs
// until it reaches a block barrier, a warp collective or its end, so threads
// interleave only at synchronisation points, and blocks run one after another.
// A kernel therefore executes its real control flow, index arithmetic, shared
// memory and shuffles; what it does not model (warp timing, the memory model,
// caches) is listed in tests/cuda_emu/README.md.
//
// Included through the stand-in <cuda_runtime.h>; the .cu files reach it after
// tests/cuda_emu/cu2cpp.py rewrote their launches and __shared__ declarations.
#pragma once
#include <math.h>  // the float overloads in the global namespace, as CUDA's device maths

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __align__(n) alignas(n)
// The bound is checked at run time: cu2cpp.py puts EMU_LAUNCH_BOUNDS(n) into the body.
#define __launch_bounds__(...)

typedef struct CUstream_st* cudaStream_t;
typedef struct CUevent_st* cudaEvent_t;

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};

// Per host thread, set by the scheduler before it resumes a fiber.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace emu {

// ---- launch

struct Config {
  dim3 grid, block;
  size_t smem;
  Config(dim3 g, dim3 b, size_t s = 0, cudaStream_t = nullptr) : grid(g), block(b), smem(s) {}
};

struct LaunchSite {
  const char* name;  // the launch expression's callee, as written
  const char* file;
  int line;
  const void* key;   // the kernel's address when the callee names one (smem opt-in), else null
};

// Runs thread_fn(ctx) once per CUDA thread of the grid; configuration errors and
// faults detected in device code become the runtime's last error (cudaGetLastError).
void run_grid(const Config& c, const LaunchSite& site, void (*thread_fn)(void*), void* ctx);

// Kernel pointer arguments must be null or point into an allocation of the current
// device (one past its end allowed); bad_argument reports one that does not.
bool is_device_pointer(const void* p);
void bad_argument(const LaunchSite& site, int index, const void* p);

template <typename Wrapper, typename... A>
void launch(const Config& c, const LaunchSite& site, Wrapper wrapper, A&&... args) {
  // Evaluated once on the host, then copied into each thread's parameters, as CUDA
  // copies the kernel's parameters at launch.
  auto packed = std::make_tuple(std::decay_t<A>(std::forward<A>(args))...);
  bool ok = true;
  int i = 0;
  std::apply(
      [&](const auto&... a) {
        auto check = [&](const auto& v) {
          using V = std::decay_t<decltype(v)>;
          if constexpr (std::is_pointer_v<V> && !std::is_function_v<std::remove_pointer_t<V>>) {
            if (v != nullptr && !is_device_pointer(static_cast<const void*>(v))) {
              bad_argument(site, i, static_cast<const void*>(v));
              ok = false;
            }
          }
          ++i;
        };
        (check(a), ...);
      },
      packed);
  if (!ok) return;
  struct Ctx {
    Wrapper* w;
    decltype(packed)* p;
  } ctx{&wrapper, &packed};
  run_grid(c, site, [](void* v) {
    auto* x = static_cast<Ctx*>(v);
    std::apply(*x->w, *x->p);
  }, &ctx);
}

template <typename R, typename... P>
const void* kernel_key(R (*f)(P...)) {
  return reinterpret_cast<const void*>(f);
}

// ---- inside device code

// Records a fault of the running kernel (reported after the launch).
void fault(const char* what);
void check_launch_bounds(unsigned bound, const char* file, int line);

void syncthreads(const char* file, int line);
// Warp collective: every live lane of `mask` deposits `v` (8 bytes); returns after all
// of them did, with the deposits of the warp in *lanes (32 slots).
const uint64_t* warp_exchange(unsigned mask, uint64_t v, const char* what);
unsigned lane_id();

// Shared memory of the running block: dynamic (the launch's size) and the static
// variable `id` (allocated by the first thread that reaches it). Fresh memory is
// filled with 0xff bytes (NaN for floats) so that a read before a write shows.
void* dynamic_smem_ptr();
void* static_smem(int id, size_t bytes, size_t align);
int new_static_smem_id();

template <typename T>
T* dynamic_smem() {
  return static_cast<T*>(dynamic_smem_ptr());
}
template <typename T, typename Site>
T& shared_var(Site) {
  static const int id = new_static_smem_id();  // one per declaration (and instantiation)
  return *static_cast<std::remove_reference_t<T>*>(static_smem(id, sizeof(T), alignof(T)));
}

template <typename T>
uint64_t to_slot(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a type over 8 bytes");
  uint64_t s = 0;
  std::memcpy(&s, &v, sizeof(T));
  return s;
}
template <typename T>
T from_slot(uint64_t s) {
  T v;
  std::memcpy(&v, &s, sizeof(T));
  return v;
}

// Source lane of a shuffle (PTX shfl semantics with a segment of `width` lanes);
// -1 for "keep your own value".
int shfl_source(int kind, int lane, int arg, int width);

template <typename T>
T shfl(int kind, unsigned mask, T v, int arg, int width) {
  const uint64_t* lanes = warp_exchange(mask, to_slot(v), "shuffle");
  const int lane = int(lane_id());
  const int src = shfl_source(kind, lane, arg, width);
  if (src < 0) return v;
  if (!(mask >> src & 1u)) fault("shuffle reads a lane outside its mask");
  return from_slot<T>(lanes[src]);
}

}  // namespace emu

#define EMU_LAUNCH_BOUNDS(n, ...) ::emu::check_launch_bounds(unsigned(n), __FILE__, __LINE__)

// ---- synchronisation and warp collectives
#define __syncthreads() ::emu::syncthreads(__FILE__, __LINE__)
inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)emu::warp_exchange(mask, 0, "__syncwarp"); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) { return emu::shfl(0, mask, v, src, width); }
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) { return emu::shfl(1, mask, v, int(d), width); }
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) { return emu::shfl(2, mask, v, int(d), width); }
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) { return emu::shfl(3, mask, v, m, width); }

inline unsigned __ballot_sync(unsigned mask, int pred) {
  const uint64_t* lanes = emu::warp_exchange(mask, pred ? 1 : 0, "__ballot_sync");
  unsigned r = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && lanes[l]) r |= 1u << l;
  return r;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }
inline unsigned __activemask() { return __ballot_sync(0xffffffffu, 1); }

// ---- atomics (atomic_ref: also correct if blocks ever run on several host threads)
#define EMU_ATOMIC_INT(T)                                                                          \
  inline T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }                \
  inline T atomicSub(T* p, T v) { return std::atomic_ref<T>(*p).fetch_sub(v); }                \
  inline T atomicExch(T* p, T v) { return std::atomic_ref<T>(*p).exchange(v); }                \
  inline T atomicAnd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_and(v); }                \
  inline T atomicOr(T* p, T v) { return std::atomic_ref<T>(*p).fetch_or(v); }                  \
  inline T atomicXor(T* p, T v) { return std::atomic_ref<T>(*p).fetch_xor(v); }                \
  inline T atomicCAS(T* p, T expected, T desired) {                                             \
    std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);                           \
    return expected;                                                                              \
  }                                                                                               \
  inline T atomicMin(T* p, T v) {                                                               \
    std::atomic_ref<T> a(*p);                                                                   \
    T old = a.load();                                                                           \
    while (v < old && !a.compare_exchange_weak(old, v)) {}                                       \
    return old;                                                                                 \
  }                                                                                               \
  inline T atomicMax(T* p, T v) {                                                               \
    std::atomic_ref<T> a(*p);                                                                   \
    T old = a.load();                                                                           \
    while (v > old && !a.compare_exchange_weak(old, v)) {}                                       \
    return old;                                                                                 \
  }
EMU_ATOMIC_INT(int)
EMU_ATOMIC_INT(unsigned)
EMU_ATOMIC_INT(unsigned long long)
EMU_ATOMIC_INT(long long)
#undef EMU_ATOMIC_INT
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline double atomicAdd(double* p, double v) { return std::atomic_ref<double>(*p).fetch_add(v); }
inline float atomicExch(float* p, float v) { return std::atomic_ref<float>(*p).exchange(v); }

// ---- loads, bit tricks, integer intrinsics
template <typename T>
T __ldg(const T* p) { return *p; }
template <typename T>
T __ldcs(const T* p) { return *p; }
template <typename T>
void __stcs(T* p, T v) { *p = v; }
inline unsigned __umulhi(unsigned a, unsigned b) { return unsigned((uint64_t(a) * b) >> 32); }
inline int __mulhi(int a, int b) { return int((int64_t(a) * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)((unsigned __int128)a * b >> 64);
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline long long __double_as_longlong(double d) { long long i; std::memcpy(&i, &d, 8); return i; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }

// ---- float intrinsics: the fast forms are computed exactly (host libm), within the
// device's documented error of the real thing.
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { sincosf(x, s, c); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752); }
inline int __float2int_rn(float x) { return int(nearbyintf(x)); }
inline int __float2int_rz(float x) { return int(x); }
inline int __float2int_rd(float x) { return int(floorf(x)); }
inline int __float2int_ru(float x) { return int(ceilf(x)); }
inline long long __double2ll_rn(double x) { return (long long)nearbyint(x); }
inline float __int2float_rn(int x) { return float(x); }

// CUDA's min/max: overloaded for every arithmetic pair, in the global namespace.
// Floating forms follow fminf/fmaxf (a NaN operand yields the other).
template <typename A, typename B, std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>, int> = 0>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>) return std::fmin(C(a), C(b));
  else return C(b) < C(a) ? C(b) : C(a);
}
template <typename A, typename B, std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>, int> = 0>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>) return std::fmax(C(a), C(b));
  else return C(a) < C(b) ? C(b) : C(a);
}
