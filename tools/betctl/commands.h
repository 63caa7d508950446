// Each subcommand registers its options on the CLI11 app and a callback to run
// after parsing; main() runs the one the user chose.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace betctl {

struct Registry {
  std::function<int()> selected;
  int run() const { return selected ? selected() : 2; }
};

void add_bench_command(CLI::App& app, Registry& registry);
void add_train_command(CLI::App& app, Registry& registry);
void add_model_commands(CLI::App& app, Registry& registry);
void add_predict_commands(CLI::App& app, Registry& registry);
void add_serve_command(CLI::App& app, Registry& registry);
void add_diagnose_command(CLI::App& app, Registry& registry);

}  // namespace betctl
