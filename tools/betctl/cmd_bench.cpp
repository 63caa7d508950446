// `betctl bench ops|train|all`: benchmarks, each against a baseline measured in the
// same run (see bench/).
#include <memory>
#include <string>

#include "bench/bench_ops.h"
#include "bench/bench_train.h"
#include "kernels/cpu/threads.h"
#include "tools/betctl/commands.h"

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

}  // namespace

void add_bench_command(CLI::App& app, Registry& registry) {
  auto* cmd = app.add_subcommand("bench", "Measure performance against baselines run in the same invocation");
  auto opts = std::make_shared<bet::bench::BenchOptions>();
  auto train = std::make_shared<bet::bench::TrainBenchOptions>();
  auto what = std::make_shared<std::string>("ops");
  auto json = std::make_shared<bool>(false);
  cmd->add_option("what", *what, "ops | train | all")->check(CLI::IsMember({"ops", "train", "all"}));
  cmd->add_option("--format", opts->format, "md | csv | json")->check(CLI::IsMember({"md", "csv", "json"}));
  cmd->add_option("--out", opts->out,
                  "write the tables to this file instead of stdout (all: train tables to FILE.train.EXT)");
  cmd->add_option("--threads", opts->threads, "threads in the pool (default: all cores); the peer gets the same")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--quick", opts->quick, "shorter runs (noisier)");
  cmd->add_flag("--json", *json, "same as --format json");

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
  g->add_flag("--peer", train->peer, "also run the PyTorch eager peer (bench/peer/train_peer.py) and print the ratio");
  g->add_flag("--profile", train->profile, "also print where a step's time goes (phases, modules, backward ops)");

  cmd->callback([&registry, opts, train, what, json] {
    registry.selected = [opts, train, what, json] {
      if (*json) opts->format = "json";
      if (opts->threads > 0) bet::kernels::cpu::set_num_threads(opts->threads);
      if (*what == "ops") return bet::bench::run_ops(*opts);
      if (*what == "train") return bet::bench::run_train(*opts, *train);
      int rc = bet::bench::run_ops(*opts);
      if (rc == 2) return rc;
      bet::bench::BenchOptions t = *opts;
      if (!t.out.empty()) t.out = train_out_path(t.out);
      int rt = bet::bench::run_train(t, *train);
      return rt ? rt : rc;
    };
  });
}

}  // namespace betctl
