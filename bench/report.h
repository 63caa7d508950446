// The table writer every `betctl bench` subcommand shares: rows of named fields,
// rendered as markdown, CSV or JSON. Columns are the union of the rows' field names
// in order of first appearance, so a row may leave a field out (empty cell / null).
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace bet::bench {

// Options shared by the bench subcommands (`--format`, `--out`, `--threads`, `--quick`).
struct BenchOptions {
  std::string format = "md";  // md | csv | json
  std::string out;            // file to write; empty = stdout
  int threads = 0;            // > 0: size of the OpenMP pool
  bool quick = false;         // shorter timings and smaller problems (smoke runs, CI)
  std::string device = "cpu";  // --device: cpu | cuda[:N] (train and infer)
};

// A cell. Doubles print with a magnitude-dependent precision in md/csv and exactly in
// JSON; a non-finite double is null in JSON and "nan"/"inf" in text.
using Value = std::variant<std::monostate, std::string, double, int64_t, bool>;

// Maps C++ scalars onto the cell types explicitly: left to overload resolution, a
// double or bool would convert to an int overload before the variant.
template <typename T>
Value to_value(T&& v) {
  using D = std::decay_t<T>;
  if constexpr (std::is_same_v<D, bool>) return Value(bool(v));
  else if constexpr (std::is_floating_point_v<D>) return Value(double(v));
  else if constexpr (std::is_integral_v<D>) return Value(int64_t(v));
  else return Value(std::string(std::forward<T>(v)));
}

struct Row {
  std::vector<std::pair<std::string, Value>> fields;

  // Sets (or replaces) field `name`; chains.
  Row& set(const std::string& name, Value v);
  template <typename T>
    requires(!std::is_same_v<std::decay_t<T>, Value>)
  Row& set(const std::string& name, T&& v) {
    return set(name, to_value(std::forward<T>(v)));
  }
  const Value* get(const std::string& name) const;
};

struct Table {
  std::string title;
  // Free-form facts about the run (machine, threads, ...), printed above the table.
  std::vector<std::pair<std::string, Value>> meta;
  std::vector<Row> rows;

  Table& add(Row r) {
    rows.push_back(std::move(r));
    return *this;
  }
  Table& add_meta(const std::string& name, Value v);
  template <typename T>
    requires(!std::is_same_v<std::decay_t<T>, Value>)
  Table& add_meta(const std::string& name, T&& v) {
    return add_meta(name, to_value(std::forward<T>(v)));
  }
  std::vector<std::string> columns() const;
};

// Text of one cell as md/csv print it (unescaped).
std::string format_value(const Value& v);

std::string to_markdown(const Table& t);
std::string to_csv(const Table& t);  // RFC 4180 quoting; meta is not part of CSV
// {"title", "meta": {...}, "columns": [...], "rows": [{...}]}, keys in column order.
nlohmann::ordered_json to_json(const Table& t);

// Several tables: md sections one after another; CSV blocks separated by a blank
// line, each with its own header; JSON {"tables": [...]}.
// Throws std::invalid_argument for a format other than md, csv or json.
std::string render(const std::vector<Table>& tables, const std::string& format);

bool valid_format(const std::string& format);

// Renders and writes to opts.out (or stdout). Returns 0, or 2 with a message on stderr
// for a bad format or an unwritable file.
int emit(const std::vector<Table>& tables, const BenchOptions& opts);

}  // namespace bet::bench
