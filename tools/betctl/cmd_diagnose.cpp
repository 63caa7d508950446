// `betctl diagnose NAME|all --out DIR [--quick] [--model CKPT] [--data FILE] [--threads N]`:
// flags -> diagnose::Options -> diagnose::run_diagnose (runtime/diagnose/runner.h).
// Progress goes to stderr, the summary to stdout (JSON with --json). A flagged
// experiment is a finding, not a failure of the command: the exit code is 0 once the
// report is written, 1 when something could not run, 2 for usage errors.
#include <cstdio>
#include <iostream>
#include <memory>

#include "platform/threads.h"
#include "runtime/diagnose/runner.h"
#include "tools/betctl/commands.h"

namespace betctl {

void add_diagnose_command(CLI::App& app, Registry& registry) {
  namespace dg = bet::diagnose;
  auto* cmd = app.add_subcommand("diagnose",
                                 "Measure the theory's properties (model.md) and write JSON, CSV and an HTML report");
  auto name = std::make_shared<std::string>();
  auto opt = std::make_shared<dg::Options>();
  auto threads = std::make_shared<int>(0);
  auto json = std::make_shared<bool>(false);
  std::vector<std::string> choices = dg::experiment_names();
  choices.push_back("all");
  cmd->add_option("NAME", *name,
                  "experiment: bernoulli | martingale | dispersion | permutations | pe-ablation | "
                  "calibration | cot | all")
      ->required()
      ->check(CLI::IsMember(choices));
  cmd->add_option("--out", opt->out, "output folder (results, report.html, models/ cache)")->required();
  cmd->add_flag("--quick", opt->quick, "small sizes: all experiments in about two minutes");
  auto* model = cmd->add_option("--model", opt->model_path,
                                "checkpoint: a causal model for the Bernoulli experiments, or a classifier for "
                                "calibration (default: models trained here on the built-in tasks)");
  cmd->add_option("--data", opt->data_path,
                  "calibration: held-out labelled file (JSONL/CSV/TSV) for the --model classifier")
      ->needs(model);
  cmd->add_option("--text-field", opt->text_field, "--data: field holding the text");
  cmd->add_option("--label-field", opt->label_field, "--data: field holding the label");
  cmd->add_option("--seed", opt->seed, "seed of the evaluation data and orderings");
  cmd->add_option("--threads", *threads, "threads (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", *json, "print the summary as JSON on stdout");
  cmd->callback([&registry, name, opt, threads, json] {
    registry.selected = [name, opt, threads, json] {
      if (*threads > 0) bet::platform::set_num_threads(*threads);
      opt->progress = [](const std::string& line) { std::fprintf(stderr, "[diagnose] %s\n", line.c_str()); };
      const std::vector<std::string> names = *name == "all" ? dg::experiment_names() : std::vector<std::string>{*name};
      const dg::DiagnoseRun run = dg::run_diagnose(names, *opt, dg::sizes_for(opt->quick));
      nlohmann::json out;
      for (const auto& r : run.results) out["experiments"][r.name] = dg::to_json(r);
      out["report"] = run.report_path;
      out["seconds"] = run.seconds;
      out["all_passed"] = run.all_passed();
      if (*json) {
        std::cout << out.dump(2) << std::endl;
      } else {
        for (const auto& r : run.results) {
          std::printf("%-13s %-8s %6.1f s", r.name.c_str(), r.verdict.passed() ? "pass" : "flagged", r.seconds);
          for (const auto& h : r.headlines)
            if (&h == &r.headlines.front()) std::printf("   %s: %s", h.quantity.c_str(), h.measured.c_str());
          std::printf("\n");
          for (const auto& f : r.verdict.flags) std::printf("              flag: %s\n", f.c_str());
        }
        std::printf("report: %s (%.1f s)\n", run.report_path.c_str(), run.seconds);
      }
      return 0;
    };
  });
}

}  // namespace betctl
