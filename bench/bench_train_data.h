// `betctl bench train --data FILE`: end-to-end training on a real data file, through
// the code `betctl train` runs (runtime/train/training_data: read, tokenise, split;
// runtime/data/batching: epoch plan, batch assembly and padding; then the trainer's
// step), against the step alone on the same batches already built, in the same run.
// It reports samples/s both ways and the share of the time spent on the data.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>

#include "bench/bench_train.h"

namespace bet::bench {

// Share of a run's time spent on data: (load + data) / (load + total), where `load_s`
// is the one-off read + tokenise, `data_s` the batch assembly of the steps and
// `total_s` the steps' whole time, assembly included. NaN when the parts are
// inconsistent (negative, or data > total).
inline double data_loading_share(double load_s, double data_s, double total_s) {
  if (!(load_s >= 0 && data_s >= 0 && total_s >= data_s) || load_s + total_s <= 0) return NAN;
  return (load_s + data_s) / (load_s + total_s);
}

// The same for a run of `steps` steps at the per-step medians (e.g. a full default
// `betctl train` run: 3 epochs), the load paid once.
inline double projected_data_share(double load_s, double data_s_per_step, double step_s_per_step, int64_t steps) {
  if (steps < 0) return NAN;
  return data_loading_share(load_s, data_s_per_step * double(steps), step_s_per_step * double(steps));
}

// --data runs the default classifier of `betctl train` (model/config.h defaults, bet
// layer, batch 32, max_len 256 as the sequence cap) for 20 timed steps: sets each of
// those fields whose flag `given` says was not on the command line ("--d-model", ...).
void apply_data_defaults(TrainBenchOptions& t, const std::function<bool(const std::string&)>& given);

// Prints the table; returns 0, 1 when a layer's run failed (its row says why), 2 for bad
// options or an unreadable file.
// Called by run_train (which has checked the format and the shared flags, and resolved
// --device and --precision) when --data is given.
int run_train_data(const BenchOptions& opts, const TrainBenchOptions& t, const TrainPlacement& place);

}  // namespace bet::bench
