// Running a PyTorch peer of bench/peer/ in the same invocation, and the machine facts
// every bench table prints beside its numbers.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace bet::bench {

// $BET_PEER_PYTHON, else Debian's /usr/bin/python3 (the one with torch).
std::string peer_python();
std::string shell_quote(const std::string& s);

struct PeerOutput {
  bool ok = false;         // a JSON object was printed
  nlohmann::json result;   // the last output line that parses as a JSON object
  std::string error;       // otherwise: the last line printed, or the exit status
};

// Runs `peer_python() bench/peer/SCRIPT ARGS` from the source tree, stderr folded in.
// Anything but the result line is noise (warnings) or, on failure, the reason.
PeerOutput run_peer_script(const std::string& script, const std::string& args);

// The three load averages of /proc/loadavg ("unknown" where it cannot be read).
std::string load_average();

}  // namespace bet::bench
