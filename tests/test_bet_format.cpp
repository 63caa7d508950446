// The .bet container: round trips, and rejection of every kind of damage.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>

#include "engine/ops.h"
#include "engine/random.h"
#include "runtime/checkpoint/bet_format.h"
#include "runtime/io/atomic_file.h"

using namespace bet;
using namespace bet::runtime;

namespace {

NamedTensorList sample_tensors() {
  Generator g(11);
  NamedTensorList t;
  t.emplace_back("embed.weight", g.normal({37, 16}, 0, 0.02));
  t.emplace_back("layers.0.attn.lam", Tensor::scalar(1.25));
  t.emplace_back("f64", g.uniform({3, 5}, -1, 1, DType::F64));
  t.emplace_back("ids", Tensor::from_vector<int64_t>({1, -2, 3, 1LL << 40}, {4}));
  t.emplace_back("i32", Tensor::from_vector<int32_t>({7, 8, 9}, {3, 1}));
  t.emplace_back("empty", Tensor::zeros({0, 8}));
  // a non-contiguous view is saved as its logical contents
  Tensor base = g.uniform({4, 6});
  t.emplace_back("transposed", transpose(base, 0, 1));
  return t;
}

void check_equal(const NamedTensorList& a, const NamedTensorList& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].first == b[i].first);
    CHECK(a[i].second.dtype() == b[i].second.dtype());
    CHECK(a[i].second.shape() == b[i].second.shape());
    Tensor x = a[i].second.contiguous(), y = b[i].second.contiguous();
    CHECK(std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0);
  }
}

std::string tmp_path(const char* name) {
  auto dir = std::filesystem::temp_directory_path() / ("bet_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

}  // namespace

TEST_CASE("byte-plane shuffle is invertible") {
  std::vector<uint8_t> in(4 * 7), mid(in.size()), out(in.size());
  for (size_t i = 0; i < in.size(); ++i) in[i] = uint8_t(i * 37 + 1);
  shuffle_bytes(in.data(), mid.data(), 7, 4);
  CHECK(mid[1] == in[4]);  // plane 0 holds byte 0 of each element
  unshuffle_bytes(mid.data(), out.data(), 7, 4);
  CHECK(in == out);
}

TEST_CASE("round trip through a file keeps header and every byte of every tensor") {
  nlohmann::json header = {{"config", {{"d_model", 16}}}, {"card", "test"}};
  auto tensors = sample_tensors();
  std::string path = tmp_path("round.bet");
  write_bet_file(path, header, tensors);
  BetContents back = read_bet_file(path);
  CHECK(back.header == header);
  check_equal(tensors, back.tensors);
  // compression pays on real weights: near-normal f32 shrinks
  Generator g(3);
  NamedTensorList big{{"w", g.normal({256, 256}, 0, 0.02)}};
  CHECK(encode_bet({}, big).size() < size_t(256 * 256 * 4));
}

TEST_CASE("every flipped byte is rejected with an error, never a crash") {
  std::string good = encode_bet({{"k", "v"}}, sample_tensors());
  REQUIRE_NOTHROW(decode_bet(good, "x.bet"));
  int rejected = 0, total = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    for (uint8_t bit : {uint8_t(0x01), uint8_t(0x80)}) {
      std::string bad = good;
      bad[i] = char(uint8_t(bad[i]) ^ bit);
      ++total;
      try {
        decode_bet(bad, "x.bet");
      } catch (const Error& e) {
        ++rejected;
        CHECK(std::string(e.what()).rfind("x.bet", 0) == 0);  // names the file
      }
    }
  }
  CHECK(rejected == total);
}

TEST_CASE("truncation at any offset is rejected") {
  std::string good = encode_bet({{"k", 1}}, sample_tensors());
  for (size_t len = 0; len < good.size(); ++len) {
    CHECK_THROWS_AS(decode_bet(good.substr(0, len), "t.bet"), Error);
  }
  // appended garbage also breaks the footer
  CHECK_THROWS_AS(decode_bet(good + "x", "t.bet"), Error);
}

TEST_CASE("errors say what is wrong") {
  std::string good = encode_bet({}, sample_tensors());
  try {
    decode_bet(good.substr(0, good.size() / 2), "half.bet");
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("truncated") != std::string::npos);
  }
  CHECK_THROWS_WITH_AS(read_bet_file(tmp_path("missing.bet")), doctest::Contains("cannot open"), Error);
}

TEST_CASE("atomic write replaces the file and leaves no temporary behind") {
  std::string path = tmp_path("atomic.txt");
  atomic_write_file(path, "old");
  atomic_write_file(path, "new contents");
  CHECK(read_file(path) == "new contents");
  for (auto& e : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()))
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
}
