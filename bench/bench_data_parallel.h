// `betctl bench train --nproc N`: data-parallel scaling of the trainer's step at the
// same global batch and the same total threads (CPU ranks). The bench process (not
// under MPI) times, in-process, one rank with T threads (the baseline) and one rank
// with T/N threads (the reference), and launches
//   mpirun -np N betctl bench train <shape> --dp-rank-worker --threads T/N --format json --out FILE
// whose ranks run runtime::TrainStep over run_communicator()'s MPI communicator on the
// same global batch (each rank takes its share), barrier before each step. Rank 0
// writes what they measured (the worker table below); the bench reads it back and
// reports the three side by side: tokens/s, scaling efficiency, the share of a
// step spent waiting on the gradient all-reduce (GradBuckets' own timer, BucketTimes::
// exposed_wait_s), and how much of a blocking all-reduce of the same buckets the overlap
// with backward hides.
//
// The arithmetic and the worker file's format are here, inline, so the tests check them
// from a fixture without running anything.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/dist/grad_buckets.h"
#include "bench/report.h"

namespace bet::bench {

struct TrainBenchOptions;

struct DataParallelOptions {
  int nproc = 1;             // ranks; 1: plain `bench train`
  double bucket_mb = 25;     // gradient bucket size (MB = 2^20 bytes, as betctl train --bucket-mb)
  bool rank_worker = false;  // --dp-rank-worker: this process is one rank of the launch
  int allreduce_reps = 5;    // repetitions of the blocking all-reduce (median reported)
};

// What one configuration (one layer kind on `ranks` ranks) measured.
struct DpMeasurement {
  std::string layer;
  int ranks = 1, threads_per_rank = 1;
  int64_t params = 0, tokens_per_step = 0;  // tokens of the global batch
  double step_s = NAN;          // median over timed steps of the slowest rank's wall time
  double step_min_s = NAN;      // fastest timed step
  double exposed_wait_s = NAN;  // median over steps of the ranks' mean exposed wait (0: one rank)
  // Median over steps of the least any rank waited: that of the last rank to finish
  // backward, whose wait is the communication alone (the others' extra wait is for it).
  double exposed_wait_min_s = NAN;
  double allreduce_s = NAN;     // blocking all-reduce of every bucket, slowest rank, median (ranks > 1)
  int64_t buckets = 0;          // collectives per step
  double gradient_mb = 0;       // bytes of all buckets / 2^20
  double final_loss = NAN;
  std::string error;            // non-empty: the run failed, the numbers are not meaningful
};

// Below this, a blocking all-reduce time says nothing about how much of it was hidden.
constexpr double kDpTimerResolutionS = 1e-6;

inline double dp_tokens_per_s(const DpMeasurement& m) {
  return m.step_s > 0 ? double(m.tokens_per_step) / m.step_s : NAN;
}

// tokens/s of the N-rank run over tokens/s of one rank with the same total threads
// (NaN when either is unknown).
inline double dp_scaling_efficiency(const DpMeasurement& one, const DpMeasurement& many) {
  const double a = dp_tokens_per_s(one), b = dp_tokens_per_s(many);
  return std::isfinite(a) && std::isfinite(b) && a > 0 ? b / a : NAN;
}

// Share of a step spent blocked on the gradient all-reduce after backward (waiting for a
// slower rank included).
inline double dp_comm_share(const DpMeasurement& m) {
  return m.step_s > 0 && m.exposed_wait_s >= 0 ? m.exposed_wait_s / m.step_s : NAN;
}

// 1 - exposed wait / blocking all-reduce time, clamped to [0, 1]: 1 = the overlap with
// backward hid the whole all-reduce, 0 = none of it (or the wait includes waiting for a
// slower rank that lasted longer than the all-reduce). NaN (n/a) when the all-reduce is
// below the timer's resolution or either time is unknown.
inline double dp_overlap_hidden(double exposed_wait_s, double allreduce_s) {
  if (!(allreduce_s >= kDpTimerResolutionS) || !(exposed_wait_s >= 0)) return NAN;
  return std::clamp(1.0 - exposed_wait_s / allreduce_s, 0.0, 1.0);
}

// "2 ranks x 1 thread", "1 rank x 2 threads".
inline std::string dp_config_text(int ranks, int threads) {
  return std::to_string(ranks) + (ranks == 1 ? " rank" : " ranks") + " x " + std::to_string(threads) +
         (threads == 1 ? " thread" : " threads");
}

// ---- the worker's file: render({dp_worker_table(...)}, "json") ----

inline Row dp_worker_row(const DpMeasurement& m) {
  auto num = [](double v) { return std::isfinite(v) ? Value(v) : Value(); };
  Row r;
  r.set("layer", m.layer)
      .set("ranks", int64_t(m.ranks))
      .set("threads per rank", int64_t(m.threads_per_rank))
      .set("params", m.params)
      .set("tokens/step", m.tokens_per_step)
      .set("ms/step", num(m.step_s * 1e3))
      .set("ms/step min", num(m.step_min_s * 1e3))
      .set("exposed wait ms", num(m.exposed_wait_s * 1e3))
      .set("exposed wait min ms", num(m.exposed_wait_min_s * 1e3))
      .set("allreduce ms", num(m.allreduce_s * 1e3))
      .set("buckets", m.buckets)
      .set("gradient MB", m.gradient_mb)
      .set("final loss", num(m.final_loss))
      .set("error", m.error);
  return r;
}

inline Table dp_worker_table(const std::vector<DpMeasurement>& ms) {
  Table t;
  t.title = "bench train dp-rank-worker";
  for (const auto& m : ms) t.add(dp_worker_row(m));
  return t;
}

// Reads the worker's file back (render's JSON: {"tables": [{"rows": [...]}]}). A null
// number is NaN. Throws std::runtime_error naming what is missing or malformed.
inline std::vector<DpMeasurement> parse_dp_worker_json(const nlohmann::json& j) {
  auto fail = [](const std::string& what) -> void {
    throw std::runtime_error("bench train --nproc: the ranks' result " + what);
  };
  if (!j.is_object() || !j.contains("tables") || !j["tables"].is_array() || j["tables"].empty())
    fail("has no tables");
  const nlohmann::json& t = j["tables"][0];
  if (!t.contains("rows") || !t["rows"].is_array() || t["rows"].empty()) fail("has no rows");
  std::vector<DpMeasurement> out;
  for (const auto& r : t["rows"]) {
    auto field = [&](const char* k) -> const nlohmann::json& {
      if (!r.is_object() || !r.contains(k)) fail(std::string("lacks the field '") + k + "'");
      return r[k];
    };
    auto num = [&](const char* k) {
      const auto& v = field(k);
      if (v.is_null()) return double(NAN);
      if (!v.is_number()) fail(std::string("has a non-number '") + k + "'");
      return v.get<double>();
    };
    auto integer = [&](const char* k) {
      const auto& v = field(k);
      if (!v.is_number_integer()) fail(std::string("has a non-integer '") + k + "'");
      return v.get<int64_t>();
    };
    DpMeasurement m;
    if (!field("layer").is_string()) fail("has a non-string 'layer'");
    m.layer = field("layer").get<std::string>();
    m.ranks = int(integer("ranks"));
    m.threads_per_rank = int(integer("threads per rank"));
    m.params = integer("params");
    m.tokens_per_step = integer("tokens/step");
    m.step_s = num("ms/step") * 1e-3;
    m.step_min_s = num("ms/step min") * 1e-3;
    m.exposed_wait_s = num("exposed wait ms") * 1e-3;
    // Optional (NaN when absent).
    if (r.contains("exposed wait min ms")) m.exposed_wait_min_s = num("exposed wait min ms") * 1e-3;
    m.allreduce_s = num("allreduce ms") * 1e-3;
    m.buckets = integer("buckets");
    m.gradient_mb = num("gradient MB");
    m.final_loss = num("final loss");
    if (r.contains("error") && r["error"].is_string()) m.error = r["error"].get<std::string>();
    if (m.ranks < 1 || m.threads_per_rank < 1 || m.tokens_per_step < 1) fail("has a rank, thread or token count below 1");
    out.push_back(std::move(m));
  }
  return out;
}

// ---- the report ----

// tokens/s of the N-rank run over tokens/s of one rank with one rank's threads (the
// reference row): the plain speedup of adding ranks.
inline double dp_speedup(const DpMeasurement& reference, const DpMeasurement& many) {
  return dp_scaling_efficiency(reference, many);
}

// The communication a step left exposed: the last rank's wait where known, else the
// ranks' mean wait.
inline double dp_exposed_comm(const DpMeasurement& m) {
  return std::isfinite(m.exposed_wait_min_s) ? m.exposed_wait_min_s : m.exposed_wait_s;
}

// One row of the comparison table. For the N-rank row: `baseline` is one rank with the
// same total threads, `reference` one rank with a rank's threads; both null on their
// own rows.
inline Row dp_row(const DpMeasurement& m, const DpMeasurement* baseline, const DpMeasurement* reference,
                  double bucket_mb) {
  auto num = [](double v) { return std::isfinite(v) ? Value(v) : Value(); };
  const bool many = m.ranks > 1;
  const bool ok = m.error.empty();
  Row r;
  r.set("config", dp_config_text(m.ranks, m.threads_per_rank))
      .set("layer", m.layer)
      .set("params", m.params)
      .set("tokens/step", m.tokens_per_step)
      .set("ms/step", ok ? num(m.step_s * 1e3) : Value())
      .set("tokens/s", ok ? num(dp_tokens_per_s(m)) : Value())
      .set("scaling efficiency",
           ok && baseline && baseline->error.empty() ? num(dp_scaling_efficiency(*baseline, m)) : Value())
      .set("speedup vs 1 rank x threads/rank",
           ok && reference && reference->error.empty() ? num(dp_speedup(*reference, m)) : Value())
      .set("comm wait ms/step", ok && many ? num(m.exposed_wait_s * 1e3) : Value())
      .set("comm share", ok && many ? num(dp_comm_share(m)) : Value())
      .set("exposed comm ms/step", ok && many ? num(dp_exposed_comm(m) * 1e3) : Value())
      .set("allreduce ms/step (blocking)", ok && many ? num(m.allreduce_s * 1e3) : Value());
  if (ok && many) {
    const double h = dp_overlap_hidden(dp_exposed_comm(m), m.allreduce_s);
    r.set("overlap hidden", std::isfinite(h) ? Value(h) : Value(std::string("n/a")));
  } else {
    r.set("overlap hidden", Value());
  }
  r.set("buckets", many ? Value(m.buckets) : Value())
      // The size GradBuckets used: at most --bucket-mb, smaller for a small model.
      .set("bucket MB", many ? Value(double(dist::effective_bucket_bytes(int64_t(m.gradient_mb * 1048576.0),
                                                                         int64_t(bucket_mb * 1048576.0))) /
                                     1048576.0)
                             : Value())
      .set("gradient MB", many ? Value(m.gradient_mb) : Value())
      .set("final loss", ok ? num(m.final_loss) : Value())
      .set("status", ok ? std::string("ok") : "error: " + m.error);
  return r;
}

// Returns 0; 1 when a layer's run failed (its row says why); 2 for bad options.
// With --dp-rank-worker: this rank's part (rank 0 writes the worker table to opts.out).
int run_train_data_parallel(const BenchOptions& opts, const TrainBenchOptions& t, const DataParallelOptions& dp);

}  // namespace bet::bench
