// Between the emulator's translation units (scheduler, runtime API, cuBLAS), and what
// the test reads back from it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "cuda_emu_access.h"
#include "cuda_runtime.h"
#include "tests/cuda_emu/emu_stats.h"

namespace emu {

// Makes `e` the runtime's last error and prints `detail` (the API call or kernel,
// and why) to stderr; returns e.
cudaError_t set_error(cudaError_t e, const std::string& detail);
// The opt-in limit of a kernel's dynamic shared memory (48 KB unless raised).
size_t max_dynamic_smem(const void* key);
void count_launch(dim3 grid, uint64_t threads_per_block);
// cudaSuccess when [p, p + n) lies inside one device allocation; else sets and
// returns cudaErrorInvalidValue naming `what`.
cudaError_t check_device_range(const void* p, size_t n, const char* what);

}  // namespace emu
