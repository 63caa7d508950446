// `betctl bench serve`: the HTTP server under closed-loop load (bench/load_generator.h)
// on 127.0.0.1: requests/s and p50/p99 latency of GET /health and POST /v1/predict at
// several connection counts, with batching on (--max-batch 32, the default) and off
// (--max-batch 1). The server runs in this process on an ephemeral port, with the
// ModelPredictor `betctl serve` uses. With --peer the same load drives
// bench/peer/serve_peer.py (FastAPI + uvicorn, PyTorch) serving the same weights, and
// the table gives our throughput as a multiple of the peer's.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "bench/report.h"

namespace bet::bench {

struct ServeBenchOptions {
  std::string model;  // a classify checkpoint; empty: the default classifier, init weights
  uint64_t seed = 0;
  std::vector<int> connections{1, 16, 64};
  std::vector<int64_t> tokens{32, 256};  // /v1/predict text lengths
  double seconds = 2.0;                  // measured window per cell
  double warmup = 0.3;                   // unmeasured start of each cell
  int64_t max_requests = 200000;         // per cell
  bool peer = false;
};

// Prints the tables. 0; 1 when our server failed (could not start, or no responses);
// 2 for bad options. Missed targets show in the table's status column; an unavailable
// peer is reported there too.
int run_serve(const BenchOptions& opts, const ServeBenchOptions& o);

}  // namespace bet::bench
