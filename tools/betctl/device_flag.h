// --device for the commands: "cpu", "cuda" or "cuda:N". Checked while parsing, so a
// machine without a GPU gets one clear line ("--device: ... no CUDA device
// available ...", exit code 2) before any work starts. The engine's CUDA backend
// runs ops on a GPU; the commands themselves (model, trainer, predictor, server,
// benchmarks) still allocate on the CPU, so a valid CUDA device is refused too,
// saying so, rather than silently computing on the CPU.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "engine/device.h"
#include "engine/error.h"

namespace betctl {

inline CLI::Validator device_validator(const std::string& command) {
  return CLI::Validator(
      [command](std::string& s) -> std::string {
        try {
          const bet::Device d = bet::parse_device(s);
          if (d.is_cuda())
            return "betctl " + command + " runs on the cpu in this version; " + d.str() +
                   " is available, but only the engine's ops have CUDA kernels so far";
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
inline CLI::Option* add_device_option(CLI::App* cmd, std::string& device, const std::string& command) {
  return cmd->add_option("--device", device, "cpu | cuda[:N] (default cpu)")->check(device_validator(command));
}

}  // namespace betctl
