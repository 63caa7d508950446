#include "runtime/checkpoint/checkpoint_manager.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <regex>
#include <vector>

#include "runtime/io/atomic_file.h"
#include "runtime/io/bounded_json.h"

namespace bet::runtime {

namespace fs = std::filesystem;
using nlohmann::json;

std::string step_file_name(int64_t step) {
  BET_CHECK(step >= 0, "checkpoint: step ", step, " is negative");
  char buf[40];
  std::snprintf(buf, sizeof buf, "step-%08lld.bet", static_cast<long long>(step));
  return buf;
}

int64_t parse_step_file_name(const std::string& name) {
  static const std::regex re("step-([0-9]{1,18})\\.bet");
  std::smatch m;
  if (!std::regex_match(name, m, re)) return -1;
  return std::stoll(m[1].str());
}

bool is_semver(const std::string& v) {
  // The regular expression of semver.org, without named groups.
  static const std::regex re(
      "(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)"
      "(-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
      "(\\+([0-9a-zA-Z-]+(\\.[0-9a-zA-Z-]+)*))?");
  return v.size() <= 256 && std::regex_match(v, re);
}

namespace {

// Checkpoint files beside a `latest` pointer, newest step first.
std::vector<std::pair<int64_t, std::string>> step_files(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file(ec)) continue;
    const std::string name = e.path().filename().string();
    const int64_t s = parse_step_file_name(name);
    if (s >= 0) out.emplace_back(s, name);
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return out;
}

void check_metric_name(const std::string& metric) {
  static const std::regex re("[A-Za-z0-9_][A-Za-z0-9_.-]*");
  BET_CHECK(metric.size() <= 128 && std::regex_match(metric, re), "milestone: metric name '", metric,
            "' must be letters, digits, '_', '.', '-' (it names a directory)");
}

}  // namespace

CheckpointManager::CheckpointManager(std::string out_dir, int keep) : out_(std::move(out_dir)), keep_(keep) {
  BET_CHECK(!out_.empty(), "checkpoints: output directory is empty");
  BET_CHECK(keep_ >= 1, "checkpoints: --keep must be >= 1, got ", keep_);
}

std::string CheckpointManager::training_dir() const { return (fs::path(out_) / "checkpoints" / "training").string(); }
std::string CheckpointManager::milestone_dir(const std::string& metric) const {
  check_metric_name(metric);
  return (fs::path(out_) / "checkpoints" / "milestone" / metric).string();
}
std::string CheckpointManager::production_dir() const {
  return (fs::path(out_) / "checkpoints" / "production").string();
}

std::string CheckpointManager::training_path(int64_t step) const {
  return (fs::path(training_dir()) / step_file_name(step)).string();
}

std::string CheckpointManager::save_training(const Checkpoint& ck, int64_t step) {
  const std::string dir = training_dir();
  make_dirs(dir);
  const std::string name = step_file_name(step);
  const std::string path = (fs::path(dir) / name).string();
  Checkpoint c = ck;  // tensors are shared handles: no copy of the data
  c.kind = "training";
  save_checkpoint(path, c);
  atomic_write_file((fs::path(dir) / "latest").string(), name + "\n");

  int kept = 1;  // the new one
  for (const auto& [s, n] : step_files(dir)) {
    if (n == name) continue;
    if (kept < keep_) {
      ++kept;
      continue;
    }
    std::error_code ec;
    fs::remove(fs::path(dir) / n, ec);
    if (ec) std::cerr << "warning: " << (fs::path(dir) / n).string() << ": cannot delete old checkpoint: "
                      << ec.message() << "\n";
  }
  // Temporaries of a writer that crashed mid-write (atomic_write_file names them
  // "<file>.tmp.<pid>"); ours is gone by now, and one run owns this directory.
  static const std::regex tmp_re("step-[0-9]+\\.bet\\.tmp\\.[0-9]+");
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (std::regex_match(e.path().filename().string(), tmp_re)) fs::remove(e.path(), ec);
  fsync_dir(dir);
  return path;
}

json CheckpointManager::milestone_best(const std::string& metric) const {
  const std::string file = (fs::path(milestone_dir(metric)) / "best.json").string();
  std::error_code ec;
  if (!fs::exists(file, ec)) return json();
  // A flat object of five fields, read with limits like every other file.
  io::JsonLimits limits;
  limits.max_depth = 2;
  limits.max_values = 1024;
  const json j = io::parse_json_or_throw(read_file(file), limits, file);
  BET_CHECK(j.is_object() && j.contains("value") && j["value"].is_number() && j.contains("higher_is_better") &&
                j["higher_is_better"].is_boolean(),
            file, ": needs a numeric 'value' and a boolean 'higher_is_better'");
  return j;
}

bool CheckpointManager::save_milestone(const Checkpoint& ck, int64_t step, const std::string& metric, double value,
                                       bool higher_is_better) {
  const std::string dir = milestone_dir(metric);
  if (!std::isfinite(value)) return false;
  json best = milestone_best(metric);
  if (!best.is_null()) {
    BET_CHECK(best["higher_is_better"].get<bool>() == higher_is_better, dir, "/best.json: metric '", metric,
              "' was tracked with higher_is_better=", best["higher_is_better"].get<bool>() ? "true" : "false",
              ", now asked with ", higher_is_better ? "true" : "false");
    const double b = best["value"].get<double>();
    if (higher_is_better ? !(value > b) : !(value < b)) return false;
  }
  make_dirs(dir);
  const std::string name = step_file_name(step);
  Checkpoint c = ck;
  c.kind = "milestone";
  save_checkpoint((fs::path(dir) / name).string(), c);
  const json record{{"metric", metric}, {"value", value}, {"higher_is_better", higher_is_better},
                    {"step", step},     {"file", name},   {"created_at", utc_timestamp()}};
  atomic_write_file((fs::path(dir) / "best.json").string(), record.dump(2) + "\n");
  atomic_write_file((fs::path(dir) / "latest").string(), name + "\n");
  return true;
}

bool CheckpointManager::save_milestone(const Checkpoint& ck, const std::string& metric, double value,
                                       bool higher_is_better) {
  BET_CHECK(ck.training_state.is_object() && ck.training_state.contains("step") &&
                ck.training_state["step"].is_number_integer(),
            "milestone '", metric, "': the checkpoint's training_state has no integer 'step'");
  return save_milestone(ck, ck.training_state["step"].get<int64_t>(), metric, value, higher_is_better);
}

std::string CheckpointManager::find_resume(const std::string& spec, Checkpoint* loaded) const {
  if (spec.empty()) return "";
  if (spec != "auto") {
    Checkpoint ck = load_checkpoint(spec);
    BET_CHECK(!ck.optimizer.empty(), spec, ": a ", ck.kind, " checkpoint has no optimizer state; cannot resume from it");
    if (loaded) *loaded = std::move(ck);
    return spec;
  }
  const std::string dir = training_dir();
  auto try_load = [&](const std::string& path) -> bool {
    try {
      Checkpoint ck = load_checkpoint(path);
      BET_CHECK(!ck.optimizer.empty(), path, ": has no optimizer state");
      if (loaded) *loaded = std::move(ck);
      return true;
    } catch (const std::exception& e) {
      std::cerr << "warning: skipping damaged checkpoint " << path << ": " << e.what() << "\n";
      return false;
    }
  };

  std::string tried;
  const std::string latest = (fs::path(dir) / "latest").string();
  std::error_code ec;
  if (fs::exists(latest, ec)) {
    std::string name = read_file(latest);
    while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
    if (parse_step_file_name(name) < 0) {
      std::cerr << "warning: " << latest << " does not name a checkpoint ('" << name.substr(0, 64)
                << "'); looking for the newest one\n";
    } else {
      tried = name;
      const std::string path = (fs::path(dir) / name).string();
      if (!fs::exists(path, ec))
        std::cerr << "warning: " << latest << " names " << path << ", which does not exist\n";
      else if (try_load(path))
        return path;
    }
  }
  for (const auto& [s, n] : step_files(dir)) {
    if (n == tried) continue;
    const std::string path = (fs::path(dir) / n).string();
    if (try_load(path)) return path;
  }
  return "";
}

Checkpoint production_checkpoint(const Checkpoint& ck, const std::string& version) {
  BET_CHECK(is_semver(version), "export: version '", version,
            "' is not a semantic version MAJOR.MINOR.PATCH (e.g. 1.2.0)");
  Checkpoint p;
  p.kind = "production";
  p.config = ck.config;
  p.tokenizer = ck.tokenizer;
  p.weights = ck.weights;
  p.quantize = ck.quantize;
  p.metrics = ck.metrics.is_null() ? json::object() : ck.metrics;
  p.card = ck.card.is_object() ? ck.card : json::object();
  if (!p.card.contains("name")) p.card["name"] = "bet-" + model::to_string(ck.config.task);
  if (!p.card.contains("description")) p.card["description"] = "";
  p.card["version"] = version;
  p.card["created_at"] = utc_timestamp();
  if (!p.card.contains("metrics")) p.card["metrics"] = p.metrics;
  if (!p.card.contains("labels")) p.card["labels"] = ck.config.labels;
  if (!p.quantize.empty()) p.card["quantize"] = p.quantize;
  else p.card.erase("quantize");
  return p;
}

std::string CheckpointManager::export_production(const Checkpoint& ck, const std::string& version,
                                                 const std::string& out_path, bool overwrite) const {
  Checkpoint p = production_checkpoint(ck, version);
  std::string path = out_path;
  if (path.empty()) {
    make_dirs(production_dir());
    path = (fs::path(production_dir()) /
            ("model-" + version + (p.quantize.empty() ? "" : "-" + p.quantize) + ".bet")).string();
  }
  std::error_code ec;
  BET_CHECK(overwrite || !fs::exists(path, ec), path, ": already exists (a released version is not replaced)");
  save_checkpoint(path, p);
  return path;
}

}  // namespace bet::runtime
