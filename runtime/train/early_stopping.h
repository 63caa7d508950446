// --early-stop METRIC:PATIENCE: the run stops once METRIC (a validation metric; "val/"
// may be left out) has gone PATIENCE evaluations in a row without beating its best. The
// count lives in RunState, so a resumed run keeps it.
#pragma once
#include <cstdint>
#include <map>
#include <string>

namespace bet::runtime {

class EarlyStopping {
 public:
  // "" turns it off. Throws bet::Error for a malformed spec or a patience below 1.
  explicit EarlyStopping(const std::string& spec);

  bool enabled() const { return !metric_.empty(); }
  const std::string& metric() const { return metric_; }  // "val/..."
  int64_t patience() const { return patience_; }

  // After an evaluation with metrics `vm`, where the metric beat its best or not:
  // updates `evals_without_improvement` and returns true when the run should stop.
  // Throws when the metric is not among `vm`. Does nothing when off.
  bool should_stop(const std::map<std::string, double>& vm, bool improved, int64_t& evals_without_improvement) const;

 private:
  std::string metric_;
  int64_t patience_ = 0;
};

}  // namespace bet::runtime
