#include "bench/report.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <stdexcept>

namespace bet::bench {

Row& Row::set(const std::string& name, Value v) {
  for (auto& [n, val] : fields) {
    if (n == name) {
      val = std::move(v);
      return *this;
    }
  }
  fields.emplace_back(name, std::move(v));
  return *this;
}

const Value* Row::get(const std::string& name) const {
  for (const auto& [n, val] : fields)
    if (n == name) return &val;
  return nullptr;
}

Table& Table::add_meta(const std::string& name, Value v) {
  for (auto& [n, val] : meta) {
    if (n == name) {
      val = std::move(v);
      return *this;
    }
  }
  meta.emplace_back(name, std::move(v));
  return *this;
}

std::vector<std::string> Table::columns() const {
  std::vector<std::string> cols;
  for (const auto& r : rows)
    for (const auto& [n, v] : r.fields) {
      bool seen = false;
      for (const auto& c : cols) seen = seen || c == n;
      if (!seen) cols.push_back(n);
    }
  return cols;
}

namespace {

// Bench numbers span GB/s in the thousands to ratios near 1: keep ~4 significant
// digits without switching to exponent notation for the large ones.
std::string format_double(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  double a = std::fabs(d);
  if (a >= 1000) std::snprintf(buf, sizeof buf, "%.0f", d);
  else if (a >= 100) std::snprintf(buf, sizeof buf, "%.1f", d);
  else if (a >= 10) std::snprintf(buf, sizeof buf, "%.2f", d);
  else if (a >= 0.01 || a == 0) std::snprintf(buf, sizeof buf, "%.3f", d);
  else std::snprintf(buf, sizeof buf, "%.3g", d);
  return buf;
}

nlohmann::ordered_json value_json(const Value& v) {
  return std::visit(
      [](const auto& x) -> nlohmann::ordered_json {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>) return nullptr;
        else if constexpr (std::is_same_v<T, double>) {
          if (!std::isfinite(x)) return nullptr;
          return x;
        } else return x;
      },
      v);
}

std::string md_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '|') o += "\\|";
    else if (c == '\n') o += ' ';
    else o += c;
  }
  return o;
}

std::string csv_escape(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) {
    if (c == '"') o += '"';
    o += c;
  }
  return o + "\"";
}

// Appends piecewise: GCC 12 warns falsely (-Wrestrict) on `" " + str + " |"`.
void append_md_cell(std::string& s, const std::string& text) {
  s += ' ';
  s += md_escape(text);
  s += " |";
}

void append_csv_field(std::string& s, size_t i, const std::string& text) {
  if (i) s += ',';
  s += csv_escape(text);
}

const Value& cell(const Row& r, const std::string& col) {
  static const Value empty;
  const Value* v = r.get(col);
  return v ? *v : empty;
}

}  // namespace

std::string format_value(const Value& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>) return "";
        else if constexpr (std::is_same_v<T, std::string>) return x;
        else if constexpr (std::is_same_v<T, double>) return format_double(x);
        else if constexpr (std::is_same_v<T, bool>) return x ? "true" : "false";
        else return std::to_string(x);
      },
      v);
}

std::string to_markdown(const Table& t) {
  std::string s;
  if (!t.title.empty()) s += "## " + md_escape(t.title) + "\n\n";
  for (const auto& [n, v] : t.meta) s += "- " + md_escape(n) + ": " + md_escape(format_value(v)) + "\n";
  if (!t.meta.empty()) s += "\n";
  auto cols = t.columns();
  if (cols.empty()) return s;
  s += "|";
  for (const auto& c : cols) append_md_cell(s, c);
  s += "\n|";
  for (const auto& c : cols) {
    // Right-align numeric columns (judged by the first row that has the field).
    bool numeric = false;
    for (const auto& r : t.rows) {
      const Value* v = r.get(c);
      if (v && !std::holds_alternative<std::monostate>(*v)) {
        numeric = std::holds_alternative<double>(*v) || std::holds_alternative<int64_t>(*v);
        break;
      }
    }
    s += numeric ? " ---: |" : " --- |";
  }
  s += "\n";
  for (const auto& r : t.rows) {
    s += "|";
    for (const auto& c : cols) append_md_cell(s, format_value(cell(r, c)));
    s += "\n";
  }
  return s;
}

std::string to_csv(const Table& t) {
  auto cols = t.columns();
  std::string s;
  for (size_t i = 0; i < cols.size(); ++i) append_csv_field(s, i, cols[i]);
  s += "\n";
  for (const auto& r : t.rows) {
    for (size_t i = 0; i < cols.size(); ++i) append_csv_field(s, i, format_value(cell(r, cols[i])));
    s += "\n";
  }
  return s;
}

nlohmann::ordered_json to_json(const Table& t) {
  nlohmann::ordered_json j;
  j["title"] = t.title;
  j["meta"] = nlohmann::ordered_json::object();
  for (const auto& [n, v] : t.meta) j["meta"][n] = value_json(v);
  auto cols = t.columns();
  j["columns"] = cols;
  j["rows"] = nlohmann::ordered_json::array();
  for (const auto& r : t.rows) {
    nlohmann::ordered_json o = nlohmann::ordered_json::object();
    for (const auto& c : cols) o[c] = value_json(cell(r, c));
    j["rows"].push_back(std::move(o));
  }
  return j;
}

bool valid_format(const std::string& f) { return f == "md" || f == "csv" || f == "json"; }

std::string render(const std::vector<Table>& tables, const std::string& format) {
  if (format == "json") {
    nlohmann::ordered_json j;
    j["tables"] = nlohmann::ordered_json::array();
    for (const auto& t : tables) j["tables"].push_back(to_json(t));
    return j.dump(2) + "\n";
  }
  if (!valid_format(format))
    throw std::invalid_argument("bench: unknown format '" + format + "' (md, csv or json)");
  std::string s;
  for (size_t i = 0; i < tables.size(); ++i) {
    if (i) s += "\n";
    s += format == "md" ? to_markdown(tables[i]) : to_csv(tables[i]);
  }
  return s;
}

int emit(const std::vector<Table>& tables, const BenchOptions& opts) {
  if (!valid_format(opts.format)) {
    std::cerr << "bench: unknown format '" << opts.format << "' (md, csv or json)\n";
    return 2;
  }
  std::string text = render(tables, opts.format);
  if (opts.out.empty()) {
    std::cout << text << std::flush;
    return 0;
  }
  std::ofstream f(opts.out, std::ios::binary);
  if (f) f << text;
  if (!f) {
    std::cerr << "bench: cannot write " << opts.out << "\n";
    return 2;
  }
  return 0;
}

}  // namespace bet::bench
