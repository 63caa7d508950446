// `betctl bench ops|train|ckpt|all`: benchmarks, each against a baseline measured in the
// same run (see bench/).
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "bench/bench_ckpt.h"
#include "bench/bench_data_parallel.h"
#include "bench/bench_infer.h"
#include "bench/bench_ops.h"
#include "bench/bench_serve.h"
#include "bench/bench_train.h"
#include "bench/bench_train_data.h"
#include "platform/threads.h"
#include "tools/betctl/commands.h"
#include "tools/betctl/device_flag.h"

namespace betctl {

namespace {

// `all --out FILE`: the train tables go next to FILE ("r.md" -> "r.train.md"), so
// each file stays one valid document in its format.
std::string train_out_path(const std::string& out) {
  auto slash = out.find_last_of('/');
  auto dot = out.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash) || dot == slash + 1)
    return out + ".train";
  return out.substr(0, dot) + ".train" + out.substr(dot);
}

// The same for the ckpt tables ("r.md" -> "r.ckpt.md").
std::string ckpt_out_path(const std::string& out) {
  auto slash = out.find_last_of('/');
  auto dot = out.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash) || dot == slash + 1)
    return out + ".ckpt";
  return out.substr(0, dot) + ".ckpt" + out.substr(dot);
}

// The same for the infer and serve tables ("r.md" -> "r.infer.md", "r.serve.md").
std::string tagged_out_path(const std::string& out, const std::string& tag) {
  auto slash = out.find_last_of('/');
  auto dot = out.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash) || dot == slash + 1)
    return out + "." + tag;
  return out.substr(0, dot) + "." + tag + out.substr(dot);
}

}  // namespace

void add_bench_command(CLI::App& app, Registry& registry) {
  auto* cmd = app.add_subcommand("bench", "Measure performance against baselines run in the same invocation");
  auto opts = std::make_shared<bet::bench::BenchOptions>();
  auto train = std::make_shared<bet::bench::TrainBenchOptions>();
  auto dp = std::make_shared<bet::bench::DataParallelOptions>();
  auto ckpt = std::make_shared<bet::bench::CkptBenchOptions>();
  auto infer = std::make_shared<bet::bench::InferBenchOptions>();
  auto serve = std::make_shared<bet::bench::ServeBenchOptions>();
  auto ops = std::make_shared<bet::bench::OpsBenchOptions>();
  auto what = std::make_shared<std::string>("ops");
  auto json = std::make_shared<bool>(false);
  cmd->add_option("what", *what, "ops | train | ckpt | infer | serve | all")->check(CLI::IsMember({"ops", "train", "ckpt", "infer", "serve", "all"}));
  cmd->add_option("--format", opts->format, "md | csv | json")->check(CLI::IsMember({"md", "csv", "json"}));
  cmd->add_option("--out", opts->out,
                  "write the tables to this file instead of stdout (all: train and ckpt tables to FILE.train.EXT, FILE.ckpt.EXT)");
  cmd->add_option("--threads", opts->threads, "threads in the pool (default: all cores); the peer gets the same")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--quick", opts->quick, "shorter runs (noisier)");
  static std::string device = "cpu";  // checked while parsing (device_flag.h)
  add_device_option(cmd, device);
  cmd->add_flag("--json", *json, "same as --format json");
  cmd->add_flag("--isa-only", ops->isa_only,
                "bench ops: only the kernel-ISA rows (our CPU kernels on AVX-512 against their AVX2 twins; "
                "BET_CPU_ISA=avx2|avx512|auto sets the path outside the bench)");

  auto* g = cmd->add_option_group("train", "bench train: one training step (forward, backward, AdamW)");
  g->add_option("--layer", train->layer, "bet | standard | both")
      ->check(CLI::IsMember({"bet", "standard", "both"}))
      ->capture_default_str();
  g->add_option("--d-model", train->d_model, "model width")->check(CLI::PositiveNumber)->capture_default_str();
  g->add_option("--heads", train->heads, "attention heads")->check(CLI::PositiveNumber)->capture_default_str();
  g->add_option("--layers", train->layers, "layers")->check(CLI::PositiveNumber)->capture_default_str();
  g->add_option("--seq-len", train->seq_len, "tokens per sequence")->check(CLI::PositiveNumber)->capture_default_str();
  g->add_option("--batch-size", train->batch_size, "sequences per step")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  g->add_option("--steps", train->steps, "timed steps (median reported)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  g->add_option("--warmup", train->warmup, "untimed steps first")->check(CLI::NonNegativeNumber)->capture_default_str();
  g->add_option("--task", train->task, "classify | lm")->check(CLI::IsMember({"classify", "lm"}))->capture_default_str();
  g->add_option("--pe", train->pe, "rope | sinusoidal | learned | none")
      ->check(CLI::IsMember({"rope", "sinusoidal", "learned", "none"}))
      ->capture_default_str();
  g->add_option("--k-permutations", train->k_permutations, "permutation paths of the bet layer")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  g->add_option("--precision", train->precision, "f32 | bf16 (autocast) | auto: bf16 on a GPU, f32 on the cpu")
      ->check(CLI::IsMember({"f32", "bf16", "auto"}))
      ->capture_default_str();
  g->add_flag("--peer", train->peer, "also run the PyTorch eager peer (bench/peer/train_peer.py) and print the ratio");
  g->add_flag("--profile", train->profile, "also print where a step's time goes (phases, modules, backward ops)");
  g->add_option("--data", train->data,
                "end to end on this file (JSONL/CSV/TSV/text, as betctl train --data) against the step alone; "
                "unset shape flags then default to betctl train's default classifier, --steps to 20");
  g->add_option("--val", train->val, "with --data: validation file (default: a 0.1 split, as betctl train)");
  g->add_option("--tokenizer", train->tokenizer, "with --data: byte | spm:FILE | spm-train:VOCAB")
      ->capture_default_str();
  g->add_option("--nproc", dp->nproc,
                "N > 1 (cpu): one rank with all the threads, and one with threads/N, against N data-parallel "
                "ranks (mpirun) with threads/N each, at the same global batch: tokens/s, scaling efficiency, "
                "communication wait and overlap")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  g->add_option("--bucket-mb", dp->bucket_mb, "with --nproc: gradient bucket size in MB")
      ->check(CLI::Range(0.001, 4096.0))
      ->capture_default_str();
  // One rank of --nproc's launch (not for users: bench train --nproc runs it).
  g->add_flag("--dp-rank-worker", dp->rank_worker)->group("");

  auto* gc = cmd->add_option_group("ckpt", "bench ckpt: .bet checkpoint save/load against the raw disk and torch");
  gc->add_option("--ckpt-shapes", ckpt->shapes, "model shapes DxL (d_model x layers), comma separated")
      ->capture_default_str();
  gc->add_option("--ckpt-reps", ckpt->reps, "repetitions of each save and load (median reported)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  gc->add_option("--ckpt-train-steps", ckpt->train_steps, "AdamW steps before the 'after training' rows")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  gc->add_option("--zstd-level", ckpt->zstd_level, "zstd level of the .bet writer")
      ->check(CLI::Range(1, 19))
      ->capture_default_str();
  gc->add_option("--ckpt-dir", ckpt->dir, "folder for the files (default: a fresh one in the temp dir)");
  gc->add_flag("--drop-cache", ckpt->drop_cache, "evict each file from the page cache before reading it back");

  auto* gi = cmd->add_option_group("infer/serve", "bench infer: the predict path (latency, batch throughput); "
                                                  "bench serve: the HTTP server under load (--peer: FastAPI)");
  gi->add_option("--model", infer->model, "classify checkpoint (default: the default classifier, init weights)");
  gi->add_option("--tokens", infer->tokens, "text lengths in tokens (bytes), comma separated")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  gi->add_option("--batch-sizes", infer->batch_sizes, "infer: requests per batch call, comma separated")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  gi->add_option("--quantize", infer->quantize,
                 "infer: none | int8: also time the model with int8 Linears (betctl export --quantize int8) in "
                 "the same run; with --peer also torch's quantize_dynamic")
      ->check(CLI::IsMember({"none", "int8"}))
      ->capture_default_str();
  gi->add_option("--reps", infer->reps, "infer: timed calls per case, at most")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  gi->add_option("--seconds", serve->seconds, "time per case (infer) or per load cell (serve), at most")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  gi->add_option("--connections", serve->connections, "serve: connection counts, comma separated")
      ->delimiter(',')
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  gi->add_option("--max-requests", serve->max_requests, "serve: responses per load cell, at most")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  cmd->callback([&registry, opts, ops, train, ckpt, infer, serve, what, json, g, dp] {
    if (!train->data.empty())
      bet::bench::apply_data_defaults(*train, [g](const std::string& flag) { return g->count(flag) > 0; });
    ckpt->peer = train->peer;
    infer->peer = serve->peer = train->peer;
    serve->model = infer->model;
    serve->tokens = infer->tokens;
    infer->seconds = serve->seconds;
    if (opts->quick) {
      infer->seconds = serve->seconds = std::min(serve->seconds, 0.5);
      serve->warmup = 0.1;
    }
    registry.selected = [opts, ops, train, ckpt, infer, serve, what, json, dp] {
      if (*json) opts->format = "json";
      opts->device = device;
      if (opts->threads > 0) bet::platform::set_num_threads(opts->threads);
      if (dp->nproc > 1 || dp->rank_worker) {
        if (*what != "train") {
          std::fprintf(stderr, "bench: --nproc applies to bench train only\n");
          return 2;
        }
        return bet::bench::run_train_data_parallel(*opts, *train, *dp);
      }
      if (*what == "ops") return bet::bench::run_ops(*opts, *ops);
      if (*what == "train") return bet::bench::run_train(*opts, *train);
      if (*what == "ckpt") return bet::bench::run_ckpt(*opts, *ckpt);
      if (*what == "infer") return bet::bench::run_infer(*opts, *infer);
      if (*what == "serve") return bet::bench::run_serve(*opts, *serve);
      int rc = bet::bench::run_ops(*opts, *ops);
      if (rc == 2) return rc;
      bet::bench::BenchOptions t = *opts;
      if (!t.out.empty()) t.out = train_out_path(t.out);
      int rt = bet::bench::run_train(t, *train);
      bet::bench::BenchOptions c = *opts;
      if (!c.out.empty()) c.out = ckpt_out_path(c.out);
      int rk = bet::bench::run_ckpt(c, *ckpt);
      bet::bench::BenchOptions bi = *opts, bs = *opts;
      if (!opts->out.empty()) bi.out = tagged_out_path(opts->out, "infer"), bs.out = tagged_out_path(opts->out, "serve");
      int ri = bet::bench::run_infer(bi, *infer);
      int rs = bet::bench::run_serve(bs, *serve);
      return rt ? rt : rk ? rk : ri ? ri : rs ? rs : rc;
    };
  });
}

}  // namespace betctl
