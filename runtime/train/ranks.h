// The ranks of a training run: which communicator carries it (this process alone, MPI
// between CPU processes, NCCL between GPUs), and what the ranks must agree on before
// the first step.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/dist/communicator.h"
#include "runtime/train/train_config.h"
#include "runtime/train/training_data.h"

namespace bet::runtime {

// Local for a plain run; MPI_COMM_WORLD under mpirun; NCCL over it when the device is
// a GPU. `device` is updated to this rank's GPU (cuda:LOCAL_RANK modulo the count).
std::unique_ptr<dist::Communicator> run_communicator(Device& device);

// --threads when not given, for one rank of `comm`: the node's cores shared evenly
// among the ranks on it (at least 1), so N ranks do not each start a pool of every core
// (OpenMP pools that outnumber the cores spin against each other). 0 for one rank:
// the pool's own default.
int default_threads_per_rank(const dist::Communicator& comm);

// What must be the same on every rank: the model config, the flags that shape a step,
// and a hash of the training data and the tokenizer.
nlohmann::json run_fingerprint(const TrainConfig& cfg, const TrainingData& data);

// Refuses a launch whose ranks disagree: throws, on every rank, naming the first rank
// and the field that differ from rank 0's.
void check_ranks_agree(dist::Communicator& comm, const nlohmann::json& fingerprint);

// Loads the run's data on every rank with one tokenizer: rank 0 loads (training the
// tokenizer if asked) and sends the tokenizer; the others encode with it.
TrainingData load_data_on_ranks(dist::Communicator& comm, TrainConfig& cfg, std::string* log,
                                std::unique_ptr<Tokenizer> tokenizer);

// True on every rank when any rank was asked to stop (SIGINT, SIGTERM, SIGUSR1).
bool any_rank_stopping(dist::Communicator& comm, bool mine);

}  // namespace bet::runtime
