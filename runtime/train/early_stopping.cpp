#include "runtime/train/early_stopping.h"

#include "engine/error.h"
#include "runtime/train/evaluate.h"

namespace bet::runtime {

EarlyStopping::EarlyStopping(const std::string& spec) {
  if (spec.empty()) return;
  const auto colon = spec.find(':');
  BET_CHECK(colon != std::string::npos, "--early-stop: '", spec, "' is not METRIC:PATIENCE");
  int64_t patience = 0;
  try {
    patience = std::stoll(spec.substr(colon + 1));
  } catch (...) {
    fail("--early-stop: patience in '", spec, "' is not a number");
  }
  BET_CHECK(patience >= 1, "--early-stop: patience must be >= 1");
  metric_ = validation_metric_key(spec.substr(0, colon));
  patience_ = patience;
}

bool EarlyStopping::should_stop(const std::map<std::string, double>& vm, bool improved,
                                int64_t& evals_without_improvement) const {
  if (!enabled()) return false;
  BET_CHECK(vm.count(metric_), "--early-stop: no validation metric '", metric_, "'");
  evals_without_improvement = improved ? 0 : evals_without_improvement + 1;
  return evals_without_improvement >= patience_;
}

}  // namespace bet::runtime
