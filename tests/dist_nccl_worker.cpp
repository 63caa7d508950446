// One rank of tests/test_nccl_standin.cpp, started by mpirun: the NCCL communicator
// (engine/dist/nccl_communicator.cpp over the MPI one) on this rank's GPU, real or
// emulated, checked against the arithmetic. Prints "rank R: ..." lines and, when
// every check held, "rank R: PASS <scenario>"; exits 1 otherwise.
//
//   collectives  every tensor collective, f32 and f64, sizes that span several of the
//                stand-in's chunks; the async all-reduce with compute in between; the
//                argument checks; the host-side control methods
//   mismatch     rank 1 all-reduces one element more: every rank throws, promptly
//   absent       rank 1 skips an all-reduce: the others throw (timeout 3 s) naming it
//   bad_device   rank 1 asks for a device it lacks: every rank's constructor throws
//   standin      the NCCL stand-in's own contracts through NCCL's API (emulated only)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bet_config.h"
#include "engine/device.h"
#include "engine/dist/communicator.h"
#include "engine/ops.h"
#include "engine/tensor.h"

#ifndef BET_NCCL_EMULATED
#define BET_NCCL_EMULATED 0
#endif
#if BET_HAVE_NCCL && BET_NCCL_EMULATED
#include <cuda_runtime.h>
#include <nccl.h>
#endif

using namespace bet;
using Clock = std::chrono::steady_clock;

namespace {

int g_rank = -1;
int g_failures = 0;

template <typename... A>
void say(const char* fmt, A... a) {
  std::printf("rank %d: ", g_rank);
  std::printf(fmt, a...);
  std::printf("\n");
  std::fflush(stdout);
}

#define EXPECT(cond, ...)                                          \
  do {                                                             \
    if (!(cond)) {                                                 \
      ++g_failures;                                                \
      say("FAILED at line %d: %s", __LINE__, #cond);               \
      say(__VA_ARGS__);                                            \
    }                                                              \
  } while (0)

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

Tensor make(DType dt, int64_t n, Device dev, const std::function<double(int64_t)>& f) {
  Tensor h = Tensor::empty({n}, dt);
  for (int64_t i = 0; i < n; ++i) {
    if (dt == DType::F32) h.data<float>()[i] = float(f(i));
    else h.data<double>()[i] = f(i);
  }
  return h.to(dev);
}

// Exact comparison (every expected value is exact in f32): the first mismatch.
void check(const char* what, const Tensor& t, int64_t n, const std::function<double(int64_t)>& f) {
  EXPECT(t.numel() == n, "%s: %lld elements, expected %lld", what, (long long)t.numel(), (long long)n);
  Tensor h = t.to(Device::cpu());
  for (int64_t i = 0; i < n; ++i) {
    const double got = h.dtype() == DType::F32 ? double(h.data<float>()[i]) : h.data<double>()[i];
    if (got != f(i)) {
      ++g_failures;
      say("FAILED: %s (%s, n=%lld): element %lld is %.17g, expected %.17g", what, dtype_name(t.dtype()),
          (long long)n, (long long)i, got, f(i));
      return;
    }
  }
}

// `fn` must throw bet::Error whose message contains `needle`.
template <typename F>
void expect_error(const char* what, F fn, const char* needle) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT(std::strstr(e.what(), needle) != nullptr, "%s: the error '%s' does not mention '%s'", what, e.what(),
           needle);
    return;
  }
  ++g_failures;
  say("FAILED: %s did not throw", what);
}

void collectives(dist::Communicator& comm, DType dt) {
  const int R = comm.size(), r = comm.rank();
  const Device dev = comm.device();
  const double S = R * (R + 1) / 2.0;  // sum over ranks of (rank + 1)
  // 300001 f32 / f64 elements span 2 / 3 chunks of the stand-in's 1 MiB area.
  for (int64_t n : {int64_t(1), int64_t(1000), int64_t(300001)}) {
    Tensor t = make(dt, n, dev, [&](int64_t i) { return (r + 1) + (i % 7) * 0.5; });
    comm.all_reduce_sum(t);
    check("all_reduce_sum", t, n, [&](int64_t i) { return S + R * (i % 7) * 0.5; });
  }
  {
    // Buckets in flight while the compute stream works on something else; each
    // waited in issue order, then read by a kernel (ordered after the sum).
    const std::vector<int64_t> sizes{5000, 1, 262145};
    std::vector<Tensor> buckets;
    std::vector<std::unique_ptr<dist::Work>> work;
    Tensor other = make(dt, 4096, dev, [](int64_t i) { return double(i); });
    for (size_t b = 0; b < sizes.size(); ++b) {
      buckets.push_back(make(dt, sizes[b], dev, [&](int64_t i) { return (r + 1) * double(b + 1) + (i % 5); }));
      work.push_back(comm.all_reduce_sum_async(buckets.back()));
      other = mul(other, 1.0);
    }
    for (auto& w : work) w->wait();
    for (size_t b = 0; b < sizes.size(); ++b)
      check("all_reduce_sum_async + 1", add(buckets[b], 1.0), sizes[b],
            [&](int64_t i) { return S * double(b + 1) + R * double(i % 5) + 1; });
    check("compute between the async all-reduces", other, 4096, [](int64_t i) { return double(i); });
    // A Work dropped without wait() still orders the compute stream after it.
    Tensor t = make(dt, 3, dev, [&](int64_t) { return 1.0; });
    comm.all_reduce_sum_async(t).reset();
    check("all_reduce_sum_async (not waited)", t, 3, [&](int64_t) { return double(R); });
  }
  {
    const int64_t n = 70001;  // with 4 ranks f64: 3 chunks of the reduce-scatter area
    Tensor in = make(dt, R * n, dev, [&](int64_t j) { return (r + 1) * double(j % 1000 + 1); });
    Tensor out = make(dt, n, dev, [](int64_t) { return -1.0; });
    comm.reduce_scatter_sum(in, out);
    check("reduce_scatter_sum", out, n, [&](int64_t i) { return S * double((r * n + i) % 1000 + 1); });
  }
  {
    const int64_t n = 300001;
    Tensor in = make(dt, n, dev, [&](int64_t i) { return r * 1000.0 + i % 1000; });
    Tensor out = make(dt, R * n, dev, [](int64_t) { return -1.0; });
    comm.all_gather(in, out);
    check("all_gather", out, R * n, [&](int64_t j) { return (j / n) * 1000.0 + (j % n) % 1000; });
  }
  for (int root : {0, R - 1}) {
    Tensor t = make(dt, 200001, dev, [&](int64_t i) { return r == root ? double(i % 13) : -1.0; });
    comm.broadcast(t, root);
    check("broadcast", t, 200001, [](int64_t i) { return double(i % 13); });
  }
}

void argument_checks(dist::Communicator& comm) {
  const Device dev = comm.device();
  Tensor cpu = Tensor::ones({4});
  expect_error("a CPU tensor", [&] { comm.all_reduce_sum(cpu); }, "communicator's device");
  Tensor i32 = Tensor::ones({4}, DType::I32, dev);
  expect_error("an i32 tensor", [&] { comm.all_reduce_sum(i32); }, "f32 or f64");
  Tensor strided = transpose(Tensor::ones({3, 5}, DType::F32, dev), 0, 1);
  expect_error("a transposed tensor", [&] { comm.all_reduce_sum(strided); }, "contiguous");
  Tensor in = Tensor::ones({7}, DType::F32, dev), out = Tensor::ones({3}, DType::F32, dev);
  expect_error("reduce_scatter_sum sizes", [&] { comm.reduce_scatter_sum(in, out); }, "size() * out.numel()");
  expect_error("all_gather sizes", [&] { comm.all_gather(out, in); }, "size() * in.numel()");
  Tensor f64 = Tensor::ones({7 * comm.size()}, DType::F64, dev);
  expect_error("all_gather dtypes", [&] { comm.all_gather(in, f64); }, "out is");
  expect_error("broadcast root", [&] { comm.broadcast(in, comm.size()); }, "is not a rank");
  // None of that reached NCCL: the communicator still works.
  Tensor t = Tensor::ones({5}, DType::F32, dev);
  comm.all_reduce_sum(t);
  check("all_reduce_sum after the refused calls", t, 5, [&](int64_t) { return double(comm.size()); });
}

void host_control(dist::Communicator& comm) {
  const int R = comm.size(), r = comm.rank();
  std::vector<double> v{double(r), 1.0};
  comm.all_reduce_sum(v);
  EXPECT(v[0] == R * (R - 1) / 2.0 && v[1] == R, "host all_reduce_sum: %g %g", v[0], v[1]);
  std::vector<double> m{double(r)};
  comm.all_reduce_max(m);
  EXPECT(m[0] == R - 1, "host all_reduce_max: %g", m[0]);
  std::string b = r == 0 ? "from rank 0" : "";
  comm.broadcast_bytes(b, 0);
  EXPECT(b == "from rank 0", "broadcast_bytes: '%s'", b.c_str());
  // Of different lengths, so that the gather cannot assume one size.
  const auto all = comm.all_gather_bytes(std::string(size_t(r) + 1, char('a' + r)));
  EXPECT(int(all.size()) == R, "all_gather_bytes: %d strings", int(all.size()));
  for (int q = 0; q < int(all.size()); ++q)
    EXPECT(all[q] == std::string(size_t(q) + 1, char('a' + q)), "all_gather_bytes[%d]", q);
  comm.barrier();
}

// Rank 1's all-reduce has one element more: NCCL itself would hang or mix data; the
// stand-in fails the collective on every rank, naming both sides.
void mismatch(dist::Communicator& comm) {
  const auto t0 = Clock::now();
  Tensor t = Tensor::ones({1000 + (comm.rank() == 1 ? 1 : 0)}, DType::F32, comm.device());
  bool threw = false;
  try {
    comm.all_reduce_sum(t);
  } catch (const dist::CommError& e) {
    threw = true;
    say("mismatch: CommError after %.2f s: %s", seconds_since(t0), e.what());
    EXPECT(std::strstr(e.what(), "count=1000") && std::strstr(e.what(), "count=1001"),
           "the error names both counts");
  }
  EXPECT(threw, "the mismatched all_reduce_sum did not throw");
  EXPECT(seconds_since(t0) < 10, "the mismatch took %.1f s to surface", seconds_since(t0));
  Tensor u = Tensor::ones({8}, DType::F32, comm.device());
  expect_error("a collective after the failure", [&] { comm.all_reduce_sum(u); }, "failed earlier");
  comm.barrier();  // host control still works
}

// Rank 1 never calls the all-reduce: the others fail within the timeout, naming it
// (the stand-in knows who is missing; real NCCL does not say).
void absent(dist::Communicator& comm) {
  comm.set_timeout(3);
  if (comm.rank() != 1) {
    const auto t0 = Clock::now();
    Tensor t = Tensor::ones({100}, DType::F32, comm.device());
    bool threw = false;
    try {
      comm.all_reduce_sum(t);
      bet::synchronize(comm.device());
    } catch (const dist::CommError& e) {
      threw = true;
      say("absent: CommError after %.2f s: %s", seconds_since(t0), e.what());
      if (BET_NCCL_EMULATED) EXPECT(std::strstr(e.what(), "rank 1 of") != nullptr, "the error names rank 1");
    }
    EXPECT(threw, "the all_reduce_sum without rank 1 did not throw");
    EXPECT(seconds_since(t0) < 20, "the lost rank took %.1f s to surface", seconds_since(t0));
  }
  comm.barrier();
}

#if BET_HAVE_NCCL && BET_NCCL_EMULATED

// The stand-in's contracts, through NCCL's API on this rank's emulated device.
struct Raw {
  dist::Communicator& host;
  int R, r, dev;

  ncclUniqueId fresh_id() {
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    std::string b;
    if (r == 0) {
      EXPECT(ncclGetUniqueId(&id) == ncclSuccess, "ncclGetUniqueId");
      b.assign(id.internal, sizeof id.internal);
    }
    host.broadcast_bytes(b, 0);
    std::memcpy(id.internal, b.data(), sizeof id.internal);
    return id;
  }
  ncclComm_t comm() {
    ncclComm_t c = nullptr;
    const ncclResult_t res = ncclCommInitRank(&c, R, fresh_id(), r);
    EXPECT(res == ncclSuccess, "ncclCommInitRank: %s", ncclGetLastError(nullptr));
    return c;
  }
  void* device_buffer(size_t bytes, int on) {
    void* p = nullptr;
    cudaSetDevice(on);
    cudaMalloc(&p, bytes);
    cudaSetDevice(dev);
    return p;
  }
  // Every rank's result must be `want` (or, with want_peer, that for the ranks other
  // than `culprit`), the message must mention `needle`, and come promptly.
  void expect(const char* what, ncclResult_t got, ncclResult_t want, ncclComm_t c, const char* needle,
              Clock::time_point t0) {
    const char* msg = ncclGetLastError(c);
    say("%s: %s (%s) after %.2f s", what, ncclGetErrorString(got), msg, seconds_since(t0));
    EXPECT(got == want, "%s: got %d, expected %d", what, int(got), int(want));
    EXPECT(std::strstr(msg, needle) != nullptr, "%s: the message does not mention '%s'", what, needle);
    EXPECT(seconds_since(t0) < 10, "%s: took %.1f s", what, seconds_since(t0));
  }
};

void standin(dist::Communicator& host) {
  Raw x{host, host.size(), host.rank(), host.device().index};
  cudaSetDevice(x.dev);
  const size_t n = 1000;
  float* d = static_cast<float*>(x.device_buffer(n * sizeof(double) * x.R, x.dev));
  std::vector<float> h(n, 1.0f);

  auto t0 = Clock::now();
  ncclComm_t c = nullptr;
  x.expect("init with rank out of range", ncclCommInitRank(&c, x.R, x.fresh_id(), x.R + x.r), ncclInvalidArgument,
           nullptr, "rank out of range", t0);

  t0 = Clock::now();
  const ncclResult_t init = ncclCommInitRank(&c, x.r == 1 ? x.R + 1 : x.R, x.fresh_id(), x.r);
  say("init with nranks %d: %s (%s) after %.2f s", x.r == 1 ? x.R + 1 : x.R, ncclGetErrorString(init),
      ncclGetLastError(nullptr), seconds_since(t0));
  EXPECT(init != ncclSuccess, "an init with mismatched nranks succeeded");
  EXPECT(std::strstr(ncclGetLastError(nullptr), "nranks") != nullptr, "the message names nranks");
  EXPECT(seconds_since(t0) < 10, "the nranks mismatch took %.1f s", seconds_since(t0));

  // Matching collectives work (in place, a reduction besides the sum, an int type).
  c = x.comm();
  {
    std::vector<int32_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = int32_t(i % 10) * (x.r + 1);
    cudaMemcpy(d, v.data(), n * 4, cudaMemcpyHostToDevice);
    EXPECT(ncclAllReduce(d, d, n, ncclInt32, ncclMax, c, nullptr) == ncclSuccess, "ncclAllReduce max");
    cudaMemcpy(v.data(), d, n * 4, cudaMemcpyDeviceToHost);
    EXPECT(v[7] == 7 * x.R, "max: %d", v[7]);
    int count = 0, rank = -1, device = -1;
    ncclCommCount(c, &count);
    ncclCommUserRank(c, &rank);
    ncclCommCuDevice(c, &device);
    EXPECT(count == x.R && rank == x.r && device == x.dev, "count %d rank %d device %d", count, rank, device);
  }
  // A host pointer on rank 0: rank 0's call is invalid, the others' cannot run.
  t0 = Clock::now();
  ncclResult_t res = ncclAllReduce(x.r == 0 ? static_cast<const void*>(h.data()) : d, d, n, ncclFloat32, ncclSum, c,
                                   nullptr);
  x.expect("a host sendbuff on rank 0", res, x.r == 0 ? ncclInvalidArgument : ncclInvalidUsage, c,
           x.r == 0 ? "not device memory" : "rank 0 passed invalid arguments", t0);
  ncclResult_t async = ncclSuccess;
  ncclCommGetAsyncError(c, &async);
  EXPECT(async != ncclSuccess, "no async error after a failed collective");
  EXPECT(ncclCommDestroy(c) == ncclSuccess, "ncclCommDestroy");
  t0 = Clock::now();
  x.expect("use after destroy", ncclAllReduce(d, d, n, ncclFloat32, ncclSum, c, nullptr), ncclInvalidUsage, c,
           "after ncclCommDestroy", t0);

  // Another device's memory (the emulator has two).
  c = x.comm();
  float* other = static_cast<float*>(x.device_buffer(n * 4, 1 - x.dev));
  t0 = Clock::now();
  res = ncclAllReduce(x.r == 1 ? other : d, d, n, ncclFloat32, ncclSum, c, nullptr);
  x.expect("another device's sendbuff on rank 1", res, x.r == 1 ? ncclInvalidArgument : ncclInvalidUsage, c,
           x.r == 1 ? "memory of cuda:" : "rank 1 passed invalid arguments", t0);
  ncclCommDestroy(c);

  // A root that is not a rank: every rank's own call is invalid.
  c = x.comm();
  t0 = Clock::now();
  x.expect("broadcast root = nranks", ncclBroadcast(d, d, n, ncclFloat32, x.R, c, nullptr), ncclInvalidArgument, c,
           "is not a rank", t0);
  ncclCommDestroy(c);

  // Different dtypes, then different collectives, at the same position.
  c = x.comm();
  t0 = Clock::now();
  res = ncclAllReduce(d, d, n, x.r == 1 ? ncclFloat64 : ncclFloat32, ncclSum, c, nullptr);
  x.expect("dtype mismatch", res, ncclInvalidUsage, c, "ncclFloat64", t0);
  ncclCommDestroy(c);
  c = x.comm();
  t0 = Clock::now();
  res = x.r == 0 ? ncclAllGather(d, d, n, ncclFloat32, c, nullptr) : ncclAllReduce(d, d, n, ncclFloat32, ncclSum, c, nullptr);
  x.expect("collective mismatch", res, ncclInvalidUsage, c, "ncclAllGather(count=1000", t0);
  ncclCommDestroy(c);

  // A peer that aborts instead of joining: the others fail at once, naming it.
  c = x.comm();
  t0 = Clock::now();
  if (x.r == 1) {
    EXPECT(ncclCommAbort(c) == ncclSuccess, "ncclCommAbort");
  } else {
    x.expect("a peer aborted", ncclAllReduce(d, d, n, ncclFloat32, ncclSum, c, nullptr), ncclRemoteError, c,
             "rank 1 aborted", t0);
    ncclCommDestroy(c);
  }
  cudaFree(other);
  cudaFree(d);
}

#endif

}  // namespace

int main(int argc, char** argv) {
  const std::string scenario = argc > 1 ? argv[1] : "collectives";
  try {
    std::unique_ptr<dist::Communicator> host = dist::mpi_communicator();
    g_rank = host->rank();
    const int ndev = cuda_device_count();
    if (ndev == 0) {
      say("no CUDA device");
      return 1;
    }
    const Device dev = Device::cuda(g_rank % ndev);
    const auto t0 = Clock::now();
    if (scenario == "bad_device") {
      // Rank 1 asks for a device it does not have: every rank's construction throws
      // (none is left waiting in ncclCommInitRank for it).
      try {
        dist::nccl_communicator(std::move(host), g_rank == 1 ? Device::cuda(ndev + 5) : dev);
        EXPECT(false, "nccl_communicator with a missing device on rank 1 did not throw");
      } catch (const dist::CommError& e) {
        say("bad_device: CommError after %.2f s: %s", seconds_since(t0), e.what());
        EXPECT(std::strstr(e.what(), ("rank 1 cannot use cuda:" + std::to_string(ndev + 5)).c_str()) != nullptr,
               "the error names rank 1 and its device");
      }
      say("%s %s in %.2f s", g_failures ? "FAIL" : "PASS", scenario.c_str(), seconds_since(t0));
      return g_failures ? 1 : 0;
    }
    std::unique_ptr<dist::Communicator> comm = dist::nccl_communicator(std::move(host), dev);
    say("nccl communicator on %s, %d ranks, in %.2f s", dev.str().c_str(), comm->size(), seconds_since(t0));
    EXPECT(comm->backend() == "nccl" && comm->device() == dev && comm->rank() == g_rank, "identity");
    if (scenario == "collectives") {
      collectives(*comm, DType::F32);
      comm->set_timeout(30);  // the host-polling path of every collective
      collectives(*comm, DType::F64);
      argument_checks(*comm);
      host_control(*comm);
    } else if (scenario == "mismatch") {
      mismatch(*comm);
    } else if (scenario == "absent") {
      absent(*comm);
#if BET_HAVE_NCCL && BET_NCCL_EMULATED
    } else if (scenario == "standin") {
      standin(*comm);
      comm->barrier();
#endif
    } else {
      say("unknown scenario '%s'", scenario.c_str());
      return 2;
    }
    say("%s %s in %.2f s", g_failures ? "FAIL" : "PASS", scenario.c_str(), seconds_since(t0));
  } catch (const std::exception& e) {
    say("FAIL: %s", e.what());
    return 1;
  }
  return g_failures ? 1 : 0;
}
