#include "runtime/diagnose/result.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "runtime/io/atomic_file.h"

namespace bet::diagnose {

std::string csv_number(double v) {
  if (std::isnan(v)) return "";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string render_csv(const CsvTable& t) {
  std::string out;
  for (size_t i = 0; i < t.columns.size(); ++i) out += (i ? "," : "") + csv_cell(t.columns[i]);
  out += "\n";
  for (const auto& row : t.rows) {
    for (size_t i = 0; i < row.size(); ++i) out += (i ? "," : "") + csv_cell(row[i]);
    out += "\n";
  }
  return out;
}

nlohmann::json to_json(const ExperimentResult& r) {
  nlohmann::json j;
  j["name"] = r.name;
  j["title"] = r.title;
  j["passed"] = r.verdict.passed();
  j["flags"] = r.verdict.flags;
  j["notes"] = r.verdict.notes;
  j["seconds"] = r.seconds;
  nlohmann::json h = nlohmann::json::array();
  for (const auto& x : r.headlines)
    h.push_back({{"quantity", x.quantity}, {"measured", x.measured}, {"theory", x.theory}});
  j["headlines"] = h;
  j["data"] = r.data;
  return j;
}

void write_result_files(const ExperimentResult& r, const std::string& dir) {
  std::filesystem::create_directories(dir);
  const std::string base = (std::filesystem::path(dir) / r.name).string();
  runtime::atomic_write_file(base + ".json", to_json(r).dump(2) + "\n");
  for (const auto& t : r.tables)
    runtime::atomic_write_file(base + (t.suffix.empty() ? "" : "-" + t.suffix) + ".csv", render_csv(t));
}

report::Section to_section(const ExperimentResult& r) {
  report::Section s;
  s.id = r.name;
  s.title = r.title;
  s.passed = r.verdict.passed();
  s.flags = r.verdict.flags;
  s.description = r.description;
  s.notes = r.verdict.notes;
  s.headlines = r.headlines;
  s.tables = r.html_tables;
  s.plots = r.plots;
  return s;
}

}  // namespace bet::diagnose
