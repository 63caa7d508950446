// The NCCL stand-in (include/nccl.h): collectives between the emulated GPUs of the
// ranks of an mpirun job, which are separate processes, so the transport is a POSIX
// shared-memory segment that the unique id names (no MPI: the stand-in must not
// depend on what it is tested against).
//
// The segment: a header (state, nranks, a barrier, the failure every rank must see),
// one slot per rank (its pid, how many barriers it entered, and the collective it is
// in: kind, count, dtype, op, root, sequence number) and one data area of kChunk
// bytes per rank. A collective is a loop over chunks of the operands: every rank
// copies its part of the chunk from device memory into its area, a barrier, every
// rank computes its output from all the areas (in rank order, so every rank gets the
// same bits), a barrier. After the first barrier each rank compares all the slots,
// so a mismatch (count, dtype, op, root, kind) is seen by every rank at once: each
// returns ncclInvalidUsage naming both sides instead of mixing data or hanging.
// Barriers are a counter and a generation word in shared memory, waited on with
// futex timeouts: a rank that does not arrive in time, exits, or destroys or aborts
// its communicator fails the collective on every rank that did arrive, naming it.
//
// Calls complete before they return (the emulated runtime has one implicit stream;
// see nccl.h). One host only (shared memory). The segment is unlinked as soon as every
// rank has mapped it (init), so nothing is left behind after a successful init, crash
// or not; a failed init leaves it for late ranks to read the reason from, and
// ncclGetUniqueId removes segments whose creating process is gone.
#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cuda_emu_access.h"
#include "nccl.h"
#include "tests/cuda_emu/emu_internal.h"

namespace {

constexpr uint64_t kIdMagic = 0x3164692d6c63636eULL;   // "nccl-id1"
constexpr uint64_t kShmMagic = 0x316d68732d6c636eULL;  // "ncl-shm1"
constexpr int kMaxRanks = 256;
constexpr size_t kChunk = size_t(1) << 20;  // per-rank data area: larger collectives loop
constexpr char kPrefix[] = "bet-nccl-emu-";

using Clock = std::chrono::steady_clock;

// What the 128 bytes of an ncclUniqueId carry.
struct IdFields {
  uint64_t magic;
  uint64_t nonce;
  char name[64];  // the segment's shm name, "/bet-nccl-emu-<pid>-<nonce>"
};
static_assert(sizeof(IdFields) <= NCCL_UNIQUE_ID_BYTES);

enum Kind : int32_t { kNone = 0, kAllReduce, kReduceScatter, kAllGather, kBroadcast };
const char* kind_name(int32_t k) {
  static const char* names[] = {"(none)", "ncclAllReduce", "ncclReduceScatter", "ncclAllGather", "ncclBroadcast"};
  return k >= 0 && k <= kBroadcast ? names[k] : "(corrupt)";
}

// One rank's slot. `pid` is 0 until the rank claims it at init and -1 after it
// destroyed or aborted its communicator; the rest describes its current collective.
struct alignas(64) Slot {
  std::atomic<int32_t> pid;
  std::atomic<uint64_t> arrivals;  // barriers entered: who is missing from one
  uint64_t seq, count;
  int32_t kind, dtype, op, root, bad;
  char why[200];  // bad: this rank's arguments are invalid (every rank fails the call)
};

struct Shared {
  uint64_t magic, nonce;
  std::atomic<int32_t> state;  // 0 fresh (zero-filled), 1 being set up, 2 ready
  int32_t nranks;
  std::atomic<uint32_t> bar_count, bar_gen;  // bar_gen is the futex word
  std::atomic<int32_t> failed;               // an ncclResult_t every rank must return
  std::atomic<int32_t> failed_claim;
  std::atomic<uint32_t> failed_gen;  // bar_gen when it failed: barriers completed before stand
  char reason[512];
  Slot slots[kMaxRanks];
};
constexpr size_t kHeaderBytes = (sizeof(Shared) + 4095) / 4096 * 4096;

}  // namespace

struct ncclComm {
  int rank = 0, nranks = 0, device = 0;
  Shared* sh = nullptr;
  size_t map_bytes = 0;
  uint64_t seq = 0, arrivals = 0;
  ncclResult_t async_error = ncclSuccess;
  std::string last_error;
  bool dead = false;
  const char* dead_by = "";
};

namespace {

std::mutex g_mu;
std::set<ncclComm*> g_live, g_dead;  // dead ones are kept (never freed): use after destroy is caught
thread_local std::string t_last_error;
thread_local int t_group_depth = 0;
thread_local ncclResult_t t_group_error = ncclSuccess;

// How long a barrier waits for the other ranks: BET_NCCL_EMU_TIMEOUT, else the run's
// collective timeout (BET_COMM_TIMEOUT, which the engine's communicators also read),
// else 60 s. Calls block here (nccl.h), so this is where a lost peer is noticed.
double timeout_s() {
  for (const char* v : {"BET_NCCL_EMU_TIMEOUT", "BET_COMM_TIMEOUT"}) {
    const char* e = std::getenv(v);
    if (e && *e && std::atof(e) > 0) return std::atof(e);
  }
  return 60.0;
}

std::string secs(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", s);
  return b;
}

const char* result_name(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "ncclSuccess";
    case ncclUnhandledCudaError: return "ncclUnhandledCudaError";
    case ncclSystemError: return "ncclSystemError";
    case ncclInternalError: return "ncclInternalError";
    case ncclInvalidArgument: return "ncclInvalidArgument";
    case ncclInvalidUsage: return "ncclInvalidUsage";
    case ncclRemoteError: return "ncclRemoteError";
    case ncclInProgress: return "ncclInProgress";
    default: return "ncclUnknownResult";
  }
}

ncclResult_t fail(ncclComm* c, ncclResult_t r, const std::string& msg) {
  std::fprintf(stderr, "nccl_emu: %s: %s\n", result_name(r), msg.c_str());
  t_last_error = msg;
  if (c) c->last_error = msg;
  if (t_group_depth > 0 && t_group_error == ncclSuccess) t_group_error = r;
  return r;
}

long futex(std::atomic<uint32_t>* w, int op, uint32_t val, const timespec* ts) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(w), op, val, ts, nullptr, 0);
}
void wake_all(Shared* s) { futex(&s->bar_gen, FUTEX_WAKE, INT_MAX, nullptr); }

// Records the failure every rank of the segment will see; false when another rank's
// came first (that one is what everybody reports).
bool poison(Shared* s, ncclResult_t r, const std::string& why) {
  int32_t expect = 0;
  const bool first = s->failed_claim.compare_exchange_strong(expect, 1);
  if (first) {
    s->failed_gen.store(s->bar_gen.load(std::memory_order_acquire), std::memory_order_relaxed);
    std::snprintf(s->reason, sizeof s->reason, "%s", why.c_str());
    s->failed.store(r, std::memory_order_release);
  }
  wake_all(s);
  return first;
}

ncclResult_t remote_failure(ncclComm* c, const char* what) {
  const auto r = ncclResult_t(c->sh->failed.load(std::memory_order_acquire));
  c->async_error = r;
  return fail(c, r, std::string(what) + ": " + c->sh->reason);
}

std::string rank_list(const std::vector<int>& v) {
  std::string s = v.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? (i + 1 == v.size() ? " and " : ", ") : "") + std::to_string(v[i]);
  return s;
}

// Ranks that have not entered this rank's current barrier; `gone` those of them that
// exited or left the communicator (they never will).
std::vector<int> missing(ncclComm* c, std::vector<int>* gone) {
  std::vector<int> m;
  for (int r = 0; r < c->nranks; ++r) {
    const Slot& s = c->sh->slots[r];
    if (s.arrivals.load(std::memory_order_acquire) >= c->arrivals) continue;
    m.push_back(r);
    const int pid = s.pid.load();
    if (gone && (pid < 0 || (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH))) gone->push_back(r);
  }
  return m;
}

// Every rank of the communicator, or a failure naming who did not come.
ncclResult_t barrier(ncclComm* c, const std::string& what) {
  Shared* s = c->sh;
  if (s->failed.load(std::memory_order_acquire)) return remote_failure(c, what.c_str());
  const uint32_t gen = s->bar_gen.load(std::memory_order_acquire);
  s->slots[c->rank].arrivals.store(++c->arrivals, std::memory_order_release);
  if (s->bar_count.fetch_add(1, std::memory_order_acq_rel) + 1 == uint32_t(c->nranks)) {
    s->bar_count.store(0, std::memory_order_relaxed);
    s->bar_gen.fetch_add(1, std::memory_order_release);
    wake_all(s);
  } else {
    const double limit = timeout_s();
    const auto deadline = Clock::now() + std::chrono::duration<double>(limit);
    auto next_check = Clock::now() + std::chrono::milliseconds(500);
    while (s->bar_gen.load(std::memory_order_acquire) == gen) {
      if (s->failed.load(std::memory_order_acquire)) return remote_failure(c, what.c_str());
      const auto now = Clock::now();
      if (now >= next_check || now >= deadline) {
        next_check = now + std::chrono::milliseconds(500);
        std::vector<int> gone;
        const std::vector<int> m = missing(c, &gone);
        std::string why;
        if (!gone.empty())
          why = what + ": " + rank_list(gone) + " of " + std::to_string(c->nranks) +
                " exited or left the communicator (ncclCommDestroy/ncclCommAbort) without joining it (rank " +
                std::to_string(c->rank) + " waited)";
        else if (now >= deadline)
          why = what + ": " + rank_list(m) + " of " + std::to_string(c->nranks) + " did not arrive within " +
                secs(limit) + " s (BET_NCCL_EMU_TIMEOUT or BET_COMM_TIMEOUT; rank " + std::to_string(c->rank) +
                " waited): a rank skipped the collective, or is blocked elsewhere";
        if (!why.empty()) {
          if (!poison(s, ncclRemoteError, why)) return remote_failure(c, what.c_str());
          c->async_error = ncclRemoteError;
          return fail(c, ncclRemoteError, why);
        }
      }
      timespec ts{0, 50 * 1000 * 1000};
      futex(&s->bar_gen, FUTEX_WAIT, gen, &ts);
    }
  }
  // A failure recorded while this barrier was open (a peer timed out or left before the
  // last rank came) fails it here too; one recorded after it completed fails the next.
  if (s->failed.load(std::memory_order_acquire) && s->failed_gen.load(std::memory_order_relaxed) == gen)
    return remote_failure(c, what.c_str());
  return ncclSuccess;
}

// Validates the handle itself: null, destroyed, or never created.
ncclResult_t check_comm(ncclComm_t c, const char* fn) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!c) return fail(nullptr, ncclInvalidArgument, std::string(fn) + ": comm is null");
  if (g_dead.count(c))
    return fail(c, ncclInvalidUsage, std::string(fn) + ": the communicator was used after " + c->dead_by);
  if (!g_live.count(c)) return fail(nullptr, ncclInvalidArgument, std::string(fn) + ": not a communicator");
  return ncclSuccess;
}

size_t type_size(int32_t dt) {
  switch (dt) {
    case ncclInt8: case ncclUint8: case ncclFloat8e4m3: case ncclFloat8e5m2: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
  }
  return 0;
}
const char* type_name(int32_t dt) {
  static const char* names[] = {"ncclInt8",    "ncclUint8",   "ncclInt32",    "ncclUint32",
                                "ncclInt64",   "ncclUint64",  "ncclFloat16",  "ncclFloat32",
                                "ncclFloat64", "ncclBfloat16", "ncclFloat8e4m3", "ncclFloat8e5m2"};
  return dt >= 0 && dt < ncclNumTypes ? names[dt] : "(invalid type)";
}
const char* op_name(int32_t op) {
  static const char* names[] = {"ncclSum", "ncclProd", "ncclMax", "ncclMin", "ncclAvg"};
  return op >= 0 && op < ncclNumOps ? names[op] : "(invalid op)";
}

std::string describe(const Slot& s) {
  std::string d = std::string(kind_name(s.kind)) + "(count=" + std::to_string(s.count) + ", " + type_name(s.dtype);
  if (s.kind == kAllReduce || s.kind == kReduceScatter) d += std::string(", ") + op_name(s.op);
  if (s.kind == kBroadcast) d += ", root=" + std::to_string(s.root);
  return d + ")";
}

// Empty when [p, p + n) is device memory of `device`, else why not.
std::string check_buffer(const void* p, size_t n, int device, const char* what) {
  if (n == 0) return "";
  char ptr[32];
  std::snprintf(ptr, sizeof ptr, "%p", p);
  if (!p) return std::string(what) + " is null";
  int cur = 0, ndev = 0;
  (void)cudaGetDevice(&cur);
  (void)cudaGetDeviceCount(&ndev);
  const char* b = static_cast<const char*>(p);
  auto on = [&](int d) {
    (void)cudaSetDevice(d);
    return emu::is_device_pointer(b) && emu::is_device_pointer(b + n - 1);
  };
  std::string why;
  if (!on(device)) {
    int other = -1;
    for (int d = 0; d < ndev && other < 0; ++d)
      if (d != device && on(d)) other = d;
    why = std::string(what) + " [" + ptr + ", +" + std::to_string(n) + " bytes) is " +
          (other >= 0 ? "memory of cuda:" + std::to_string(other) : std::string("not device memory (a host pointer?)")) +
          ", not of the communicator's device cuda:" + std::to_string(device);
  }
  (void)cudaSetDevice(cur);
  return why;
}

template <typename T>
void reduce_into(T* out, const char* const* in, int n_in, size_t count, int32_t op, int nranks) {
  for (size_t i = 0; i < count; ++i) {
    T acc = reinterpret_cast<const T*>(in[0])[i];
    for (int q = 1; q < n_in; ++q) {
      const T v = reinterpret_cast<const T*>(in[q])[i];
      switch (op) {
        case ncclProd: acc = T(acc * v); break;
        case ncclMax: acc = v > acc ? v : acc; break;
        case ncclMin: acc = v < acc ? v : acc; break;
        default: acc = T(acc + v); break;  // ncclSum, ncclAvg
      }
    }
    out[i] = op == ncclAvg ? T(acc / T(nranks)) : acc;
  }
}

void reduce(void* out, const char* const* in, int n, size_t count, int32_t dt, int32_t op) {
  switch (dt) {
    case ncclInt8: reduce_into(static_cast<int8_t*>(out), in, n, count, op, n); break;
    case ncclUint8: reduce_into(static_cast<uint8_t*>(out), in, n, count, op, n); break;
    case ncclInt32: reduce_into(static_cast<int32_t*>(out), in, n, count, op, n); break;
    case ncclUint32: reduce_into(static_cast<uint32_t*>(out), in, n, count, op, n); break;
    case ncclInt64: reduce_into(static_cast<int64_t*>(out), in, n, count, op, n); break;
    case ncclUint64: reduce_into(static_cast<uint64_t*>(out), in, n, count, op, n); break;
    case ncclFloat32: reduce_into(static_cast<float*>(out), in, n, count, op, n); break;
    case ncclFloat64: reduce_into(static_cast<double*>(out), in, n, count, op, n); break;
  }
}

struct Call {
  Kind kind;
  const char* fn;
  const void* send;
  void* recv;
  size_t count;  // NCCL's count argument (per rank for reduce-scatter and all-gather)
  int32_t dtype, op, root;
};

// Why this rank's arguments are invalid (empty when they are not).
std::string check_args(const ncclComm* c, const Call& a) {
  const size_t es = type_size(a.dtype);
  if (es == 0) return "datatype " + std::to_string(a.dtype) + " is not an ncclDataType_t";
  const bool reduces = a.kind == kAllReduce || a.kind == kReduceScatter;
  if (reduces && (a.op < 0 || a.op >= ncclNumOps)) return "op " + std::to_string(a.op) + " is not an ncclRedOp_t";
  if (reduces && es != 4 && es != 8 && a.dtype != ncclInt8 && a.dtype != ncclUint8)
    return std::string("the stand-in does not reduce ") + type_name(a.dtype) + " (reduce in f32)";
  if (a.kind == kBroadcast && (a.root < 0 || a.root >= c->nranks))
    return "root " + std::to_string(a.root) + " is not a rank of the communicator (0.." +
           std::to_string(c->nranks - 1) + ")";
  const size_t n = a.count * es, all = n * size_t(c->nranks);
  const size_t send_bytes = a.kind == kReduceScatter ? all : (a.kind == kBroadcast && c->rank != a.root) ? 0 : n;
  const size_t recv_bytes = a.kind == kAllGather ? all : n;
  std::string why = check_buffer(a.send, send_bytes, c->device, "sendbuff");
  return why.empty() ? check_buffer(a.recv, recv_bytes, c->device, "recvbuff") : why;
}

ncclResult_t collective(ncclComm_t c, const Call& a, cudaStream_t) {
  if (ncclResult_t r = check_comm(c, a.fn)) return r;
  if (c->async_error != ncclSuccess)
    return fail(c, ncclInvalidUsage, std::string(a.fn) + ": the communicator failed earlier (" + c->last_error + ")");
  const std::string what = std::string(a.fn) + " (collective #" + std::to_string(c->seq) + " of rank " +
                           std::to_string(c->rank) + ")";
  Shared* s = c->sh;
  Slot& mine = s->slots[c->rank];
  const std::string bad = check_args(c, a);
  mine.seq = c->seq++;
  mine.kind = a.kind;
  mine.count = a.count;
  mine.dtype = a.dtype;
  mine.op = a.op;
  mine.root = a.root;
  mine.bad = !bad.empty();
  std::snprintf(mine.why, sizeof mine.why, "%s", bad.c_str());

  const size_t es = bad.empty() ? type_size(a.dtype) : 1;
  const size_t n = size_t(c->nranks);
  // Elements of NCCL's count per chunk: reduce-scatter puts n segments into an area.
  const size_t per = a.kind == kReduceScatter ? kChunk / (es * n) : kChunk / es;
  const size_t chunks = bad.empty() && a.count > per ? (a.count + per - 1) / per : 1;
  char* data = reinterpret_cast<char*>(s) + kHeaderBytes;
  auto area = [&](size_t q) { return data + q * kChunk; };
  const char* src = static_cast<const char*>(a.send);
  char* dst = static_cast<char*>(a.recv);
  const size_t rc = a.count * es;  // bytes of one rank's segment (reduce-scatter, all-gather)

  for (size_t k = 0; k < chunks; ++k) {
    const size_t e0 = k * per, m = bad.empty() ? std::min(a.count, e0 + per) - std::min(a.count, e0) : 0;
    const size_t off = e0 * es, len = m * es;
    if (len) {
      emu::DeviceAccess access;
      char* mine_area = area(size_t(c->rank));
      if (a.kind == kReduceScatter) {
        for (size_t q = 0; q < n; ++q) std::memcpy(mine_area + q * len, src + q * rc + off, len);
      } else if (a.kind != kBroadcast || c->rank == a.root) {
        std::memcpy(mine_area, src + off, len);
      }
    }
    if (ncclResult_t r = barrier(c, what)) return r;
    if (k == 0) {
      // Every rank reads the same slots, so every rank reaches the same verdict.
      if (!bad.empty()) {
        c->async_error = ncclInvalidArgument;
        return fail(c, ncclInvalidArgument, what + ": " + bad);
      }
      for (int q = 0; q < c->nranks; ++q)
        if (s->slots[q].bad) {
          c->async_error = ncclInvalidUsage;
          return fail(c, ncclInvalidUsage, what + ": rank " + std::to_string(q) + " passed invalid arguments (" +
                                               s->slots[q].why + "), so the collective cannot run");
        }
      const Slot& first = s->slots[0];
      for (int q = 1; q < c->nranks; ++q) {
        const Slot& o = s->slots[q];
        const bool reduces = first.kind == kAllReduce || first.kind == kReduceScatter;
        if (o.seq != first.seq || o.kind != first.kind || o.count != first.count || o.dtype != first.dtype ||
            (reduces && o.op != first.op) || (first.kind == kBroadcast && o.root != first.root)) {
          c->async_error = ncclInvalidUsage;
          return fail(c, ncclInvalidUsage,
                      what + ": the ranks called different collectives: rank 0 called " + describe(first) +
                          " as its collective #" + std::to_string(first.seq) + ", rank " + std::to_string(q) +
                          " called " + describe(o) + " as its collective #" + std::to_string(o.seq) +
                          " (every rank must call the same collectives in the same order, with the same count, "
                          "type, op and root)");
        }
      }
    }
    if (len) {
      emu::DeviceAccess access;
      const char* in[kMaxRanks];
      switch (a.kind) {
        case kAllReduce:
          for (size_t q = 0; q < n; ++q) in[q] = area(q);
          reduce(dst + off, in, c->nranks, m, a.dtype, a.op);
          break;
        case kReduceScatter:
          for (size_t q = 0; q < n; ++q) in[q] = area(q) + size_t(c->rank) * len;
          reduce(dst + off, in, c->nranks, m, a.dtype, a.op);
          break;
        case kAllGather:
          for (size_t q = 0; q < n; ++q) std::memcpy(dst + q * rc + off, area(q), len);
          break;
        case kBroadcast: std::memmove(dst + off, area(size_t(a.root)), len); break;
        default: break;
      }
    }
    if (ncclResult_t r = barrier(c, what)) return r;  // the areas may be overwritten now
  }
  return ncclSuccess;
}

// Removes segments whose creating process is gone (a job that died during init).
void sweep_stale_segments() {
  DIR* d = opendir("/dev/shm");
  if (!d) return;
  while (dirent* e = readdir(d)) {
    if (std::strncmp(e->d_name, kPrefix, sizeof kPrefix - 1) != 0) continue;
    const long pid = std::strtol(e->d_name + sizeof kPrefix - 1, nullptr, 10);
    if (pid > 0 && kill(pid_t(pid), 0) != 0 && errno == ESRCH) shm_unlink((std::string("/") + e->d_name).c_str());
  }
  closedir(d);
}

void release(ncclComm* c, const char* by) {
  if (c->sh) {
    c->sh->slots[c->rank].pid.store(-1);
    wake_all(c->sh);  // peers waiting for this rank notice it left
    munmap(c->sh, c->map_bytes);
    c->sh = nullptr;
  }
  std::lock_guard<std::mutex> lock(g_mu);
  g_live.erase(c);
  g_dead.insert(c);
  c->dead = true;
  c->dead_by = by;
}

// Init failure: tell the ranks already waiting. The segment stays (a rank still to
// come finds the reason there instead of waiting alone in a new one); the next
// ncclGetUniqueId removes it once its creator has exited.
ncclResult_t init_failed(Shared* s, size_t bytes, ncclResult_t r, const std::string& why) {
  if (s) {
    poison(s, r, why);
    munmap(s, bytes);
  }
  return fail(nullptr, r, why);
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  if (!version) return fail(nullptr, ncclInvalidArgument, "ncclGetVersion: version is null");
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return fail(nullptr, ncclInvalidArgument, "ncclGetUniqueId: uniqueId is null");
  sweep_stale_segments();
  std::random_device rd;
  IdFields f{};
  f.magic = kIdMagic;
  f.nonce = (uint64_t(rd()) << 32) ^ rd();
  std::snprintf(f.name, sizeof f.name, "/%s%d-%016llx", kPrefix, int(getpid()), (unsigned long long)f.nonce);
  std::memset(id, 0, sizeof *id);
  std::memcpy(id->internal, &f, sizeof f);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank) {
  const std::string fn = "ncclCommInitRank(nranks=" + std::to_string(nranks) + ", rank=" + std::to_string(rank) + ")";
  if (!comm) return fail(nullptr, ncclInvalidArgument, fn + ": comm is null");
  *comm = nullptr;
  IdFields f;
  std::memcpy(&f, commId.internal, sizeof f);
  f.name[sizeof f.name - 1] = 0;
  if (f.magic != kIdMagic) return fail(nullptr, ncclInvalidArgument, fn + ": commId is not from ncclGetUniqueId");
  if (nranks < 1 || nranks > kMaxRanks)
    return fail(nullptr, ncclInvalidArgument, fn + ": nranks must be 1.." + std::to_string(kMaxRanks));
  if (rank < 0 || rank >= nranks) return fail(nullptr, ncclInvalidArgument, fn + ": rank out of range");
  const size_t bytes = kHeaderBytes + size_t(nranks) * kChunk;
  Shared* s = nullptr;
  for (int attempt = 0; attempt < 2 && !s; ++attempt) {
    const int fd = shm_open(f.name, O_RDWR | O_CREAT, 0600);
    if (fd < 0) return fail(nullptr, ncclSystemError, fn + ": shm_open(" + f.name + "): " + std::strerror(errno));
    // posix_fallocate never shrinks the segment, whichever rank comes first.
    int e = posix_fallocate(fd, 0, off_t(bytes));
    void* m = e == 0 ? mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (e == 0 && m == MAP_FAILED) e = errno;
    close(fd);
    if (m == MAP_FAILED)
      return init_failed(nullptr, 0, ncclSystemError,
                         fn + ": mapping " + std::to_string(bytes) + " bytes of " + f.name + ": " + std::strerror(e));
    s = static_cast<Shared*>(m);
    int32_t fresh = 0;
    if (s->state.compare_exchange_strong(fresh, 1)) {
      s->magic = kShmMagic;
      s->nonce = f.nonce;
      s->nranks = nranks;
      s->state.store(2, std::memory_order_release);
    }
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    while (s->state.load(std::memory_order_acquire) != 2 && Clock::now() < deadline) usleep(1000);
    if (s->state.load() != 2 || s->magic != kShmMagic || s->nonce != f.nonce) {
      // A stale segment with this name (a crashed setup): replace it once.
      munmap(s, bytes);
      s = nullptr;
      shm_unlink(f.name);
    }
  }
  if (!s) return init_failed(nullptr, 0, ncclSystemError, fn + ": cannot set up " + f.name);
  if (s->failed.load(std::memory_order_acquire)) {  // another rank's init failed already
    const std::string why = fn + ": " + s->reason;
    munmap(s, bytes);
    return fail(nullptr, ncclRemoteError, why);
  }
  if (s->nranks != nranks)
    return init_failed(s, bytes, ncclInvalidUsage,
                       fn + ": the communicator has nranks=" + std::to_string(s->nranks) +
                           " (the first rank to join said so); every rank must pass the same nranks");
  int32_t unclaimed = 0;
  if (!s->slots[rank].pid.compare_exchange_strong(unclaimed, int32_t(getpid())))
    return init_failed(s, bytes, ncclInvalidUsage,
                       fn + ": rank " + std::to_string(rank) + " was already claimed by pid " +
                           std::to_string(unclaimed) + " (two processes passed the same rank)");
  auto* c = new ncclComm;
  c->rank = rank;
  c->nranks = nranks;
  (void)cudaGetDevice(&c->device);  // NCCL's contract: the current device at init
  c->sh = s;
  c->map_bytes = bytes;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_live.insert(c);
  }
  if (ncclResult_t r = barrier(c, fn + ": waiting for every rank to join")) {
    const std::string why = c->last_error;
    release(c, "a failed ncclCommInitRank");
    t_last_error = why;
    return r;
  }
  shm_unlink(f.name);  // every rank has it mapped: nothing is left behind after a crash
  *comm = c;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclSuccess;  // as NCCL
  if (ncclResult_t r = check_comm(comm, "ncclCommDestroy")) return r;
  release(comm, "ncclCommDestroy");
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  if (ncclResult_t r = check_comm(comm, "ncclCommAbort")) return r;
  poison(comm->sh, ncclRemoteError, "rank " + std::to_string(comm->rank) + " aborted the communicator (ncclCommAbort)");
  release(comm, "ncclCommAbort");
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError) {
  if (ncclResult_t r = check_comm(comm, "ncclCommGetAsyncError")) return r;
  if (!asyncError) return fail(comm, ncclInvalidArgument, "ncclCommGetAsyncError: asyncError is null");
  if (comm->async_error == ncclSuccess && comm->sh->failed.load(std::memory_order_acquire))
    (void)remote_failure(comm, "a peer failed the communicator");
  *asyncError = comm->async_error;
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (ncclResult_t r = check_comm(comm, "ncclCommCount")) return r;
  *count = comm->nranks;
  return ncclSuccess;
}
ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  if (ncclResult_t r = check_comm(comm, "ncclCommCuDevice")) return r;
  *device = comm->device;
  return ncclSuccess;
}
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (ncclResult_t r = check_comm(comm, "ncclCommUserRank")) return r;
  *rank = comm->rank;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t comm) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (comm && (g_live.count(comm) || g_dead.count(comm)) && !comm->last_error.empty())
    return comm->last_error.c_str();
  return t_last_error.c_str();
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
  return collective(comm, {kAllReduce, "ncclAllReduce", sendbuff, recvbuff, count, datatype, op, 0}, stream);
}
ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  return collective(comm, {kReduceScatter, "ncclReduceScatter", sendbuff, recvbuff, recvcount, datatype, op, 0},
                    stream);
}
ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
  return collective(comm, {kAllGather, "ncclAllGather", sendbuff, recvbuff, sendcount, datatype, ncclSum, 0}, stream);
}
ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  return collective(comm, {kBroadcast, "ncclBroadcast", sendbuff, recvbuff, count, datatype, ncclSum, root}, stream);
}

ncclResult_t ncclGroupStart() {
  if (t_group_depth++ == 0) t_group_error = ncclSuccess;
  return ncclSuccess;
}
ncclResult_t ncclGroupEnd() {
  if (t_group_depth == 0) return fail(nullptr, ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  return --t_group_depth == 0 ? t_group_error : ncclSuccess;
}

}  // extern "C"

cudaError_t cudaEventQuery(cudaEvent_t event) {
  if (!event) return emu::set_error(cudaErrorInvalidValue, "cudaEventQuery: null event");
  return cudaSuccess;
}
