#include <CLI/CLI.hpp>
#include "bet_config.h"
int main(int argc, char** argv) {
  CLI::App app{"betctl"};
  app.set_version_flag("--version", std::string("betctl ") + BET_VERSION);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
