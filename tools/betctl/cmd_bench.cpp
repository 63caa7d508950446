// `betctl bench ops|train|all`: benchmarks, each against a baseline measured in the
// same run (see bench/).
#include <memory>

#include "bench/bench_ops.h"
#include "kernels/cpu/threads.h"
#include "tools/betctl/commands.h"

namespace betctl {

void add_bench_command(CLI::App& app, Registry& registry) {
  auto* cmd = app.add_subcommand("bench", "Measure performance against baselines run in the same invocation");
  auto opts = std::make_shared<bet::bench::BenchOptions>();
  auto what = std::make_shared<std::string>("ops");
  auto json = std::make_shared<bool>(false);
  cmd->add_option("what", *what, "ops | all")->check(CLI::IsMember({"ops", "all"}));
  cmd->add_option("--format", opts->format, "md | csv | json")->check(CLI::IsMember({"md", "csv", "json"}));
  cmd->add_option("--out", opts->out, "write the table to this file instead of stdout");
  cmd->add_option("--threads", opts->threads, "threads in the pool (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--quick", opts->quick, "shorter runs (noisier)");
  cmd->add_flag("--json", *json, "same as --format json");
  cmd->callback([&registry, opts, what, json] {
    registry.selected = [opts, what, json] {
      if (*json) opts->format = "json";
      if (opts->threads > 0) bet::kernels::cpu::set_num_threads(opts->threads);
      return bet::bench::run_ops(*opts);
    };
  });
}

}  // namespace betctl
