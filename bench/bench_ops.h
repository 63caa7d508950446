// `betctl bench ops`: the engine's op throughput, each row beside a baseline measured in
// the same run (oneDNN sgemm for matrix products, a same-size copy for memory-bound
// ops) and the machine's FMA peak and copy bandwidth.
#pragma once
#include "bench/report.h"

namespace bet::bench {

// Prints the table (opts.format) to stdout or writes it to opts.out. Returns 0; 1 when
// an op failed (its row says why); 2 for a bad format or an unwritable --out.
int run_ops(const BenchOptions& opts);

}  // namespace bet::bench
