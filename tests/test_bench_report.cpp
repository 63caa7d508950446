// The bench table writer: markdown, CSV and JSON agree with the rows they were given,
// whatever the cells contain (separators, quotes, newlines, missing fields, NaN).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/report.h"

using namespace bet::bench;

namespace {

Table sample() {
  Table t;
  t.title = "ops";
  t.add_meta("threads", int64_t(2)).add_meta("cpu", "AMD | \"EPYC\"");
  t.add(Row().set("name", "matmul").set("shape", "4096x256 @ 256x256").set("ours", 1234.5678).set(
      "pass", true));
  // Leaves out "pass", adds "note": columns are the union in order of first appearance.
  t.add(Row().set("name", "a,b \"quoted\"\nline").set("shape", "x|y").set("ours", NAN).set(
      "note", int64_t(-7)));
  t.add(Row().set("name", "tiny").set("ours", 1.5e-5).set("shape", ""));
  return t;
}

// RFC 4180 reader: records of fields, quotes doubled inside quoted fields.
std::vector<std::vector<std::string>> parse_csv(const std::string& s) {
  std::vector<std::vector<std::string>> recs(1, std::vector<std::string>(1));
  bool quoted = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (quoted) {
      if (c == '"' && i + 1 < s.size() && s[i + 1] == '"') recs.back().back() += '"', ++i;
      else if (c == '"') quoted = false;
      else recs.back().back() += c;
    } else if (c == '"') quoted = true;
    else if (c == ',') recs.back().emplace_back();
    else if (c == '\n') recs.emplace_back(1);
    else recs.back().back() += c;
  }
  REQUIRE_FALSE(quoted);
  if (recs.back().size() == 1 && recs.back()[0].empty()) recs.pop_back();
  return recs;
}

// Cells of a markdown table line, splitting on unescaped '|'.
std::vector<std::string> md_cells(const std::string& line) {
  std::vector<std::string> cells;
  std::string cur;
  REQUIRE(line.size() >= 2);
  CHECK(line.front() == '|');
  CHECK(line.back() == '|');
  for (size_t i = 1; i < line.size(); ++i) {
    if (line[i] == '\\' && i + 1 < line.size() && line[i + 1] == '|') cur += '|', ++i;
    else if (line[i] == '|') cells.push_back(cur.substr(1, cur.size() - 2)), cur.clear();
    else cur += line[i];
  }
  return cells;
}

}  // namespace

TEST_CASE("columns are the union of fields in first-appearance order; set replaces") {
  Table t = sample();
  CHECK(t.columns() == std::vector<std::string>{"name", "shape", "ours", "pass", "note"});
  Row r;
  r.set("a", 1).set("b", 2).set("a", 3);
  REQUIRE(r.fields.size() == 2);
  CHECK(std::get<int64_t>(*r.get("a")) == 3);
  CHECK(r.get("zz") == nullptr);
}

TEST_CASE("json parses back to the same cells") {
  Table t = sample();
  auto j = nlohmann::json::parse(render({t, t}, "json"));
  REQUIRE(j["tables"].size() == 2);
  auto& jt = j["tables"][0];
  CHECK(jt["title"] == "ops");
  CHECK(jt["meta"]["threads"] == 2);
  CHECK(jt["meta"]["cpu"] == "AMD | \"EPYC\"");
  CHECK(jt["columns"] == nlohmann::json({"name", "shape", "ours", "pass", "note"}));
  REQUIRE(jt["rows"].size() == 3);
  auto& r0 = jt["rows"][0];
  CHECK(r0["name"] == "matmul");
  CHECK(r0["ours"].get<double>() == 1234.5678);  // exact, not the md/csv rounding
  CHECK(r0["pass"] == true);
  CHECK(r0["note"].is_null());  // missing field
  auto& r1 = jt["rows"][1];
  CHECK(r1["name"] == "a,b \"quoted\"\nline");
  CHECK(r1["ours"].is_null());  // NaN is not valid JSON
  CHECK(r1["note"] == -7);
  CHECK(jt["rows"][2]["ours"].get<double>() == 1.5e-5);
  // Every row carries every column, in column order.
  auto oj = nlohmann::ordered_json::parse(render({t}, "json"));
  for (const auto& row : oj["tables"][0]["rows"]) {
    std::vector<std::string> keys;
    for (const auto& [k, v] : row.items()) keys.push_back(k);
    CHECK(keys == t.columns());
  }
}

TEST_CASE("csv has a header and one record per row, every record as wide as the header") {
  Table t = sample();
  auto recs = parse_csv(to_csv(t));
  auto cols = t.columns();
  REQUIRE(recs.size() == 1 + t.rows.size());
  CHECK(recs[0] == cols);
  for (const auto& rec : recs) CHECK(rec.size() == cols.size());
  CHECK(recs[1][0] == "matmul");
  CHECK(recs[1][2] == "1235");
  CHECK(recs[1][3] == "true");
  CHECK(recs[1][4] == "");
  CHECK(recs[2][0] == "a,b \"quoted\"\nline");  // quoting survives the round trip
  CHECK(recs[2][1] == "x|y");
  CHECK(recs[2][2] == "nan");
  CHECK(recs[2][4] == "-7");
  // Two tables: two blocks, each with its own header, separated by an empty line.
  std::string two = render({t, t}, "csv");
  CHECK(two == to_csv(t) + "\n" + to_csv(t));
}

TEST_CASE("markdown has a header, a separator and aligned cell counts") {
  Table t = sample();
  std::string md = to_markdown(t);
  std::vector<std::string> lines;
  std::istringstream in(md);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  CHECK(lines[0] == "## ops");
  CHECK(md.find("- threads: 2\n") != std::string::npos);
  // The table starts at the first line beginning with '|'.
  size_t h = 0;
  while (h < lines.size() && (lines[h].empty() || lines[h][0] != '|')) ++h;
  auto cols = t.columns();
  REQUIRE(lines.size() == h + 2 + t.rows.size());  // a newline in a cell must not split the row
  CHECK(md_cells(lines[h]) == cols);
  auto sep = md_cells(lines[h + 1]);
  REQUIRE(sep.size() == cols.size());
  for (const auto& c : sep) {
    CHECK(c.find("---") != std::string::npos);
    CHECK(c.find_first_not_of("-:") == std::string::npos);
  }
  CHECK(sep[2] == "---:");  // numbers right-aligned
  CHECK(sep[0] == "---");
  for (size_t i = 0; i < t.rows.size(); ++i) CHECK(md_cells(lines[h + 2 + i]).size() == cols.size());
  CHECK(md_cells(lines[h + 3])[1] == "x|y");  // the pipe was escaped, not a new cell
}

TEST_CASE("numbers keep ~4 significant digits without exponents for large values") {
  CHECK(format_value(123456.7) == "123457");
  CHECK(format_value(123.45) == "123.5");  // 123.45 is stored just above .45
  CHECK(format_value(0.8512) == "0.851");
  CHECK(format_value(1.5e-5) == "1.5e-05");
  CHECK(format_value(Value(int64_t(42))) == "42");
  CHECK(format_value(Value()) == "");
  CHECK(format_value(INFINITY) == "inf");
}

TEST_CASE("bad formats are refused; --out receives exactly the rendered text") {
  Table t = sample();
  CHECK_THROWS_AS(render({t}, "xml"), std::invalid_argument);
  CHECK(valid_format("md"));
  CHECK_FALSE(valid_format("MD"));
  BenchOptions o;
  o.format = "xml";
  CHECK(emit({t}, o) == 2);
  o.format = "json";
  o.out = "test_bench_report_out.json";
  REQUIRE(emit({t}, o) == 0);
  std::ifstream f(o.out, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  CHECK(ss.str() == render({t}, "json"));
  std::remove(o.out.c_str());
  o.out = "/nonexistent-dir/x.json";
  CHECK(emit({t}, o) == 2);
}
