// Text datasets read from JSONL, CSV/TSV (with a header) or plain text.
// Readers stream the file line by line; malformed input stops with an error naming
// file, line and field, or with skip_bad is skipped and counted. A leading UTF-8 byte
// order mark is skipped. JSONL labels are strings or integers, and an integer is the
// name of its digits (1 and "1" are one label); floats, booleans, null, objects and
// arrays are refused. A directory or unreadable path is an error, never an empty file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace bet::runtime {

struct Example {
  std::string text;
  int64_t label = -1;  // index into TextDataset::labels; -1 for unlabelled (lm)
  int64_t line = 0;    // 1-based line of the file where the record starts
};

struct TextDataset {
  std::string path;
  std::vector<Example> examples;
  std::vector<std::string> labels;  // label names by index
  int64_t skipped = 0;              // bad records skipped (skip_bad)
  std::vector<std::string> skip_reasons;  // first few, for the log
};

enum class DataFormat { Auto, Jsonl, Csv, Tsv, Text };

struct ReadOptions {
  DataFormat format = DataFormat::Auto;  // Auto: by extension (.jsonl/.json, .csv, .tsv, else text)
  std::string text_field = "text";
  std::string label_field = "label";
  bool need_labels = true;              // classify: every record needs a label
  bool skip_bad = false;
  // When not empty, labels must be among these (e.g. a model's labels at eval time);
  // otherwise labels are collected in order of first appearance, then sorted.
  std::vector<std::string> known_labels;
};

TextDataset read_dataset(const std::string& path, const ReadOptions& opts);

// Splits off a validation set: a seeded shuffle, the last `fraction` of it.
void split_validation(const TextDataset& all, double fraction, uint64_t seed, TextDataset* train, TextDataset* val);

// Parses one CSV/TSV record starting at `line` (may span lines inside quotes); exposed for tests.
// Returns false at end of input. Throws bet::Error on an unterminated quote.
bool parse_delimited_record(std::istream& in, char delim, std::vector<std::string>* fields, int64_t* line,
                            const std::string& path);

}  // namespace bet::runtime
