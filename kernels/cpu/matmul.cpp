#include "kernels/matmul.h"
#include "kernels/cpu/onednn.h"

#include <dnnl.hpp>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "kernels/copy.h"
#include "kernels/cpu/matmul.h"
#include "platform/threads.h"

namespace bet::kernels::cpu {

using platform::kParallelGrain;
using platform::num_threads;
using platform::parallel_for;

namespace {

// ---------------------------------------------------------------- plain loop

template <typename T>
void matmul_loop(const TensorRef& a, const TensorRef& b, const TensorRef& bias, const TensorRef& out) {
  const int64_t r = out.dim();
  const int64_t M = out.shape()[r - 2], N = out.shape()[r - 1], K = a.shape()[r - 1];
  int64_t nb = 1;
  for (int64_t d = 0; d + 2 < r; ++d) nb *= out.shape()[d];
  if (nb * M * N == 0) return;

  // Per-batch offsets, with broadcast dims contributing nothing.
  std::vector<int64_t> aoff(size_t(nb), 0), boff(size_t(nb), 0);
  for (int64_t i = 0; i < nb; ++i) {
    int64_t rem = i;
    for (int64_t d = r - 3; d >= 0; --d) {
      int64_t idx = rem % out.shape()[d];
      rem /= out.shape()[d];
      if (a.shape()[d] != 1) aoff[size_t(i)] += idx * a.strides()[d];
      if (b.shape()[d] != 1) boff[size_t(i)] += idx * b.strides()[d];
    }
  }
  const T* A = static_cast<const T*>(a.raw_data());
  const T* B = static_cast<const T*>(b.raw_data());
  T* O = static_cast<T*>(out.raw_data());
  const T* bp = bias.defined() ? static_cast<const T*>(bias.raw_data()) : nullptr;
  const int64_t sbias = bias.defined() ? bias.strides()[0] : 0;
  const int64_t sam = a.strides()[r - 2], sak = a.strides()[r - 1];
  const int64_t sbk = b.strides()[r - 2], sbn = b.strides()[r - 1];

  const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, N * std::max<int64_t>(K, 1)));
  parallel_for(nb * M, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t bi = row / M, i = row % M;
      T* o = O + row * N;
      for (int64_t j = 0; j < N; ++j) o[j] = bp ? bp[j * sbias] : T(0);
      const T* ap = A + aoff[size_t(bi)] + i * sam;
      const T* bb = B + boff[size_t(bi)];
      for (int64_t k = 0; k < K; ++k) {
        const T av = ap[k * sak];
        const T* brow = bb + k * sbk;
        if (sbn == 1) {
          for (int64_t j = 0; j < N; ++j) o[j] += av * brow[j];
        } else {
          for (int64_t j = 0; j < N; ++j) o[j] += av * brow[j * sbn];
        }
      }
    }
  });
}

// ---------------------------------------------------------------- oneDNN

struct Entry {
  bool ok = true;  // false: oneDNN has no (fast) implementation; remembered so we ask once
  dnnl::matmul prim;
  dnnl::memory::desc a_md, b_md, bias_md, out_md;
};

PrimitiveCache<Entry>& cache() {
  static PrimitiveCache<Entry> c;
  return c;
}

// One operand as oneDNN will see it.
struct Geometry {
  dnnl::memory::dims dims, strides;
};

// Drops batch dims that are 1 everywhere and describes each operand; batch dims
// broadcast by a stride of 0 become size-1 dims, which oneDNN broadcasts itself.
// Returns false when an operand is not a strided matrix oneDNN's GEMM can read
// (a stride-0 matrix dim, or neither of the two inner dims unit-stride).
bool describe(const TensorRef& a, const TensorRef& b, const TensorRef& out, Geometry* ga, Geometry* gb,
              Geometry* go, bool* a_ok, bool* b_ok) {
  const int64_t r = out.dim();
  *ga = {}, *gb = {}, *go = {};
  for (int64_t d = 0; d + 2 < r; ++d) {
    const int64_t n = out.shape()[d];
    if (n == 1) continue;
    int64_t da = a.shape()[d], db = b.shape()[d];
    if (da != 1 && a.strides()[d] == 0) da = 1;
    if (db != 1 && b.strides()[d] == 0) db = 1;
    if (da == 1 && db == 1) {
      // Both operands expanded along this dim: oneDNN wants one of them real.
      if (b.shape()[d] != 1) {
        *b_ok = false;
        db = n;
      } else {
        *a_ok = false;
        da = n;
      }
    }
    ga->dims.push_back(da);
    ga->strides.push_back(da == 1 ? 0 : a.strides()[d]);
    gb->dims.push_back(db);
    gb->strides.push_back(db == 1 ? 0 : b.strides()[d]);
    go->dims.push_back(n);
  }
  auto matrix = [&](const TensorRef& t, Geometry* g) {
    const int64_t rows = t.shape()[r - 2], cols = t.shape()[r - 1];
    int64_t sr = t.strides()[r - 2], sc = t.strides()[r - 1];
    // A size-1 dim's stride is never applied; 1 keeps the BLAS leading-dim rules happy.
    if (rows == 1) sr = 1;
    if (cols == 1) sc = 1;
    g->dims.push_back(rows);
    g->dims.push_back(cols);
    g->strides.push_back(sr);
    g->strides.push_back(sc);
    return sr != 0 && sc != 0 && (sr == 1 || sc == 1);
  };
  *a_ok = matrix(a, ga) && *a_ok;
  *b_ok = matrix(b, gb) && *b_ok;
  go->dims.push_back(out.shape()[r - 2]);
  go->dims.push_back(out.shape()[r - 1]);
  // Size-1 batch dims (broadcast) get the stride an outer dim would have, so the
  // strides stay ordered and oneDNN can fuse batch dims into one GEMM where possible.
  for (Geometry* g : {ga, gb}) {
    int64_t extent = 1;
    for (size_t d = 0; d < g->dims.size(); ++d)
      if (g->dims[d] > 1) extent = std::max<int64_t>(extent, g->strides[d] * g->dims[d]);
    for (size_t d = 0; d + 2 < g->dims.size(); ++d)
      if (g->dims[d] == 1) g->strides[d] = extent;
  }
  go->strides.assign(go->dims.size(), 1);
  for (int64_t d = int64_t(go->dims.size()) - 2; d >= 0; --d) go->strides[d] = go->strides[d + 1] * go->dims[d + 1];
  return *a_ok && *b_ok;
}

// A primitive over operands and result of dtype `dt` (f32 or bf16; the bias is f32).
std::shared_ptr<const Entry> get_primitive(const Geometry& ga, const Geometry& gb, const Geometry& go,
                                           bool with_bias, DType dt) {
  std::vector<int64_t> key;
  key.reserve(5 + 5 * ga.dims.size());
  key.push_back(num_threads());
  key.push_back(with_bias);
  key.push_back(int64_t(dt));
  key.push_back(int64_t(ga.dims.size()));
  for (const Geometry* g : {&ga, &gb}) {
    key.insert(key.end(), g->dims.begin(), g->dims.end());
    key.insert(key.end(), g->strides.begin(), g->strides.end());
  }
  key.insert(key.end(), go.dims.begin(), go.dims.end());
  if (auto e = cache().find(key)) return e;

  using mdt = dnnl::memory::data_type;
  const mdt t = dt == DType::BF16 ? mdt::bf16 : mdt::f32;
  auto e = std::make_shared<Entry>();
  try {
    e->a_md = dnnl::memory::desc(ga.dims, t, ga.strides);
    e->b_md = dnnl::memory::desc(gb.dims, t, gb.strides);
    e->out_md = dnnl::memory::desc(go.dims, t, go.strides);
    std::optional<dnnl::matmul::primitive_desc> pd;
    if (with_bias) {
      const size_t n = go.dims.size();
      const int64_t N = go.dims[n - 1];
      dnnl::memory::dims bd(n, 1), bs(n, N);
      bd[n - 1] = N;
      bs[n - 1] = 1;
      e->bias_md = dnnl::memory::desc(bd, mdt::f32, bs);
      pd.emplace(dnnl::matmul::desc(e->a_md, e->b_md, e->bias_md, e->out_md), dnnl_engine());
    } else {
      pd.emplace(dnnl::matmul::desc(e->a_md, e->b_md, e->out_md), dnnl_engine());
    }
    // bf16: only oneDNN's JIT kernels (bf16 instructions, f32 accumulation). Its
    // reference implementation, which takes any layout, is far slower than the f32
    // emulation the caller falls back to.
    if (dt == DType::BF16 && std::string(pd->impl_info_str()).rfind("ref", 0) == 0) e->ok = false;
    else e->prim = dnnl::matmul(*pd);
  } catch (const dnnl::error&) {
    e->ok = false;
  }
  cache().insert(key, e);
  return e;
}

// A dense copy of `t`, held by *keep.
TensorRef materialize(const TensorRef& t, std::optional<ScratchTensor>* keep) {
  keep->emplace(t.shape(), t.dtype(), t.device());
  copy(t, **keep);
  return **keep;
}

// out = a @ b + bias on a oneDNN primitive of out's dtype (f32, or bf16 with f32
// accumulation inside oneDNN and one rounding of the result). The bias is given to
// oneDNN as a dense f32 row (a bf16 bias converts exactly). Returns false, having
// written nothing, when oneDNN cannot take the operands: the caller falls back.
bool matmul_onednn(TensorRef a, TensorRef b, TensorRef bias, const TensorRef& out) {
  if (out.dim() - 2 > DNNL_MAX_NDIMS - 2) return false;
  std::optional<ScratchTensor> a_dense, b_dense, bias_dense;
  // oneDNN's bias post-processing reads the bias as a dense row.
  if (bias.defined() && (bias.dtype() != DType::F32 || (bias.numel() > 1 && bias.strides()[0] != 1))) {
    bias_dense.emplace(bias.shape(), DType::F32, bias.device());
    copy(bias, *bias_dense);
    bias = *bias_dense;
  }
  Geometry ga, gb, go;
  bool a_ok = true, b_ok = true;
  if (!describe(a, b, out, &ga, &gb, &go, &a_ok, &b_ok)) {
    // Rare layouts (expanded rows, doubly strided matrices): one dense copy.
    if (!a_ok) a = materialize(a, &a_dense);
    if (!b_ok) b = materialize(b, &b_dense);
    a_ok = b_ok = true;
    if (!describe(a, b, out, &ga, &gb, &go, &a_ok, &b_ok)) return false;
  }
  std::shared_ptr<const Entry> e = get_primitive(ga, gb, go, bias.defined(), out.dtype());
  if (!e->ok) return false;
  dnnl::engine& eng = dnnl_engine();
  dnnl::memory am(e->a_md, eng, a.raw_data());
  dnnl::memory bm(e->b_md, eng, b.raw_data());
  dnnl::memory om(e->out_md, eng, out.raw_data());
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, om}};
  if (bias.defined()) args.emplace(DNNL_ARG_BIAS, dnnl::memory(e->bias_md, eng, bias.raw_data()));
  try {
    e->prim.execute(dnnl_stream(), args);
    dnnl_stream().wait();
  } catch (const dnnl::error& err) {
    fail("matmul: oneDNN failed (", err.what(), ") for ", shape_str(a.shape()), " @ ", shape_str(b.shape()));
  }
  return true;
}

void matmul_f32(const TensorRef& a, const TensorRef& b, const TensorRef& bias, const TensorRef& out) {
  if (!matmul_onednn(a, b, bias, out)) matmul_loop<float>(a, b, bias, out);
}

// bf16 without fast bf16 instructions (or a layout oneDNN's bf16 kernels cannot take): the
// operands (exact in f32) are multiplied in f32 and the product rounded to bf16, the
// GPU's numbers up to the order of accumulation.
void matmul_bf16_emulated(const TensorRef& a, const TensorRef& b, const TensorRef& bias, const TensorRef& out) {
  ScratchTensor a32(a.shape(), DType::F32, a.device()), b32(b.shape(), DType::F32, b.device());
  copy(a, a32);
  copy(b, b32);
  std::optional<ScratchTensor> bias32;
  if (bias.defined()) {
    bias32.emplace(bias.shape(), DType::F32, bias.device());
    copy(bias, *bias32);
  }
  ScratchTensor o32(out.shape(), DType::F32, out.device());
  matmul(a32, b32, bias32 ? bias32->ref() : TensorRef(), o32);
  copy(o32, out);
}

}  // namespace

void matmul(const TensorRef& a, const TensorRef& b, const TensorRef& bias, const TensorRef& out) {
  if (out.numel() == 0) return;
  const int64_t K = a.shape()[a.dim() - 1];
  switch (out.dtype()) {
    case DType::F32:
      if (K == 0) return matmul_loop<float>(a, b, bias, out);
      return matmul_f32(a, b, bias, out);
    case DType::F64: return matmul_loop<double>(a, b, bias, out);
    case DType::BF16:
      if (K > 0 && bf16_matmul_native() && matmul_onednn(a, b, bias, out)) return;
      return matmul_bf16_emulated(a, b, bias, out);
    default: fail("matmul: dtype ", dtype_name(out.dtype()), " not supported on cpu");
  }
}

size_t matmul_cache_size() { return cache().size(); }

namespace {

// What oneDNN will run: its effective ISA is the CPU's (cpuid) capped by
// ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA, so the cap also selects the emulation.
dnnl::cpu_isa effective_isa() {
  static const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  return isa;
}
bool isa_includes(dnnl_cpu_isa_t want) {
  return (unsigned(effective_isa()) & unsigned(want)) == unsigned(want);  // ISA values are feature bit sets
}
bool has_amx() { return isa_includes(dnnl_cpu_isa_avx512_core_amx); }
bool has_avx512_bf16() { return isa_includes(dnnl_cpu_isa_avx512_core_bf16); }

// FLOP rate of AVX512_BF16's dot product (vdpbf16ps: 32 multiply-adds) over that of
// f32 FMA (vfmadd: 16), both on independent accumulators, best of a few alternations
// (a preempted one only reads slower). Where the dot product issues at a quarter of
// the FMA's rate it is 0.5 (measured on an Emerald Rapids with AMX hidden, whose fast
// bf16 unit is AMX), and oneDNN's bf16 GEMM ran at half its f32 GEMM's speed there
// (82 against 163 GFLOP/s on one core); where it issues as fast as FMA, 2.
#if defined(__x86_64__)
__attribute__((target("avx512f,avx512bf16"))) double bf16_dot_rate_over_fma() {
  constexpr int64_t kIters = 20000;
  using Clock = std::chrono::steady_clock;
#define BET_R12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define BET_DECL(i) __m512 acc##i = _mm512_set1_ps(float(i));
#define BET_FMA(i) acc##i = _mm512_fmadd_ps(acc##i, x, y);
#define BET_DOT(i) acc##i = _mm512_dpbf16_ps(acc##i, xb, yb);
#define BET_SUM(i) sum = _mm512_add_ps(sum, acc##i);
  BET_R12(BET_DECL)
  const __m512 x = _mm512_set1_ps(0.5f), y = _mm512_set1_ps(0.25f);
  const __m512bh xb = (__m512bh)_mm512_set1_epi16(0x3f00), yb = (__m512bh)_mm512_set1_epi16(0x3e80);
  double fma_s = 1e30, dot_s = 1e30;
  for (int rep = 0; rep < 7; ++rep) {
    auto t0 = Clock::now();
    for (int64_t i = 0; i < kIters; ++i) {
      BET_R12(BET_FMA)
      asm volatile("" ::"v"(x));
    }
    auto t1 = Clock::now();
    for (int64_t i = 0; i < kIters; ++i) {
      BET_R12(BET_DOT)
      asm volatile("" ::"v"(xb));
    }
    auto t2 = Clock::now();
    fma_s = std::min(fma_s, std::chrono::duration<double>(t1 - t0).count());
    dot_s = std::min(dot_s, std::chrono::duration<double>(t2 - t1).count());
  }
  __m512 sum = _mm512_setzero_ps();
  BET_R12(BET_SUM)
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  volatile float sink = lanes[0];  // keeps the loops
  (void)sink;
#undef BET_R12
#undef BET_DECL
#undef BET_FMA
#undef BET_DOT
#undef BET_SUM
  return (32.0 / dot_s) / (16.0 / fma_s);
}
#else
double bf16_dot_rate_over_fma() { return 0; }  // oneDNN reports no x86 ISA here
#endif

// oneDNN's bf16 GEMM beats multiplying f32 copies where the dot product is clearly
// faster than f32 FMA (the conversions around it cost a little), or with AMX.
bool bf16_fast_here() {
  static const bool fast = has_amx() || (has_avx512_bf16() && bf16_dot_rate_over_fma() >= 1.25);
  return fast;
}

Bf16MatmulMode initial_mode() {
  const char* v = std::getenv("BET_CPU_BF16_MATMUL");
  if (v && std::strcmp(v, "onednn") == 0) return Bf16MatmulMode::OneDNN;
  if (v && std::strcmp(v, "emulate") == 0) return Bf16MatmulMode::Emulate;
  return Bf16MatmulMode::Auto;
}

std::atomic<Bf16MatmulMode>& mode() {
  static std::atomic<Bf16MatmulMode> m{initial_mode()};
  return m;
}

}  // namespace

void set_bf16_matmul_mode(Bf16MatmulMode m) { mode().store(m); }

bool bf16_matmul_native() {
  if (!has_avx512_bf16()) return false;
  switch (mode().load(std::memory_order_relaxed)) {
    case Bf16MatmulMode::OneDNN: return true;
    case Bf16MatmulMode::Emulate: return false;
    default: return bf16_fast_here();
  }
}

const char* bf16_matmul_path() {
  if (bf16_matmul_native()) return has_amx() ? "onednn-bf16 (amx)" : "onednn-bf16 (avx512_bf16)";
  if (!has_avx512_bf16()) return "f32 emulation (no bf16 instructions)";
  if (mode().load() == Bf16MatmulMode::Emulate) return "f32 emulation (BET_CPU_BF16_MATMUL=emulate)";
  return "f32 emulation (avx512_bf16 without AMX, slower than f32 FMA here)";
}

}  // namespace bet::kernels::cpu
