// Collectives between the ranks of a data-parallel run. The engine does not invent its
// own transport: OpenMPI between processes and nodes (CPU tensors, and every host-side
// control message), NCCL between GPUs (device tensors). One Communicator per process.
//
// Contracts, the same for every backend (and checked where it is cheap):
//   - every rank calls the same collectives in the same order, with the same element
//     count and dtype (a mismatch is an error naming both sides, never a silent mix);
//   - tensor collectives take contiguous f32 / f64 tensors on the communicator's
//     device and reduce in that dtype (bf16 gradients are reduced as f32);
//   - a collective that does not complete within timeout() throws CommError naming the
//     collective and the ranks that did not arrive (when the backend knows them).
//
// Asynchronous all-reduce (gradient buckets): all_reduce_sum_async starts the sum and
// returns at once; wait() makes its result visible to later work on this rank (the
// host on CPU, the compute stream on a GPU). Buckets must be waited in issue order.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "platform/error.h"

namespace bet::dist {

struct CommError : Error {
  using Error::Error;
};

// A pending asynchronous collective.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "local", "mpi" or "nccl".
  virtual std::string backend() const = 0;
  // Where tensor collectives' operands live.
  virtual Device device() const = 0;

  // ---- tensor collectives (contiguous f32/f64 on device()) ----
  virtual void all_reduce_sum(Tensor& t) = 0;
  virtual std::unique_ptr<Work> all_reduce_sum_async(Tensor t) = 0;
  // in [size()*n] -> out [n]: this rank's chunk (elements [rank*n, (rank+1)*n)) of the sum.
  virtual void reduce_scatter_sum(const Tensor& in, Tensor& out) = 0;
  // in [n] -> out [size()*n]: rank r's `in` at [r*n, (r+1)*n).
  virtual void all_gather(const Tensor& in, Tensor& out) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;

  // ---- host-side control messages (small; always through the host transport) ----
  virtual void all_reduce_sum(std::vector<double>& v) = 0;
  virtual void all_reduce_max(std::vector<double>& v) = 0;
  virtual void broadcast_bytes(std::string& bytes, int root) = 0;
  // Every rank's string, in rank order.
  virtual std::vector<std::string> all_gather_bytes(const std::string& mine) = 0;
  virtual void barrier() = 0;

  // Seconds a collective may take before it is declared lost (0: wait forever).
  double timeout() const { return timeout_s_; }
  void set_timeout(double seconds) { timeout_s_ = seconds; }

 protected:
  // The contracts above, checked the same way by every backend (errors name the
  // backend and the op): a defined, contiguous f32/f64 tensor on device(); for
  // reduce-scatter (gather false) and all-gather (true), one dtype and the whole side
  // holding size() chunks; a root that is a rank.
  void check_operand(const Tensor& t, const char* op) const;
  void check_pair(const Tensor& in, const Tensor& out, const char* op, bool gather) const;
  void check_root(int root, const char* op) const;

  double timeout_s_ = 0;
};

// The one-process communicator: every collective is the identity.
std::unique_ptr<Communicator> local_communicator(Device device = Device::cpu());

// True when this process was started by an MPI launcher (mpirun / mpiexec / srun
// with PMIx): the environment carries a rank.
bool launched_by_mpi();

// MPI_COMM_WORLD (initialises MPI on first use, finalises at exit). CPU tensors only.
// Throws when betctl was built without MPI.
std::unique_ptr<Communicator> mpi_communicator();
// Ends every rank of the job now (MPI_Abort) after this rank hit an error the others
// cannot see; a no-op outside an MPI launch.
void abort_job(int code);

// NCCL between the GPUs of the ranks (one GPU per rank: `device`), with the unique id
// broadcast over `host` (an MPI communicator) and host-side control delegated to it.
// Throws when betctl was built without NCCL (or its emulated stand-in).
std::unique_ptr<Communicator> nccl_communicator(std::unique_ptr<Communicator> host, Device device);

}  // namespace bet::dist
