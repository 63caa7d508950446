// What only the CPU's matmul has (the contract is kernels/matmul.h).
#pragma once
#include <cstddef>

namespace bet::kernels::cpu {

// Number of oneDNN primitives held in the cache (for tests of the caching itself).
size_t matmul_cache_size();

}  // namespace bet::kernels::cpu
