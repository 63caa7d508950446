// What only the CPU's matmul has (the contract is kernels/matmul.h).
#pragma once
#include <cstddef>

namespace bet::kernels::cpu {

// Number of oneDNN primitives held in the cache (for tests of the caching itself).
size_t matmul_cache_size();

// bf16 matmul: oneDNN's bf16 primitive (bf16 operands, f32 accumulation inside
// oneDNN, one rounding of the result) where the CPU has bf16 instructions that make it
// faster than the f32 emulation (multiplying f32 copies of the operands, rounded: the
// same numbers up to the order of accumulation). Detected once at run time: AMX
// always; AVX512_BF16 without AMX only where its dot product outruns f32 FMA (a
// microsecond probe of the two instructions' rates: on Sapphire/Emerald Rapids with AMX
// hidden it runs at half the FMA's FLOP rate, and the emulation is the faster path).
// Layouts oneDNN's bf16 kernels cannot take (and K = 0) use the emulation on any CPU.
enum class Bf16MatmulMode {
  Auto,     // as above (the default)
  OneDNN,   // oneDNN's bf16 primitive wherever the CPU has bf16 instructions
  Emulate,  // always the f32 emulation
};
// Overrides the choice (tests, comparisons). The environment variable
// BET_CPU_BF16_MATMUL=auto|onednn|emulate sets the mode a process starts with.
void set_bf16_matmul_mode(Bf16MatmulMode m);
// Whether bf16 matmuls (on layouts oneDNN takes) run on oneDNN's bf16 primitive.
bool bf16_matmul_native();
// The path bf16 matmuls take, for logs and bench headers: "onednn-bf16 (amx)",
// "onednn-bf16 (avx512_bf16)", or "f32 emulation (...)" with the reason.
const char* bf16_matmul_path();

}  // namespace bet::kernels::cpu
