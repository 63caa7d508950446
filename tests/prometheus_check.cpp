#include "tests/prometheus_check.h"

#include <cmath>
#include <cstdlib>
#include <optional>
#include <set>
#include <utility>

#include "runtime/server/prometheus.h"

namespace bet::test::prom {

using bet::server::prom::valid_label_name;
using bet::server::prom::valid_metric_name;

namespace {

struct HistogramSeries {
  std::vector<std::pair<std::string, double>> buckets;  // (le as written, value)
  std::optional<double> count;
  bool sum = false;
};

std::optional<double> parse_value(std::string_view s) {
  if (s == "+Inf" || s == "Inf") return HUGE_VAL;
  if (s == "-Inf") return -HUGE_VAL;
  if (s == "NaN") return std::nan("");
  if (s.empty()) return std::nullopt;
  std::string tmp(s);
  char* end = nullptr;
  double v = std::strtod(tmp.c_str(), &end);
  if (end != tmp.c_str() + tmp.size()) return std::nullopt;
  return v;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() > suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

ExpositionReport check_exposition(std::string_view text) {
  ExpositionReport rep;
  auto problem = [&](size_t lineno, const std::string& what) {
    rep.problems.push_back("line " + std::to_string(lineno) + ": " + what);
  };
  std::set<std::string> helped, finished, with_samples;
  std::string current;
  std::map<std::string, HistogramSeries> hists;
  auto enter_family = [&](size_t lineno, const std::string& family) {
    if (family == current) return;
    if (finished.count(family)) problem(lineno, "samples of " + family + " are not contiguous");
    if (!current.empty()) finished.insert(current);
    current = family;
  };

  if (!text.empty() && text.back() != '\n') rep.problems.push_back("the text does not end with a newline");
  size_t lineno = 0;
  while (!text.empty()) {
    ++lineno;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (line.empty()) continue;

    if (line.front() == '#') {
      bool is_help = line.substr(0, 7) == "# HELP ";
      bool is_type = line.substr(0, 7) == "# TYPE ";
      if (!is_help && !is_type) continue;  // a plain comment
      std::string_view rest = line.substr(7);
      size_t sp = rest.find(' ');
      std::string name(rest.substr(0, sp));
      std::string_view arg = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
      if (!valid_metric_name(name)) problem(lineno, "invalid metric name '" + name + "'");
      enter_family(lineno, name);
      if (is_help) {
        if (!helped.insert(name).second) problem(lineno, "second # HELP for " + name);
        for (size_t i = 0; i < arg.size(); ++i)
          if (arg[i] == '\\' && (i + 1 >= arg.size() || (arg[i + 1] != '\\' && arg[i + 1] != 'n')))
            problem(lineno, "bad escape in # HELP for " + name);
          else if (arg[i] == '\\')
            ++i;
      } else {
        std::string type(arg);
        if (type != "counter" && type != "gauge" && type != "histogram" && type != "summary" && type != "untyped")
          problem(lineno, "unknown type '" + type + "'");
        if (rep.types.count(name)) problem(lineno, "second # TYPE for " + name);
        if (with_samples.count(name)) problem(lineno, "# TYPE after samples of " + name);
        rep.types[name] = type;
      }
      continue;
    }

    // name{label="value",...} value [timestamp]
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    std::string name(line.substr(0, i));
    if (!valid_metric_name(name)) {
      problem(lineno, "invalid metric name in '" + std::string(line) + "'");
      continue;
    }
    std::vector<std::pair<std::string, std::string>> labels;
    std::string labels_text;
    bool ok = true;
    if (i < line.size() && line[i] == '{') {
      size_t open = i++;
      while (ok && i < line.size() && line[i] != '}') {
        size_t start = i;
        while (i < line.size() && line[i] != '=') ++i;
        std::string lname(line.substr(start, i - start));
        if (!valid_label_name(lname) || i + 1 >= line.size() || line[i + 1] != '"') {
          ok = false;
          break;
        }
        i += 2;
        std::string value;
        while (i < line.size() && line[i] != '"') {
          if (line[i] == '\\') {
            if (i + 1 >= line.size()) {
              ok = false;
              break;
            }
            char e = line[i + 1];
            if (e == '\\') value.push_back('\\');
            else if (e == '"') value.push_back('"');
            else if (e == 'n') value.push_back('\n');
            else ok = false;
            i += 2;
          } else {
            value.push_back(line[i++]);
          }
        }
        if (!ok || i >= line.size()) {
          ok = false;
          break;
        }
        ++i;  // closing quote
        for (const auto& [seen, v] : labels)
          if (seen == lname) ok = false;
        labels.emplace_back(lname, value);
        if (i < line.size() && line[i] == ',') ++i;
        else if (i >= line.size() || line[i] != '}') ok = false;
      }
      if (!ok || i >= line.size()) {
        problem(lineno, "malformed labels in '" + std::string(line) + "'");
        continue;
      }
      labels_text = std::string(line.substr(open + 1, i - open - 1));
      ++i;  // '}'
    }
    if (i >= line.size() || line[i] != ' ') {
      problem(lineno, "no value in '" + std::string(line) + "'");
      continue;
    }
    std::string_view rest = line.substr(i + 1);
    size_t sp = rest.find(' ');
    std::optional<double> value = parse_value(rest.substr(0, sp));
    if (!value) {
      problem(lineno, "bad value in '" + std::string(line) + "'");
      continue;
    }
    if (sp != std::string_view::npos) {
      std::string_view ts = rest.substr(sp + 1);
      bool digits = !ts.empty();
      for (size_t k = 0; k < ts.size(); ++k)
        if (!((ts[k] >= '0' && ts[k] <= '9') || (k == 0 && ts[k] == '-'))) digits = false;
      if (!digits) problem(lineno, "bad timestamp in '" + std::string(line) + "'");
    }

    // Which family the sample belongs to.
    std::string family = name;
    std::string suffix;
    if (!rep.types.count(name)) {
      for (const char* s : {"_bucket", "_sum", "_count"}) {
        if (!ends_with(name, s)) continue;
        std::string base = name.substr(0, name.size() - std::string_view(s).size());
        auto t = rep.types.find(base);
        if (t != rep.types.end() && (t->second == "histogram" || (t->second == "summary" && std::string_view(s) != "_bucket"))) {
          family = base;
          suffix = s;
        }
      }
    }
    if (!rep.types.count(family)) {
      problem(lineno, "sample without a preceding # TYPE: '" + std::string(line) + "'");
      family = name;
    }
    enter_family(lineno, family);
    with_samples.insert(family);
    std::string key = name + "{" + labels_text + "}";
    if (rep.samples.count(key)) problem(lineno, "duplicate sample " + key);
    rep.samples[key] = *value;

    auto type = rep.types.find(family);
    if (type != rep.types.end() && type->second == "histogram") {
      if (suffix.empty()) {
        problem(lineno, "histogram sample without _bucket/_sum/_count: " + name);
        continue;
      }
      std::string series = family + "{";
      std::optional<std::string> le;
      for (const auto& [k, v] : labels) {
        if (k == "le") le = v;
        else series += k + "=" + v + ",";
      }
      series += "}";
      HistogramSeries& h = hists[series];
      if (suffix == "_bucket") {
        if (!le) problem(lineno, "bucket without le: " + std::string(line));
        else h.buckets.emplace_back(*le, *value);
      } else if (suffix == "_count") {
        h.count = *value;
      } else {
        h.sum = true;
      }
    }
  }

  for (const auto& [series, h] : hists) {
    std::optional<double> prev_le;
    double prev = 0;
    for (const auto& [le_text, v] : h.buckets) {
      std::optional<double> le = parse_value(le_text);
      if (!le) {
        rep.problems.push_back(series + ": bad le \"" + le_text + "\"");
        continue;
      }
      if (prev_le && !(*le > *prev_le)) rep.problems.push_back(series + ": le not increasing at " + le_text);
      if (v < prev) rep.problems.push_back(series + ": buckets not cumulative at le=" + le_text);
      prev_le = le;
      prev = v;
    }
    std::optional<double> last = h.buckets.empty() ? std::nullopt : parse_value(h.buckets.back().first);
    if (!last || !std::isinf(*last))
      rep.problems.push_back(series + ": no le=\"+Inf\" bucket");
    else if (!h.count || *h.count != h.buckets.back().second)
      rep.problems.push_back(series + ": _count missing or not equal to the +Inf bucket");
    if (!h.sum) rep.problems.push_back(series + ": no _sum");
  }
  return rep;
}

}  // namespace bet::test::prom
