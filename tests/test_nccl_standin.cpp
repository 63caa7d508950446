// The NCCL communicator (engine/dist/nccl_communicator.cpp) on several ranks: each case
// starts tests/dist_nccl_worker.cpp under mpirun (bet::dist::mpirun_command, as
// `betctl train --nproc N` does) and reads its ranks' verdicts. In the -Dgpu_emulation
// build the ranks run on emulated GPUs and NCCL is the stand-in of tests/cuda_emu
// (emu_nccl.cpp), which also checks the contracts NCCL leaves to its users (matching
// collectives, counts, types, roots, device pointers); on a machine with GPUs the same
// cases run on the real NCCL (those needing the stand-in's checks are skipped there).
// Skipped where the build has no NCCL, no MPI or no mpirun, or there are not enough
// devices (real NCCL wants one GPU per rank).
#include <doctest/doctest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bet_config.h"
#include "engine/device.h"
#include "engine/dist/launch.h"

#ifndef BET_NCCL_EMULATED
#define BET_NCCL_EMULATED 0
#endif
#ifndef BET_NCCL_WORKER
#define BET_NCCL_WORKER "dist_nccl_worker"
#endif

namespace {

// Why the cases cannot run here (empty when they can), for `nproc` ranks.
std::string skip_reason(int nproc) {
  if (!BET_HAVE_NCCL) return "this build has no NCCL (nor the emulated stand-in)";
#if !BET_HAVE_MPI
  return "this build has no MPI";
#endif
  if (bet::dist::find_mpirun().empty()) return "mpirun not found";
  const int gpus = bet::cuda_device_count();
  if (gpus == 0) return "no CUDA device";
  if (!BET_NCCL_EMULATED && gpus < nproc)
    return std::to_string(nproc) + " ranks need " + std::to_string(nproc) + " GPUs, " + std::to_string(gpus) +
           " found";
  return "";
}

// The decorator: skipped at registration (counted as skipped, said once on stderr).
doctest::skip nccl_cases(int nproc, bool needs_standin = false) {
  std::string why = skip_reason(nproc);
  if (why.empty() && needs_standin && !BET_NCCL_EMULATED) why = "checks of the emulated stand-in";
  if (!why.empty()) std::fprintf(stderr, "test_nccl_standin: %d-rank case skipped: %s\n", nproc, why.c_str());
  return doctest::skip(!why.empty());
}

struct Run {
  int status = -1;  // exit status, 128 + signal, or -1 when it was killed at the deadline
  std::string command, output;
  double seconds = 0;
};

// Runs the worker under mpirun (stdout and stderr together), killed at `limit_s`.
Run run_worker(int nproc, const std::string& scenario, double limit_s, const char* env_name = nullptr,
               const char* env_value = nullptr) {
  const std::vector<std::string> argv =
      bet::dist::mpirun_command({nproc, {}}, {BET_NCCL_WORKER, scenario});
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    setenv("OMP_NUM_THREADS", "1", 0);  // the ranks share this machine's cores
    if (env_name) setenv(env_name, env_value, 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::fprintf(stderr, "cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  close(fds[1]);
  Run r;
  for (const auto& a : argv) r.command += a + " ";
  bool killed = false;
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  for (;;) {
    pollfd p{fds[0], POLLIN, 0};
    const int ready = poll(&p, 1, 200);
    if (ready > 0) {
      char buf[4096];
      const ssize_t n = read(fds[0], buf, sizeof buf);
      if (n <= 0) break;
      r.output.append(buf, size_t(n));
    }
    if (!killed && elapsed() > limit_s) {
      killed = true;  // mpirun passes SIGTERM on to the ranks
      kill(pid, SIGTERM);
    }
    if (killed && elapsed() > limit_s + 10) kill(pid, SIGKILL);
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.seconds = elapsed();
  r.status = killed ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

int count(const std::string& s, const std::string& needle) {
  int n = 0;
  for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + 1)) ++n;
  return n;
}

// Every rank passed: exit status 0 and one PASS line per rank.
void expect_pass(int nproc, const std::string& scenario, double limit_s, const char* env_name = nullptr,
                 const char* env_value = nullptr) {
  const Run r = run_worker(nproc, scenario, limit_s, env_name, env_value);
  MESSAGE(scenario << " on " << nproc << " ranks: " << r.seconds << " s");
  INFO(r.command << (r.status == -1 ? "(killed at the deadline)" : "") << "\n" << r.output);
  CHECK(r.status == 0);
  for (int rank = 0; rank < nproc; ++rank)
    CHECK(count(r.output, "rank " + std::to_string(rank) + ": PASS " + scenario) == 1);
  CHECK(count(r.output, "FAILED") == 0);
}

}  // namespace

TEST_CASE("nccl: collectives on 2 ranks match the arithmetic (f32, f64, async, argument checks)" * nccl_cases(2)) {
  expect_pass(2, "collectives", 120);
}

TEST_CASE("nccl: collectives on 4 ranks match the arithmetic (f32, f64, async, argument checks)" * nccl_cases(4)) {
  expect_pass(4, "collectives", 180);
}

TEST_CASE("nccl: a rank with a different count fails the collective on every rank, promptly" *
          nccl_cases(2, true)) {
  expect_pass(2, "mismatch", 60);
}

TEST_CASE("nccl: mismatched counts on 4 ranks: every rank throws" * nccl_cases(4, true)) {
  expect_pass(4, "mismatch", 60);
}

TEST_CASE("nccl: a rank that never arrives fails the others after the timeout, naming it" * nccl_cases(2)) {
  expect_pass(2, "absent", 60, "BET_NCCL_EMU_TIMEOUT", "3");
}

TEST_CASE("nccl: a rank that cannot use its device fails the construction on every rank" * nccl_cases(2)) {
  expect_pass(2, "bad_device", 60);
}

TEST_CASE("nccl: the stand-in's contracts (init, pointers, roots, types, destroy, abort)" * nccl_cases(2, true)) {
  expect_pass(2, "standin", 90);
}
