// The corruption sweep of the .bet reader, built with AddressSanitizer and
// UndefinedBehaviorSanitizer by run_bet_reader_asan.sh (not by meson: see
// bet_reader_support.cpp for why). Every damaged file must be rejected with a
// bet::Error naming it, never read out of bounds, overflow or crash; the sanitizers
// turn the first bad access into a failure of this program.
//   BET_FUZZ_SEEDS=DIR: also writes seed inputs for fuzz_bet_reader there.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "tests/fuzz/bet_reader_support.h"

using namespace bet;
using namespace bet::runtime;
using bet::fuzz::reseal;
using bet::fuzz::sample_file;
using bet::fuzz::split_bet;
using nlohmann::json;

namespace {

enum class Outcome { kRead, kRejected };

// Decodes `bytes`; a rejection must be a bet::Error whose message starts with the name.
// What is read must be self-consistent (each tensor's storage holds its elements).
Outcome decode(const std::string& bytes) {
  try {
    BetContents c = decode_bet(bytes, "damaged.bet");
    for (const auto& named : c.tensors) {
      const Tensor& t = named.second;
      CAPTURE(named.first);
      int64_t n = 1;
      for (int64_t d : t.shape()) {
        REQUIRE(d >= 0);
        REQUIRE((d == 0 || n <= std::numeric_limits<int64_t>::max() / d));
        n *= d;
      }
      REQUIRE(t.numel() == n);
      REQUIRE(t.storage()->nbytes() == size_t(n) * dtype_size(t.dtype()));
    }
    return Outcome::kRead;
  } catch (const Error& e) {
    CHECK(std::string(e.what()).rfind("damaged.bet", 0) == 0);
    return Outcome::kRejected;
  }
}

std::string flipped(std::string s, size_t at, int bit) {
  s[at] = char(uint8_t(s[at]) ^ uint8_t(1u << bit));
  return s;
}

void write_seed(const std::string& name, const std::string& bytes) {
  const char* dir = std::getenv("BET_FUZZ_SEEDS");
  if (!dir || !*dir) return;
  std::filesystem::create_directories(dir);
  std::ofstream(std::filesystem::path(dir) / name, std::ios::binary) << bytes;
}

// The fuzz target's structure-aware input: mode byte, header, NUL, index, NUL, data.
std::string structured_input(const fuzz::BetParts& p) { return std::string("\x03", 1) + p.header + '\0' + p.index.dump() + '\0' + p.data; }

}  // namespace

TEST_CASE("the sample file reads back, and resealing an unchanged file reproduces it") {
  const std::string good = sample_file();
  CHECK(decode(good) == Outcome::kRead);
  fuzz::BetParts p = split_bet(good);
  CHECK(reseal(p.header, p.data, p.index, false) == good);
  write_seed("sample.raw", std::string("\x00", 1) + good);
  write_seed("sample.structured", structured_input(p));
}

TEST_CASE("every bit of every byte flipped is rejected") {
  const std::string good = sample_file();
  int rejected = 0, total = 0;
  for (size_t i = 0; i < good.size(); ++i)
    for (int bit = 0; bit < 8; ++bit, ++total)
      rejected += decode(flipped(good, i, bit)) == Outcome::kRejected;
  CHECK(rejected == total);
}

TEST_CASE("truncation at every offset and appended bytes are rejected") {
  const std::string good = sample_file();
  for (size_t len = 0; len < good.size(); ++len) {
    CAPTURE(len);
    CHECK(decode(good.substr(0, len)) == Outcome::kRejected);
  }
  CHECK(decode(good + "x") == Outcome::kRejected);
  CHECK(decode(good + good) == Outcome::kRejected);
}

TEST_CASE("damaged tensor frames behind valid checksums are rejected or read unchanged") {
  // The frame checksum is recomputed, so zstd itself meets the damage. A flip that
  // leaves the content intact (a zstd header bit that does not matter) may be read;
  // the frame's own content checksum guarantees it then reads the original bytes.
  const std::string good = sample_file();
  const fuzz::BetParts p = split_bet(good);
  const BetContents original = decode_bet(good, "good.bet");
  int rejected = 0, total = 0;
  for (size_t i = 0; i < p.data.size(); ++i)
    for (int bit : {0, 3, 7}) {
      ++total;
      const std::string bad = reseal(p.header, flipped(p.data, i, bit), p.index, true);
      if (decode(bad) == Outcome::kRejected) {
        ++rejected;
        continue;
      }
      CAPTURE(i);
      CAPTURE(bit);
      const BetContents c = decode_bet(bad, "damaged.bet");
      REQUIRE(c.tensors.size() == original.tensors.size());
      for (size_t t = 0; t < c.tensors.size(); ++t) {
        const Tensor &a = c.tensors[t].second, &b = original.tensors[t].second;
        REQUIRE(a.shape() == b.shape());
        CHECK(std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0);
      }
    }
  MESSAGE(rejected << " of " << total << " frame bit flips rejected, the rest read the original bytes");
  CHECK(rejected > total * 9 / 10);
}

TEST_CASE("a damaged index behind valid checksums is rejected or read consistently") {
  const fuzz::BetParts p = split_bet(sample_file());
  const uint64_t u64max = std::numeric_limits<uint64_t>::max();
  const int64_t i64max = std::numeric_limits<int64_t>::max();
  const std::vector<std::pair<const char*, std::vector<json>>> bad_values = {
      {"dtype", {"f128", "", 5, nullptr, json::array()}},
      {"shape", {json::array({-1}), json::array({int64_t(1) << 40}), json::array({1.5}), "3", json::array({"a"}),
                 // products that overflow 64 bits while each dim is in range
                 json::array({int64_t(1) << 39, int64_t(1) << 39, int64_t(1) << 39}),
                 json::array({int64_t(1) << 32, int64_t(1) << 32}),
                 json::array({int64_t(1) << 21, int64_t(1) << 21, int64_t(1) << 21, 2}),
                 json::array({int64_t(1) << 39, 0, int64_t(1) << 39}), json::array({0, 0}), json::array({1e300}),
                 json::array({-1e300, 2}), json::array({9.3e18})}},
      {"offset", {u64max, u64max - 7, i64max, -1, 1.0, 6.7e23, -1e30, "0", 0, 1, uint64_t(p.data.size()), uint64_t(p.data.size() + 1)}},
      {"compressed_size", {u64max, uint64_t(p.data.size()), uint64_t(p.data.size() + 1), 0, -5, 1e300, nullptr}},
      {"raw_size", {u64max, 0, uint64_t(1) << 62, -1, 3.0, 1e19, 1}},
      {"checksum", {"", "zz", 0, nullptr}},
      {"name", {5, nullptr, std::string(1000, 'n')}},
  };
  int cases = 0;
  for (size_t e = 0; e < p.index.size(); ++e)
    for (const auto& [field, values] : bad_values)
      for (const json& v : values) {
        json index = p.index;
        index[e][field] = v;
        // raw_size follows a damaged shape the way a crafted file would make it agree
        if (std::string(field) == "shape" && v.is_array()) {
          uint64_t n = 1;
          for (const json& d : v) n *= d.is_number_unsigned() ? d.get<uint64_t>() : 1;
          json crafted = index;
          crafted[e]["raw_size"] = n * 4;
          CAPTURE(crafted.dump());
          decode(reseal(p.header, p.data, crafted, true));
          ++cases;
        }
        CAPTURE(index.dump());
        decode(reseal(p.header, p.data, index, true));
        decode(reseal(p.header, p.data, index, false));
        ++cases;
      }
  // Whole-index damage: not a list, entries that are not objects, missing fields.
  for (const json& index : {json::object(), json(nullptr), json(3), json::array({1, 2}), json::array({json::object()}),
                            json::array({{{"name", "x"}}})}) {
    CAPTURE(index.dump());
    CHECK(decode(reseal(p.header, p.data, index, true)) == Outcome::kRejected);
  }
  for (const std::string& header : {std::string(""), std::string("{"), std::string("\xff\xfe"), std::string(100000, '[')}) {
    CHECK(decode(reseal(header, p.data, p.index, true)) == Outcome::kRejected);
  }
  MESSAGE(cases << " resealed index variants decoded without a sanitizer report");
}
