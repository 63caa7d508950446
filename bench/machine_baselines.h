// What the machine can do, measured in the same run as the benchmarks that are judged
// against it: FMA peak, copy bandwidth, and oneDNN's sgemm.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

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

// FP32 FMA throughput in GFLOP/s (an FMA counts 2) on `threads` threads of the pool
// (0 = all), from a loop of 12 independent vector FMA chains per thread.
// `width` 256 = AVX2, 512 = AVX-512 (returns 0 when the CPU lacks it).
double fma_peak_gflops(int threads, int width, const TimingPolicy& p);
bool cpu_has_avx512f();

// STREAM-style copy dst[i] = src[i] with ordinary vector loads and stores, split over
// the pool; GB/s counts the bytes read plus written (2 x bytes). `bytes` is the size
// of one array.
double copy_gbps(size_t bytes, const TimingPolicy& p);
// The same through std::memcpy per chunk (glibc streams large copies past the cache).
double memcpy_gbps(size_t bytes, const TimingPolicy& p);

// dnnl_sgemm (row-major C = op(A) op(B)) GFLOP/s, looped `batch` times over
// distinct matrices; `trans_b` multiplies by B^T with B stored [N, K].
double sgemm_gflops(int64_t batch, int64_t M, int64_t N, int64_t K, bool trans_b, const TimingPolicy& p);

// CPU model name from /proc/cpuinfo ("" if unknown).
std::string cpu_model_name();

}  // namespace bet::bench
