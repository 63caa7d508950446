#include "bench/bench_data_parallel.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <omp.h>

#include "bench/bench_train.h"
#include "bench/bench_train_profile.h"
#include "bench/machine_baselines.h"
#include "bench/peer_process.h"
#include "bench/timing.h"
#include "engine/device.h"
#include "engine/dist/communicator.h"
#include "engine/dist/grad_buckets.h"
#include "engine/dist/launch.h"
#include "platform/threads.h"
#include "runtime/train/ranks.h"

namespace bet::bench {

namespace {

std::string shape_text(const TrainBenchOptions& t) {
  return "d_model " + std::to_string(t.d_model) + ", " + std::to_string(t.layers) + " layers, " +
         std::to_string(t.heads) + " heads, seq " + std::to_string(t.seq_len) + ", global batch " +
         std::to_string(t.batch_size) + ", " + t.task + ", pe " + t.pe + ", k " + std::to_string(t.k_permutations);
}

std::vector<std::string> layer_kinds(const TrainBenchOptions& t) {
  std::vector<std::string> out;
  for (const char* kind : {"bet", "standard"})
    if (t.layer == "both" || t.layer == kind) out.push_back(kind);
  return out;
}

runtime::TrainStepConfig step_config(DType compute, const DataParallelOptions& dp) {
  runtime::TrainStepConfig c = bench_step_config(compute);
  c.bucket_bytes = std::max<int64_t>(1, int64_t(dp.bucket_mb * 1024 * 1024));
  return c;
}

// ---- one rank of the launch (--dp-rank-worker) ----

DpMeasurement rank_run(const TrainBenchOptions& t, const DataParallelOptions& dp, const std::string& layer,
                       dist::Communicator& comm, const Device& dev, DType compute) {
  DpMeasurement m;
  m.layer = layer;
  m.ranks = comm.size();
  m.threads_per_rank = platform::num_threads();
  m.tokens_per_step = t.batch_size * t.seq_len;
  // The same weights and the same global batch on every rank; this rank's TrainStep
  // takes its share of the rows.
  TrainSetup s(train_bench_config(t, model::parse_layer(layer)), t.batch_size, t.seq_len, dev, compute);
  s.trainer.reset();
  s.trainer = std::make_unique<runtime::TrainStep>(*s.model, step_config(compute, dp), &comm);
  for (auto& p : s.trainer->params()) m.params += p.numel();
  dist::GradBuckets* buckets = s.trainer->buckets();

  int64_t step = 0;
  for (int i = 0; i < t.warmup; ++i) s.step(step++);
  std::vector<double> step_s, wait_s;
  for (int i = 0; i < t.steps; ++i) {
    comm.barrier();  // the ranks start each step together
    const double w0 = buckets ? buckets->times().exposed_wait_s : 0.0;
    const auto t0 = Clock::now();
    const runtime::StepMetrics r = s.step(step++);
    step_s.push_back(seconds_since(t0));
    wait_s.push_back((buckets ? buckets->times().exposed_wait_s : 0.0) - w0);
    m.final_loss = r.loss;
  }
  // A step lasts as long as its slowest rank; the wait is the ranks' mean, and the
  // least wait (the last rank to finish backward: the communication alone).
  std::vector<double> neg_wait(wait_s.size());
  for (size_t i = 0; i < wait_s.size(); ++i) neg_wait[i] = -wait_s[i];
  comm.all_reduce_max(step_s);
  comm.all_reduce_sum(wait_s);
  comm.all_reduce_max(neg_wait);
  for (double& w : wait_s) w /= double(comm.size());
  for (double& w : neg_wait) w = -w;
  m.step_s = median(step_s);
  m.step_min_s = *std::min_element(step_s.begin(), step_s.end());
  m.exposed_wait_s = median(wait_s);
  m.exposed_wait_min_s = median(neg_wait);

  // The full communication cost of a step: the same buckets summed with nothing to
  // overlap (their contents are spent: the next step's bind() zeroes them).
  if (buckets) {
    m.buckets = buckets->bucket_count();
    double bytes = 0;
    for (int64_t b = 0; b < buckets->bucket_count(); ++b) bytes += double(buckets->flat(b).nbytes());
    m.gradient_mb = bytes / double(1 << 20);
    std::vector<double> reps;
    for (int i = 0; i < std::max(1, dp.allreduce_reps); ++i) {
      comm.barrier();
      const auto t0 = Clock::now();
      for (int64_t b = 0; b < buckets->bucket_count(); ++b) {
        Tensor flat = buckets->flat(b);
        comm.all_reduce_sum(flat);
      }
      synchronize(dev);
      std::vector<double> dt{seconds_since(t0)};
      comm.all_reduce_max(dt);
      reps.push_back(dt[0]);
    }
    m.allreduce_s = median(reps);
  } else {
    m.exposed_wait_s = m.exposed_wait_min_s = 0;
  }
  return m;
}

int run_rank_worker(const BenchOptions& opts, const TrainBenchOptions& t, const DataParallelOptions& dp,
                    const TrainPlacement& place) {
  Device dev = place.device;
  std::unique_ptr<dist::Communicator> comm = runtime::run_communicator(dev);
  comm->set_timeout(300);
  std::vector<DpMeasurement> ms;
  // An exception here reaches betctl's main, which ends every rank (dist::abort_job).
  for (const std::string& layer : layer_kinds(t)) ms.push_back(rank_run(t, dp, layer, *comm, dev, place.compute));
  comm->barrier();
  if (comm->rank() != 0) return 0;
  return emit({dp_worker_table(ms)}, opts);
}

// ---- the bench process ----

// The worker's command line: this betctl, the same shape, `threads` per rank.
std::vector<std::string> worker_args(const BenchOptions& opts, const TrainBenchOptions& t,
                                     const DataParallelOptions& dp, const std::string& layer, int threads,
                                     const std::string& out) {
  std::ostringstream bucket;
  bucket << dp.bucket_mb;
  return {std::filesystem::read_symlink("/proc/self/exe").string(),
          "bench", "train", "--dp-rank-worker",
          "--layer", layer, "--task", t.task, "--pe", t.pe,
          "--d-model", std::to_string(t.d_model), "--heads", std::to_string(t.heads),
          "--layers", std::to_string(t.layers), "--seq-len", std::to_string(t.seq_len),
          "--batch-size", std::to_string(t.batch_size), "--k-permutations", std::to_string(t.k_permutations),
          "--steps", std::to_string(t.steps), "--warmup", std::to_string(t.warmup),
          "--precision", t.precision, "--bucket-mb", bucket.str(), "--device", opts.device,
          "--threads", std::to_string(threads), "--format", "json", "--out", out};
}

// Runs the N ranks for one layer kind; the measurement, or one with `error` set.
DpMeasurement launch_ranks(const BenchOptions& opts, const TrainBenchOptions& t, const DataParallelOptions& dp,
                           const std::string& layer, int threads) {
  DpMeasurement m;
  m.layer = layer;
  m.ranks = dp.nproc;
  m.threads_per_rank = threads;
  m.tokens_per_step = t.batch_size * t.seq_len;
  const std::filesystem::path out = std::filesystem::temp_directory_path() /
                                    ("betctl_bench_dp_" + std::to_string(::getpid()) + "_" + layer + ".json");
  try {
    dist::LaunchOptions lo;
    lo.nproc = dp.nproc;
    const std::vector<std::string> cmd = dist::mpirun_command(lo, worker_args(opts, t, dp, layer, threads, out));
    if (std::find(cmd.begin(), cmd.end(), "--allow-run-as-root") != cmd.end())
      std::fprintf(stderr, "betctl: running as root: passing --allow-run-as-root to mpirun (OpenMPI refuses root otherwise)\n");
    const int rc = dist::run_forwarding_signals(cmd);
    if (rc != 0) throw std::runtime_error("mpirun -np " + std::to_string(dp.nproc) + " exited with status " +
                                          std::to_string(rc) + " (the ranks' errors are above)");
    std::ifstream f(out);
    if (!f) throw std::runtime_error("the ranks wrote no result (" + out.string() + ")");
    const std::vector<DpMeasurement> got = parse_dp_worker_json(nlohmann::json::parse(f));
    m = got.at(0);
  } catch (const std::exception& e) {
    m.error = e.what();
  }
  std::error_code ec;
  std::filesystem::remove(out, ec);
  return m;
}

std::string fairness_note(int nproc, int per_rank, int total, int cores) {
  std::string s = dp_config_text(nproc, per_rank) + " against " + dp_config_text(1, total) + ": the same global batch and " +
                  std::to_string(total) + " threads in all on this " + std::to_string(cores) + "-core machine";
  if (total == cores) s += ", one per core on both sides: the fair comparison here";
  else if (total > cores) s += " (oversubscribed: more threads than cores on both sides)";
  else s += " (cores left idle on both sides)";
  return s + "; each rank also runs MPI's communication thread";
}

}  // namespace

int run_train_data_parallel(const BenchOptions& opts, const TrainBenchOptions& t, const DataParallelOptions& dp) {
  if (!train_options_valid(opts, t)) return 2;
  if (!t.data.empty() || t.peer || t.profile) {
    std::cerr << "bench train: --nproc times the step on a fixed batch: not with --data, --peer or --profile\n";
    return 2;
  }
  if (!(dp.bucket_mb > 0)) {
    std::cerr << "bench train: --bucket-mb must be positive\n";
    return 2;
  }
  TrainPlacement place;
  try {
    place = train_placement(opts, t);
    for (const std::string& layer : layer_kinds(t)) train_bench_config(t, model::parse_layer(layer));
  } catch (const std::exception& e) {
    std::cerr << "bench train: " << e.what() << "\n";
    return 2;
  }
  if (dp.rank_worker) return run_rank_worker(opts, t, dp, place);

  if (!place.device.is_cpu()) {
    // On GPUs the comparison is one GPU against N (efficiency = speedup / N), not a
    // split of threads: not written yet. `train --nproc` itself runs on GPUs (NCCL).
    std::cerr << "bench train: --nproc compares CPU ranks with threads; --device " << place.device.str()
              << " is not supported by the data-parallel bench yet\n";
    return 2;
  }
  if (dp.nproc < 2) {
    std::cerr << "bench train: --nproc must be >= 2 here\n";
    return 2;
  }
  if (dist::launched_by_mpi()) {
    std::cerr << "bench train: --nproc inside an MPI launch: use one or the other\n";
    return 2;
  }
  if (t.batch_size < dp.nproc) {
    std::cerr << "bench train: --batch-size " << t.batch_size << " cannot be split over " << dp.nproc << " ranks\n";
    return 2;
  }
  if (dist::find_mpirun().empty()) {
    std::cerr << "bench train: --nproc: mpirun not found on PATH (install openmpi-bin, or set BET_MPIRUN)\n";
    return 2;
  }
  const int cores = omp_get_num_procs();
  const int requested = opts.threads > 0 ? opts.threads : cores;
  const int per_rank = std::max(1, requested / dp.nproc);
  const int total = per_rank * dp.nproc;
  platform::set_num_threads(total);
  const std::string load_before = load_average();

  const TimingPolicy pol{0.1, 5};
  double peak = 0;
  for (int width : {256, 512}) {
    if (width == 512 && !cpu_has_avx512f()) continue;
    peak = std::max(peak, fma_peak_gflops(0, width, pol));
  }

  std::vector<Row> rows;
  bool failed = false;
  for (const std::string& layer : layer_kinds(t)) {
    // In this process: the baseline (one rank, all the threads) and the reference (one
    // rank, one rank's threads). Their timed steps are split around the launch
    // (baseline, reference | ranks | reference, baseline), so a change in machine load
    // weighs on all three alike.
    auto in_process = [&](int threads) {
      DpMeasurement m;
      m.layer = layer;
      m.ranks = 1;
      m.threads_per_rank = threads;
      m.tokens_per_step = t.batch_size * t.seq_len;
      m.exposed_wait_s = 0;
      return m;
    };
    DpMeasurement one = in_process(total), ref = in_process(per_rank);
    DpMeasurement many;
    try {
      // Each on its own copy of the model, so both run the same step numbers as the
      // ranks (and end at the same loss, up to float summation order).
      struct Side {
        DpMeasurement* m = nullptr;
        std::unique_ptr<TrainSetup> s;
        int64_t step = 0;
        std::vector<double> step_s;
      };
      std::vector<Side> sides;
      for (DpMeasurement* m : {&one, &ref}) {
        Side side;
        side.m = m;
        side.s = std::make_unique<TrainSetup>(train_bench_config(t, model::parse_layer(layer)), t.batch_size,
                                              t.seq_len, place.device, place.compute);
        for (auto& p : side.s->trainer->params()) m->params += p.numel();
        platform::set_num_threads(m->threads_per_rank);
        for (int i = 0; i < t.warmup; ++i) side.s->step(side.step++);
        sides.push_back(std::move(side));
      }
      auto timed = [&](Side& side, int n) {
        platform::set_num_threads(side.m->threads_per_rank);
        for (int i = 0; i < n; ++i) {
          const auto t0 = Clock::now();
          side.m->final_loss = side.s->step(side.step++).loss;
          side.step_s.push_back(seconds_since(t0));
        }
      };
      const int first = (t.steps + 1) / 2;
      timed(sides[0], first);
      timed(sides[1], first);
      many = launch_ranks(opts, t, dp, layer, per_rank);
      timed(sides[1], t.steps - first);
      timed(sides[0], t.steps - first);
      platform::set_num_threads(total);
      for (Side& side : sides) {
        side.m->step_s = median(side.step_s);
        side.m->step_min_s = *std::min_element(side.step_s.begin(), side.step_s.end());
      }
    } catch (const std::exception& e) {
      one.error = ref.error = e.what();
      if (many.layer.empty()) many = launch_ranks(opts, t, dp, layer, per_rank);
    }
    failed = failed || !one.error.empty() || !many.error.empty();
    rows.push_back(dp_row(one, nullptr, nullptr, dp.bucket_mb));
    rows.push_back(dp_row(ref, nullptr, nullptr, dp.bucket_mb));
    rows.push_back(dp_row(many, &one, &ref, dp.bucket_mb));
  }

  Table tab;
  tab.title = "bench train --nproc " + std::to_string(dp.nproc) + ": data parallelism";
  tab.add_meta("cpu", cpu_model_name())
      .add_meta("cores", int64_t(cores))
      .add_meta("isa", cpu_has_avx512f() ? "avx512" : "avx2")
      .add_meta("fma peak GFLOP/s", peak)
      .add_meta("device", place.device.str())
      .add_meta("precision", precision_text(place.compute, place.device.is_cuda()))
      .add_meta("shape", shape_text(t))
      .add_meta("comparison", fairness_note(dp.nproc, per_rank, total, cores))
      .add_meta("ranks", "mpirun -np " + std::to_string(dp.nproc) + " (OpenMPI, --bind-to none), each rank the "
                         "trainer's step (runtime/train/train_step.h) on its share of the same global batch, its "
                         "gradients summed in flat buckets started as backward fills them")
      .add_meta("timing", std::to_string(t.warmup) + " warm-up steps, median of " + std::to_string(t.steps) +
                              " timed steps; N ranks: a barrier before each step, a step as long as its slowest "
                              "rank; 1 rank (in this process): half its steps before the launch, half after")
      .add_meta("scaling efficiency", "tokens/s of N ranks / tokens/s of 1 rank with the same total threads")
      .add_meta("speedup vs 1 rank x threads/rank",
                "tokens/s of N ranks / tokens/s of 1 rank with one rank's threads (the reference row): what "
                "adding ranks gains. A rank with several threads waits for its slowest thread in every "
                "parallel region, so on a machine shared with other work the 1-rank x T row loses most")
      .add_meta("comm wait", "time a step blocked on the gradient all-reduces after backward (GradBuckets' timer, "
                             "mean over ranks, waiting for a slower rank included); comm share = comm wait / step "
                             "time")
      .add_meta("exposed comm", "the least any rank waited: that of the last rank to finish backward, whose wait "
                                "is the communication left exposed alone")
      .add_meta("allreduce (blocking)", "one blocking all-reduce of every bucket after the timed steps, nothing to "
                                        "overlap (median of " + std::to_string(std::max(1, dp.allreduce_reps)) +
                                        ", slowest rank): the whole communication cost of a step")
      .add_meta("overlap hidden", "1 - exposed comm / blocking all-reduce, clamped to [0, 1]; n/a below the "
                                  "timer's resolution")
      .add_meta("MB", "2^20 bytes, as --bucket-mb")
      .add_meta("load average", load_before + " (start), " + load_average() + " (end)");
  for (auto& r : rows) tab.add(std::move(r));
  const int rc = emit({tab}, opts);
  return rc ? rc : (failed ? 1 : 0);
}

}  // namespace bet::bench
