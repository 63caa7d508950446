#include "kernels/cpu/isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "platform/error.h"

namespace bet::kernels::cpu {

namespace {

// Auto mode, per kernel: AVX-512 where it measured faster than AVX2 (betctl bench ops
// --isa-only, and best-of-N timings of each kernel alone, one thread, on a Xeon with
// AVX-512 F/BW/VL/DQ, 2026-12). The choice changes no result (both paths give the same
// bits), only speed. The figures are speedups: AVX2 time / AVX-512 time.
constexpr bool kAutoAvx512[kIsaKernels] = {
    true,   // softmax (and log_softmax, cross_entropy): 1.2-1.3x forward, 1.0-1.2x with backward
    true,   // layer_norm: 1.1-1.9x forward, 1.0-1.2x with backward
    true,   // dropout: Philox is compute-bound, 16 lanes per instruction: 1.5-1.7x
    true,   // rope: mostly memory-bound (one read, one write per element), still 1.01-1.10x
    false,  // adamw: memory-bound (7 floats moved per parameter): 0.92-0.94x in bench ops
            // medians, 1.01x best-of; no gain, so AVX2 (and no 512-bit clock drop on
            // older Xeons for its sqrt and divide)
    true,   // gelu: the erf rational and a divide per element: 1.3-1.8x
};

constexpr int kNoOverride = -1;
std::atomic<int>& override_mode() {
  static std::atomic<int> m{kNoOverride};
  return m;
}

struct EnvSetting {
  CpuIsaMode mode = CpuIsaMode::Auto;
  std::string error;  // non-empty: BET_CPU_ISA is unusable, every kernel call says so
  std::string raw;
};

const EnvSetting& env_setting() {
  static const EnvSetting s = [] {
    EnvSetting e;
    const char* v = std::getenv("BET_CPU_ISA");
    if (v) e.raw = v;
    try {
      e.mode = parse_cpu_isa(v, cpu_has_avx512());
    } catch (const Error& err) {
      e.error = err.what();
    }
    return e;
  }();
  return s;
}

}  // namespace

bool cpu_has_avx512() {
  static const bool has = [] {
    // BET_CPU_ISA_HIDE_AVX512=1: behave as on a CPU without AVX-512 (checks the AVX2-only
    // behaviour, e.g. test_cpu_isa's skips and errors, on a machine that has it).
    if (const char* h = std::getenv("BET_CPU_ISA_HIDE_AVX512"); h && *h && std::strcmp(h, "0") != 0) return false;
#if BET_HAVE_AVX512_TWINS
    __builtin_cpu_init();
    // libgcc reports AVX-512 features only where the OS saves the zmm state (XCR0).
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
    return false;
#endif
  }();
  return has;
}

CpuIsaMode parse_cpu_isa(const char* value, bool have_avx512) {
  if (!value || !*value || std::strcmp(value, "auto") == 0) return CpuIsaMode::Auto;
  if (std::strcmp(value, "avx2") == 0) return CpuIsaMode::Avx2;
  if (std::strcmp(value, "avx512") == 0) {
    if (!have_avx512)
      fail("BET_CPU_ISA=avx512: this CPU does not have AVX-512 (avx512f, avx512bw, avx512vl and avx512dq are "
           "needed); unset BET_CPU_ISA or use BET_CPU_ISA=auto or avx2");
    return CpuIsaMode::Avx512;
  }
  fail("BET_CPU_ISA='", value, "' is not one of avx2, avx512, auto");
}

CpuIsaMode cpu_isa_mode() {
  const int o = override_mode().load(std::memory_order_relaxed);
  if (o != kNoOverride) return CpuIsaMode(o);
  const EnvSetting& e = env_setting();
  if (!e.error.empty()) throw Error(e.error);
  return e.mode;
}

void set_cpu_isa_mode(CpuIsaMode m) {
  if (m == CpuIsaMode::Avx512 && !cpu_has_avx512())
    fail("cpu isa: AVX-512 forced, but this CPU does not have avx512f, avx512bw, avx512vl and avx512dq");
  override_mode().store(int(m));
}

CpuIsa kernel_isa(IsaKernel k) {
  switch (cpu_isa_mode()) {
    case CpuIsaMode::Avx2: return CpuIsa::Avx2;
    case CpuIsaMode::Avx512: return CpuIsa::Avx512;
    default: return cpu_has_avx512() && kAutoAvx512[int(k)] ? CpuIsa::Avx512 : CpuIsa::Avx2;
  }
}

const char* isa_name(CpuIsa isa) { return isa == CpuIsa::Avx512 ? "avx512" : "avx2"; }

const char* isa_kernel_name(IsaKernel k) {
  switch (k) {
    case IsaKernel::Softmax: return "softmax";
    case IsaKernel::LayerNorm: return "layer_norm";
    case IsaKernel::Dropout: return "dropout";
    case IsaKernel::Rope: return "rope";
    case IsaKernel::AdamW: return "adamw";
    case IsaKernel::Gelu: return "gelu";
  }
  return "?";
}

std::string kernel_isa_summary() {
  const CpuIsaMode m = cpu_isa_mode();
  const bool forced_by_env = override_mode().load() == kNoOverride && m != CpuIsaMode::Auto;
  if (m == CpuIsaMode::Avx2)
    return forced_by_env ? "avx2 (BET_CPU_ISA=avx2)" : "avx2 (forced in-process)";
  if (m == CpuIsaMode::Avx512)
    return forced_by_env ? "avx512 (BET_CPU_ISA=avx512)" : "avx512 (forced in-process)";
  if (!cpu_has_avx512()) return "avx2 (auto: no avx512f/bw/vl/dq)";
  std::string kept;
  for (int k = 0; k < kIsaKernels; ++k)
    if (!kAutoAvx512[k]) kept += std::string(kept.empty() ? "" : ", ") + isa_kernel_name(IsaKernel(k));
  return kept.empty() ? "avx512 (auto; avx512f/bw/vl/dq present)"
                      : "avx512 (auto; avx2 kept for " + kept + ": memory-bound, no gain there)";
}

ScopedCpuIsa::ScopedCpuIsa(CpuIsaMode m) : prev_(override_mode().load()) { set_cpu_isa_mode(m); }
ScopedCpuIsa::~ScopedCpuIsa() { override_mode().store(prev_); }

}  // namespace bet::kernels::cpu
