#include "runtime/train/ranks.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "runtime/checkpoint/config_json.h"

namespace bet::runtime {

std::unique_ptr<dist::Communicator> run_communicator(Device& device) {
  if (!dist::launched_by_mpi()) return dist::local_communicator(device);
  std::unique_ptr<dist::Communicator> mpi = dist::mpi_communicator();
  if (device.is_cpu()) return mpi;
  // One GPU per rank: ranks on a node take its GPUs in local-rank order.
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  const int local_rank = local ? std::atoi(local) : mpi->rank();
  const int count = cuda_device_count();
  BET_CHECK(count > 0, "rank ", mpi->rank(), ": --device ", device.str(), " but this node has no CUDA device");
  device = Device::cuda(local_rank % count);
  return dist::nccl_communicator(std::move(mpi), device);
}

int default_threads_per_rank(const dist::Communicator& comm) {
  if (comm.size() == 1) return 0;
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int ranks_here = local ? std::max(1, std::atoi(local)) : comm.size();
  const int cores = std::max(1, int(std::thread::hardware_concurrency()));
  return std::max(1, cores / ranks_here);
}

nlohmann::json run_fingerprint(const TrainConfig& cfg, const TrainingData& data) {
  XXH64_state_t* h = XXH64_createState();
  XXH64_reset(h, 0);
  auto add_seqs = [&](const std::vector<EncodedSequence>& seqs) {
    for (const EncodedSequence& s : seqs) {
      XXH64_update(h, s.ids.data(), s.ids.size() * sizeof(int32_t));
      XXH64_update(h, &s.label, sizeof(s.label));
    }
  };
  add_seqs(data.train);
  add_seqs(data.val);
  const uint64_t data_hash = XXH64_digest(h);
  XXH64_freeState(h);
  const std::string tok = data.tokenizer ? data.tokenizer->to_json().dump() : "";
  return {{"model", config_to_json(cfg.model)},
          {"batch_size", cfg.batch_size},
          {"lr", cfg.lr},
          {"warmup", cfg.warmup},
          {"weight_decay", cfg.weight_decay},
          {"clip", cfg.clip},
          {"seed", cfg.seed},
          {"mdl_beta", cfg.mdl_beta},
          {"epochs", cfg.epochs},
          {"steps", cfg.steps},
          {"grad_accum", cfg.grad_accum},
          {"shard_optimizer", cfg.shard_optimizer},
          {"precision", cfg.precision},
          {"resume", cfg.resume},
          {"data", {{"train", data.train.size()}, {"val", data.val.size()}, {"xxh64", std::to_string(data_hash)}}},
          {"tokenizer_xxh64", std::to_string(XXH64(tok.data(), tok.size(), 0))}};
}

void check_ranks_agree(dist::Communicator& comm, const nlohmann::json& fingerprint) {
  if (comm.size() == 1) return;
  const std::vector<std::string> all = comm.all_gather_bytes(fingerprint.dump());
  const nlohmann::json ref = nlohmann::json::parse(all[0]);
  for (size_t r = 1; r < all.size(); ++r) {
    const nlohmann::json other = nlohmann::json::parse(all[r]);
    if (other == ref) continue;
    std::string what;
    for (auto it = ref.begin(); it != ref.end(); ++it)
      if (!other.contains(it.key()) || other[it.key()] != it.value()) {
        what = it.key() + " (rank 0: " + it.value().dump() + ", rank " + std::to_string(r) + ": " +
               (other.contains(it.key()) ? other[it.key()].dump() : "missing") + ")";
        break;
      }
    throw dist::CommError("the ranks disagree on the run before its first step: rank " + std::to_string(r) +
                          " differs from rank 0 in " + what + "; every rank must be launched with the same flags and data");
  }
}

TrainingData load_data_on_ranks(dist::Communicator& comm, TrainConfig& cfg, std::string* log,
                                std::unique_ptr<Tokenizer> tokenizer) {
  if (comm.size() == 1 || tokenizer) return load_training_data(cfg, log, std::move(tokenizer));
  // The tokenizer may be trained (spm-train): once, on rank 0, then shared.
  std::string tok_json;
  TrainingData data;
  if (comm.rank() == 0) {
    data = load_training_data(cfg, log, nullptr);
    tok_json = data.tokenizer->to_json().dump();
  }
  comm.broadcast_bytes(tok_json, 0);
  if (comm.rank() != 0) data = load_training_data(cfg, log, Tokenizer::from_json(nlohmann::json::parse(tok_json)));
  return data;
}

bool any_rank_stopping(dist::Communicator& comm, bool mine) {
  if (comm.size() == 1) return mine;
  std::vector<double> v{mine ? 1.0 : 0.0};
  comm.all_reduce_max(v);
  return v[0] > 0;
}

}  // namespace bet::runtime
