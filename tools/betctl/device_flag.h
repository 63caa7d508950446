// --device for the commands: "cpu", "cuda" or "cuda:N". Checked while parsing, so a
// machine without a GPU gets one clear line ("--device: ... no CUDA device
// available ...", exit code 2) before any work starts.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "engine/device.h"
#include "engine/error.h"

namespace betctl {

inline CLI::Validator device_validator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        try {
          (void)bet::parse_device(s);
        } catch (const bet::Error& e) {
          // CLI11 prefixes "--device: "; drop parse_device's own "--device ".
          const std::string m = e.what();
          return m.rfind("--device ", 0) == 0 ? m.substr(9) : m;
        }
        return std::string();
      },
      "cpu | cuda[:N]");
}

// Adds --device (default cpu) to `cmd`, validated as above.
inline CLI::Option* add_device_option(CLI::App* cmd, std::string& device) {
  return cmd->add_option("--device", device, "cpu | cuda[:N] (default cpu)")->check(device_validator());
}

}  // namespace betctl
