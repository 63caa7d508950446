#include "runtime/server/prometheus.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>

namespace bet::server::prom {

namespace {

bool name_char(char c, bool first, bool colon_ok) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
  if (c == ':') return colon_ok;
  return !first && c >= '0' && c <= '9';
}

const char* type_name(int t) {
  switch (t) {
    case 0: return "counter";
    case 1: return "gauge";
    default: return "histogram";
  }
}

void append_labels(std::string& out, const Labels& labels, std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return;
  out.push_back('{');
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out.push_back(',');
    first = false;
    out.append(k);
    out.append("=\"");
    out.append(escape_label_value(v));
    out.push_back('"');
  }
  if (!extra_name.empty()) {
    if (!first) out.push_back(',');
    out.append(extra_name);
    out.append("=\"");
    out.append(extra_value);
    out.push_back('"');
  }
  out.push_back('}');
}

}  // namespace

bool valid_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (!name_char(name[i], i == 0, true)) return false;
  return true;
}

bool valid_label_name(std::string_view name) {
  if (name.empty() || name.substr(0, 2) == "__") return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (!name_char(name[i], i == 0, false)) return false;
  return true;
}

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out.append("\\\\");
    else if (c == '"') out.append("\\\"");
    else if (c == '\n') out.append("\\n");
    else out.push_back(c);
  }
  return out;
}

std::string escape_help(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out.append("\\\\");
    else if (c == '\n') out.append("\\n");
    else out.push_back(c);
  }
  return out;
}

void append_number(std::string& out, double v) {
  if (std::isnan(v)) {
    out.append("NaN");
  } else if (std::isinf(v)) {
    out.append(v > 0 ? "+Inf" : "-Inf");
  } else {
    // Shortest round-trip digits; plain notation in the everyday range ("0.0005",
    // not "5e-04"), which is what people grep for in bucket bounds.
    char buf[64];
    double a = std::fabs(v);
    auto r = (a == 0 || (a >= 1e-6 && a < 1e15)) ? std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed)
                                                 : std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, static_cast<size_t>(r.ptr - buf));
  }
}

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && bounds_[i] <= bounds_[i - 1]))
      throw std::invalid_argument("histogram buckets must be finite and strictly increasing");
  }
  counts_.reset(new std::atomic<uint64_t>[bounds_.size() + 1]);
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double v) {
  size_t i = std::isnan(v) ? bounds_.size()
                           : static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::bucket_counts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  for (size_t i = 0; i < out.size(); ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}

std::vector<double> latency_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::vector<double> power_of_two_buckets(double max) {
  std::vector<double> b;
  for (double v = 1; ; v *= 2) {
    b.push_back(v);
    if (v >= max) break;
  }
  return b;
}

Registry::Series& Registry::series(std::string_view name, std::string_view help, Type type,
                                   const Labels& labels) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    if (!valid_metric_name(name)) throw std::invalid_argument("invalid metric name: " + std::string(name));
    Family f;
    f.type = type;
    f.help = std::string(help);
    for (const auto& [k, v] : labels) {
      if (!valid_label_name(k) || (type == Type::kHistogram && k == "le"))
        throw std::invalid_argument("invalid label name: " + k);
      for (const auto& seen : f.label_names)
        if (seen == k) throw std::invalid_argument("duplicate label name: " + k);
      f.label_names.push_back(k);
    }
    it = families_.emplace(std::string(name), std::move(f)).first;
  }
  Family& f = it->second;
  if (f.type != type) throw std::invalid_argument("metric registered with another type: " + std::string(name));
  if (labels.size() != f.label_names.size())
    throw std::invalid_argument("metric used with another label set: " + std::string(name));
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i].first != f.label_names[i])
      throw std::invalid_argument("metric used with another label set: " + std::string(name));
  for (auto& s : f.series)
    if (s->labels == labels) return *s;
  auto s = std::make_unique<Series>();
  s->labels = labels;
  f.series.push_back(std::move(s));
  return *f.series.back();
}

Counter& Registry::counter(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lock(mu_);
  Series& s = series(name, help, Type::kCounter, labels);
  if (!s.counter) s.counter = std::make_unique<Counter>();
  return *s.counter;
}

Gauge& Registry::gauge(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lock(mu_);
  Series& s = series(name, help, Type::kGauge, labels);
  if (!s.gauge) s.gauge = std::make_unique<Gauge>();
  return *s.gauge;
}

Histogram& Registry::histogram(std::string_view name, std::string_view help, const std::vector<double>& buckets,
                               const Labels& labels) {
  std::lock_guard lock(mu_);
  Series& s = series(name, help, Type::kHistogram, labels);
  if (!s.histogram) s.histogram = std::make_unique<Histogram>(buckets);
  return *s.histogram;
}

void Registry::remove_family(std::string_view name) {
  std::lock_guard lock(mu_);
  auto it = families_.find(name);
  if (it != families_.end()) families_.erase(it);
}

void Registry::write(std::string& out) const {
  std::lock_guard lock(mu_);
  for (const auto& [name, f] : families_) {
    out.append("# HELP ");
    out.append(name);
    out.push_back(' ');
    out.append(escape_help(f.help));
    out.append("\n# TYPE ");
    out.append(name);
    out.push_back(' ');
    out.append(type_name(static_cast<int>(f.type)));
    out.push_back('\n');
    for (const auto& s : f.series) {
      if (f.type == Type::kHistogram) {
        const Histogram& h = *s->histogram;
        std::vector<uint64_t> counts = h.bucket_counts();
        // Cumulate a snapshot so the buckets, +Inf and _count agree with each other
        // even while other threads keep observing.
        uint64_t cumulative = 0;
        std::string le;
        for (size_t i = 0; i <= h.bounds().size(); ++i) {
          cumulative += counts[i];
          le.clear();
          if (i < h.bounds().size()) append_number(le, h.bounds()[i]);
          else le = "+Inf";
          out.append(name);
          out.append("_bucket");
          append_labels(out, s->labels, "le", le);
          out.push_back(' ');
          append_number(out, static_cast<double>(cumulative));
          out.push_back('\n');
        }
        out.append(name);
        out.append("_sum");
        append_labels(out, s->labels);
        out.push_back(' ');
        append_number(out, h.sum());
        out.push_back('\n');
        out.append(name);
        out.append("_count");
        append_labels(out, s->labels);
        out.push_back(' ');
        append_number(out, static_cast<double>(cumulative));
        out.push_back('\n');
      } else {
        out.append(name);
        append_labels(out, s->labels);
        out.push_back(' ');
        append_number(out, f.type == Type::kCounter ? s->counter->value() : s->gauge->value());
        out.push_back('\n');
      }
    }
  }
}

}  // namespace bet::server::prom
