#include "runtime/train/run_log.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "runtime/io/atomic_file.h"

namespace bet::runtime {

RunLog::RunLog(const std::string& dir, bool quiet, bool writer)
    : quiet_(quiet || !writer), tty_(::isatty(2)), writer_(writer) {
  if (!writer) return;
  make_dirs(dir);
  events_ = std::make_unique<EventWriter>(dir);
  jsonl_.open(dir + "/metrics.jsonl", std::ios::app);
}

RunLog::~RunLog() { finish_progress(); }

void RunLog::scalars(int64_t step, const std::map<std::string, double>& values) {
  if (!writer_) return;
  nlohmann::json j = {{"step", step}};
  for (const auto& [k, v] : values) {
    if (std::isfinite(v)) events_->scalar(k, v, step);
    j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
  }
  jsonl_ << j.dump() << "\n";
  jsonl_.flush();
  events_->flush();
}

void RunLog::histogram(int64_t step, const std::string& tag, const std::vector<double>& values) {
  if (!writer_) return;
  events_->histogram(tag, values, step);
}

void RunLog::message(const std::string& text) {
  if (quiet_) return;
  finish_progress();
  std::fprintf(stderr, "%s\n", text.c_str());
}

void RunLog::progress(int64_t step, int64_t total, double loss, double tps, double eta) {
  if (quiet_) return;
  const int eta_s = std::isfinite(eta) ? int(eta) : 0;
  if (tty_) {
    const int width = 30;
    int filled = total > 0 ? int(double(width) * double(step) / double(total)) : 0;
    std::string bar(size_t(filled), '#');
    bar.resize(size_t(width), '.');
    std::fprintf(stderr, "\r[%s] %lld/%lld loss %.4f %.0f tok/s ETA %d:%02d ", bar.c_str(),
                 static_cast<long long>(step), static_cast<long long>(total), loss, tps, eta_s / 60, eta_s % 60);
    std::fflush(stderr);
    bar_drawn_ = true;
  } else {
    std::fprintf(stderr, "step %lld/%lld loss %.4f tokens/s %.0f eta %ds\n", static_cast<long long>(step),
                 static_cast<long long>(total), loss, tps, eta_s);
  }
}

void RunLog::finish_progress() {
  if (bar_drawn_) {
    std::fprintf(stderr, "\n");
    bar_drawn_ = false;
  }
}

}  // namespace bet::runtime
