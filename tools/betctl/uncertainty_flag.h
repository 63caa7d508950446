// --uncertainty NAME for serve, predict and calibrate: the name is checked while parsing
// (a bad one is "--uncertainty: ..." and exit code 2 before any work), and whether the
// loaded model offers it once the model is loaded (refuse_uncertainty, also exit 2).
#pragma once
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "engine/error.h"
#include "runtime/inference/uncertainty_signal.h"

namespace betctl {

// `allow_auto`: calibrate also takes "auto" (choose from the calibration data).
inline CLI::Validator uncertainty_validator(bool allow_auto) {
  return CLI::Validator(
      [allow_auto](std::string& s) -> std::string {
        if (allow_auto && s == "auto") return std::string();
        try {
          (void)bet::inference::UncertaintySignal::parse(s);
        } catch (const bet::Error& e) {
          return e.what();
        }
        return std::string();
      },
      allow_auto ? "SETTING:SIGNAL[@K]|auto" : "SETTING:SIGNAL[@K]");
}

inline CLI::Option* add_uncertainty_option(CLI::App* cmd, std::string& name, const std::string& description,
                                           bool allow_auto = false) {
  return cmd->add_option("--uncertainty", name, description)->check(uncertainty_validator(allow_auto));
}

// A signal the model does not offer is a usage error, as a bad name is: one line, exit 2.
inline int refuse_uncertainty(const std::string& why) {
  std::fprintf(stderr, "betctl: error: --uncertainty: %s\n", why.c_str());
  return 2;
}

}  // namespace betctl
