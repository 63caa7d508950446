// Where a training run reports: TensorBoard event files and a JSONL metrics log in
// the log directory, and the console — a progress bar on a terminal, plain lines
// otherwise (so logs piped to a file stay readable).
#pragma once
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/logging/tfevents.h"

namespace bet::runtime {

class RunLog {
 public:
  // `writer` false (ranks other than 0 of a data-parallel run): nothing is written,
  // neither files nor console.
  RunLog(const std::string& dir, bool quiet, bool writer = true);
  ~RunLog();

  // Scalars under their tags ("train/loss", "val/accuracy"...) at a step.
  void scalars(int64_t step, const std::map<std::string, double>& values);
  void histogram(int64_t step, const std::string& tag, const std::vector<double>& values);
  // A message for the user (clears the progress bar first).
  void message(const std::string& text);
  // Progress: a redrawn bar on a terminal, a line every call otherwise.
  void progress(int64_t step, int64_t total, double loss, double tokens_per_s, double eta_s);
  void finish_progress();

 private:
  bool quiet_, tty_, writer_;
  bool bar_drawn_ = false;
  std::unique_ptr<EventWriter> events_;
  std::ofstream jsonl_;
};

}  // namespace bet::runtime
