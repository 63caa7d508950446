// Starting a data-parallel run: the mpirun command line that `betctl train --nproc N`
// (and the multi-rank tests) run, with what OpenMPI needs on this machine said in one
// place.
#pragma once
#include <string>
#include <vector>

namespace bet::dist {

struct LaunchOptions {
  int nproc = 1;
  // Extra mpirun arguments (e.g. -H host1:8,host2:8), placed before the program.
  std::vector<std::string> mpirun_args;
};

// The argv of `mpirun -np N ... program args...`:
//   --oversubscribe    more ranks than cores is allowed (tests run 4 ranks on 2 cores);
//   --bind-to none     each rank's OpenMP threads may use any core (--threads per rank);
//   --allow-run-as-root  only when running as root: OpenMPI refuses root otherwise, and
//                      CI runs as root (containers); said on stderr when added;
//   -x OMP_NUM_THREADS ... the environment every rank needs.
std::vector<std::string> mpirun_command(const LaunchOptions& opt, const std::vector<std::string>& program_and_args);

// The mpirun program ("mpirun" from PATH, or $BET_MPIRUN); empty when none is found.
std::string find_mpirun();

// Runs argv (no shell) and returns its exit status (128 + signal when killed). SIGINT
// and SIGTERM received meanwhile are passed on to the child as SIGUSR1, which mpirun
// forwards to every rank: the ranks agree on a step, checkpoint once and stop.
int run_forwarding_signals(const std::vector<std::string>& argv);

}  // namespace bet::dist
