// Everything `betctl train` can be told, with product.md's defaults.
#pragma once
#include <cstdint>
#include <string>

#include "model/config.h"

namespace bet::runtime {

struct TrainConfig {
  // ---- data ----
  std::string task;        // classify | lm; empty: lm for synthetic data, classify for --data
  std::string data;        // JSONL / CSV / TSV / text file; empty: synthetic
  std::string val;         // validation file; empty: --val-split of the training data
  double val_split = 0.1;
  std::string synthetic;   // bernoulli | categorical (default bernoulli when no --data)
  int64_t seq_len = 64;    // synthetic: outcomes per sequence
  int64_t categories = 4;  // synthetic categorical
  int64_t synthetic_val = 256;  // synthetic validation sequences
  std::string tokenizer;   // byte | spm:FILE | spm-train:VOCAB; empty: byte (synthetic) or spm-train:8000
  std::string text_field = "text", label_field = "label", positive_label;
  bool skip_bad = false;

  // ---- model ----
  model::ModelConfig model;

  // ---- optimisation ----
  int64_t epochs = 0;  // 0: use steps
  int64_t steps = 0;   // 0 and epochs 0: 3 epochs (data) or 200 steps (synthetic)
  int64_t batch_size = 32;
  double lr = 1e-3;
  int64_t warmup = 100;
  double weight_decay = 0.01;
  double clip = 1.0;
  uint64_t seed = 0;
  double mdl_beta = 0.1;

  // ---- run ----
  std::string out = "runs/default";
  int64_t checkpoint_every = 0;  // steps; 0: at the end (and on signals) only
  int keep = 3;
  std::string resume;            // "" (fresh), "auto" or a checkpoint file
  std::string log_dir;           // TensorBoard + JSONL; default OUT/logs
  int64_t eval_every = 0;        // steps; 0: every epoch (or at the end for synthetic)
  std::string early_stop;        // METRIC:PATIENCE (in evaluations)
  int threads = 0;
  std::string device = "cpu";
  std::string precision = "f32";  // f32 | bf16 (autocast: matmuls in bf16, f32 master weights)
  // ---- data parallelism (ranks come from the MPI launch; --nproc is betctl's launcher) ----
  int nproc = 0;                 // betctl train --nproc N: run N ranks through mpirun
  int64_t grad_accum = 1;        // micro-batches per rank per step
  bool shard_optimizer = false;  // ZeRO-1
  double bucket_mb = 25;         // gradient bucket size
  double comm_timeout = 300;     // seconds a collective may wait for a peer (0: forever)
  bool json = false;             // print the final result as JSON
  bool quiet = false;            // no progress output
  int64_t log_every = 10;        // steps between log lines / progress updates
};

}  // namespace bet::runtime
