// Which vector ISA our own CPU kernels run on: the AVX2 form every file is compiled for
// (-march=x86-64-v3), or an AVX-512 twin chosen at run time.
//
// Kernels with twins: softmax / log-softmax / cross-entropy (cpu/softmax.cpp), layer_norm
// (cpu/layer_norm.cpp), dropout and rope (cpu/rope_dropout.cpp), AdamW (cpu/optim.cpp)
// and gelu (cpu/elementwise.cpp).
//
// How a twin is built (and why it cannot leak AVX-512 into AVX2 callers): the kernel's
// body is an always_inline template (BET_VINLINE, kernels/cpu/vec_math.h) with no target
// attribute of its own, instantiated inside two thin wrappers with internal linkage: one
// plain (the build's AVX2 target) and one marked BET_AVX512_TARGET. An always_inline
// body is compiled as part of its caller, with the caller's target, so the AVX-512
// wrapper gets zmm code; nothing with external linkage (no inline function, no template
// instantiation another TU could share) is ever compiled for AVX-512, so the linker
// cannot pick an AVX-512 copy for an AVX2 caller (the ODR trap of building a whole TU
// with -mavx512f). Should GCC ever emit an out-of-line copy of a body or of a helper,
// that copy is compiled for the default (AVX2) target. The caller picks the wrapper
// with kernel_isa() before it forks work, so AVX-512 code only runs after the CPUID
// check below. `objdump -d` of the kernel objects shows zmm only in the *_avx512
// wrappers.
//
// Same bits on both paths: the elementwise maps (gelu, dropout, rope, AdamW) are the same
// scalar expressions, evaluated lane-wise, with the same FMA contractions; the row
// reductions (softmax's max and sums, layer_norm's mean, variance and backward sums) use
// 16 partial accumulators on both paths (kernels/cpu/vec_math.h, vr::Acc16), combined in
// a fixed tree, so the summation order does not depend on the vector width.
// tests/test_cpu_isa.cpp checks every kernel bit for bit on both paths.
#pragma once
#include <string>

// The attribute of the AVX-512 twins: 512-bit vectors (GCC otherwise prefers 256 even
// with AVX-512 enabled). Off x86-64 (no AVX2 build) both twins are the plain build and
// cpu_has_avx512() is false.
#if defined(__x86_64__) && defined(__AVX2__)
#define BET_HAVE_AVX512_TWINS 1
#define BET_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")))
#else
#define BET_HAVE_AVX512_TWINS 0
#define BET_AVX512_TARGET
#endif

namespace bet::kernels::cpu {

enum class CpuIsa { Avx2, Avx512 };
// The setting: auto (per kernel, see kernel_isa), or one path for every kernel.
enum class CpuIsaMode { Auto, Avx2, Avx512 };
enum class IsaKernel { Softmax, LayerNorm, Dropout, Rope, AdamW, Gelu };
inline constexpr int kIsaKernels = 6;

// Whether this CPU (and OS) runs the AVX-512 twins: avx512f, bw, vl and dq (false
// where BET_CPU_ISA_HIDE_AVX512 is set and not 0: the AVX2-only behaviour, for tests).
bool cpu_has_avx512();

// Parses a BET_CPU_ISA value (avx2 | avx512 | auto; null or empty: auto). Throws
// bet::Error naming the variable for another value, and for avx512 where
// `have_avx512` is false.
CpuIsaMode parse_cpu_isa(const char* value, bool have_avx512);

// The mode in effect: set_cpu_isa_mode's, else BET_CPU_ISA's (read once; a bad value
// throws here, on every call, so every kernel call reports it).
CpuIsaMode cpu_isa_mode();
// Sets the mode for the whole process (every thread). Throws for Avx512 on a CPU
// without it.
void set_cpu_isa_mode(CpuIsaMode m);

// The path `k` runs now. Auto: AVX-512 where the CPU has it and where it is faster for
// that kernel (see the table in isa.cpp), else AVX2.
CpuIsa kernel_isa(IsaKernel k);
const char* isa_name(CpuIsa isa);          // "avx2", "avx512"
const char* isa_kernel_name(IsaKernel k);  // "softmax", ...
// One line for logs and bench headers, e.g. "avx512 (auto; avx512f/bw/vl/dq present)"
// or "avx2 (BET_CPU_ISA=avx2)"; kernels that auto mode keeps on AVX2 are named.
std::string kernel_isa_summary();

// Forces a mode for a scope (tests, bench), restoring the previous one on exit.
class ScopedCpuIsa {
 public:
  explicit ScopedCpuIsa(CpuIsaMode m);
  ~ScopedCpuIsa();
  ScopedCpuIsa(const ScopedCpuIsa&) = delete;
  ScopedCpuIsa& operator=(const ScopedCpuIsa&) = delete;

 private:
  int prev_;
};

}  // namespace bet::kernels::cpu
