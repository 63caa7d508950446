// A self-contained HTML report (no scripts, fonts, images or styles from elsewhere):
// a title, then one section per experiment with its pass/flag badge, its headline
// numbers beside the theory's (or the paper's) values, its flags, tables and inline
// SVG plots (svg_plot.h). Everything is escaped; the page is valid HTML5.
#pragma once
#include <string>
#include <vector>

#include "runtime/report/svg_plot.h"

namespace bet::report {

struct Headline {
  std::string quantity;  // "fitted log-log slope"
  std::string measured;  // formatted: "-0.48"
  std::string theory;    // "-1/2" or "" when the theory names no value
};

struct Table {
  std::string caption;
  std::vector<std::string> columns;
  std::vector<std::vector<std::string>> rows;  // formatted cells
};

struct Section {
  std::string id;     // anchor: "bernoulli"
  std::string title;  // "Bernoulli microscope"
  bool passed = false;
  std::vector<std::string> flags;  // why it did not pass
  std::vector<std::string> notes;  // what to look at, without failing it
  std::string description;         // what was measured, one paragraph of plain text
  std::vector<Headline> headlines;
  std::vector<Table> tables;
  std::vector<Plot> plots;
};

struct Report {
  std::string title;
  std::string subtitle;  // how it was run: "--quick, 2 threads, 95 s"
  std::vector<Section> sections;
};

std::string render_html(const Report& report);

// "%.3g"-style formatting for report cells; NaN as "n/a".
std::string format_number(double v, int digits = 3);

}  // namespace bet::report
