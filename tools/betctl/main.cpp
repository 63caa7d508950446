// betctl: the command line. It only wires parts together: parsing here, the work in
// engine/, model/, runtime/ and bench/. Exit codes: 0 success, 1 runtime failure,
// 2 usage error. Errors are one line naming what is wrong, never a stack trace.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "bench/bench_ops.h"
#include "bet_config.h"
#include "engine/dist/communicator.h"
#include "engine/error.h"
#include "tools/betctl/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"betctl: train, evaluate and serve Bayesian Expectation Transformers"};
  app.set_version_flag("--version", std::string("betctl ") + BET_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // global options such as --config work after the subcommand too
  app.set_config("--config", "", "TOML config file with option values", false);

  betctl::Registry registry;
  betctl::add_train_command(app, registry);
  betctl::add_model_commands(app, registry);
  betctl::add_predict_commands(app, registry);
  betctl::add_serve_command(app, registry);
  betctl::add_bench_command(app, registry);
  betctl::add_diagnose_command(app, registry);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    return registry.run();
  } catch (const bet::Error& e) {
    std::fprintf(stderr, "betctl: error: %s\n", e.what());
    std::fflush(stderr);
    // Under mpirun the other ranks may be waiting on this one: end them all now.
    bet::dist::abort_job(1);
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "betctl: error: %s\n", e.what());
    std::fflush(stderr);
    bet::dist::abort_job(1);
    return 1;
  }
}
