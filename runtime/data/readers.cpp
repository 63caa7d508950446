#include <algorithm>
#include <fstream>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/random.h"
#include "runtime/data/dataset.h"
#include "runtime/io/atomic_file.h"
#include "runtime/tokenizer/tokenizer.h"

namespace bet::runtime {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

DataFormat detect(const std::string& path) {
  if (ends_with(path, ".jsonl") || ends_with(path, ".json") || ends_with(path, ".ndjson")) return DataFormat::Jsonl;
  if (ends_with(path, ".csv")) return DataFormat::Csv;
  if (ends_with(path, ".tsv")) return DataFormat::Tsv;
  return DataFormat::Text;
}

// Collects records, turning per-record problems into errors or skips.
struct Collector {
  const ReadOptions& opts;
  TextDataset& ds;
  std::map<std::string, int64_t> label_index;

  void bad(int64_t line, const std::string& why) {
    std::string msg = ds.path + ":" + std::to_string(line) + ": " + why;
    if (!opts.skip_bad) fail(msg);
    ds.skipped++;
    if (ds.skip_reasons.size() < 10) ds.skip_reasons.push_back(msg);
  }

  void add(int64_t line, std::string text, const std::string* label) {
    if (!is_valid_utf8(text)) return bad(line, "field '" + opts.text_field + "' is not valid UTF-8");
    if (text.empty() && opts.need_labels) return bad(line, "field '" + opts.text_field + "' is empty");
    Example e;
    e.text = std::move(text);
    e.line = line;
    if (opts.need_labels) {
      if (!label) return bad(line, "missing field '" + opts.label_field + "'");
      if (!opts.known_labels.empty()) {
        auto it = std::find(opts.known_labels.begin(), opts.known_labels.end(), *label);
        if (it == opts.known_labels.end())
          return bad(line, "unknown label '" + *label + "' in field '" + opts.label_field + "'");
        e.label = int64_t(it - opts.known_labels.begin());
      } else {
        auto it = label_index.find(*label);
        if (it == label_index.end()) it = label_index.emplace(*label, int64_t(label_index.size())).first;
        e.label = it->second;
      }
    }
    ds.examples.push_back(std::move(e));
  }

  // Labels sorted by name, so their indices do not depend on file order.
  void finish() {
    if (!opts.need_labels) return;
    if (!opts.known_labels.empty()) {
      ds.labels = opts.known_labels;
      return;
    }
    std::vector<std::string> names;
    for (auto& [n, i] : label_index) names.push_back(n);  // std::map: sorted
    std::vector<int64_t> remap(label_index.size());
    for (size_t k = 0; k < names.size(); ++k) remap[size_t(label_index[names[k]])] = int64_t(k);
    for (auto& e : ds.examples) e.label = remap[size_t(e.label)];
    ds.labels = names;
  }
};

// Label values are names: a string, or an integer standing for its decimal digits (so
// 1 and "1" are one label). Anything else is refused rather than given a name: 1.0
// would otherwise be a label apart from 1, and an object's dump() is no name at all.
// Returns nullopt and sets *kind for the refused JSON types.
std::optional<std::string> label_name(const nlohmann::json& v, std::string* kind) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return v.dump();  // dump: exact for the whole uint64/int64 range
  if (v.is_number_float()) *kind = "a float";
  else if (v.is_boolean()) *kind = "a boolean";
  else if (v.is_null()) *kind = "null";
  else if (v.is_object()) *kind = "an object";
  else if (v.is_array()) *kind = "an array";
  else *kind = "not a string or an integer";
  return std::nullopt;
}

// Skips a UTF-8 byte order mark at the very start (Excel and Notepad write one), which
// would otherwise become part of the first column name or of the first record.
void skip_bom(std::istream& in) {
  static constexpr int kBom[3] = {0xEF, 0xBB, 0xBF};
  int matched = 0;
  while (matched < 3 && in.peek() == kBom[matched]) {
    in.get();
    ++matched;
  }
  if (matched == 3) return;
  // Not a BOM after all (U+FFFD, say, also starts with EF): give those bytes back.
  while (matched-- > 0) in.unget();
}

void read_jsonl(std::istream& in, Collector& c) {
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (!is_valid_utf8(line)) {
      c.bad(n, "record is not valid UTF-8");
      continue;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      c.bad(n, std::string("invalid JSON (") + e.what() + ")");
      continue;
    }
    if (!j.is_object()) {
      c.bad(n, "record is not a JSON object");
      continue;
    }
    auto t = j.find(c.opts.text_field);
    if (t == j.end()) {
      c.bad(n, "missing field '" + c.opts.text_field + "'");
      continue;
    }
    if (!t->is_string()) {
      c.bad(n, "field '" + c.opts.text_field + "' is not a string");
      continue;
    }
    auto l = j.find(c.opts.label_field);
    std::optional<std::string> label;
    if (l != j.end() && c.opts.need_labels) {  // an lm run ignores labels, whatever their type
      std::string kind;
      label = label_name(*l, &kind);
      if (!label) {
        c.bad(n, "field '" + c.opts.label_field + "' is " + kind +
                     "; a label must be a string or an integer (1 and \"1\" are the same label)");
        continue;
      }
    }
    c.add(n, std::move(t->get_ref<std::string&>()), label ? &*label : nullptr);
  }
}

void read_delimited(std::istream& in, char delim, Collector& c) {
  std::vector<std::string> header, fields;
  int64_t line = 1;
  BET_CHECK(parse_delimited_record(in, delim, &header, &line, c.ds.path), c.ds.path, ": empty file (no header)");
  auto col = [&](const std::string& name) -> int64_t {
    auto it = std::find(header.begin(), header.end(), name);
    return it == header.end() ? -1 : int64_t(it - header.begin());
  };
  const int64_t ti = col(c.opts.text_field), li = col(c.opts.label_field);
  BET_CHECK(ti >= 0, c.ds.path, ":1: header has no column '", c.opts.text_field, "'");
  BET_CHECK(li >= 0 || !c.opts.need_labels, c.ds.path, ":1: header has no column '", c.opts.label_field, "'");
  while (true) {
    int64_t start = line;
    if (!parse_delimited_record(in, delim, &fields, &line, c.ds.path)) break;
    if (fields.size() == 1 && fields[0].empty()) continue;  // blank line
    if (fields.size() != header.size()) {
      c.bad(start, "expected " + std::to_string(header.size()) + " fields, found " + std::to_string(fields.size()));
      continue;
    }
    std::string* label = li >= 0 && !fields[size_t(li)].empty() ? &fields[size_t(li)] : nullptr;
    c.add(start, fields[size_t(ti)], label);
  }
}

void read_text(std::istream& in, Collector& c) {
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    c.add(n, line + "\n", nullptr);
  }
}

}  // namespace

bool parse_delimited_record(std::istream& in, char delim, std::vector<std::string>* fields, int64_t* line,
                            const std::string& path) {
  fields->clear();
  if (in.peek() == std::char_traits<char>::eof()) return false;
  const int64_t start = *line;
  std::string field;
  bool quoted = false, was_quoted = false;
  int ch;
  while ((ch = in.get()) != std::char_traits<char>::eof()) {
    char c = char(ch);
    if (quoted) {
      if (c == '"') {
        if (in.peek() == '"') {
          field.push_back('"');
          in.get();
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++*line;
        field.push_back(c);
      }
      continue;
    }
    if (c == '"' && field.empty() && !was_quoted) {
      quoted = was_quoted = true;
    } else if (c == delim) {
      fields->push_back(std::move(field));
      field.clear();
      was_quoted = false;
    } else if (c == '\n') {
      ++*line;
      if (!field.empty() && field.back() == '\r' && !was_quoted) field.pop_back();
      fields->push_back(std::move(field));
      return true;
    } else if (c == '\r' && was_quoted) {
      // CR of CRLF after a closing quote
    } else {
      field.push_back(c);
    }
  }
  BET_CHECK(!quoted, path, ":", start, ": unterminated quoted field");
  fields->push_back(std::move(field));
  return true;
}

TextDataset read_dataset(const std::string& path, const ReadOptions& opts) {
  std::ifstream in = open_input_file(path);  // a directory or unreadable file: an error, not "empty"
  skip_bom(in);
  TextDataset ds;
  ds.path = path;
  Collector c{opts, ds, {}};
  DataFormat f = opts.format == DataFormat::Auto ? detect(path) : opts.format;
  switch (f) {
    case DataFormat::Jsonl: read_jsonl(in, c); break;
    case DataFormat::Csv: read_delimited(in, ',', c); break;
    case DataFormat::Tsv: read_delimited(in, '\t', c); break;
    default: read_text(in, c); break;
  }
  check_read(in, path);  // a failed read ends the loops above like the end of the file
  c.finish();
  BET_CHECK(!ds.examples.empty(), path, ": no usable records", ds.skipped ? " (all skipped as bad)" : " (empty file)");
  if (opts.need_labels && opts.known_labels.empty())
    BET_CHECK(ds.labels.size() >= 2, path, ": found ", ds.labels.size(), " distinct label(s) in field '",
              opts.label_field, "'; classification needs at least 2");
  return ds;
}

void split_validation(const TextDataset& all, double fraction, uint64_t seed, TextDataset* train, TextDataset* val) {
  BET_CHECK(fraction > 0 && fraction < 1, "val-split: fraction must be in (0, 1), got ", fraction);
  Generator g(mix_key({seed, 0x5a11d}));
  auto order = g.permutation(int64_t(all.examples.size()));
  size_t n_val = std::max<size_t>(1, size_t(double(order.size()) * fraction));
  BET_CHECK(n_val < order.size(), "val-split: ", all.examples.size(), " records are too few to split");
  *train = TextDataset{all.path, {}, all.labels, all.skipped, all.skip_reasons};
  *val = TextDataset{all.path, {}, all.labels, 0, {}};
  for (size_t i = 0; i < order.size(); ++i)
    (i < order.size() - n_val ? train : val)->examples.push_back(all.examples[size_t(order[i])]);
}

}  // namespace bet::runtime
