// What the machine can do, measured in the same run as the benchmarks that are judged
// against it: FMA peak, copy bandwidth, and oneDNN's sgemm.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace bet::bench {

// How long to time one measurement, and how many repetitions to take the median of.
struct TimingPolicy {
  double target_s = 0.2;  // total time per measurement, all repetitions together
  int reps = 5;
  static TimingPolicy from_quick(bool quick) { return quick ? TimingPolicy{0.03, 3} : TimingPolicy{}; }
};

struct Timing {
  double median_s = 0;  // seconds per call, median over repetitions
  double min_s = 0;
  int64_t calls = 0;    // calls timed in all (warm-up excluded)
};

// Warms `fn` up, then times `reps` repetitions of enough calls to fill target_s.
Timing time_it(const std::function<void()>& fn, const TimingPolicy& p);
// Times the functions in interleaved repetitions (each gets an equal share of
// target_s), so a change in machine load during the measurement hits all of them alike.
std::vector<Timing> time_interleaved(const std::vector<std::function<void()>>& fns,
                                     const TimingPolicy& p);
inline std::pair<Timing, Timing> time_pair(const std::function<void()>& a,
                                           const std::function<void()>& b, const TimingPolicy& p) {
  auto t = time_interleaved({a, b}, p);
  return {t[0], t[1]};
}

// FP32 FMA throughput in GFLOP/s (an FMA counts 2) on `threads` threads of the pool
// (0 = all), from a loop of 12 independent vector FMA chains per thread; the fastest
// repetition counts.
// `width` 256 = AVX2, 512 = AVX-512 (returns 0 when the CPU lacks it).
double fma_peak_gflops(int threads, int width, const TimingPolicy& p);
bool cpu_has_avx512f();

// STREAM-style copy dst[i] = src[i] with ordinary vector loads and stores (or
// std::memcpy, which streams large copies past the cache), split over the pool.
// `bytes` is the size of one array; bytes_moved() counts read plus written.
class CopyBench {
 public:
  explicit CopyBench(size_t bytes, bool use_memcpy = false);
  ~CopyBench();
  CopyBench(const CopyBench&) = delete;
  CopyBench& operator=(const CopyBench&) = delete;
  void run();
  double bytes_moved() const { return 2.0 * double(n_) * sizeof(float); }

 private:
  int64_t n_;
  bool memcpy_;
  float* src_;
  float* dst_;
};

// dnnl_sgemm (row-major C = A op(B)), looped `batch` times over distinct matrices;
// `trans_b` multiplies by B^T with B stored [N, K].
class SgemmBench {
 public:
  SgemmBench(int64_t batch, int64_t M, int64_t N, int64_t K, bool trans_b);
  ~SgemmBench();
  SgemmBench(const SgemmBench&) = delete;
  SgemmBench& operator=(const SgemmBench&) = delete;
  // One call after another, each threaded by oneDNN over the whole pool. Throws if
  // dnnl_sgemm fails.
  void run();
  // The batch split over the pool, one single-threaded sgemm per matrix (oneDNN runs
  // sequentially inside a parallel region): faster for many small products.
  void run_batch_parallel();
  double flops() const { return 2.0 * double(batch_) * double(M_) * double(N_) * double(K_); }

 private:
  int64_t batch_, M_, N_, K_;
  bool trans_b_;
  float *a_, *b_, *c_;
};

// One-shot measurements: GB/s and GFLOP/s.
double copy_gbps(size_t bytes, const TimingPolicy& p);
double memcpy_gbps(size_t bytes, const TimingPolicy& p);
double sgemm_gflops(int64_t batch, int64_t M, int64_t N, int64_t K, bool trans_b, const TimingPolicy& p);

// CPU model name from /proc/cpuinfo ("" if unknown).
std::string cpu_model_name();

}  // namespace bet::bench
