// A small metrics registry and a writer of the Prometheus text exposition format
// (version 0.0.4). Metric handles are created once and kept by the caller; updating
// one is a relaxed atomic operation, so the event loop and the inference worker can
// both record without a lock. Only creating a series and rendering take the mutex.
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bet::server::prom {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void inc(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }
  void dec(double v = 1.0) { value_.fetch_sub(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);  // sorted, finite, no +Inf
  void observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Per-bucket (non-cumulative) counts; the last entry is the +Inf overflow bucket.
  std::vector<uint64_t> bucket_counts() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0.0};
};

// Buckets for request latencies in seconds, 0.5 ms to 10 s.
std::vector<double> latency_buckets();
// 1, 2, 4, ... up to and including the first power of two >= max.
std::vector<double> power_of_two_buckets(double max);

class Registry {
 public:
  // Returns the series with these labels, creating the family and the series on first
  // use. A name reused with another type or label set throws std::invalid_argument, as
  // does an invalid metric or label name. References stay valid for the registry's life
  // (except after remove_family).
  Counter& counter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, const Labels& labels = {});
  Histogram& histogram(std::string_view name, std::string_view help, const std::vector<double>& buckets,
                       const Labels& labels = {});

  // Drops a family with all its series (e.g. an info gauge whose labels change on
  // reload); references into it dangle afterwards.
  void remove_family(std::string_view name);

  // Appends the text exposition of every family, sorted by name.
  void write(std::string& out) const;
  std::string text() const {
    std::string s;
    write(s);
    return s;
  }

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Series {
    Labels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  struct Family {
    Type type;
    std::string help;
    std::vector<std::string> label_names;
    std::vector<std::unique_ptr<Series>> series;
  };
  // Caller holds mu_.
  Series& series(std::string_view name, std::string_view help, Type type, const Labels& labels);

  mutable std::mutex mu_;
  std::map<std::string, Family, std::less<>> families_;
};

// Text-format helpers, exposed for tests.
std::string escape_label_value(std::string_view v);  // \\, \", \n
std::string escape_help(std::string_view v);          // \\, \n
void append_number(std::string& out, double v);       // shortest round-trip; +Inf, -Inf, NaN
bool valid_metric_name(std::string_view name);
bool valid_label_name(std::string_view name);

}  // namespace bet::server::prom
