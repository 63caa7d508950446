// What every diagnose experiment returns: its verdict against the theory, the numbers it
// measured (JSON), its tables (CSV) and its part of the HTML report. Experiments are
// pure functions from their inputs to an ExperimentResult; writing files is separate.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/report/html_report.h"

namespace bet::diagnose {

// A property check's answer. `flags` say why the measurement does not show the
// property (empty: it does); `notes` say what to look at without failing it.
struct Verdict {
  std::vector<std::string> flags;
  std::vector<std::string> notes;
  bool passed() const { return flags.empty(); }
  void flag(std::string why) { flags.push_back(std::move(why)); }
  void note(std::string what) { notes.push_back(std::move(what)); }
};

// One CSV file: NAME.csv (the experiment's main table) or NAME-SUFFIX.csv.
struct CsvTable {
  std::string suffix;  // "" for the main table
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;
};

struct ExperimentResult {
  std::string name;   // bernoulli, martingale, ...
  std::string title;  // shown in the report
  std::string description;
  Verdict verdict;
  std::vector<report::Headline> headlines;
  nlohmann::json data = nlohmann::json::object();  // every number measured
  std::vector<CsvTable> tables;
  std::vector<report::Table> html_tables;
  std::vector<report::Plot> plots;
  double seconds = 0;
};

// A CSV cell for a number: full precision, NaN as an empty cell.
std::string csv_number(double v);
// Quotes a CSV cell when it needs it (RFC 4180).
std::string csv_cell(const std::string& s);
std::string render_csv(const CsvTable& t);

nlohmann::json to_json(const ExperimentResult& r);
// NAME.json and each table's CSV, in `dir` (created if needed).
void write_result_files(const ExperimentResult& r, const std::string& dir);
report::Section to_section(const ExperimentResult& r);

}  // namespace bet::diagnose
