#include "bench/machine_baselines.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <vector>

#include <oneapi/dnnl/dnnl.h>

#include "platform/threads.h"

namespace bet::bench {

using Clock = std::chrono::steady_clock;

namespace {

double seconds(const std::function<void()>& fn, int64_t calls) {
  auto s = Clock::now();
  for (int64_t i = 0; i < calls; ++i) fn();
  return std::chrono::duration<double>(Clock::now() - s).count();
}

// Two warm-up calls: the first pays for first touch, caches and oneDNN's JIT; the
// second sizes the repetitions so that `reps` of them fill `budget_s`.
int64_t calls_per_rep(const std::function<void()>& fn, double budget_s, int reps) {
  fn();
  double one = seconds(fn, 1);
  return std::max<int64_t>(1, int64_t(budget_s / reps / std::max(one, 1e-9)));
}

Timing summarize(std::vector<double> per_call, int64_t calls) {
  std::sort(per_call.begin(), per_call.end());
  Timing t;
  t.min_s = per_call.front();
  t.median_s = per_call[per_call.size() / 2];
  t.calls = calls;
  return t;
}

}  // namespace

Timing time_it(const std::function<void()>& fn, const TimingPolicy& p) {
  int reps = std::max(1, p.reps);
  int64_t calls = calls_per_rep(fn, p.target_s, reps);
  std::vector<double> per_call;
  for (int r = 0; r < reps; ++r) per_call.push_back(seconds(fn, calls) / double(calls));
  return summarize(std::move(per_call), calls * reps);
}

std::vector<Timing> time_interleaved(const std::vector<std::function<void()>>& fns,
                                     const TimingPolicy& p) {
  int reps = std::max(1, p.reps);
  double share = p.target_s / double(std::max<size_t>(fns.size(), 1));
  std::vector<int64_t> calls;
  for (const auto& f : fns) calls.push_back(calls_per_rep(f, share, reps));
  std::vector<std::vector<double>> per_call(fns.size());
  for (int r = 0; r < reps; ++r)
    for (size_t i = 0; i < fns.size(); ++i)
      per_call[i].push_back(seconds(fns[i], calls[i]) / double(calls[i]));
  std::vector<Timing> out;
  for (size_t i = 0; i < fns.size(); ++i) out.push_back(summarize(std::move(per_call[i]), calls[i] * reps));
  return out;
}

// ---------------------------------------------------------------- FMA peak

namespace {

// 12 independent chains hide the FMA latency (4-5 cycles) on two FMA pipes. Each
// chain c = c * a + b converges to 1, so nothing overflows however long it runs.
#define BET_FMA_CHAINS(VT, SET1, FMADD, ADD)                                              \
  VT a = SET1(0.999999f), b = SET1(1e-6f);                                                \
  VT c0 = SET1(seed), c1 = SET1(seed + 0.01f), c2 = SET1(seed + 0.02f),                   \
     c3 = SET1(seed + 0.03f), c4 = SET1(seed + 0.04f), c5 = SET1(seed + 0.05f),           \
     c6 = SET1(seed + 0.06f), c7 = SET1(seed + 0.07f), c8 = SET1(seed + 0.08f),           \
     c9 = SET1(seed + 0.09f), c10 = SET1(seed + 0.10f), c11 = SET1(seed + 0.11f);         \
  for (int64_t i = 0; i < iters; ++i) {                                                   \
    c0 = FMADD(c0, a, b);                                                                 \
    c1 = FMADD(c1, a, b);                                                                 \
    c2 = FMADD(c2, a, b);                                                                 \
    c3 = FMADD(c3, a, b);                                                                 \
    c4 = FMADD(c4, a, b);                                                                 \
    c5 = FMADD(c5, a, b);                                                                 \
    c6 = FMADD(c6, a, b);                                                                 \
    c7 = FMADD(c7, a, b);                                                                 \
    c8 = FMADD(c8, a, b);                                                                 \
    c9 = FMADD(c9, a, b);                                                                 \
    c10 = FMADD(c10, a, b);                                                               \
    c11 = FMADD(c11, a, b);                                                               \
  }                                                                                       \
  VT s = ADD(ADD(ADD(ADD(c0, c1), ADD(c2, c3)), ADD(ADD(c4, c5), ADD(c6, c7))),           \
             ADD(ADD(c8, c9), ADD(c10, c11)));
constexpr int kChains = 12;

__attribute__((target("avx2,fma"))) float fma_loop_256(int64_t iters, float seed) {
  BET_FMA_CHAINS(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps)
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  return out[0] + out[7];
}

__attribute__((target("avx512f"))) float fma_loop_512(int64_t iters, float seed) {
  BET_FMA_CHAINS(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps)
  alignas(64) float out[16];
  _mm512_store_ps(out, s);
  return out[0] + out[15];
}
#undef BET_FMA_CHAINS

// Keeps the loops' results observable so they are not optimised away.
volatile float g_sink;

}  // namespace

bool cpu_has_avx512f() { return __builtin_cpu_supports("avx512f"); }

double fma_peak_gflops(int threads, int width, const TimingPolicy& p) {
  if (width == 512 && !cpu_has_avx512f()) return 0;
  if (width != 256 && width != 512) throw std::invalid_argument("fma_peak_gflops: width 256 or 512");
  int nt = threads > 0 ? std::min(threads, platform::num_threads()) : platform::num_threads();
  // ~2-4 ms per call: long against the fork cost, short against the timing target.
  const int64_t iters = 1 << 20;
  std::vector<float> sink(size_t(nt), 0.f);
  auto run = [&] {
    platform::parallel_for(nt, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        sink[size_t(t)] = width == 512 ? fma_loop_512(iters, 0.5f + 0.001f * float(t))
                                       : fma_loop_256(iters, 0.5f + 0.001f * float(t));
    });
  };
  Timing t = time_it(run, p);
  float s = 0;
  for (float v : sink) s += v;
  g_sink = s;
  double flops = double(nt) * double(iters) * kChains * (width / 32) * 2.0;
  // A peak is what the core can do: the fastest repetition, since other load only slows.
  return flops / t.min_s * 1e-9;
}

// ---------------------------------------------------------------- copy bandwidth

namespace {

// Page-aligned, first touched by the same chunks of the pool that will use it, so
// pages land near the threads that use them.
float* alloc_touched(int64_t n) {
  size_t bytes = (size_t(std::max<int64_t>(n, 1)) * sizeof(float) + 4095) / 4096 * 4096;
  auto* d = static_cast<float*>(std::aligned_alloc(4096, bytes));
  if (!d) throw std::bad_alloc();
  platform::parallel_for(n, platform::kParallelGrain, [&](int64_t s, int64_t e) {
    // Small values with a short period: sgemm products stay finite and exact enough.
    for (int64_t i = s; i < e; ++i) d[i] = float(i % 97) * 1e-3f;
  });
  return d;
}

// Intrinsics rather than a plain loop, which the compiler would turn into memcpy.
__attribute__((target("avx2"))) void copy_avx2(float* __restrict dst, const float* __restrict src,
                                               int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256 v0 = _mm256_loadu_ps(src + i), v1 = _mm256_loadu_ps(src + i + 8);
    __m256 v2 = _mm256_loadu_ps(src + i + 16), v3 = _mm256_loadu_ps(src + i + 24);
    _mm256_storeu_ps(dst + i, v0);
    _mm256_storeu_ps(dst + i + 8, v1);
    _mm256_storeu_ps(dst + i + 16, v2);
    _mm256_storeu_ps(dst + i + 24, v3);
  }
  for (; i < n; ++i) dst[i] = src[i];
}

}  // namespace

CopyBench::CopyBench(size_t bytes, bool use_memcpy)
    : n_(int64_t(std::max<size_t>(bytes / sizeof(float), 1))), memcpy_(use_memcpy) {
  src_ = alloc_touched(n_);
  try {
    dst_ = alloc_touched(n_);
  } catch (...) {
    std::free(src_);
    throw;
  }
}

CopyBench::~CopyBench() {
  g_sink = dst_[n_ / 2];
  std::free(src_);
  std::free(dst_);
}

void CopyBench::run() {
  float* d = dst_;
  const float* s = src_;
  bool mc = memcpy_;
  platform::parallel_for(n_, platform::kParallelGrain, [&](int64_t b, int64_t e) {
    if (mc) std::memcpy(d + b, s + b, size_t(e - b) * sizeof(float));
    else copy_avx2(d + b, s + b, e - b);
  });
}

double copy_gbps(size_t bytes, const TimingPolicy& p) {
  CopyBench c(bytes, false);
  return c.bytes_moved() / time_it([&] { c.run(); }, p).median_s * 1e-9;
}

double memcpy_gbps(size_t bytes, const TimingPolicy& p) {
  CopyBench c(bytes, true);
  return c.bytes_moved() / time_it([&] { c.run(); }, p).median_s * 1e-9;
}

// ---------------------------------------------------------------- sgemm

SgemmBench::SgemmBench(int64_t batch, int64_t M, int64_t N, int64_t K, bool trans_b)
    : batch_(batch), M_(M), N_(N), K_(K), trans_b_(trans_b) {
  a_ = alloc_touched(batch * M * K);
  b_ = alloc_touched(batch * K * N);
  c_ = alloc_touched(batch * M * N);
}

SgemmBench::~SgemmBench() {
  g_sink = c_[0];
  std::free(a_);
  std::free(b_);
  std::free(c_);
}

void SgemmBench::run() {
  for (int64_t i = 0; i < batch_; ++i) {
    dnnl_status_t st = dnnl_sgemm('N', trans_b_ ? 'T' : 'N', M_, N_, K_, 1.f, a_ + i * M_ * K_, K_,
                                  b_ + i * K_ * N_, trans_b_ ? K_ : N_, 0.f, c_ + i * M_ * N_, N_);
    if (st != dnnl_success)
      throw std::runtime_error("dnnl_sgemm failed with status " + std::to_string(int(st)));
  }
}

void SgemmBench::run_batch_parallel() {
  // Exceptions must not cross the parallel region: record the status instead.
  int bad = dnnl_success;
  platform::parallel_for(batch_, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      dnnl_status_t st = dnnl_sgemm('N', trans_b_ ? 'T' : 'N', M_, N_, K_, 1.f, a_ + i * M_ * K_, K_,
                                    b_ + i * K_ * N_, trans_b_ ? K_ : N_, 0.f, c_ + i * M_ * N_, N_);
      if (st != dnnl_success) {
#pragma omp atomic write
        bad = int(st);
      }
    }
  });
  if (bad != dnnl_success) throw std::runtime_error("dnnl_sgemm failed with status " + std::to_string(bad));
}

double sgemm_gflops(int64_t batch, int64_t M, int64_t N, int64_t K, bool trans_b,
                    const TimingPolicy& p) {
  SgemmBench g(batch, M, N, K, trans_b);
  return g.flops() / time_it([&] { g.run(); }, p).median_s * 1e-9;
}

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto c = line.find(':');
      if (c != std::string::npos) {
        auto s = line.substr(c + 1);
        s.erase(0, s.find_first_not_of(" \t"));
        return s;
      }
    }
  }
  return "";
}

}  // namespace bet::bench
