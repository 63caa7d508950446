// For the end-to-end suites that drive processes: the betctl binary's path (argv[1],
// given by tests/meson.build) and a PATH lookup for external checkers.
#pragma once
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace bet::test {

inline std::string g_betctl;  // path to the betctl binary, from argv[1]

// The first executable `tool` on $PATH.
// The whole file as bytes; "" when it cannot be read (a log not written yet, a /proc
// entry of a process that just ended).
inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

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

// A folder of the test process's own under the system's temporary directory, named
// `<prefix>_<pid>`, created on construction and removed with everything in it on
// destruction (so a suite declares one at namespace scope).
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix)
      : path_(std::filesystem::temp_directory_path() / (prefix + "_" + std::to_string(::getpid()))) {
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Starts args[0] (looked up on PATH) with stdout and stderr going to the given files
// ("" for /dev/null); REQUIREs that it started.
inline pid_t spawn_process(const std::vector<std::string>& args, const std::string& out_file = "",
                           const std::string& err_file = "") {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out_file.empty() ? "/dev/null" : out_file.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_file.empty() ? "/dev/null" : err_file.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE_MESSAGE(rc == 0, "cannot start ", args[0]);
  return pid;
}

// Waits for pid to end, killing it (and failing the test) once `limit` has passed.
// Returns its exit code, or -signal.
inline int wait_process(pid_t pid, std::chrono::seconds limit = std::chrono::seconds(600)) {
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      FAIL("the process did not finish within its time limit");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

inline int run_process(const std::vector<std::string>& args, const std::string& out_file = "",
                       const std::string& err_file = "", std::chrono::seconds limit = std::chrono::seconds(600)) {
  return wait_process(spawn_process(args, out_file, err_file), limit);
}

// One betctl run: its exit code and what it printed.
struct BetctlResult {
  int code = 0;
  std::string out, err;
};

// Runs g_betctl with `args`, its stdout and stderr captured through files in `dir`.
inline BetctlResult run_betctl(const std::vector<std::string>& args, const std::filesystem::path& dir) {
  std::vector<std::string> full = {g_betctl};
  full.insert(full.end(), args.begin(), args.end());
  const std::string out_file = (dir / "stdout.txt").string(), err_file = (dir / "stderr.txt").string();
  BetctlResult r;
  r.code = run_process(full, out_file, err_file);
  r.out = read_text(out_file);
  r.err = read_text(err_file);
  return r;
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
