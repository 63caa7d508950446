// The three kinds of checkpoint under OUT/checkpoints/ (product.md, "Checkpoints"):
//
//   training/step-00001000.bet ... + training/latest     every N steps, newest `keep` kept
//   milestone/<metric>/step-00000800.bet ... + best.json + latest
//                                                        on improvement, per metric, all kept
//   production/model-1.2.0.bet                           `betctl export`
//
// `latest` files hold the name of the newest checkpoint beside them and, like best.json,
// are replaced atomically, after the checkpoint they name is fully on disk: a crash
// leaves them naming a complete file.
#pragma once
#include <cstdint>
#include <string>

#include "runtime/checkpoint/checkpoint.h"

namespace bet::runtime {

class CheckpointManager {
 public:
  explicit CheckpointManager(std::string out_dir, int keep = 3);

  const std::string& out_dir() const { return out_; }
  std::string training_dir() const;
  std::string milestone_dir(const std::string& metric) const;
  std::string production_dir() const;

  // Writes training/step-<8 digit step>.bet (kind "training"), points training/latest at
  // it, then deletes the oldest training checkpoints beyond `keep` (never the new one).
  // Returns the path written.
  std::string save_training(const Checkpoint& ck, int64_t step);
  // The path save_training(ck, step) writes.
  std::string training_path(int64_t step) const;

  // When `value` beats milestone/<metric>/best.json (or there is none yet): writes
  // milestone/<metric>/step-<8 digit step>.bet (kind "milestone"), best.json and latest,
  // and returns true. Otherwise writes nothing and returns false. A non-finite value
  // never improves. The direction must not change between calls for one metric.
  bool save_milestone(const Checkpoint& ck, int64_t step, const std::string& metric, double value,
                      bool higher_is_better);
  // The same, the step taken from ck.training_state["step"] (which must be there).
  bool save_milestone(const Checkpoint& ck, const std::string& metric, double value, bool higher_is_better);
  // The stored best ({"metric", "value", "higher_is_better", "step", "file"}), or null.
  nlohmann::json milestone_best(const std::string& metric) const;

  // `spec` "auto": the checkpoint training/latest names if it loads (every checksum
  // verified), else the newest training/*.bet that loads, else "" (fresh start). A
  // damaged file is skipped with a warning on stderr naming it. Any other non-empty
  // spec is a file that must load (its error is thrown). "" gives "".
  // With `loaded`, the verified checkpoint is returned there, sparing a second read.
  std::string find_resume(const std::string& spec, Checkpoint* loaded = nullptr) const;

  // Production copy of `ck`: optimizer and training state stripped; config (labels
  // included), tokenizer, weights, metrics and a model card with `version` and
  // created_at kept. `version` must be semantic ("1.2.0", "2.0.0-rc.1"). Writes to
  // `out_path`, or production/model-<version>.bet when empty; refuses to replace an
  // existing file unless `overwrite`. Returns the path written.
  std::string export_production(const Checkpoint& ck, const std::string& version, const std::string& out_path = "",
                                bool overwrite = false) const;

 private:
  std::string out_;
  int keep_;
};

// Semantic Versioning 2.0.0: MAJOR.MINOR.PATCH[-prerelease][+build], no leading zeros.
bool is_semver(const std::string& v);

// The production form of a checkpoint (what export_production writes).
Checkpoint production_checkpoint(const Checkpoint& ck, const std::string& version);

// "step-00001234.bet"; and its inverse, -1 when `name` is not of that form.
std::string step_file_name(int64_t step);
int64_t parse_step_file_name(const std::string& name);

}  // namespace bet::runtime
