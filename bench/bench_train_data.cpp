#include "bench/bench_train_data.h"
#include "bench/timing.h"
#include "bench/peer_process.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "bench/machine_baselines.h"
#include "engine/random.h"
#include "platform/threads.h"
#include "model/bet_model.h"
#include "runtime/train/evaluate.h"
#include "runtime/train/train_config.h"
#include "runtime/train/train_step.h"
#include "runtime/train/training_data.h"

namespace bet::bench {

constexpr double kDataShareTarget = 0.05;
constexpr int kDefaultDataSteps = 20;
constexpr int64_t kDefaultEpochs = 3;  // betctl train's run length with --data and no --epochs/--steps

void apply_data_defaults(TrainBenchOptions& t, const std::function<bool(const std::string&)>& given) {
  const model::ModelConfig m;         // the default classifier
  const runtime::TrainConfig tc;
  if (!given("--layer")) t.layer = model::to_string(m.layer);
  if (!given("--d-model")) t.d_model = m.d_model;
  if (!given("--heads")) t.heads = m.heads;
  if (!given("--layers")) t.layers = m.layers;
  if (!given("--seq-len")) t.seq_len = m.max_len;
  if (!given("--batch-size")) t.batch_size = tc.batch_size;
  if (!given("--k-permutations")) t.k_permutations = m.k_permutations;
  if (!given("--pe")) t.pe = model::to_string(m.pe);
  if (!given("--steps")) t.steps = kDefaultDataSteps;
}

namespace {

double sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

struct DataRun {
  std::string layer, error;
  double load_s = NAN;
  int64_t train_records = 0, val_records = 0, batches_per_epoch = 0, params = 0;
  std::vector<double> batch_s, e2e_s, step_s;  // per timed step
  int64_t samples = 0, tokens = 0, padded = 0;
  double final_loss = NAN;
};

DataRun run_layer(const TrainBenchOptions& t, const std::string& layer, Device device, DType compute) {
  DataRun r;
  r.layer = layer;
  runtime::TrainConfig cfg;
  cfg.data = t.data;
  cfg.val = t.val;
  cfg.tokenizer = t.tokenizer;
  cfg.task = t.task;
  cfg.batch_size = t.batch_size;
  cfg.model = train_bench_config(t, model::parse_layer(layer));
  cfg.model.max_len = t.seq_len;  // the sequence cap, as --max-len of betctl train
  cfg.quiet = true;

  // ---- the one-off part: read, validate, split, tokenise ----
  auto t0 = Clock::now();
  runtime::TrainingData data = runtime::load_training_data(cfg, nullptr);
  r.load_s = seconds_since(t0);
  cfg.model.validate();
  r.train_records = int64_t(data.train.size());
  r.val_records = int64_t(data.val.size());
  const int64_t batches_per_epoch = data.batches_per_epoch(cfg.batch_size);
  r.batches_per_epoch = batches_per_epoch;

  // ---- the trainer's model and step (its schedule for a default run: 3 epochs) ----
  Generator init_rng(mix_key({cfg.seed, 0x1417}));
  model::BetModel model(cfg.model, init_rng);
  model.to(device);
  model.train();
  runtime::TrainStep trainer(model, runtime::train_step_config(cfg, kDefaultEpochs * batches_per_epoch, compute));
  for (auto& [n, p] : model.named_parameters()) r.params += p.numel();
  auto step = [&](const runtime::Batch& b, int64_t n) { return trainer.step(b, n).loss; };

  auto next_batch = [&](int64_t i) {
    return data.batch(i / batches_per_epoch, i % batches_per_epoch, cfg.batch_size, cfg.model.max_len, cfg.seed);
  };
  int64_t n = 0;  // the trainer's step counter: batches come from it
  for (int i = 0; i < t.warmup; ++i, ++n) step(next_batch(n), n);
  // Each timed step runs twice: end to end (the batch built from the data, then the
  // step), then the step alone on that same batch, already built. In chunks of a few
  // steps, each chunk end to end and then replayed, so both ways see the same sequence
  // of batch shapes (a new padded length costs the allocator too) and a change in
  // machine load hits both alike.
  constexpr int kChunk = 5;
  for (int done = 0; done < t.steps;) {
    const int k = std::min(kChunk, t.steps - done);
    std::vector<runtime::Batch> built;
    for (int i = 0; i < k; ++i) {
      auto a = Clock::now();
      runtime::Batch b = next_batch(n + i);
      r.batch_s.push_back(seconds_since(a));
      r.final_loss = step(b, n + i);
      r.e2e_s.push_back(seconds_since(a));
      r.samples += b.ids.size(0);
      r.tokens += b.tokens();
      r.padded += b.ids.numel();
      built.push_back(std::move(b));
    }
    for (int i = 0; i < k; ++i) {
      auto a = Clock::now();
      step(built[size_t(i)], n + i);
      r.step_s.push_back(seconds_since(a));
    }
    n += k;
    done += k;
  }
  return r;
}

Row data_row(const DataRun& r) {
  auto num = [](double v) { return std::isfinite(v) ? Value(v) : Value(); };
  Row row;
  row.set("layer", r.layer);
  if (!r.error.empty()) return row.set("status", "error: " + r.error);
  const double e2e = sum(r.e2e_s), step = sum(r.step_s), batch = sum(r.batch_s);
  const double samples = double(r.samples);
  const int64_t full_steps = kDefaultEpochs * r.batches_per_epoch;
  const double share_step = data_loading_share(0, batch, e2e);
  const double share_run = data_loading_share(r.load_s, batch, e2e);
  const double share_full = projected_data_share(r.load_s, median(r.batch_s), median(r.e2e_s), full_steps);
  const bool pass = share_full < kDataShareTarget && share_step < kDataShareTarget;
  row.set("params", r.params)
      .set("train records", r.train_records)
      .set("steps", int64_t(r.step_s.size()))
      .set("samples/s end-to-end", samples / e2e)
      .set("samples/s step only", samples / step)
      .set("end-to-end vs step only", step / e2e)
      .set("samples/s incl. load", samples / (r.load_s + e2e))
      .set("load s (read+tokenise)", r.load_s)
      .set("batch ms/step", num(median(r.batch_s) * 1e3))
      .set("step ms (e2e)", num(median(r.e2e_s) * 1e3))
      .set("step ms (step only)", num(median(r.step_s) * 1e3))
      .set("data share per step", num(share_step))
      .set("data share this run", num(share_run))
      .set("data share full run", num(share_full))
      .set("full run steps", full_steps)
      .set("padding share", r.padded ? 1.0 - double(r.tokens) / double(r.padded) : 0.0)
      .set("target", kDataShareTarget)
      .set("status", pass ? "pass" : "short: data share")
      .set("final loss", num(r.final_loss));
  return row;
}

}  // namespace

int run_train_data(const BenchOptions& opts, const TrainBenchOptions& t, const TrainPlacement& place) {
  if (!std::ifstream(t.data).good()) {
    std::cerr << "bench train: --data " << t.data << ": cannot open\n";
    return 2;
  }
  if (!t.val.empty() && !std::ifstream(t.val).good()) {
    std::cerr << "bench train: --val " << t.val << ": cannot open\n";
    return 2;
  }
  const Device device = place.device;
  const DType compute = place.compute;
  if (opts.threads > 0) platform::set_num_threads(opts.threads);
  const int threads = platform::num_threads();
  const std::string load_before = load_average();

  std::vector<DataRun> runs;
  bool failed = false;
  for (const char* kind : {"bet", "standard"}) {
    if (t.layer != "both" && t.layer != kind) continue;
    try {
      runs.push_back(run_layer(t, kind, device, compute));
    } catch (const std::exception& e) {
      DataRun r;
      r.layer = kind;
      r.error = e.what();
      runs.push_back(r);
      failed = true;
    }
  }

  Table tab;
  tab.title = "bench train --data";
  std::string records;
  for (const auto& r : runs)
    if (r.error.empty()) {
      records = std::to_string(r.train_records) + " train, " + std::to_string(r.val_records) + " validation records";
      break;
    }
  tab.add_meta("cpu", cpu_model_name())
      .add_meta("device", device.str())
      .add_meta("precision", precision_text(compute, device.is_cuda()))
      .add_meta("threads", int64_t(threads))
      .add_meta("data", t.data + (t.val.empty() ? " (validation: --val-split 0.1)" : ", validation " + t.val) +
                            (records.empty() ? "" : ": " + records))
      .add_meta("tokenizer", t.tokenizer)
      .add_meta("shape", "d_model " + std::to_string(t.d_model) + ", " + std::to_string(t.layers) + " layers, " +
                             std::to_string(t.heads) + " heads, max_len (sequence cap) " + std::to_string(t.seq_len) +
                             ", batch " + std::to_string(t.batch_size) + ", " + t.task + ", pe " + t.pe + ", k " +
                             std::to_string(t.k_permutations))
      .add_meta("load", "runtime::load_training_data (what betctl train calls): read the file, validate, split, "
                        "tokenise train and validation; once per run")
      .add_meta("end-to-end step", "TrainingData::batch (epoch plan, padding, tensors; the trainer's batch "
                                   "order) + the trainer's step (runtime/train/train_step.h: context, forward, MDL "
                                   "loss, backward, clip 1.0, AdamW at the scheduled rate, zero_grad)")
      .add_meta("step only", "the same step again on the batch already built")
      .add_meta("data share", "(load + batch assembly) / (load + end-to-end steps): per step (no load), over "
                              "this run, and projected over a full default run (3 epochs) at the medians")
      .add_meta("timing", std::to_string(t.warmup) + " warm-up steps, then " + std::to_string(t.steps) +
                              " steps each timed both ways (in chunks of 5: end to end, then the same batches again); "
                              "samples/s over the sums")
      .add_meta("target", "data share < 5% (per step and full run)")
      .add_meta("load average", load_before + " (start), " + load_average() + " (end)");
  for (const auto& r : runs) tab.add(data_row(r));
  int rc = emit({tab}, opts);
  return rc ? rc : (failed ? 1 : 0);
}

}  // namespace bet::bench
