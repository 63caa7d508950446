// The emulated CUDA runtime API: two devices whose memory is host memory. Every
// allocation is registered, so copies, memsets and kernel arguments are checked for
// the right kind of pointer and range (what a GPU would turn into an illegal
// address or cudaErrorInvalidValue); fresh allocations are filled with 0xff bytes
// (NaN for floats), so a kernel that reads memory nobody wrote shows it. Calls are
// synchronous: streams and events exist only as handles.
//
// Device memory comes from one reserved address range (the arena) that the host
// cannot read or write except inside an emu::DeviceAccess (include/cuda_emu_access.h):
// host code that dereferences a device pointer faults, as on a GPU.
#include <execinfo.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <string>

#include "cuda_runtime.h"
#include "tests/cuda_emu/emu_internal.h"

namespace emu {

namespace {

constexpr int kDevices = 2;
constexpr int kSms[kDevices] = {132, 1};
constexpr size_t kMemoryPerDevice = size_t(16) << 30;
constexpr size_t kSmemDefault = 48 * 1024, kSmemOptin = 227 * 1024;

struct Alloc {
  size_t n;
  int device;
};

std::mutex g_mu;
std::map<uintptr_t, Alloc> g_allocs;

// The arena (under g_mu): [g_base, g_base + kArenaBytes) reserved, [g_base, g_hw)
// committed; allocations are first-fit from g_free (offset -> bytes, coalesced) or
// bumped from g_top. g_open counts live DeviceAccess scopes: while it is positive the
// committed part is read-write, otherwise PROT_NONE (unless the guard is off).
// On by default where the whole engine runs on the emulator (-Dcuda=emulated: its
// host code is what the guard checks); off for test_cuda_emu in a CPU-only build,
// whose test code handles device pointers itself (each launch's two mprotect calls
// would double its time).
#ifndef EMU_HOST_GUARD_DEFAULT
#define EMU_HOST_GUARD_DEFAULT 0
#endif
constexpr size_t kArenaBytes = size_t(64) << 30;
constexpr size_t kAllocAlign = 256, kCommitStep = size_t(1) << 20;
char* g_base = nullptr;
size_t g_top = 0, g_hw = 0;
std::map<size_t, size_t> g_free;
int g_open = 0;
bool g_guard = true;
struct sigaction g_prev_segv;

bool host_may_touch() { return g_open > 0 || !g_guard; }

void protect(size_t from, size_t to, bool rw) {
  if (to > from) (void)mprotect(g_base + from, to - from, rw ? PROT_READ | PROT_WRITE : PROT_NONE);
}

void on_segv(int sig, siginfo_t* si, void* uc) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(si->si_addr), b = reinterpret_cast<uintptr_t>(g_base);
  if (si->si_code > 0 && g_base && a >= b && a < b + kArenaBytes) {
    char msg[320];
    const int n = std::snprintf(msg, sizeof msg,
                                "cuda_emu: host code accessed device memory at %p (outside a kernel, copy, memset or "
                                "cuBLAS/CUB call): on a GPU this reads garbage or crashes; copy the tensor to the CPU "
                                "first. Host backtrace:\n",
                                si->si_addr);
    if (n > 0) (void)!write(2, msg, size_t(n) < sizeof msg ? size_t(n) : sizeof msg - 1);
    void* frames[64];
    backtrace_symbols_fd(frames, backtrace(frames, 64), 2);
  }
  // The fault repeats under the previous handler (doctest names the test case) or
  // the default action.
  sigaction(SIGSEGV, &g_prev_segv, nullptr);
  (void)sig;
  (void)uc;
}

// Test frameworks install their own SIGSEGV handler per test case; ours goes back
// in front of it (and chains to it) whenever device memory closes.
void ensure_segv_handler() {
  struct sigaction cur;
  if (sigaction(SIGSEGV, nullptr, &cur) != 0 || ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == &on_segv)) return;
  g_prev_segv = cur;
  struct sigaction sa = {};
  sa.sa_sigaction = &on_segv;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  (void)sigaction(SIGSEGV, &sa, nullptr);
}

// Under g_mu. Null when the arena is exhausted.
char* arena_allocate(size_t n) {
  if (!g_base) {
    void* m = mmap(nullptr, kArenaBytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    g_base = static_cast<char*>(m);
    const char* e = std::getenv("BET_CUDA_EMU_HOST_GUARD");
    g_guard = e && *e ? std::strcmp(e, "0") != 0 : EMU_HOST_GUARD_DEFAULT;
    void* warm[1];
    (void)backtrace(warm, 1);  // loads the unwinder now, not inside the signal handler
    if (g_guard) ensure_segv_handler();
  }
  const size_t r = (n + kAllocAlign - 1) / kAllocAlign * kAllocAlign;
  for (auto it = g_free.begin(); it != g_free.end(); ++it) {
    if (it->second < r) continue;
    const size_t off = it->first, left = it->second - r;
    g_free.erase(it);
    if (left) g_free[off + r] = left;
    return g_base + off;
  }
  if (g_top + r > kArenaBytes) return nullptr;
  const size_t off = g_top;
  g_top += r;
  if (g_top > g_hw) {
    const size_t hw = std::min(kArenaBytes, (g_top + kCommitStep - 1) / kCommitStep * kCommitStep);
    protect(g_hw, hw, true);  // committed read-write first (then closed again below if need be)
    if (!host_may_touch()) protect(g_hw, hw, false);
    g_hw = hw;
  }
  return g_base + off;
}

// Under g_mu.
void arena_release(char* p, size_t n) {
  size_t off = size_t(p - g_base), r = (n + kAllocAlign - 1) / kAllocAlign * kAllocAlign;
  auto next = g_free.lower_bound(off);
  if (next != g_free.end() && off + r == next->first) {
    r += next->second;
    next = g_free.erase(next);
  }
  if (next != g_free.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == off) {
      off = prev->first;
      r += prev->second;
      g_free.erase(prev);
    }
  }
  if (off + r == g_top) g_top = off;
  else g_free[off] = r;
}
size_t g_used[kDevices] = {};
std::map<const void*, size_t> g_dyn_smem;
Stats g_stats;

thread_local int g_device = 0;
thread_local cudaError_t g_last = cudaSuccess;

// The allocation holding [p, p + n) (n may be 0: p may then be its end), or null.
const Alloc* find(const void* p, size_t n, uintptr_t* base) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return nullptr;
  --it;
  if (a < it->first || a + n > it->first + it->second.n || a > it->first + it->second.n) return nullptr;
  if (base) *base = it->first;
  return &it->second;
}

bool on_device(const void* p) {
  std::lock_guard<std::mutex> lock(g_mu);
  return find(p, 0, nullptr) != nullptr;
}

std::string ptr_str(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

cudaError_t copy_checked(void* dst, const void* src, size_t n, cudaMemcpyKind kind, const char* what) {
  if (n == 0) return cudaSuccess;
  if (!dst || !src) return set_error(cudaErrorInvalidValue, std::string(what) + ": null pointer");
  const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind != cudaMemcpyDefault) {
    if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault)
      return set_error(cudaErrorInvalidMemcpyDirection, what);
    if (dst_dev) {
      if (check_device_range(dst, n, what) != cudaSuccess) return cudaErrorInvalidValue;
    } else if (on_device(dst)) {
      return set_error(cudaErrorInvalidValue, std::string(what) + ": the host destination " + ptr_str(dst) +
                                                  " is device memory (wrong cudaMemcpyKind)");
    }
    if (src_dev) {
      if (check_device_range(src, n, what) != cudaSuccess) return cudaErrorInvalidValue;
    } else if (on_device(src)) {
      return set_error(cudaErrorInvalidValue, std::string(what) + ": the host source " + ptr_str(src) +
                                                  " is device memory (wrong cudaMemcpyKind)");
    }
  }
  DeviceAccess access;
  std::memmove(dst, src, n);
  return cudaSuccess;
}

bool valid_device(int d) { return d >= 0 && d < kDevices; }

}  // namespace

DeviceAccess::DeviceAccess() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_open++ == 0 && g_guard) protect(0, g_hw, true);
}

DeviceAccess::~DeviceAccess() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (--g_open == 0 && g_guard && g_base) {
    protect(0, g_hw, false);
    ensure_segv_handler();
  }
}

cudaError_t set_error(cudaError_t e, const std::string& detail) {
  g_last = e;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    ++g_stats.errors;
  }
  std::fprintf(stderr, "cuda_emu: %s: %s\n", cudaGetErrorName(e), detail.c_str());
  return e;
}

cudaError_t check_device_range(const void* p, size_t n, const char* what) {
  bool ok;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    ok = find(p, n, nullptr) != nullptr;
  }
  if (ok) return cudaSuccess;
  return set_error(cudaErrorInvalidValue,
                   std::string(what) + ": [" + ptr_str(p) + ", +" + std::to_string(n) + ") is not device memory");
}

bool is_device_pointer(const void* p) {
  std::lock_guard<std::mutex> lock(g_mu);
  const Alloc* a = find(p, 0, nullptr);
  return a && a->device == g_device;  // no peer access: another device's memory faults
}

size_t max_dynamic_smem(const void* key) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = key ? g_dyn_smem.find(key) : g_dyn_smem.end();
  return it == g_dyn_smem.end() ? kSmemDefault : it->second;
}

cudaError_t func_set_attribute(const void* key, cudaFuncAttribute a, int v) {
  if (a == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (v < 0 || size_t(v) > kSmemOptin)
      return set_error(cudaErrorInvalidValue, "cudaFuncSetAttribute: " + std::to_string(v) +
                                                  " bytes of dynamic shared memory (at most 227 KB)");
    std::lock_guard<std::mutex> lock(g_mu);
    g_dyn_smem[key] = size_t(v);
    return cudaSuccess;
  }
  if (a == cudaFuncAttributePreferredSharedMemoryCarveout) return cudaSuccess;
  return set_error(cudaErrorInvalidValue, "cudaFuncSetAttribute: unknown attribute");
}

void count_launch(dim3 grid, uint64_t threads_per_block) {
  std::lock_guard<std::mutex> lock(g_mu);
  const long blocks = long(grid.x) * grid.y * grid.z;
  ++g_stats.launches;
  g_stats.blocks += blocks;
  g_stats.threads += blocks * long(threads_per_block);
}

Stats stats() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_stats;
}

}  // namespace emu

using emu::set_error;

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorUnknown: return "cudaErrorUnknown";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure (emulator: see the cuda_emu line on stderr)";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return cudaGetErrorName(e);
  }
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::g_last;
  emu::g_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return emu::g_last; }

cudaError_t cudaGetDeviceCount(int* n) {
  *n = emu::kDevices;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = emu::g_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  if (!emu::valid_device(d)) return set_error(cudaErrorInvalidDevice, "cudaSetDevice(" + std::to_string(d) + ")");
  emu::g_device = d;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaDeviceReset() { return cudaSuccess; }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (!emu::valid_device(d)) return set_error(cudaErrorInvalidDevice, "cudaGetDeviceProperties");
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "cuda_emu device %d (%d SMs, emulated)", d, emu::kSms[d]);
  p->totalGlobalMem = emu::kMemoryPerDevice;
  p->sharedMemPerBlock = emu::kSmemDefault;
  p->sharedMemPerBlockOptin = emu::kSmemOptin;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7fffffff;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->clockRate = 1000000;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = emu::kSms[d];
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d) {
  if (!emu::valid_device(d)) return set_error(cudaErrorInvalidDevice, "cudaDeviceGetAttribute");
  switch (a) {
    case cudaDevAttrMaxThreadsPerBlock: *v = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = int(emu::kSmemDefault); break;
    case cudaDevAttrWarpSize: *v = 32; break;
    case cudaDevAttrClockRate: *v = 1000000; break;
    case cudaDevAttrMultiProcessorCount: *v = emu::kSms[d]; break;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = int(emu::kSmemOptin); break;
    default: return set_error(cudaErrorInvalidValue, "cudaDeviceGetAttribute: unknown attribute");
  }
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  std::lock_guard<std::mutex> lock(emu::g_mu);
  *total_bytes = emu::kMemoryPerDevice;
  *free_bytes = emu::kMemoryPerDevice - emu::g_used[emu::g_device];
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t n) {
  *p = nullptr;
  if (n == 0) return cudaSuccess;
  const int d = emu::g_device;
  {
    std::lock_guard<std::mutex> lock(emu::g_mu);
    if (emu::g_used[d] + n > emu::kMemoryPerDevice) {
      emu::g_last = cudaErrorMemoryAllocation;  // a normal outcome the caller handles
      return cudaErrorMemoryAllocation;
    }
  }
  void* m;
  {
    std::lock_guard<std::mutex> lock(emu::g_mu);
    m = emu::arena_allocate(n);
    if (m) {
      emu::g_allocs[reinterpret_cast<uintptr_t>(m)] = {n, d};
      emu::g_used[d] += n;
      ++emu::g_stats.allocations;
      emu::g_stats.bytes_in_use += n;
    }
  }
  if (!m) return set_error(cudaErrorMemoryAllocation, "cudaMalloc: the emulator's address range is exhausted");
  {
    emu::DeviceAccess access;
    std::memset(m, 0xff, (n + emu::kAllocAlign - 1) / emu::kAllocAlign * emu::kAllocAlign);
  }
  *p = m;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(emu::g_mu);
    auto it = emu::g_allocs.find(reinterpret_cast<uintptr_t>(p));
    if (it != emu::g_allocs.end()) {
      emu::g_used[it->second.device] -= it->second.n;
      emu::g_stats.bytes_in_use -= it->second.n;
      emu::arena_release(static_cast<char*>(p), it->second.n);
      emu::g_allocs.erase(it);
      return cudaSuccess;
    }
  }
  return set_error(cudaErrorInvalidValue, "cudaFree(" + emu::ptr_str(p) + "): not a device allocation");
}

cudaError_t cudaMallocHost(void** p, size_t n) {
  *p = std::malloc(n ? n : 1);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  return emu::copy_checked(dst, src, n, kind, "cudaMemcpy");
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t) {
  return emu::copy_checked(dst, src, n, kind, "cudaMemcpyAsync");
}
cudaError_t cudaMemcpyPeer(void* dst, int dst_dev, const void* src, int src_dev, size_t n) {
  if (!emu::valid_device(dst_dev) || !emu::valid_device(src_dev))
    return set_error(cudaErrorInvalidDevice, "cudaMemcpyPeer");
  bool ok = true;
  if (n) {
    std::lock_guard<std::mutex> lock(emu::g_mu);
    const emu::Alloc* d = emu::find(dst, n, nullptr);
    const emu::Alloc* s = emu::find(src, n, nullptr);
    ok = d && s && d->device == dst_dev && s->device == src_dev;
  }
  if (!ok) return set_error(cudaErrorInvalidValue, "cudaMemcpyPeer: a range is not on its device");
  return emu::copy_checked(dst, src, n, cudaMemcpyDefault, "cudaMemcpyPeer");
}
cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_dev, const void* src, int src_dev, size_t n, cudaStream_t) {
  return cudaMemcpyPeer(dst, dst_dev, src, src_dev, n);
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
  if (n == 0) return cudaSuccess;
  if (emu::check_device_range(p, n, "cudaMemset") != cudaSuccess) return cudaErrorInvalidValue;
  emu::DeviceAccess access;
  std::memset(p, v, n);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) { return cudaMemset(p, v, n); }

struct CUstream_st {
  int device;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point t;
};

cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = new CUstream_st{emu::g_device};
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st{std::chrono::steady_clock::now()};
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  if (!e) return set_error(cudaErrorInvalidValue, "cudaEventRecord: null event");
  e->t = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = std::chrono::duration<float, std::milli>(end->t - start->t).count();
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
