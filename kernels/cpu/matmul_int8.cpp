#include "kernels/cpu/matmul_int8.h"

#include <dnnl.hpp>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>

#include "kernels/cpu/onednn.h"
#include "platform/error.h"
#include "platform/threads.h"

namespace bet::kernels::cpu {

using platform::num_threads;
using platform::parallel_for;

namespace {

bool has_vnni() {
  const unsigned isa = unsigned(dnnl::get_effective_cpu_isa());
  auto has = [isa](dnnl_cpu_isa_t want) { return (isa & unsigned(want)) == unsigned(want); };
  return has(dnnl_cpu_isa_avx512_core_vnni) || has(dnnl_cpu_isa_avx2_vnni);
}

// One oneDNN int8 primitive per (threads, M, K, N): u8 [M, K] x s8 [K, N] -> s32 [M, N],
// the weights in whatever layout the primitive asks for (format `any`).
struct Prim {
  bool ok = false;
  dnnl::matmul prim;
  dnnl::memory::desc src_md, wei_md, dst_md;
  std::string impl;
};

PrimitiveCache<Prim>& prims() {
  static PrimitiveCache<Prim> c;
  return c;
}

std::shared_ptr<const Prim> get_prim(int64_t M, int64_t K, int64_t N) {
  const std::vector<int64_t> key{num_threads(), M, K, N};
  if (auto p = prims().find(key)) return p;
  using mdt = dnnl::memory::data_type;
  auto p = std::make_shared<Prim>();
  try {
    p->src_md = dnnl::memory::desc({M, K}, mdt::u8, dnnl::memory::dims{K, 1});
    const dnnl::memory::desc wei_any({K, N}, mdt::s8, dnnl::memory::format_tag::any);
    p->dst_md = dnnl::memory::desc({M, N}, mdt::s32, dnnl::memory::dims{N, 1});
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(p->src_md, wei_any, p->dst_md), dnnl_engine());
    p->wei_md = pd.weights_desc();
    p->impl = pd.impl_info_str();
    p->prim = dnnl::matmul(pd);
    p->ok = true;
  } catch (const dnnl::error&) {
    p->ok = false;  // the caller runs the reference loop
  }
  prims().insert(key, p);
  return p;
}

// The float epilogue, shared by the kernel and the reference so they agree exactly.
void epilogue(const int32_t* acc, int64_t M, int64_t N, const float* sx, const int32_t* zx, const float* sw,
              const int32_t* colsum, const float* bias, float* y) {
  const int64_t grain = std::max<int64_t>(1, platform::kParallelGrain / std::max<int64_t>(1, N));
  parallel_for(M, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int32_t* __restrict a = acc + r * N;
      float* __restrict o = y + r * N;
      const float s = sx[r];
      const int32_t z = zx[r];
      if (bias) {
        for (int64_t j = 0; j < N; ++j) o[j] = float(int64_t(a[j]) - int64_t(z) * colsum[j]) * (s * sw[j]) + bias[j];
      } else {
        for (int64_t j = 0; j < N; ++j) o[j] = float(int64_t(a[j]) - int64_t(z) * colsum[j]) * (s * sw[j]);
      }
    }
  });
}

// The row's range (with 0) and whether it holds a NaN or an infinity.
void row_range(const float* x, int64_t K, float* lo_out, float* hi_out, bool* bad_out) {
  int64_t k = 0;
  float lo = 0.f, hi = 0.f;
  bool bad = false;
#if defined(__AVX2__)
  // Four independent accumulators: the min/max chains, not the loads, bound this loop.
  // Non-finite: x - x is NaN exactly for NaN and infinities; their sum stays NaN.
  __m256 lo4[4], hi4[4], bad4[4];
  for (int i = 0; i < 4; ++i) lo4[i] = hi4[i] = bad4[i] = _mm256_setzero_ps();
  for (; k + 32 <= K; k += 32)
    for (int i = 0; i < 4; ++i) {
      const __m256 v = _mm256_loadu_ps(x + k + 8 * i);
      lo4[i] = _mm256_min_ps(lo4[i], v);
      hi4[i] = _mm256_max_ps(hi4[i], v);
      bad4[i] = _mm256_add_ps(bad4[i], _mm256_sub_ps(v, v));
    }
  __m256 vlo = _mm256_min_ps(_mm256_min_ps(lo4[0], lo4[1]), _mm256_min_ps(lo4[2], lo4[3]));
  __m256 vhi = _mm256_max_ps(_mm256_max_ps(hi4[0], hi4[1]), _mm256_max_ps(hi4[2], hi4[3]));
  __m256 vsum = _mm256_add_ps(_mm256_add_ps(bad4[0], bad4[1]), _mm256_add_ps(bad4[2], bad4[3]));
  for (; k + 8 <= K; k += 8) {
    const __m256 v = _mm256_loadu_ps(x + k);
    vlo = _mm256_min_ps(vlo, v);
    vhi = _mm256_max_ps(vhi, v);
    vsum = _mm256_add_ps(vsum, _mm256_sub_ps(v, v));
  }
  const __m256 vbad = _mm256_cmp_ps(vsum, vsum, _CMP_UNORD_Q);
  alignas(32) float a[8], b[8];
  _mm256_store_ps(a, vlo);
  _mm256_store_ps(b, vhi);
  for (int i = 0; i < 8; ++i) lo = std::min(lo, a[i]), hi = std::max(hi, b[i]);
  bad = _mm256_movemask_ps(vbad) != 0;
#endif
  for (; k < K; ++k) {
    lo = std::min(lo, x[k]);
    hi = std::max(hi, x[k]);
    bad = bad || !std::isfinite(x[k]);
  }
  *lo_out = lo, *hi_out = hi, *bad_out = bad;
}

void quantize_row(const float* x, int64_t K, int qmax, uint8_t* q, float* scale, int32_t* zp) {
  float lo, hi;
  bool bad;
  row_range(x, K, &lo, &hi, &bad);
  const float s = (hi - lo) / float(qmax);
  if (bad || !(s > 0.f) || !std::isfinite(s)) {  // all zero, or non-finite: NaN out
    *scale = bad || !std::isfinite(s) ? std::nanf("") : 0.f;
    *zp = 0;
    std::memset(q, 0, size_t(K));
    return;
  }
  const float inv = 1.f / s;
  const int32_t z = std::clamp(int32_t(std::lrint(-lo * inv)), 0, qmax);
  // q = trunc(clamp(x * inv + z + 0.5, 0, qmax + 0.5)): x * inv + z >= -rounding, so
  // truncation rounds half up. fma in both the vector and the scalar loop.
  const float zf = float(z) + 0.5f, top = float(qmax) + 0.5f;
  int64_t k = 0;
#if defined(__AVX2__)
  const __m256 vinv = _mm256_set1_ps(inv), vz = _mm256_set1_ps(zf), vtop = _mm256_set1_ps(top),
               vzero = _mm256_setzero_ps();
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  auto conv = [&](const float* p) {
    __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(p), vinv, vz);
    v = _mm256_min_ps(_mm256_max_ps(v, vzero), vtop);
    return _mm256_cvttps_epi32(v);
  };
  for (; k + 32 <= K; k += 32) {
    const __m256i a = conv(x + k), b = conv(x + k + 8), c = conv(x + k + 16), d = conv(x + k + 24);
    const __m256i ab = _mm256_packus_epi32(a, b), cd = _mm256_packus_epi32(c, d);  // u16, lanes interleaved
    const __m256i abcd = _mm256_packus_epi16(ab, cd);                              // u8, lanes interleaved
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + k), _mm256_permutevar8x32_epi32(abcd, perm));
  }
#endif
  for (; k < K; ++k) {
    const float v = std::min(std::max(std::fma(x[k], inv, zf), 0.f), top);
    q[k] = uint8_t(int32_t(v));
  }
  *scale = s;
  *zp = z;
}

}  // namespace

void quantize_weight_rows(const float* w, int64_t N, int64_t K, int8_t* wq, float* scale) {
  for (int64_t o = 0; o < N; ++o) {
    const float* row = w + o * K;
    float m = 0.f;
    bool finite = true;
    for (int64_t k = 0; k < K; ++k) {
      finite = finite && std::isfinite(row[k]);  // std::max would pass over a NaN
      m = std::max(m, std::fabs(row[k]));
    }
    BET_CHECK(finite, "quantize int8: weight row ", o, " is not finite");
    const float s = m / 127.f;
    scale[o] = s;
    for (int64_t k = 0; k < K; ++k)
      wq[o * K + k] = s > 0.f ? int8_t(std::clamp(std::nearbyint(row[k] / s), -127.f, 127.f)) : int8_t(0);
  }
}

void quantize_rows_u8(const float* x, int64_t M, int64_t K, int64_t ldx, int qmax, uint8_t* xq, float* scale,
                      int32_t* zp) {
  const int64_t grain = std::max<int64_t>(1, platform::kParallelGrain / std::max<int64_t>(1, K));
  parallel_for(M, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) quantize_row(x + r * ldx, K, qmax, xq + r * K, scale + r, zp + r);
  });
}

namespace {
// Whether oneDNN's int8 matmul sums full-range u8 x s8 products exactly here: the worst
// case for vpmaddubsw (every pair 255 * 127 * 2, past s16) against the exact sums. Run
// once, where the CPU reports VNNI, so a oneDNN that still pairs products through
// vpmaddubsw on some VNNI flavour (avx2_vnni) falls back to 7-bit activations.
bool full_range_exact() {
  const int64_t M = 2, K = 64, N = 16;
  std::vector<uint8_t> xq(size_t(M * K), 255);
  std::vector<int8_t> wq(size_t(N * K));
  for (int64_t i = 0; i < N * K; ++i) wq[size_t(i)] = int8_t((i / K) % 2 ? -127 : 127);
  Int8Linear l(wq, std::vector<float>(size_t(N), 1.f), {}, N, K);
  std::vector<int32_t> got(size_t(M * N)), want(size_t(M * N));
  try {
    l.gemm_s32(xq.data(), M, got.data());
  } catch (const std::exception&) {
    return false;
  }
  gemm_s32_reference(xq.data(), wq.data(), M, N, K, want.data());
  return got == want;
}
}  // namespace

int activation_qmax() {
  static const int q = [] {
    const char* v = std::getenv("BET_CPU_INT8_QMAX");
    if (v && std::strcmp(v, "127") == 0) return 127;
    if (v && std::strcmp(v, "255") == 0) return 255;
    return has_vnni() && full_range_exact() ? 255 : 127;
  }();
  return q;
}

const char* int8_matmul_path() {
  static const std::string s = [] {
    std::string impl = "?";
    if (auto p = get_prim(256, 128, 128); p->ok) impl = p->impl;
    return "onednn-int8 (" + impl + (has_vnni() ? ", vnni" : ", no vnni") + "), u8 activations [0, " +
           std::to_string(activation_qmax()) + "] per row, s8 weights per channel";
  }();
  return s.c_str();
}

// ---------------------------------------------------------------- Int8Linear

struct Int8Linear::Packed {
  dnnl::memory::desc md;
  dnnl::memory mem;
};

Int8Linear::Int8Linear(std::vector<int8_t> wq, std::vector<float> scale, std::vector<float> bias, int64_t N,
                       int64_t K)
    : N_(N), K_(K), wq_(std::move(wq)), scale_(std::move(scale)), bias_(std::move(bias)) {
  BET_CHECK(N >= 1 && K >= 1, "Int8Linear: empty weight [", N, ", ", K, "]");
  BET_CHECK(int64_t(wq_.size()) == N * K, "Int8Linear: ", wq_.size(), " int8 weights for [", N, ", ", K, "]");
  BET_CHECK(int64_t(scale_.size()) == N, "Int8Linear: ", scale_.size(), " scales for ", N, " output channels");
  BET_CHECK(bias_.empty() || int64_t(bias_.size()) == N, "Int8Linear: bias of ", bias_.size(), " for ", N,
            " output channels");
  // |sum of (u8 - zero point) x s8| <= 255 * 127 * K must fit the s32 accumulator.
  BET_CHECK(K <= (int64_t(INT32_MAX) / (255 * 127)), "Int8Linear: in_features ", K,
            " too large for s32 accumulation (at most ", int64_t(INT32_MAX) / (255 * 127), ")");
  for (float s : scale_) BET_CHECK(std::isfinite(s) && s >= 0.f, "Int8Linear: scale ", s, " is not a finite, non-negative number");
  colsum_.assign(size_t(N), 0);
  for (int64_t o = 0; o < N; ++o) {
    int32_t c = 0;
    for (int64_t k = 0; k < K; ++k) c += wq_[size_t(o * K + k)];
    colsum_[size_t(o)] = c;
  }
}

Int8Linear::~Int8Linear() = default;

std::shared_ptr<const Int8Linear> Int8Linear::quantize(const float* w, const float* bias, int64_t N, int64_t K) {
  std::vector<int8_t> wq(size_t(N * K));
  std::vector<float> s(static_cast<size_t>(N));
  quantize_weight_rows(w, N, K, wq.data(), s.data());
  std::vector<float> b;
  if (bias) b.assign(bias, bias + N);
  return std::make_shared<Int8Linear>(std::move(wq), std::move(s), std::move(b), N, K);
}

std::shared_ptr<const Int8Linear> Int8Linear::concat(const std::vector<const Int8Linear*>& parts) {
  BET_CHECK(!parts.empty(), "Int8Linear::concat: no parts");
  const int64_t K = parts[0]->K_;
  int64_t N = 0;
  bool any_bias = false;
  for (const Int8Linear* p : parts) {
    BET_CHECK(p->K_ == K, "Int8Linear::concat: input widths differ (", p->K_, " vs ", K, ")");
    N += p->N_;
    any_bias = any_bias || !p->bias_.empty();
  }
  std::vector<int8_t> wq;
  std::vector<float> s, b;
  wq.reserve(size_t(N * K));
  for (const Int8Linear* p : parts) {
    wq.insert(wq.end(), p->wq_.begin(), p->wq_.end());
    s.insert(s.end(), p->scale_.begin(), p->scale_.end());
    if (any_bias) {
      if (p->bias_.empty()) b.insert(b.end(), size_t(p->N_), 0.f);
      else b.insert(b.end(), p->bias_.begin(), p->bias_.end());
    }
  }
  return std::make_shared<Int8Linear>(std::move(wq), std::move(s), std::move(b), N, K);
}

std::vector<float> Int8Linear::dequantized() const {
  std::vector<float> w(wq_.size());
  for (int64_t o = 0; o < N_; ++o)
    for (int64_t k = 0; k < K_; ++k) w[size_t(o * K_ + k)] = float(wq_[size_t(o * K_ + k)]) * scale_[size_t(o)];
  return w;
}

std::shared_ptr<Int8Linear::Packed> Int8Linear::packed_for(int64_t M) const {
  std::shared_ptr<const Prim> p = get_prim(M, K_, N_);
  if (!p->ok) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& pk : packed_)
    if (pk->md == p->wei_md) return pk;
  auto pk = std::make_shared<Packed>();
  pk->md = p->wei_md;
  pk->mem = dnnl::memory(p->wei_md, dnnl_engine());
  // wq is [N, K] row-major: as the [K, N] operand, strides {1, K}.
  const dnnl::memory::desc plain({K_, N_}, dnnl::memory::data_type::s8, dnnl::memory::dims{1, K_});
  dnnl::memory src(plain, dnnl_engine(), const_cast<int8_t*>(wq_.data()));
  dnnl::reorder(src, pk->mem).execute(dnnl_stream(), src, pk->mem);
  dnnl_stream().wait();
  packed_.push_back(pk);
  return pk;
}

void Int8Linear::gemm_s32(const uint8_t* xq, int64_t M, int32_t* acc) const {
  if (M == 0) return;
  std::shared_ptr<const Prim> p = get_prim(M, K_, N_);
  std::shared_ptr<Packed> pk = p->ok ? packed_for(M) : nullptr;
  if (!pk) return gemm_s32_reference(xq, wq_.data(), M, N_, K_, acc);
  dnnl::memory sm(p->src_md, dnnl_engine(), const_cast<uint8_t*>(xq));
  dnnl::memory dm(p->dst_md, dnnl_engine(), acc);
  try {
    p->prim.execute(dnnl_stream(), {{DNNL_ARG_SRC, sm}, {DNNL_ARG_WEIGHTS, pk->mem}, {DNNL_ARG_DST, dm}});
    dnnl_stream().wait();
  } catch (const dnnl::error& err) {
    fail("int8 matmul: oneDNN failed (", err.what(), ") for [", M, ", ", K_, "] x [", K_, ", ", N_, "]");
  }
}

namespace {
// Per-thread scratch for one call (inference runs one forward per thread at a time).
template <typename T>
T* scratch(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}
}  // namespace

void Int8Linear::forward(const float* x, int64_t M, int64_t ldx, float* y) const {
  if (M == 0) return;
  thread_local std::vector<uint8_t> xq_buf;
  thread_local std::vector<int32_t> acc_buf, zp_buf;
  thread_local std::vector<float> sx_buf;
  uint8_t* xq = scratch(xq_buf, size_t(M * K_));
  int32_t* acc = scratch(acc_buf, size_t(M * N_));
  int32_t* zx = scratch(zp_buf, size_t(M));
  float* sx = scratch(sx_buf, size_t(M));
  quantize_rows_u8(x, M, K_, ldx, activation_qmax(), xq, sx, zx);
  gemm_s32(xq, M, acc);
  epilogue(acc, M, N_, sx, zx, scale_.data(), colsum_.data(), bias_.empty() ? nullptr : bias_.data(), y);
}

// ---------------------------------------------------------------- reference

void gemm_s32_reference(const uint8_t* xq, const int8_t* wq, int64_t M, int64_t N, int64_t K, int32_t* acc) {
  for (int64_t r = 0; r < M; ++r)
    for (int64_t o = 0; o < N; ++o) {
      int32_t s = 0;
      for (int64_t k = 0; k < K; ++k) s += int32_t(xq[r * K + k]) * int32_t(wq[o * K + k]);
      acc[r * N + o] = s;
    }
}

void int8_linear_reference(const float* x, int64_t M, int64_t K, int64_t ldx, const int8_t* wq, const float* sw,
                           const int32_t* colsum, const float* bias, int64_t N, float* y) {
  std::vector<uint8_t> xq(static_cast<size_t>(M * K));
  std::vector<float> sx(static_cast<size_t>(M));
  std::vector<int32_t> zx(static_cast<size_t>(M)), acc(static_cast<size_t>(M * N));
  quantize_rows_u8(x, M, K, ldx, activation_qmax(), xq.data(), sx.data(), zx.data());
  gemm_s32_reference(xq.data(), wq, M, N, K, acc.data());
  epilogue(acc.data(), M, N, sx.data(), zx.data(), sw, colsum, bias, y);
}

void int8_linear(const float* x, int64_t M, int64_t K, int64_t ldx, const int8_t* wq, const float* sw,
                 const int32_t* colsum, const float* bias, int64_t N, float* y) {
  Int8Linear l(std::vector<int8_t>(wq, wq + N * K), std::vector<float>(sw, sw + N),
               bias ? std::vector<float>(bias, bias + N) : std::vector<float>(), N, K);
  for (int64_t o = 0; o < N; ++o)
    BET_CHECK(l.colsum()[size_t(o)] == colsum[o], "int8_linear: colsum[", o, "] is ", colsum[o], ", the weights sum to ",
              l.colsum()[size_t(o)]);
  l.forward(x, M, ldx, y);
}

size_t int8_matmul_cache_size() { return prims().size(); }

}  // namespace bet::kernels::cpu
