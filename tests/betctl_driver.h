// For the end-to-end suites that drive processes: the betctl binary's path (argv[1],
// given by tests/meson.build) and a PATH lookup for external checkers.
#pragma once
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>

namespace bet::test {

inline std::string g_betctl;  // path to the betctl binary, from argv[1]

// The first executable `tool` on $PATH.
inline std::optional<std::string> find_in_path(const std::string& tool) {
  const char* path = std::getenv("PATH");
  if (!path) return std::nullopt;
  std::istringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = dir + "/" + tool;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

// main() of a suite built with DOCTEST_CONFIG_IMPLEMENT: argv[1], unless it is a
// doctest flag, is the betctl binary; the rest goes to doctest.
inline int run_with_betctl_arg(int argc, char** argv) {
  doctest::Context ctx;
  if (argc > 1 && argv[1][0] != '-') {
    g_betctl = argv[1];
    ctx.applyCommandLine(argc - 1, argv + 1);
  } else {
    ctx.applyCommandLine(argc, argv);
  }
  return ctx.run();
}

}  // namespace bet::test
