// Data readers, batching and the synthetic generators.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "engine/error.h"
#include "runtime/data/batching.h"
#include "runtime/data/dataset.h"
#include "runtime/data/synthetic.h"
#include "runtime/io/atomic_file.h"

using namespace bet;
using namespace bet::runtime;

namespace {
std::string write_tmp(const std::string& name, const std::string& contents) {
  auto dir = std::filesystem::temp_directory_path() / ("bet_data_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto p = (dir / name).string();
  std::ofstream(p, std::ios::binary) << contents;
  return p;
}
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("jsonl: records, custom fields, label names sorted") {
  auto p = write_tmp("a.jsonl", "{\"text\":\"hello\",\"label\":\"spam\"}\n\n{\"text\":\"hi\",\"label\":\"ham\"}\n");
  ReadOptions o;
  auto ds = read_dataset(p, o);
  REQUIRE(ds.examples.size() == 2);
  CHECK(ds.labels == std::vector<std::string>{"ham", "spam"});
  CHECK(ds.examples[0].label == 1);
  CHECK(ds.examples[1].line == 3);
  auto p2 = write_tmp("b.jsonl", "{\"body\":\"x\",\"y\":1}\n{\"body\":\"z\",\"y\":0}\n");
  o.text_field = "body";
  o.label_field = "y";
  auto ds2 = read_dataset(p2, o);
  CHECK(ds2.labels == std::vector<std::string>{"0", "1"});
}

TEST_CASE("malformed lines name file, line and field; skip_bad counts them") {
  auto p = write_tmp("bad.jsonl",
                     "{\"text\":\"ok\",\"label\":\"a\"}\n"
                     "{\"text\":\"ok\" \"label\":\"a\"}\n"  // bad JSON, line 2
                     "{\"label\":\"b\"}\n"                   // missing text, line 3
                     "{\"text\":\"\xc3\",\"label\":\"b\"}\n"  // invalid UTF-8, line 4
                     "{\"text\":\"fine\",\"label\":\"b\"}\n");
  ReadOptions o;
  std::string e = error_of([&] { read_dataset(p, o); });
  CHECK(e.find(p + ":2:") != std::string::npos);
  CHECK(e.find("invalid JSON") != std::string::npos);
  o.skip_bad = true;
  auto ds = read_dataset(p, o);
  CHECK(ds.examples.size() == 2);
  CHECK(ds.skipped == 3);
  REQUIRE(ds.skip_reasons.size() == 3);
  CHECK(ds.skip_reasons[1].find(":3: missing field 'text'") != std::string::npos);
  CHECK(ds.skip_reasons[2].find(":4: record is not valid UTF-8") != std::string::npos);
  // unknown label against a model's labels
  ReadOptions k;
  k.known_labels = {"a"};
  std::string e2 = error_of([&] { read_dataset(write_tmp("u.jsonl", "{\"text\":\"t\",\"label\":\"zzz\"}\n"), k); });
  CHECK(e2.find(":1: unknown label 'zzz'") != std::string::npos);
  CHECK(error_of([&] { read_dataset(write_tmp("empty.jsonl", ""), ReadOptions{}); }).find("empty file") !=
        std::string::npos);
  CHECK(error_of([&] { read_dataset(write_tmp("nope.jsonl", "{}"), ReadOptions{}); }).find(":1: missing field") !=
        std::string::npos);
}

TEST_CASE("csv and tsv with quotes, embedded delimiters and newlines") {
  auto p = write_tmp("a.csv", "id,text,label\n1,\"hello, world\",x\n2,\"two\nlines \"\"quoted\"\"\",y\n3,plain,x\n");
  auto ds = read_dataset(p, ReadOptions{});
  REQUIRE(ds.examples.size() == 3);
  CHECK(ds.examples[0].text == "hello, world");
  CHECK(ds.examples[1].text == "two\nlines \"quoted\"");
  CHECK(ds.examples[2].line == 5);  // record 3 starts after the two-line field
  auto t = write_tmp("a.tsv", "text\tlabel\nfoo bar\t1\nbaz\t0\n");
  CHECK(read_dataset(t, ReadOptions{}).examples.size() == 2);
  auto bad = write_tmp("bad.csv", "text,label\nonly-one-field\n");
  CHECK(error_of([&] { read_dataset(bad, ReadOptions{}); }).find(":2: expected 2 fields, found 1") != std::string::npos);
  auto nocol = write_tmp("nocol.csv", "body,label\nx,1\n");
  CHECK(error_of([&] { read_dataset(nocol, ReadOptions{}); }).find("no column 'text'") != std::string::npos);
  auto unterminated = write_tmp("q.csv", "text,label\n\"open,1\n");
  CHECK(error_of([&] { read_dataset(unterminated, ReadOptions{}); }).find(":2: unterminated") != std::string::npos);
}

TEST_CASE("validation split is seeded, disjoint and complete") {
  TextDataset all;
  all.labels = {"a", "b"};
  for (int i = 0; i < 100; ++i) all.examples.push_back({std::to_string(i), i % 2, i + 1});
  TextDataset tr, va, tr2, va2;
  split_validation(all, 0.1, 7, &tr, &va);
  split_validation(all, 0.1, 7, &tr2, &va2);
  CHECK(va.examples.size() == 10);
  CHECK(tr.examples.size() == 90);
  std::set<std::string> seen;
  for (auto& e : tr.examples) seen.insert(e.text);
  for (auto& e : va.examples) seen.insert(e.text);
  CHECK(seen.size() == 100);
  for (size_t i = 0; i < va.examples.size(); ++i) CHECK(va.examples[i].text == va2.examples[i].text);
}

TEST_CASE("epoch plans cover every example once, repeat for a seed, differ across epochs") {
  std::vector<int64_t> lengths;
  for (int i = 0; i < 1000; ++i) lengths.push_back(1 + (i * 37) % 200);
  auto a = plan_epoch(lengths, 32, 1, 0), b = plan_epoch(lengths, 32, 1, 0), c = plan_epoch(lengths, 32, 1, 1);
  CHECK(a == b);
  CHECK(a != c);
  std::vector<int> count(1000, 0);
  for (auto& batch : a)
    for (auto i : batch) count[size_t(i)]++;
  for (int x : count) CHECK(x == 1);
  // bucketing reduces padding relative to a plain shuffle
  auto padding = [&](const std::vector<std::vector<int64_t>>& plan) {
    int64_t pad = 0;
    for (auto& batch : plan) {
      int64_t mx = 0;
      for (auto i : batch) mx = std::max(mx, lengths[size_t(i)]);
      for (auto i : batch) pad += mx - lengths[size_t(i)];
    }
    return pad;
  };
  CHECK(padding(a) * 3 < padding(plan_epoch(lengths, 32, 1, 0, false)));
}

TEST_CASE("lm batches shift targets by one and pad with PAD and -100") {
  std::vector<EncodedSequence> data{{{10, 11, 12}, -1}, {{20}, -1}};
  Batch b = make_lm_batch(data, {0, 1}, 8);
  CHECK(b.ids.shape() == Shape{2, 3});
  CHECK(b.ids.to_vector<int64_t>() == std::vector<int64_t>{1, 10, 11, 1, 0, 0});
  CHECK(b.targets.to_vector<int64_t>() == std::vector<int64_t>{10, 11, 12, 20, -100, -100});
  CHECK(b.lengths == std::vector<int64_t>{3, 1});
  Batch c = make_classify_batch({{{5, 6, 7, 8}, 1}, {{9}, 0}}, {0, 1}, 3);
  CHECK(c.ids.to_vector<int64_t>() == std::vector<int64_t>{5, 6, 7, 9, 0, 0});
  CHECK(c.labels.to_vector<int64_t>() == std::vector<int64_t>{1, 0});
}

TEST_CASE("synthetic bernoulli: reproducible, exchangeable code length, Beta-distributed rate") {
  SyntheticSpec s;
  s.length = 40;
  CHECK(synthetic_sequence(s, 3, 17) == synthetic_sequence(s, 3, 17));
  CHECK(synthetic_sequence(s, 3, 17) != synthetic_sequence(s, 3, 18));
  // Under Beta(1,1) the exact Bayes code length of a sequence is ln((n+1) C(n,h)),
  // whatever the order of its outcomes.
  auto ids = synthetic_sequence(s, 3, 5);
  double total = 0;
  for (double x : exact_bayes_nll(s, ids)) total += x;
  int h = 0;
  for (auto id : ids) h += id == 4;
  int n = int(ids.size());
  double expect = std::log(double(n + 1)) + std::lgamma(n + 1.0) - std::lgamma(h + 1.0) - std::lgamma(n - h + 1.0);
  CHECK(total == doctest::Approx(expect).epsilon(1e-10));
  // the per-sequence rate p ~ Beta(1,1) is uniform: its mean over sequences is 1/2
  double mean_rate = 0;
  const int N = 2000;
  for (int i = 0; i < N; ++i) {
    auto q = synthetic_sequence(s, 9, uint64_t(i));
    int heads = 0;
    for (auto id : q) heads += id == 4;
    mean_rate += double(heads) / double(q.size());
  }
  mean_rate /= N;
  CHECK(std::abs(mean_rate - 0.5) < 0.03);
}

TEST_CASE("synthetic categorical: ids in range and exact predictive sums to one") {
  SyntheticSpec s;
  s.kind = "categorical";
  s.categories = 5;
  s.length = 30;
  auto ids = synthetic_sequence(s, 1, 2);
  for (auto id : ids) {
    CHECK(id >= 3);
    CHECK(id < 8);
  }
  auto p = exact_bayes_predictive(s, ids);
  double tot = 0;
  for (double x : p) tot += x;
  CHECK(tot == doctest::Approx(1.0));
  CHECK_THROWS_AS([] {
    SyntheticSpec bad;
    bad.kind = "poisson";
    bad.validate();
  }(), Error);
}

TEST_CASE("a directory or unreadable path is an error naming it and the reason, never an empty file") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(write_tmp("anchor", "")).parent_path();
  const std::string d = (dir / "a_directory.jsonl").string();
  fs::create_directories(d);
  CHECK(error_of([&] { read_dataset(d, ReadOptions{}); }) == d + ": is a directory");
  CHECK(error_of([&] { read_file(d); }) == d + ": is a directory");  // checkpoints, spm models, configs

  // A path through a plain file: fails to open for everyone, root included.
  const std::string under_file = write_tmp("plain.txt", "x\n") + "/inside.csv";
  CHECK(error_of([&] { read_dataset(under_file, ReadOptions{}); }) == under_file + ": cannot open: Not a directory");
  CHECK(error_of([&] { read_file(under_file); }) == under_file + ": cannot open: Not a directory");

  const std::string locked = write_tmp("locked.jsonl", "{\"text\":\"a\",\"label\":\"x\"}\n");
  fs::permissions(locked, fs::perms::none);
  if (::geteuid() == 0) {
    MESSAGE("running as root: a mode-000 file is still readable, skipping the permission check");
  } else {
    CHECK(error_of([&] { read_dataset(locked, ReadOptions{}); }) == locked + ": cannot open: Permission denied");
  }

  // A read that fails after a successful open (read(2) on /proc/self/mem at offset 0
  // is EIO) is an error too, not the end of the file.
  if (fs::exists("/proc/self/mem")) {
    ReadOptions lm;
    lm.need_labels = false;
    lm.format = DataFormat::Text;
    CHECK(error_of([&] { read_dataset("/proc/self/mem", lm); }).find("/proc/self/mem: cannot read") == 0);
    CHECK(error_of([&] { read_file("/proc/self/mem"); }).find("/proc/self/mem: cannot read") == 0);
  }

  // read_file still reads every byte of a file, and of a pipe-like file whose size
  // stat reports as 0.
  std::string big(100000, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = char('a' + i % 26);
  CHECK(read_file(write_tmp("big.bin", big)) == big);
  CHECK(read_file(write_tmp("empty.bin", "")).empty());
  if (fs::exists("/proc/self/status")) CHECK(read_file("/proc/self/status").find("Name:") == 0);
}

TEST_CASE("a leading UTF-8 byte order mark is skipped in every format") {
  const std::string bom = "\xEF\xBB\xBF";
  auto csv = read_dataset(write_tmp("bom.csv", bom + "text,label\nhello,a\nbye,b\n"), ReadOptions{});
  REQUIRE(csv.examples.size() == 2);
  CHECK(csv.examples[0].text == "hello");
  auto quoted = read_dataset(write_tmp("bomq.csv", bom + "\"text\",label\nhello,a\nbye,b\n"), ReadOptions{});
  CHECK(quoted.examples.size() == 2);
  auto tsv = read_dataset(write_tmp("bom.tsv", bom + "text\tlabel\nhello\ta\nbye\tb\n"), ReadOptions{});
  CHECK(tsv.examples.size() == 2);
  auto jsonl = read_dataset(
      write_tmp("bom.jsonl", bom + "{\"text\":\"hello\",\"label\":\"a\"}\n{\"text\":\"bye\",\"label\":\"b\"}\n"),
      ReadOptions{});
  REQUIRE(jsonl.examples.size() == 2);
  CHECK(jsonl.examples[0].text == "hello");
  ReadOptions lm;
  lm.need_labels = false;
  auto text = read_dataset(write_tmp("bom.txt", bom + "hello\nbye\n"), lm);
  REQUIRE(text.examples.size() == 2);
  CHECK(text.examples[0].text == "hello\n");
  // Only a whole BOM is taken: a first character that merely starts with EF stays.
  const std::string replacement = "\xEF\xBF\xBD";  // U+FFFD
  auto kept = read_dataset(write_tmp("fffd.txt", replacement + "x\n" + bom + "y\n"), lm);
  REQUIRE(kept.examples.size() == 2);
  CHECK(kept.examples[0].text == replacement + "x\n");
  CHECK(kept.examples[1].text == bom + "y\n");  // not at the start of the file: data
}

TEST_CASE("jsonl labels are strings or integers (1 and \"1\" are one label); other types name file:line and field") {
  auto p = write_tmp("int_labels.jsonl",
                     "{\"text\":\"a\",\"label\":1}\n"
                     "{\"text\":\"b\",\"label\":\"1\"}\n"
                     "{\"text\":\"c\",\"label\":0}\n"
                     "{\"text\":\"d\",\"label\":-3}\n"
                     "{\"text\":\"e\",\"label\":18446744073709551615}\n");
  auto ds = read_dataset(p, ReadOptions{});
  CHECK(ds.labels == std::vector<std::string>{"-3", "0", "1", "18446744073709551615"});
  CHECK(ds.examples[0].label == ds.examples[1].label);

  const std::vector<std::pair<std::string, std::string>> refused = {
      {"1.0", "a float"},      {"1e3", "a float"},    {"true", "a boolean"},
      {"null", "null"},        {"{\"k\":1}", "an object"}, {"[1]", "an array"}};
  for (const auto& [value, kind] : refused) {
    CAPTURE(value);
    auto bad = write_tmp("bad_label.jsonl", "{\"text\":\"a\",\"label\":1}\n{\"text\":\"b\",\"label\":" + value + "}\n");
    std::string e = error_of([&] { read_dataset(bad, ReadOptions{}); });
    CHECK(e.find(bad + ":2: field 'label' is " + kind + "; a label must be a string or an integer") == 0);
  }
  // skip_bad counts them; an lm read ignores labels whatever their type.
  auto mixed = write_tmp("mixed.jsonl",
                         "{\"text\":\"a\",\"label\":1}\n{\"text\":\"b\",\"label\":1.0}\n{\"text\":\"c\",\"label\":2}\n");
  ReadOptions skip;
  skip.skip_bad = true;
  auto s = read_dataset(mixed, skip);
  CHECK(s.examples.size() == 2);
  CHECK(s.skipped == 1);
  ReadOptions lm;
  lm.need_labels = false;
  CHECK(read_dataset(mixed, lm).examples.size() == 3);
}
