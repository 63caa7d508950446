#include "bench/peer_process.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "bet_config.h"

namespace bet::bench {

std::string peer_python() {
  const char* env = std::getenv("BET_PEER_PYTHON");
  return env && *env ? env : "/usr/bin/python3";
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

PeerOutput run_peer_script(const std::string& script, const std::string& args) {
  PeerOutput r;
  const std::string py = peer_python();
  // BET_SOURCE_ROOT: the checkout when the binary runs away from where it was built
  // (a bundle on a GPU machine).
  const char* root_env = std::getenv("BET_SOURCE_ROOT");
  const std::string root = root_env && *root_env ? root_env : BET_SOURCE_DIR;
  const std::string cmd = "cd " + shell_quote(root) + " && " + shell_quote(py) + " bench/peer/" + script +
                          " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    r.error = "could not start " + py;
    return r;
  }
  std::string out;
  char buf[65536];
  while (fgets(buf, sizeof buf, p)) out += buf;
  const int rc = pclose(p);
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) lines.push_back(l);
  for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
    if (it->front() != '{') continue;
    try {
      r.result = nlohmann::json::parse(*it);
      if (!r.result.is_object()) continue;
      r.ok = true;
      return r;
    } catch (const std::exception&) {
    }
  }
  r.error = lines.empty() ? "exit status " + std::to_string(rc) : lines.back();
  if (r.error.size() > 160) r.error = r.error.substr(0, 157) + "...";
  return r;
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  if (!(f >> a >> b >> c)) return "unknown";
  return a + " " + b + " " + c;
}

}  // namespace bet::bench
