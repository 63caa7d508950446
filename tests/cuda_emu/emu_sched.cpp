// The emulator's execution engine: a launch runs its blocks one after another on the
// calling thread; inside a block, every CUDA thread is a fiber (its own stack) that runs
// until it waits at __syncthreads, at a warp collective or exits. When no fiber can
// run, completed barriers release their waiters; if none completes, the block is
// deadlocked (divergent barriers, a shuffle whose lanes sit at __syncthreads) and the
// launch fails. Faults found in device code fail the launch with cudaErrorLaunchFailure
// (reported by cudaGetLastError, as BET_CUDA_LAUNCHED reads it).
//
// Fibers switch with a few instructions on x86-64 (below: callee-saved registers and
// the FP control words, no signal mask, so no system call); elsewhere with ucontext.
//
// Odd blocks resume their threads in reverse order: a read of shared memory that
// another thread writes without a barrier in between then sees the 0xff poison (NaN)
// in one of the two orders, whichever thread the kernel wrongly relied on.
#include <sys/mman.h>
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_runtime.h"
#include "tests/cuda_emu/emu_internal.h"

#if defined(__x86_64__) && !defined(EMU_USE_UCONTEXT)
#define EMU_FAST_SWITCH 1
// Saves the callee-saved registers, MXCSR and the x87 control word on the current
// stack, stores the stack pointer in *save, and resumes the stack at `load`.
extern "C" void emu_ctx_switch(void** save, void* load);
asm(R"(
  .pushsection .text
  .globl emu_ctx_switch
  .type emu_ctx_switch, @function
emu_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_ctx_switch, .-emu_ctx_switch
  .popsection
)");
#else
#define EMU_FAST_SWITCH 0
#endif

namespace emu {

namespace {

struct Context {
#if EMU_FAST_SWITCH
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

void ctx_switch(Context& from, Context& to) {
#if EMU_FAST_SWITCH
  emu_ctx_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

constexpr size_t kStackBytes = 256 * 1024;  // device frames are small; glibc maths and
                                            // the fault path run here too
constexpr size_t kSmemStatic = 48 * 1024, kSmemOptin = 227 * 1024;

enum State { kReady, kAtBarrier, kAtCollective, kDone };

struct Fiber {
  Context ctx;
  char* stack = nullptr;
  uint3 idx{};
  unsigned lane = 0, warp = 0;
  State state = kReady;
  unsigned gen = 0;  // the warp generation of the collective this lane waits at
};

struct Warp {
  unsigned live = 0;     // lanes that exist and have not exited
  unsigned arrived = 0;  // lanes waiting at the collective in progress
  unsigned mask = 0;     // its mask
  unsigned gen = 0;      // completed collectives
  const char* what = nullptr;
  uint64_t slots[2][32];
};

struct Worker {
  Context sched;
  std::vector<std::unique_ptr<Fiber>> fibers;  // slots reused by every block
  Fiber* cur = nullptr;
  std::vector<Warp> warps;
  unsigned live = 0;
  unsigned bar_arrived = 0;
  const char* bar_file = nullptr;
  int bar_line = 0;
  std::vector<char> dyn;  // dynamic shared memory (operator new's 16-byte alignment)
  size_t dyn_bytes = 0;
  std::vector<void*> statics;
  size_t static_bytes = 0;
  const LaunchSite* site = nullptr;
  void (*fn)(void*) = nullptr;
  void* ctx = nullptr;
  bool in_kernel = false;
  std::string fault;  // first fault of the launch, with where it happened
  long faults = 0;
};

thread_local Worker g_w;

Fiber& new_fiber() {
  auto f = std::make_unique<Fiber>();
  void* mem = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw std::runtime_error("cuda_emu: cannot map a fiber stack");
  mprotect(mem, 4096, PROT_NONE);  // guard page: an overflow faults instead of corrupting
  f->stack = static_cast<char*>(mem);
#if !EMU_FAST_SWITCH
  getcontext(&f->ctx.uc);
#endif
  g_w.fibers.push_back(std::move(f));
  return *g_w.fibers.back();
}

void fiber_main() {
  Worker& w = g_w;
  try {
    w.fn(w.ctx);
  } catch (const std::exception& e) {
    fault((std::string("exception in device code: ") + e.what()).c_str());
  } catch (...) {
    fault("exception in device code");
  }
  Fiber* f = w.cur;
  f->state = kDone;
  ctx_switch(f->ctx, w.sched);  // never resumed
  std::abort();
}

// Prepares f to start in fiber_main at its next resume.
void start_at_main(Fiber& f) {
#if EMU_FAST_SWITCH
  // The frame emu_ctx_switch pops: control words, six registers, the return address
  // (fiber_main), then a null return address for fiber_main itself, which sits
  // 8 bytes off 16-byte alignment as at any function entry.
  auto* top = reinterpret_cast<uint64_t*>(
      (reinterpret_cast<uintptr_t>(f.stack) + kStackBytes) & ~uintptr_t(15));
  uint64_t* sp = top;
  *--sp = 0;
  *--sp = reinterpret_cast<uint64_t>(&fiber_main);
  for (int i = 0; i < 6; ++i) *--sp = 0;
  uint32_t mxcsr;
  uint16_t fpcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  *--sp = uint64_t(mxcsr) | (uint64_t(fpcw) << 32);
  f.ctx.sp = sp;
#else
  f.ctx.uc.uc_stack.ss_sp = f.stack;
  f.ctx.uc.uc_stack.ss_size = kStackBytes;
  f.ctx.uc.uc_link = nullptr;
  makecontext(&f.ctx.uc, fiber_main, 0);
#endif
}

std::string where(const Fiber* f) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "block (%u,%u,%u) thread (%u,%u,%u)", blockIdx.x, blockIdx.y, blockIdx.z,
                f ? f->idx.x : 0, f ? f->idx.y : 0, f ? f->idx.z : 0);
  return buf;
}

void yield_to_scheduler() {
  Fiber* f = g_w.cur;
  ctx_switch(f->ctx, g_w.sched);
  g_w.cur = f;
}

void release_statics(Worker& w) {
  for (void*& p : w.statics) {
    std::free(p);
    p = nullptr;
  }
  w.static_bytes = 0;
}

void run_block(Worker& w, unsigned n, uint64_t linear) {
  while (w.fibers.size() < n) new_fiber();
  w.live = n;
  w.bar_arrived = 0;
  const unsigned nwarps = (n + 31) / 32;
  w.warps.assign(nwarps, Warp{});
  for (unsigned k = 0; k < nwarps; ++k)
    w.warps[k].live = (n - 32 * k >= 32) ? 0xffffffffu : ((1u << (n - 32 * k)) - 1u);
  if (w.dyn_bytes) std::memset(w.dyn.data(), 0xff, w.dyn_bytes);
  const unsigned bx = blockDim.x, by = blockDim.y;
  for (unsigned t = 0; t < n; ++t) {
    Fiber& f = *w.fibers[t];
    f.idx = {t % bx, (t / bx) % by, t / (bx * by)};
    f.lane = t & 31;
    f.warp = t >> 5;
    f.state = kReady;
    start_at_main(f);
  }
  const bool reverse = linear & 1;
  for (;;) {
    bool progressed = false;
    for (unsigned k = 0; k < n; ++k) {
      Fiber& f = *w.fibers[reverse ? n - 1 - k : k];
      if (f.state != kReady) continue;
      w.cur = &f;
      threadIdx = f.idx;
      ctx_switch(w.sched, f.ctx);
      progressed = true;
      if (f.state == kDone) {
        --w.live;
        w.warps[f.warp].live &= ~(1u << f.lane);
      }
    }
    w.cur = nullptr;
    if (w.live == 0) break;
    if (w.bar_arrived > 0 && w.bar_arrived == w.live) {
      for (unsigned t = 0; t < n; ++t)
        if (w.fibers[t]->state == kAtBarrier) w.fibers[t]->state = kReady;
      w.bar_arrived = 0;
      progressed = true;
    }
    for (unsigned k = 0; k < nwarps; ++k) {
      Warp& wp = w.warps[k];
      if (wp.arrived == 0 || wp.arrived != (wp.mask & wp.live)) continue;
      if (wp.mask & ~wp.live) {
        w.cur = w.fibers[32 * k + unsigned(__builtin_ctz(wp.arrived))].get();
        fault((std::string(wp.what) + ": its mask names lanes that exited or do not exist").c_str());
        w.cur = nullptr;
      }
      for (unsigned l = 0; l < 32; ++l)
        if (wp.arrived >> l & 1u) w.fibers[32 * k + l]->state = kReady;
      wp.arrived = 0;
      ++wp.gen;
      progressed = true;
    }
    if (!progressed) {
      unsigned at_bar = 0, at_coll = 0;
      for (unsigned t = 0; t < n; ++t) {
        at_bar += w.fibers[t]->state == kAtBarrier;
        at_coll += w.fibers[t]->state == kAtCollective;
      }
      char buf[200];
      std::snprintf(buf, sizeof buf, "deadlock: %u threads wait at __syncthreads (%s:%d), %u at warp collectives",
                    at_bar, w.bar_file ? w.bar_file : "?", w.bar_line, at_coll);
      fault(buf);
      break;  // the waiting fibers are abandoned; their stacks are reused
    }
  }
  if (w.static_bytes > kSmemStatic || w.static_bytes + w.dyn_bytes > kSmemOptin) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "shared memory: %zu static + %zu dynamic bytes exceed the limits", w.static_bytes,
                  w.dyn_bytes);
    fault(buf);
  }
  release_statics(w);
}

std::string dims(dim3 d) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "(%u,%u,%u)", d.x, d.y, d.z);
  return buf;
}

}  // namespace

void fault(const char* what) {
  Worker& w = g_w;
  ++w.faults;
  if (w.fault.empty()) w.fault = where(w.cur) + ": " + what;
}

void check_launch_bounds(unsigned bound, const char* file, int line) {
  const unsigned n = blockDim.x * blockDim.y * blockDim.z;
  if (n > bound && threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
    char buf[200];
    std::snprintf(buf, sizeof buf, "%u threads per block exceed the kernel's __launch_bounds__(%u) (%s:%d)", n, bound,
                  file, line);
    fault(buf);
  }
}

void syncthreads(const char* file, int line) {
  Worker& w = g_w;
  if (!w.in_kernel || !w.cur) throw std::logic_error("__syncthreads outside a kernel");
  if (w.bar_arrived == 0) {
    w.bar_file = file;
    w.bar_line = line;
  } else if (line != w.bar_line || std::strcmp(file, w.bar_file) != 0) {
    char buf[240];
    std::snprintf(buf, sizeof buf, "divergent __syncthreads: %s:%d while others wait at %s:%d", file, line, w.bar_file,
                  w.bar_line);
    fault(buf);
  }
  w.cur->state = kAtBarrier;
  ++w.bar_arrived;
  yield_to_scheduler();
}

const uint64_t* warp_exchange(unsigned mask, uint64_t v, const char* what) {
  Worker& w = g_w;
  if (!w.in_kernel || !w.cur) throw std::logic_error("warp collective outside a kernel");
  Fiber* f = w.cur;
  Warp& wp = w.warps[f->warp];
  if (!(mask >> f->lane & 1u)) fault((std::string(what) + ": the calling lane is not in its mask").c_str());
  if (wp.arrived == 0) {
    wp.mask = mask;
    wp.what = what;
  } else if (wp.mask != mask) {
    fault((std::string(what) + ": lanes of one warp wait at collectives with different masks").c_str());
  }
  wp.slots[wp.gen & 1][f->lane] = v;
  f->gen = wp.gen;
  f->state = kAtCollective;
  wp.arrived |= 1u << f->lane;
  yield_to_scheduler();
  return w.warps[f->warp].slots[f->gen & 1];
}

unsigned lane_id() { return g_w.cur ? g_w.cur->lane : 0; }

int shfl_source(int kind, int lane, int arg, int width) {
  if (width < 1 || width > 32 || (width & (width - 1))) {
    fault("shuffle width is not a power of two in 1..32");
    return -1;
  }
  const int lo = lane & ~(width - 1), hi = lo + width;
  int src = lane;
  switch (kind) {
    case 0: src = lo + (arg & (width - 1)); break;      // __shfl_sync
    case 1: src = lane - arg; break;                     // __shfl_up_sync
    case 2: src = lane + arg; break;                     // __shfl_down_sync
    default: src = lane ^ arg; break;                    // __shfl_xor_sync
  }
  return (src < lo || src >= hi) ? -1 : src;
}

void* dynamic_smem_ptr() { return g_w.dyn.data(); }

int new_static_smem_id() {
  static std::atomic<int> next{0};
  return next++;
}

void* static_smem(int id, size_t bytes, size_t align) {
  Worker& w = g_w;
  if (size_t(id) >= w.statics.size()) w.statics.resize(size_t(id) + 1, nullptr);
  void*& p = w.statics[size_t(id)];
  if (!p) {
    const size_t al = align < 16 ? 16 : align;
    p = std::aligned_alloc(al, (bytes + al - 1) / al * al);
    std::memset(p, 0xff, bytes);
    w.static_bytes += bytes;
  }
  return p;
}

void run_grid(const Config& c, const LaunchSite& site, void (*thread_fn)(void*), void* ctx) {
  Worker& w = g_w;
  const std::string name = std::string(site.name) + " (" + site.file + ":" + std::to_string(site.line) + ")";
  if (w.in_kernel) {
    fault("kernel launch from device code");
    return;
  }
  const uint64_t threads = uint64_t(c.block.x) * c.block.y * c.block.z;
  if (c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 || c.grid.x > 0x7fffffffu || c.grid.y > 65535 ||
      c.grid.z > 65535 || threads == 0 || threads > 1024 || c.block.x > 1024 || c.block.y > 1024 || c.block.z > 64) {
    set_error(cudaErrorInvalidConfiguration, name + ": grid " + dims(c.grid) + ", block " + dims(c.block));
    return;
  }
  const size_t dyn_limit = max_dynamic_smem(site.key);
  if (c.smem > dyn_limit) {
    set_error(cudaErrorInvalidValue, name + ": " + std::to_string(c.smem) + " bytes of dynamic shared memory, " +
                                         std::to_string(dyn_limit) + " allowed (cudaFuncSetAttribute opt-in)");
    return;
  }
  count_launch(c.grid, threads);
  DeviceAccess access;
  static const bool trace = std::getenv("BET_CUDA_EMU_TRACE") != nullptr;
  if (trace) std::fprintf(stderr, "cuda_emu: launch %s grid %s block %s smem %zu\n", name.c_str(), dims(c.grid).c_str(), dims(c.block).c_str(), c.smem);
  const dim3 saved_grid = gridDim, saved_block = blockDim;
  gridDim = c.grid;
  blockDim = c.block;
  w.site = &site;
  w.fn = thread_fn;
  w.ctx = ctx;
  w.fault.clear();
  w.faults = 0;
  w.dyn_bytes = c.smem;
  if (w.dyn.size() < c.smem) w.dyn.resize(c.smem);
  struct InKernel {  // restored however the grid ends
    Worker& w;
    dim3 grid, block;
    ~InKernel() {
      w.in_kernel = false;
      gridDim = grid;
      blockDim = block;
    }
  } scope{w, saved_grid, saved_block};
  w.in_kernel = true;
  for (unsigned z = 0; z < c.grid.z; ++z)
    for (unsigned y = 0; y < c.grid.y; ++y)
      for (unsigned x = 0; x < c.grid.x; ++x) {
        blockIdx = {x, y, z};
        run_block(w, unsigned(threads), (uint64_t(z) * c.grid.y + y) * c.grid.x + x);
      }
  if (w.faults)
    set_error(cudaErrorLaunchFailure, name + ", grid " + dims(c.grid) + " block " + dims(c.block) + ": " + w.fault +
                                          (w.faults > 1 ? " (and " + std::to_string(w.faults - 1) + " more)" : ""));
}

void bad_argument(const LaunchSite& site, int index, const void* p) {
  char buf[120];
  std::snprintf(buf, sizeof buf, ": argument %d (%p) is neither null nor memory of the current device", index, p);
  set_error(cudaErrorIllegalAddress,
            std::string(site.name) + " (" + site.file + ":" + std::to_string(site.line) + ")" + buf);
}

}  // namespace emu
