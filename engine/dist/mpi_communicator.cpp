// The MPI backend: MPI_COMM_WORLD between processes and nodes, for CPU tensors and for
// every host-side control message (the NCCL backend delegates those here).
//
// Every collective is started non-blocking and waited with a deadline, so a peer that
// died or hung turns into a CommError after timeout() instead of a hang (mpirun itself
// ends the job when a rank exits abnormally, naming it). Asynchronous all-reduces run
// on one communication thread, in issue order, so a gradient bucket is summed while
// backward goes on computing the next; the caller's thread makes no MPI call while
// that thread has work (MPI_THREAD_SERIALIZED is all this needs).
#include "bet_config.h"
#include "engine/dist/communicator.h"

#if BET_HAVE_MPI
// The C API only (OpenMPI's header would otherwise pull in its deprecated C++ bindings).
#define OMPI_SKIP_MPICXX 1
#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#endif

namespace bet::dist {

#if !BET_HAVE_MPI

std::unique_ptr<Communicator> mpi_communicator() {
  fail("this betctl was built without MPI (install libopenmpi-dev and rebuild)");
}
void abort_job(int) {}

#else

namespace {

using Clock = std::chrono::steady_clock;

// MPI_Init once per process, MPI_Finalize at exit (unless the job is being aborted).
struct MpiRuntime {
  MpiRuntime() {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
      BET_CHECK(provided >= MPI_THREAD_SERIALIZED, "MPI: the library cannot serve a communication thread");
    }
    // Errors come back as codes (turned into CommError), never as MPI's own abort.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ~MpiRuntime() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
};

MpiRuntime& mpi_runtime() {
  static MpiRuntime rt;
  return rt;
}

MPI_Datatype mpi_type(DType t, const char* what) {
  if (t == DType::F32) return MPI_FLOAT;
  if (t == DType::F64) return MPI_DOUBLE;
  fail(what, ": MPI collectives take f32 or f64 tensors, got ", dtype_name(t));
}

class MpiCommunicator;

struct MpiWork final : Work {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::string error;
  Tensor keep;  // the bucket stays alive until the sum lands
  void wait() override {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    if (!error.empty()) throw CommError(error);
  }
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    mpi_runtime();
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm_dup(MPI_COMM_WORLD, &ping_comm_);
    MPI_Comm_set_errhandler(ping_comm_, MPI_ERRORS_RETURN);
    if (const char* t = std::getenv("BET_COMM_TIMEOUT"); t != nullptr && *t) timeout_s_ = std::atof(t);
  }
  ~MpiCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      stopping_ = true;
    }
    queue_cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  Device device() const override { return Device::cpu(); }

  void all_reduce_sum(Tensor& t) override {
    check_operand(t, "all_reduce");
    drain();
    reduce_in_place(t.raw_data(), t.numel(), mpi_type(t.dtype(), "all_reduce"), MPI_SUM, "all_reduce");
  }

  std::unique_ptr<Work> all_reduce_sum_async(Tensor t) override {
    check_operand(t, "all_reduce_async");
    auto work = std::make_shared<MpiWork>();
    work->keep = t;
    {
      std::lock_guard<std::mutex> lock(queue_mu_);
      if (!worker_.joinable()) worker_ = std::thread([this] { worker_loop(); });
      queue_.push_back(work);
      pending_++;
    }
    queue_cv_.notify_all();
    struct Handle final : Work {
      std::shared_ptr<MpiWork> w;
      void wait() override { w->wait(); }
    };
    auto h = std::make_unique<Handle>();
    h->w = std::move(work);
    return h;
  }

  void reduce_scatter_sum(const Tensor& in, Tensor& out) override {
    check_pair(in, out, "reduce_scatter", false);
    drain();
    MPI_Request req;
    check(MPI_Ireduce_scatter_block(in.raw_data(), out.raw_data(), int(out.numel()), mpi_type(in.dtype(), ""),
                                    MPI_SUM, MPI_COMM_WORLD, &req),
          "reduce_scatter");
    wait_request(req, "reduce_scatter");
  }

  void all_gather(const Tensor& in, Tensor& out) override {
    check_pair(in, out, "all_gather", true);
    drain();
    MPI_Request req;
    const MPI_Datatype ty = mpi_type(in.dtype(), "");
    check(MPI_Iallgather(in.raw_data(), int(in.numel()), ty, out.raw_data(), int(in.numel()), ty, MPI_COMM_WORLD,
                         &req),
          "all_gather");
    wait_request(req, "all_gather");
  }

  void broadcast(Tensor& t, int root) override {
    check_operand(t, "broadcast");
    check_root(root, "broadcast");
    drain();
    MPI_Request req;
    check(MPI_Ibcast(t.raw_data(), int(t.numel()), mpi_type(t.dtype(), ""), root, MPI_COMM_WORLD, &req), "broadcast");
    wait_request(req, "broadcast");
  }

  void all_reduce_sum(std::vector<double>& v) override {
    drain();
    reduce_in_place(v.data(), int64_t(v.size()), MPI_DOUBLE, MPI_SUM, "all_reduce (control)");
  }
  void all_reduce_max(std::vector<double>& v) override {
    drain();
    reduce_in_place(v.data(), int64_t(v.size()), MPI_DOUBLE, MPI_MAX, "all_reduce max (control)");
  }

  void broadcast_bytes(std::string& bytes, int root) override {
    drain();
    long long n = (long long)bytes.size();
    MPI_Request req;
    check(MPI_Ibcast(&n, 1, MPI_LONG_LONG, root, MPI_COMM_WORLD, &req), "broadcast (size)");
    wait_request(req, "broadcast (size)");
    bytes.resize(size_t(n));
    check(MPI_Ibcast(bytes.data(), int(n), MPI_BYTE, root, MPI_COMM_WORLD, &req), "broadcast (bytes)");
    wait_request(req, "broadcast (bytes)");
  }

  std::vector<std::string> all_gather_bytes(const std::string& mine) override {
    drain();
    int n = int(mine.size());
    std::vector<int> sizes(size_t(size_), 0), offsets(size_t(size_), 0);
    MPI_Request req;
    check(MPI_Iallgather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, MPI_COMM_WORLD, &req), "all_gather (sizes)");
    wait_request(req, "all_gather (sizes)");
    int total = 0;
    for (int r = 0; r < size_; ++r) {
      offsets[size_t(r)] = total;
      total += sizes[size_t(r)];
    }
    std::string all(size_t(total), '\0');
    check(MPI_Iallgatherv(mine.data(), n, MPI_BYTE, all.data(), sizes.data(), offsets.data(), MPI_BYTE,
                          MPI_COMM_WORLD, &req),
          "all_gather (bytes)");
    wait_request(req, "all_gather (bytes)");
    std::vector<std::string> out;
    for (int r = 0; r < size_; ++r) out.push_back(all.substr(size_t(offsets[size_t(r)]), size_t(sizes[size_t(r)])));
    return out;
  }

  void barrier() override {
    drain();
    MPI_Request req;
    check(MPI_Ibarrier(MPI_COMM_WORLD, &req), "barrier");
    wait_request(req, "barrier");
  }

 private:
  void check(int rc, const char* what) const {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw CommError("rank " + std::to_string(rank_) + ": MPI " + what + " failed: " + std::string(msg, size_t(len)));
  }

  // Polls the request until it completes or timeout() passes. Spins briefly (a
  // collective between ranks on one node completes in microseconds), then sleeps
  // between polls so a waiting rank leaves its core to the others.
  //
  // Naming the rank at fault: every waiting rank answers pings (on a communicator of
  // their own); halfway to the deadline a waiting rank pings every peer, so when the
  // deadline passes it can say which ranks never answered: dead, stopped, or stuck
  // outside MPI. A rank that answered is alive and waiting too.
  void wait_request(MPI_Request& req, const char* what) {
    const auto t0 = Clock::now();
    int done = 0, polls = 0;
    bool pinged = false;
    std::vector<char> answered(size_t(size_), 0);
    answered[size_t(rank_)] = 1;
    const int seq = ++wait_seq_;
    std::vector<MPI_Request> ping_reqs;
    while (true) {
      check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
      if (done) break;
      if (++polls > 2000) std::this_thread::sleep_for(std::chrono::microseconds(50));
      if ((polls & 63) != 0) continue;
      if (size_ > 1) serve_pings(answered, seq);
      if (timeout_s_ <= 0) continue;
      const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
      if (!pinged && waited > timeout_s_ / 2) {
        pinged = true;
        for (int p = 0; p < size_; ++p) {
          if (p == rank_) continue;
          MPI_Request r;
          MPI_Isend(&keep_payload(seq), 1, MPI_INT, p, kPing, ping_comm_, &r);
          ping_reqs.push_back(r);
        }
      }
      if (waited > timeout_s_) {
        std::string silent;
        for (int p = 0; p < size_; ++p)
          if (!answered[size_t(p)]) silent += (silent.empty() ? "rank " : ", rank ") + std::to_string(p);
        throw CommError("rank " + std::to_string(rank_) + ": " + what + " did not complete within " +
                        std::to_string(int(timeout_s_)) + " s: " +
                        (silent.empty() ? std::string("every rank answered a ping, so the ranks are waiting in "
                                                      "different collectives")
                                        : silent + " did not answer (dead, stopped or stuck)"));
      }
    }
    // Pings still in flight to a live peer complete once it polls; a request to a
    // dead peer is dropped with the run.
    for (MPI_Request& r : ping_reqs) MPI_Request_free(&r);
  }

  // A message's payload, kept alive until its send has surely completed (sends are
  // freed, not waited: one to a dead peer never completes).
  int& keep_payload(int value) {
    payloads_.push_back(value);
    if (payloads_.size() > 4096) payloads_.pop_front();
    return payloads_.back();
  }

  // Answers pings from waiting peers and records the answers to our own.
  void serve_pings(std::vector<char>& answered, int seq) {
    int flag = 0;
    MPI_Status st;
    while (MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, ping_comm_, &flag, &st) == MPI_SUCCESS && flag) {
      int value = 0;
      MPI_Recv(&value, 1, MPI_INT, st.MPI_SOURCE, st.MPI_TAG, ping_comm_, MPI_STATUS_IGNORE);
      if (st.MPI_TAG == kPing) {
        MPI_Request r;
        MPI_Isend(&keep_payload(value), 1, MPI_INT, st.MPI_SOURCE, kPong, ping_comm_, &r);
        MPI_Request_free(&r);
      } else if (value == seq) {
        answered[size_t(st.MPI_SOURCE)] = 1;
      }
    }
  }

  void reduce_in_place(void* data, int64_t n, MPI_Datatype ty, MPI_Op op, const char* what) {
    // MPI counts are int: sum in pieces of at most 2^30 elements.
    const int64_t piece = int64_t(1) << 30;
    int elem = 0;
    MPI_Type_size(ty, &elem);
    for (int64_t off = 0; off < n; off += piece) {
      const int count = int(std::min(piece, n - off));
      MPI_Request req;
      check(MPI_Iallreduce(MPI_IN_PLACE, static_cast<char*>(data) + off * elem, count, ty, op, MPI_COMM_WORLD, &req),
            what);
      wait_request(req, what);
    }
  }

  void worker_loop() {
    while (true) {
      std::shared_ptr<MpiWork> w;
      {
        std::unique_lock<std::mutex> lock(queue_mu_);
        queue_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        w = queue_.front();
        queue_.pop_front();
      }
      std::string error;
      try {
        reduce_in_place(w->keep.raw_data(), w->keep.numel(), mpi_type(w->keep.dtype(), ""), MPI_SUM,
                        "all_reduce (gradient bucket)");
      } catch (const std::exception& e) {
        error = e.what();
      }
      {
        std::lock_guard<std::mutex> lock(w->mu);
        w->done = true;
        w->error = error;
        w->keep = Tensor();
      }
      w->cv.notify_all();
      {
        std::lock_guard<std::mutex> lock(queue_mu_);
        pending_--;
      }
      queue_cv_.notify_all();
    }
  }

  // Waits until the communication thread is idle: MPI is then this thread's alone.
  void drain() {
    std::unique_lock<std::mutex> lock(queue_mu_);
    queue_cv_.wait(lock, [&] { return pending_ == 0; });
  }

  static constexpr int kPing = 1, kPong = 2;
  int rank_ = 0, size_ = 1;
  MPI_Comm ping_comm_ = MPI_COMM_NULL;
  int wait_seq_ = 0;
  std::deque<int> payloads_;  // see keep_payload
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::shared_ptr<MpiWork>> queue_;
  int pending_ = 0;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace

std::unique_ptr<Communicator> mpi_communicator() { return std::make_unique<MpiCommunicator>(); }

void abort_job(int code) {
  int inited = 0, finalized = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&finalized);
  if (inited && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
}

#endif

}  // namespace bet::dist
