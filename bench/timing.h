// The clock and the statistic every bench reports: the median of repeated runs.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

namespace bet::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// NaN for no samples; the mean of the middle two for an even count.
inline double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace bet::bench
