#include "engine/dist/launch.h"

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "engine/dist/communicator.h"
#include "platform/error.h"

namespace bet::dist {

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(v) != nullptr) return true;
  return false;
}

std::string find_mpirun() {
  if (const char* e = std::getenv("BET_MPIRUN"); e != nullptr && *e) return e;
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::filesystem::path cand = std::filesystem::path(p.substr(start, end - start)) / "mpirun";
    if (::access(cand.c_str(), X_OK) == 0) return cand.string();
    start = end + 1;
  }
  return "";
}

std::vector<std::string> mpirun_command(const LaunchOptions& opt, const std::vector<std::string>& program_and_args) {
  BET_CHECK(opt.nproc >= 1, "--nproc must be >= 1, got ", opt.nproc);
  const std::string mpirun = find_mpirun();
  BET_CHECK(!mpirun.empty(), "--nproc: mpirun not found on PATH (install openmpi-bin, or set BET_MPIRUN)");
  std::vector<std::string> cmd{mpirun, "-np", std::to_string(opt.nproc), "--oversubscribe", "--bind-to", "none"};
  if (::geteuid() == 0) cmd.push_back("--allow-run-as-root");
  // The environment every rank needs; mpirun passes nothing it is not told to.
  for (const char* v : {"OMP_NUM_THREADS", "BET_COMM_TIMEOUT", "BET_DIST_FAULT"})
    if (std::getenv(v) != nullptr) cmd.insert(cmd.end(), {"-x", v});
  cmd.insert(cmd.end(), opt.mpirun_args.begin(), opt.mpirun_args.end());
  cmd.insert(cmd.end(), program_and_args.begin(), program_and_args.end());
  return cmd;
}

namespace {

volatile sig_atomic_t g_child = 0;

void forward_stop(int) {
  if (g_child > 0) ::kill(pid_t(g_child), SIGUSR1);
}

}  // namespace

int run_forwarding_signals(const std::vector<std::string>& argv) {
  BET_CHECK(!argv.empty(), "run_forwarding_signals: empty command");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::cout.flush();
  std::cerr.flush();
  const pid_t pid = ::fork();
  BET_CHECK(pid >= 0, "fork failed: ", std::strerror(errno));
  if (pid == 0) {
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "error: cannot run %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  g_child = pid;
  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = forward_stop;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_child = 0;
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace bet::dist
