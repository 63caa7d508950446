// NCCL between the GPUs of the ranks: tensor collectives on device memory, host-side
// control (and the unique id) over the host communicator (MPI). Only NCCL's and the
// CUDA runtime's API, so the same source runs on GPUs and, in the -Dgpu_emulation
// build, on the stand-in of tests/cuda_emu (include/nccl.h, emu_nccl.cpp).
//
// Streams. The engine's kernels launch without a stream (kernels/cuda/launch.cuh) and
// its copies are cudaMemcpy: all of it runs on the device's legacy default stream, the
// compute stream here. Every collective runs on one NCCL stream of its own
// (non-blocking, so it neither waits for nor stalls unrelated compute work): an event
// recorded on the compute stream gates it, an event recorded after it gates the
// compute stream again. One stream for all of a communicator's collectives keeps them
// in issue order on every rank, which NCCL requires. The blocking collectives return
// with the compute stream ordered after them (not the host: the results are read by
// later kernels or copies, which wait); all_reduce_sum_async returns at once and its
// wait() orders the compute stream, so the all-reduce overlaps the compute (backward)
// issued between the two.
//
// Timeouts. NCCL calls return once enqueued; a lost peer shows as work that never
// completes. With timeout() > 0 every collective (and wait()) also waits on the host,
// polling its event and ncclCommGetAsyncError, and after timeout() seconds aborts the
// communicator (which frees the ranks stuck in it) and throws CommError. The host
// then does not run ahead of the GPU past a collective: that is the price of knowing.
// With timeout() == 0 nothing waits on the host. (The emulated stand-in runs each
// collective inside the call and fails it there after its own timeout, which follows
// BET_COMM_TIMEOUT: tests/cuda_emu/include/nccl.h.)
#include "bet_config.h"
#include "engine/dist/communicator.h"
#include "platform/device.h"
#include "platform/error.h"

#if BET_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "platform/cuda/runtime.cuh"
#endif

namespace bet::dist {

#if BET_HAVE_NCCL

namespace {

namespace pc = platform::cuda;

// Events only order work here: no timestamps, which makes record/wait cheaper. (The
// emulated runtime has no such flag; its events are handles.)
#ifdef cudaEventDisableTiming
constexpr unsigned kEventFlags = cudaEventDisableTiming;
#else
constexpr unsigned kEventFlags = cudaEventDefault;
#endif

// The legacy default stream: where the engine's kernels and copies run (above).
const cudaStream_t kCompute = nullptr;

// What the collectives and their Work share; a Work may outlive the communicator's
// user-facing object without dangling.
class Core {
 public:
  Core(int rank, int size, int device, const ncclUniqueId& id) : rank_(rank), size_(size), device_(device) {
    pc::DeviceGuard g(device_);  // NCCL binds the communicator to the current device
    const ncclResult_t r = ncclCommInitRank(&comm_, size_, id, rank_);
    if (r != ncclSuccess) {
      const char* detail = ncclGetLastError(nullptr);
      comm_ = nullptr;
      throw CommError("nccl: ncclCommInitRank failed on rank " + std::to_string(rank_) + " of " +
                      std::to_string(size_) + " (cuda:" + std::to_string(device_) + "): " + ncclGetErrorString(r) +
                      (detail && *detail ? std::string(" (") + detail + ")" : ""));
    }
    BET_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }

  ~Core() {
    try {
      pc::DeviceGuard g(device_);
      // Pending collectives finish before the communicator goes (a Work never
      // waited, a last all-reduce); a stuck one is abandoned by the abort.
      if (comm_ && failed_.empty() && !drained()) failed_ = "shutdown: a collective never completed";
      if (comm_) (void)(failed_.empty() ? ncclCommDestroy(comm_) : ncclCommAbort(comm_));
      for (cudaEvent_t e : free_events_) (void)cudaEventDestroy(e);
      if (stream_) (void)cudaStreamDestroy(stream_);
      (void)cudaGetLastError();
    } catch (...) {  // a destructor reports nothing: the run is ending or already failed
    }
  }

  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  int device() const { return device_; }

  // Enqueues `launch(comm, stream)` on the NCCL stream after the compute stream's work
  // so far; returns the event recorded after it.
  template <typename F>
  cudaEvent_t enqueue(const std::string& what, F launch) {
    if (!failed_.empty()) throw CommError("nccl: " + what + ": the communicator failed earlier: " + failed_);
    pc::DeviceGuard g(device_);
    cudaEvent_t ready = take_event();
    BET_CUDA_CHECK(cudaEventRecord(ready, kCompute));
    BET_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    free_events_.push_back(ready);  // the wait captured it: it may be recorded again
    const ncclResult_t r = launch(comm_, stream_);
    if (r != ncclSuccess) fail(what, r);
    cudaEvent_t done = take_event();
    BET_CUDA_CHECK(cudaEventRecord(done, stream_));
    return done;
  }

  // Orders the compute stream after `done` (and, with a timeout, the host).
  void finish(const std::string& what, cudaEvent_t done, double timeout_s) {
    free_events_.push_back(done);  // reused only after this call: the wait below captures it first
    if (!failed_.empty()) throw CommError("nccl: " + what + ": the communicator failed earlier: " + failed_);
    pc::DeviceGuard g(device_);
    BET_CUDA_CHECK(cudaStreamWaitEvent(kCompute, done, 0));
    if (timeout_s > 0) wait_host(what, done, timeout_s);
  }

 private:
  cudaEvent_t take_event() {
    if (!free_events_.empty()) {
      cudaEvent_t e = free_events_.back();
      free_events_.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    BET_CUDA_CHECK(cudaEventCreateWithFlags(&e, kEventFlags));
    return e;
  }

  std::string where() const { return " on rank " + std::to_string(rank_) + " of " + std::to_string(size_); }

  // A failed collective leaves the communicator unusable: abort it (which releases
  // peers blocked in it) and keep the reason for every later call.
  [[noreturn]] void fail(const std::string& what, ncclResult_t r) {
    const char* detail = ncclGetLastError(comm_);  // before the abort frees the communicator
    failed_ = what + " failed" + where() + ": " + ncclGetErrorString(r) +
              (detail && *detail ? std::string(" (") + detail + ")" : "");
    abort();
    throw CommError("nccl: " + failed_);
  }

  void abort() {
    if (comm_) (void)ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  // Polls `done` until it completes, the communicator reports an error, or the timeout.
  void wait_host(const std::string& what, cudaEvent_t done, double timeout_s) {
    const auto start = std::chrono::steady_clock::now();
    for (int polls = 0;; ++polls) {
      const cudaError_t e = cudaEventQuery(done);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) BET_CUDA_CHECK(e);
      ncclResult_t async = ncclSuccess;
      const ncclResult_t r = ncclCommGetAsyncError(comm_, &async);
      if (r != ncclSuccess) fail(what + " (ncclCommGetAsyncError)", r);
      if (async != ncclSuccess && async != ncclInProgress) fail(what, async);
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > timeout_s) {
        failed_ = what + " did not complete within " + std::to_string(timeout_s) + " s" + where() +
                  " (a rank stopped, crashed, or issued different collectives; NCCL does not say which); "
                  "the communicator is aborted";
        abort();
        throw CommError("nccl: " + failed_);
      }
      // Spin briefly (collectives are often microseconds), then let the core go.
      if (polls < 200) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  }

  // Waits for the NCCL stream to finish (bounded: 30 s), for the destructor.
  bool drained() {
    cudaEvent_t e = nullptr;
    if (cudaEventCreateWithFlags(&e, kEventFlags) != cudaSuccess) return false;
    bool ok = cudaEventRecord(e, stream_) == cudaSuccess;
    const auto start = std::chrono::steady_clock::now();
    while (ok) {
      const cudaError_t q = cudaEventQuery(e);
      if (q == cudaSuccess) break;
      ok = q == cudaErrorNotReady && std::chrono::steady_clock::now() - start < std::chrono::seconds(30);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    (void)cudaEventDestroy(e);
    return ok;
  }

  int rank_, size_, device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::vector<cudaEvent_t> free_events_;
  std::string failed_;  // non-empty once a collective failed (the communicator is aborted)
};

// An all-reduce in flight; holds the tensor (its memory must not be reused before the
// all-reduce read and wrote it) and the core (the stream and communicator it runs on).
class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<Core> core, Tensor t, cudaEvent_t done, double timeout_s)
      : core_(std::move(core)), t_(std::move(t)), done_(done), timeout_s_(timeout_s) {}
  ~NcclWork() override {
    // Never waited: the compute stream still must not reuse the tensor's memory early.
    if (done_) {
      try {
        wait();
      } catch (...) {
      }
    }
  }
  void wait() override {
    if (!done_) return;
    cudaEvent_t e = done_;
    done_ = nullptr;
    core_->finish("all_reduce_sum_async", e, timeout_s_);
  }

 private:
  std::shared_ptr<Core> core_;
  Tensor t_;
  cudaEvent_t done_;
  double timeout_s_;
};

ncclDataType_t nccl_type(DType d) { return d == DType::F64 ? ncclFloat64 : ncclFloat32; }

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Communicator> host, Device device) : host_(std::move(host)), device_(device) {
    BET_CHECK(host_ != nullptr, "nccl_communicator: no host communicator (the NCCL id travels over it)");
    timeout_s_ = host_->timeout();
    // Every rank says whether it can take part before any of them enters
    // ncclCommInitRank, which would wait for a rank that threw here.
    std::string mine;
    if (!device.is_cuda() || device.index < 0 || device.index >= cuda_device_count())
      mine = "rank " + std::to_string(host_->rank()) + " cannot use " + device.str() + " (" +
             std::to_string(cuda_device_count()) + " CUDA devices)";
    std::string refused;
    for (const std::string& e : host_->all_gather_bytes(mine))
      if (!e.empty()) refused += (refused.empty() ? "" : "; ") + e;
    if (!refused.empty()) throw CommError("nccl_communicator: " + refused);
    // Rank 0 makes the id and sends it over the host transport; an empty message
    // tells the others that it could not (so they fail instead of waiting).
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    std::string bytes;
    ncclResult_t r = ncclSuccess;
    if (host_->rank() == 0) {
      r = ncclGetUniqueId(&id);
      if (r == ncclSuccess) bytes.assign(id.internal, sizeof id.internal);
    }
    host_->broadcast_bytes(bytes, 0);
    if (bytes.size() != sizeof id.internal)
      throw CommError(std::string("nccl: rank 0 could not create the NCCL unique id") +
                      (r != ncclSuccess ? std::string(": ") + ncclGetErrorString(r) : std::string()));
    std::memcpy(id.internal, bytes.data(), sizeof id.internal);
    core_ = std::make_shared<Core>(host_->rank(), host_->size(), device.index, id);
  }

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string backend() const override { return "nccl"; }
  Device device() const override { return device_; }

  void all_reduce_sum(Tensor& t) override {
    check_operand(t, "all_reduce_sum");
    run("all_reduce_sum", [&](ncclComm_t c, cudaStream_t s) {
      return ncclAllReduce(t.raw_data(), t.raw_data(), size_t(t.numel()), nccl_type(t.dtype()), ncclSum, c, s);
    });
  }

  std::unique_ptr<Work> all_reduce_sum_async(Tensor t) override {
    check_operand(t, "all_reduce_sum_async");
    cudaEvent_t done = core_->enqueue("all_reduce_sum_async", [&](ncclComm_t c, cudaStream_t s) {
      return ncclAllReduce(t.raw_data(), t.raw_data(), size_t(t.numel()), nccl_type(t.dtype()), ncclSum, c, s);
    });
    return std::make_unique<NcclWork>(core_, std::move(t), done, timeout());
  }

  void reduce_scatter_sum(const Tensor& in, Tensor& out) override {
    check_pair(in, out, "reduce_scatter_sum", false);
    run("reduce_scatter_sum", [&](ncclComm_t c, cudaStream_t s) {
      return ncclReduceScatter(in.raw_data(), out.raw_data(), size_t(out.numel()), nccl_type(in.dtype()), ncclSum, c,
                               s);
    });
  }

  void all_gather(const Tensor& in, Tensor& out) override {
    check_pair(in, out, "all_gather", true);
    run("all_gather", [&](ncclComm_t c, cudaStream_t s) {
      return ncclAllGather(in.raw_data(), out.raw_data(), size_t(in.numel()), nccl_type(in.dtype()), c, s);
    });
  }

  void broadcast(Tensor& t, int root) override {
    check_operand(t, "broadcast");
    check_root(root, "broadcast");
    run("broadcast", [&](ncclComm_t c, cudaStream_t s) {
      return ncclBroadcast(t.raw_data(), t.raw_data(), size_t(t.numel()), nccl_type(t.dtype()), root, c, s);
    });
  }

  // Host-side control: small messages, through the host transport.
  void all_reduce_sum(std::vector<double>& v) override { host_->all_reduce_sum(v); }
  void all_reduce_max(std::vector<double>& v) override { host_->all_reduce_max(v); }
  void broadcast_bytes(std::string& bytes, int root) override { host_->broadcast_bytes(bytes, root); }
  std::vector<std::string> all_gather_bytes(const std::string& mine) override { return host_->all_gather_bytes(mine); }
  void barrier() override { host_->barrier(); }

 private:
  // A blocking collective: enqueued, then the compute stream ordered after it.
  template <typename F>
  void run(const char* what, F launch) {
    core_->finish(what, core_->enqueue(what, launch), timeout());
  }

  // Destroyed after core_ (declared first): host control may be used until the end.
  std::unique_ptr<Communicator> host_;
  Device device_;
  std::shared_ptr<Core> core_;
};

}  // namespace

std::unique_ptr<Communicator> nccl_communicator(std::unique_ptr<Communicator> host, Device device) {
  return std::make_unique<NcclCommunicator>(std::move(host), device);
}

#else  // BET_HAVE_NCCL

std::unique_ptr<Communicator> nccl_communicator(std::unique_ptr<Communicator>, Device) {
  fail("this betctl was built without NCCL (build with nvcc and the toolkit's NCCL, or -Dgpu_emulation=true)");
}

#endif  // BET_HAVE_NCCL

}  // namespace bet::dist
