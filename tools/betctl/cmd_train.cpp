// `betctl train`: flags -> TrainConfig -> runtime::train.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/dist/launch.h"

#include "runtime/train/trainer.h"
#include "tools/betctl/commands.h"
#include "tools/betctl/device_flag.h"

namespace betctl {

namespace {

// Upper bounds of the shape flags, so a typo is a usage error (exit code 2) before any
// allocation rather than an out-of-memory minutes in. Attention keeps batch x heads x
// max_len^2 scores per layer for the backward pass (256 MiB per head and sequence at
// 8192), parameters grow as layers x d_model^2 and the embedding as vocab x d_model;
// each bound is far above the default classifier (d_model 128, 4 heads, 2 layers,
// max_len 256, vocab 8000) yet still a model one machine can hold.
constexpr int64_t kMaxLen = 8192;
constexpr int64_t kMaxDModel = 8192;
constexpr int64_t kMaxHeads = 256;
constexpr int64_t kMaxLayers = 256;
constexpr int64_t kMinVocab = 8, kMaxVocab = 131072;  // spm-train:VOCAB

// --tokenizer: byte | spm:FILE | spm-train:VOCAB, VOCAB plain digits within the bounds
// (a stoi later would take "8000abc" as 8000).
CLI::Validator tokenizer_validator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        if (s == "byte" || (s.rfind("spm:", 0) == 0 && s.size() > 4)) return {};
        if (s.rfind("spm-train:", 0) == 0) {
          const std::string n = s.substr(10);
          const bool digits = !n.empty() && n.size() <= 7 && n.find_first_not_of("0123456789") == std::string::npos;
          if (digits && std::stoll(n) >= kMinVocab && std::stoll(n) <= kMaxVocab) return {};
          return "'" + s + "': VOCAB must be a whole number in [" + std::to_string(kMinVocab) + ", " +
                 std::to_string(kMaxVocab) + "]";
        }
        return "'" + s + "' is not one of byte, spm:FILE, spm-train:VOCAB";
      },
      "byte|spm:FILE|spm-train:VOCAB");
}

// This process's own command line minus --nproc: what every rank of --nproc runs.
std::vector<std::string> rank_command_line() {
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t start = 0; start < all.size();) {
    const size_t end = all.find('\0', start);
    args.push_back(all.substr(start, end - start));
    start = end == std::string::npos ? all.size() : end + 1;
  }
  std::vector<std::string> out{std::filesystem::read_symlink("/proc/self/exe").string()};
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--nproc") {
      ++i;  // and its value
      continue;
    }
    if (args[i].rfind("--nproc=", 0) == 0) continue;
    out.push_back(args[i]);
  }
  return out;
}

// betctl train --nproc N: the same command on N ranks through mpirun. SIGINT/SIGTERM
// reach every rank (as SIGUSR1), which checkpoint once at one step and stop.
int launch_ranks(int nproc) {
  BET_CHECK(!bet::dist::launched_by_mpi(), "--nproc inside an MPI launch: use one or the other");
  bet::dist::LaunchOptions opt;
  opt.nproc = nproc;
  const std::vector<std::string> cmd = bet::dist::mpirun_command(opt, rank_command_line());
  if (std::find(cmd.begin(), cmd.end(), "--allow-run-as-root") != cmd.end())
    std::fprintf(stderr, "betctl: running as root: passing --allow-run-as-root to mpirun (OpenMPI refuses root otherwise)\n");
  return bet::dist::run_forwarding_signals(cmd);
}

}  // namespace

void add_train_command(CLI::App& app, Registry& registry) {
  auto* cmd = app.add_subcommand("train", "Train a model (default: the built-in Bernoulli task)");
  auto c = std::make_shared<bet::runtime::TrainConfig>();
  auto layer = std::make_shared<std::string>("bet");
  auto pe = std::make_shared<std::string>("rope");
  auto branch_init = std::make_shared<std::string>(bet::model::to_string(c->model.branch_init));
  auto stats_features = std::make_shared<std::string>(bet::model::to_string(c->model.stats_features));
  auto& m = c->model;
  cmd->add_option("--task", c->task, "classify | lm (default: lm for synthetic, classify for --data)")
      ->check(CLI::IsMember({"classify", "lm"}));
  cmd->add_option("--data", c->data, "training data: JSONL {text,label}, CSV/TSV with a header, or plain text (lm)");
  cmd->add_option("--val", c->val, "validation file (default: --val-split of the data)");
  cmd->add_option("--val-split", c->val_split, "fraction of --data held out for validation")->check(CLI::Range(0.0, 0.9));
  cmd->add_option("--synthetic", c->synthetic, "bernoulli | categorical (default when no --data: bernoulli)")
      ->check(CLI::IsMember({"bernoulli", "categorical"}));
  cmd->add_option("--seq-len", c->seq_len, "synthetic: outcomes per sequence (at most --max-len)")
      ->check(CLI::Range(int64_t(1), kMaxLen));
  cmd->add_option("--categories", c->categories, "synthetic categorical: outcomes")->check(CLI::Range(2, 250));
  cmd->add_option("--tokenizer", c->tokenizer, "byte | spm:FILE | spm-train:VOCAB")->check(tokenizer_validator());
  cmd->add_option("--layer", *layer, "bet | standard")->check(CLI::IsMember({"bet", "standard"}));
  cmd->add_option("--d-model", m.d_model, "model width")->check(CLI::Range(int64_t(2), kMaxDModel));
  cmd->add_option("--heads", m.heads, "attention heads")->check(CLI::Range(int64_t(1), kMaxHeads));
  cmd->add_option("--layers", m.layers, "layers")->check(CLI::Range(int64_t(1), kMaxLayers));
  cmd->add_option("--k-permutations", m.k_permutations, "attention permutation paths (0: off)")->check(CLI::Range(0, 64));
  cmd->add_option("--pe", *pe, "rope | sinusoidal | learned | none")
      ->check(CLI::IsMember({"rope", "sinusoidal", "learned", "none"}));
  cmd->add_option("--bet-init", *branch_init,
                  "bet layers: how the stats, CoT and debiasing branches start: spec (model.md) | zero (a fresh "
                  "layer is a standard layer plus averaging)")
      ->check(CLI::IsMember({"spec", "zero"}));
  cmd->add_option("--bet-stats", *stats_features,
                  "bet layers: what the stats encoder projects of its Beta posterior: counts (log alpha, log beta; "
                  "model.md) | mean (log posterior mean and complement, length-free)")
      ->check(CLI::IsMember({"counts", "mean"}));
  cmd->add_option("--max-len", m.max_len, "maximum sequence length")->check(CLI::Range(int64_t(1), kMaxLen));
  cmd->add_option("--dropout", m.dropout, "dropout rate")->check(CLI::Range(0.0, 0.99));
  cmd->add_flag("--tie-embeddings", m.tie_embeddings, "lm: tie the head to the embedding");
  cmd->add_option("--epochs", c->epochs, "epochs (data only)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--steps", c->steps, "optimizer steps")->check(CLI::NonNegativeNumber);
  cmd->add_option("--batch-size", c->batch_size, "sequences per step")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--lr", c->lr, "peak learning rate")->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", c->warmup, "linear warmup steps before cosine decay")->check(CLI::NonNegativeNumber);
  cmd->add_option("--weight-decay", c->weight_decay, "AdamW decoupled weight decay")->check(CLI::NonNegativeNumber);
  cmd->add_option("--clip", c->clip, "global gradient-norm clip (0: off)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", c->seed, "seed of everything random");
  cmd->add_option("--mdl-beta", c->mdl_beta, "MDL penalty weight (0: plain cross-entropy)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--out", c->out, "run directory (checkpoints, logs)");
  cmd->add_option("--checkpoint-every", c->checkpoint_every, "training checkpoint every N steps")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--keep", c->keep, "training checkpoints kept")->check(CLI::Range(1, 1000));
  cmd->add_option("--resume", c->resume, "auto | FILE");
  add_device_option(cmd, c->device);
  cmd->add_option("--precision", c->precision,
                  "f32 | bf16 (autocast: matmuls in bf16 with f32 accumulation, f32 master weights)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--threads", c->threads, "threads per rank (default: all cores, shared among the ranks on a node)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--log-dir", c->log_dir, "TensorBoard and JSONL logs (default OUT/logs)");
  cmd->add_option("--text-field", c->text_field, "JSON/CSV field holding the text");
  cmd->add_option("--label-field", c->label_field, "JSON/CSV field holding the label");
  cmd->add_option("--positive-label", c->positive_label, "label F1 is computed for (two classes)");
  cmd->add_flag("--skip-bad", c->skip_bad, "skip and count malformed records instead of stopping");
  cmd->add_option("--eval-every", c->eval_every, "validate every N steps (default: every epoch)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--early-stop", c->early_stop, "METRIC:PATIENCE, e.g. loss:3");
  cmd->add_option("--log-every", c->log_every, "steps between log lines")->check(CLI::Range(1, 1 << 30));
  cmd->add_option("--nproc", c->nproc, "run N data-parallel ranks through mpirun (same global batch)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--grad-accum", c->grad_accum, "micro-batches per rank per step (all-reduce on the last)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_flag("--shard-optimizer", c->shard_optimizer, "shard AdamW state across ranks (ZeRO stage 1)");
  cmd->add_option("--bucket-mb", c->bucket_mb, "gradient bucket size in MB (all-reduced as backward fills them)")
      ->check(CLI::Range(0.001, 4096.0));
  cmd->add_option("--comm-timeout", c->comm_timeout, "seconds a rank waits for its peers before ending the run (0: forever)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", c->json, "print the result as JSON on stdout");
  cmd->add_flag("--quiet", c->quiet, "no progress output");
  cmd->callback([&registry, c, layer, pe, branch_init, stats_features] {
    registry.selected = [c, layer, pe, branch_init, stats_features] {
      c->model.layer = bet::model::parse_layer(*layer);
      c->model.pe = bet::model::parse_pe(*pe);
      c->model.branch_init = bet::model::parse_branch_init(*branch_init);
      c->model.stats_features = bet::model::parse_stats_features(*stats_features);
      if (c->nproc > 1) return launch_ranks(c->nproc);
      auto res = bet::runtime::train(*c);
      if (!res.writer) return res.exit_code;  // rank 0 reports for the run
      if (c->json) {
        std::cout << res.summary.dump(2) << std::endl;
      } else {
        const auto& mt = res.summary["metrics"];
        std::printf("trained %s %s model: %lld steps in %.1f s (%.0f tokens/s)\n",
                    res.summary["layer"].get<std::string>().c_str(), res.summary["task"].get<std::string>().c_str(),
                    static_cast<long long>(res.summary["steps"].get<int64_t>()), res.summary["seconds"].get<double>(),
                    res.summary["tokens_per_s"].get<double>());
        for (auto it = mt.begin(); it != mt.end(); ++it)
          if (it.value().is_number()) std::printf("  %-28s %.6f\n", it.key().c_str(), it.value().get<double>());
        std::printf("checkpoint: %s\n", res.summary["checkpoint"].get<std::string>().c_str());
      }
      return res.exit_code;
    };
  });
}

}  // namespace betctl
