// `betctl bench ops`: the engine's op throughput, each row beside a baseline measured in
// the same run (oneDNN sgemm for matrix products, a same-size copy for memory-bound
// ops) and the machine's FMA peak and copy bandwidth.
#pragma once
#include "bench/report.h"

namespace bet::bench {

// What `bench ops` runs beyond BenchOptions.
struct OpsBenchOptions {
  // Only the "isa:" rows: our own CPU kernels on their AVX-512 path against their AVX2
  // twin (kernels/cpu/isa.h), in the same run.
  bool isa_only = false;
};

// Prints the table (opts.format) to stdout or writes it to opts.out. Returns 0; 1 when
// an op failed (its row says why) or BET_CPU_ISA is unusable; 2 for a bad format or an
// unwritable --out.
int run_ops(const BenchOptions& opts, const OpsBenchOptions& ops = {});

}  // namespace bet::bench
