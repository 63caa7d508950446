#include "runtime/report/html_report.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace bet::report {

namespace {

// The page's only styling, inline.
const char* const kStyle = R"(body{font-family:sans-serif;margin:24px auto;max-width:1180px;color:#222}
h1{margin-bottom:4px}.sub{color:#666;margin-top:0}
section{border-top:2px solid #ddd;padding:8px 0 16px}
h2{display:flex;align-items:center;gap:12px}
.badge{font-size:13px;padding:3px 10px;border-radius:10px;color:#fff}
.pass{background:#1a7f37}.flag{background:#c2410c}
table{border-collapse:collapse;margin:8px 0 12px}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:left;font-size:13px}
th{background:#f4f4f4}td.num{text-align:right;font-family:monospace}
ul.flags li{color:#c2410c}ul.notes li{color:#444}.plots{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0}
nav a{margin-right:12px})";

bool looks_numeric(const std::string& s) {
  if (s.empty()) return false;
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return end && *end == '\0';
}

void write_table(std::ostringstream& o, const Table& t) {
  o << "<table>";
  if (!t.caption.empty()) o << "<caption>" << xml_escape(t.caption) << "</caption>";
  o << "<thead><tr>";
  for (const auto& c : t.columns) o << "<th>" << xml_escape(c) << "</th>";
  o << "</tr></thead><tbody>";
  for (const auto& row : t.rows) {
    o << "<tr>";
    for (const auto& cell : row)
      o << (looks_numeric(cell) ? "<td class=\"num\">" : "<td>") << xml_escape(cell) << "</td>";
    o << "</tr>";
  }
  o << "</tbody></table>\n";
}

}  // namespace

std::string format_number(double v, int digits) {
  if (std::isnan(v)) return "n/a";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

std::string render_html(const Report& r) {
  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" << xml_escape(r.title)
    << "</title><style>" << kStyle << "</style></head><body>\n";
  o << "<h1>" << xml_escape(r.title) << "</h1>\n<p class=\"sub\">" << xml_escape(r.subtitle) << "</p>\n";
  o << "<nav>";
  for (const Section& s : r.sections)
    o << "<a href=\"#" << xml_escape(s.id) << "\">" << xml_escape(s.title) << (s.passed ? " &#10003;" : " &#9873;")
      << "</a>";
  o << "</nav>\n";
  for (const Section& s : r.sections) {
    o << "<section id=\"" << xml_escape(s.id) << "\"><h2>" << xml_escape(s.title) << " <span class=\"badge "
      << (s.passed ? "pass\">pass" : "flag\">flagged") << "</span></h2>\n";
    if (!s.description.empty()) o << "<p>" << xml_escape(s.description) << "</p>\n";
    if (!s.headlines.empty()) {
      Table t;
      t.columns = {"quantity", "measured", "theory / paper"};
      for (const auto& h : s.headlines) t.rows.push_back({h.quantity, h.measured, h.theory.empty() ? "-" : h.theory});
      write_table(o, t);
    }
    if (!s.flags.empty()) {
      o << "<ul class=\"flags\">";
      for (const auto& f : s.flags) o << "<li>" << xml_escape(f) << "</li>";
      o << "</ul>\n";
    }
    if (!s.notes.empty()) {
      o << "<ul class=\"notes\">";
      for (const auto& n : s.notes) o << "<li>" << xml_escape(n) << "</li>";
      o << "</ul>\n";
    }
    for (const auto& t : s.tables) write_table(o, t);
    o << "<div class=\"plots\">\n";
    for (const auto& p : s.plots) o << "<figure>" << render_svg(p) << "</figure>\n";
    o << "</div></section>\n";
  }
  o << "</body></html>\n";
  return o.str();
}

}  // namespace bet::report
