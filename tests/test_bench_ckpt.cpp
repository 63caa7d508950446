// The checks `betctl bench ckpt` and `bench train --data` report: the bit-for-bit
// comparison of a loaded checkpoint with the saved one, the data-loading share; and the
// byte-prefix shortcut of encode_examples that bench train --data led to.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "bench/bench_ckpt.h"
#include "bench/bench_train_data.h"
#include "checkpoint_fixtures.h"
#include "runtime/train/training_data.h"

using namespace bet;
using namespace bet::testing;
using bet::bench::tensor_list_mismatch;

namespace {

// The tensors as loaded from a real save, and a writable copy of them.
NamedTensorList copy_list(const NamedTensorList& l) {
  autograd::NoGradGuard ng;
  NamedTensorList out;
  for (const auto& [n, t] : l) out.emplace_back(n, t.clone());
  return out;
}

}  // namespace

TEST_CASE("bench ckpt: a real save/load compares equal; any damage to the load is named") {
  Trained t = make_trained(3, 2);
  Checkpoint ck = checkpoint_of(t, 2);
  const std::string path = fresh_dir("ckpt") + "/a.bet";
  save_checkpoint(path, ck);
  Checkpoint back = load_checkpoint(path);
  CHECK(tensor_list_mismatch(ck.weights, back.weights) == "");
  CHECK(tensor_list_mismatch(ck.optimizer, back.optimizer) == "");
  REQUIRE(back.weights.size() >= 2);

  SUBCASE("one flipped bit in any tensor") {
    for (size_t i : {size_t(0), back.weights.size() / 2, back.weights.size() - 1}) {
      NamedTensorList bad = copy_list(back.weights);
      Tensor& x = bad[i].second;
      if (x.numel() == 0) continue;
      auto* bytes = static_cast<uint8_t*>(x.raw_data());
      bytes[x.nbytes() - 1] ^= 0x01;  // the last byte: a scan that stops early misses it
      CHECK(tensor_list_mismatch(ck.weights, bad) == "'" + bad[i].first + "': bytes differ");
    }
  }
  SUBCASE("optimizer moments") {
    NamedTensorList bad = copy_list(back.optimizer);
    Tensor& m = bad.back().second;
    REQUIRE(m.numel() > 0);
    static_cast<uint8_t*>(m.raw_data())[0] ^= 0x80;
    CHECK(tensor_list_mismatch(ck.optimizer, bad) != "");
  }
  SUBCASE("same bytes, other shape; other name; order; count") {
    NamedTensorList bad = copy_list(back.weights);
    size_t i = 0;
    while (i < bad.size() && bad[i].second.dim() < 2) ++i;
    REQUIRE(i < bad.size());
    bad[i].second = reshape(bad[i].second, {bad[i].second.numel()});
    CHECK(tensor_list_mismatch(ck.weights, bad) != "");

    bad = copy_list(back.weights);
    bad[0].first += "x";
    CHECK(tensor_list_mismatch(ck.weights, bad) != "");

    bad = copy_list(back.weights);
    std::swap(bad[0], bad[1]);
    CHECK(tensor_list_mismatch(ck.weights, bad) != "");

    bad = copy_list(back.weights);
    bad.pop_back();
    CHECK(tensor_list_mismatch(ck.weights, bad) != "");
  }
}

TEST_CASE("bench ckpt: the comparison is of bytes, not values") {
  Tensor a = Tensor::from_vector<float>({0.0f, 1.0f}, {2});
  Tensor b = Tensor::from_vector<float>({-0.0f, 1.0f}, {2});  // == as floats, not as bytes
  CHECK(tensor_list_mismatch({{"w", a}}, {{"w", b}}) != "");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor n1 = Tensor::from_vector<float>({nan}, {1}), n2 = Tensor::from_vector<float>({nan}, {1});
  CHECK(tensor_list_mismatch({{"w", n1}}, {{"w", n2}}) == "");  // != as floats, same bytes
  Tensor d = Tensor::from_vector<double>({0.0}, {1}), f = Tensor::from_vector<float>({0.0f, 0.0f}, {2});
  CHECK(tensor_list_mismatch({{"w", d}}, {{"w", f}}) != "");  // 8 zero bytes either way
}

TEST_CASE("bench train --data: data-loading share") {
  using bet::bench::data_loading_share;
  using bet::bench::projected_data_share;
  CHECK(data_loading_share(1.0, 1.0, 8.0) == doctest::Approx(2.0 / 9.0));
  CHECK(data_loading_share(0.0, 0.5, 10.0) == doctest::Approx(0.05));
  CHECK(data_loading_share(0.0, 0.0, 3.0) == 0.0);
  CHECK(std::isnan(data_loading_share(0.0, 2.0, 1.0)));   // data cannot exceed the steps that include it
  CHECK(std::isnan(data_loading_share(-1.0, 0.0, 1.0)));
  CHECK(std::isnan(data_loading_share(0.0, 0.0, 0.0)));
  // The one-off load weighs less the longer the run, down to the per-step share.
  const double load = 2.0, batch = 0.001, step = 0.1;
  double prev = 1.0;
  for (int64_t n : {1, 10, 100, 1000, 100000}) {
    double s = projected_data_share(load, batch, step, n);
    CHECK(s < prev);
    CHECK(s > batch / step);
    prev = s;
  }
  CHECK(projected_data_share(load, batch, step, 0) == 1.0);
  CHECK(projected_data_share(load, batch, step, 10000000) == doctest::Approx(batch / step).epsilon(0.01));
  CHECK(projected_data_share(0.4, 0.002, 0.1, 276) == doctest::Approx((0.4 + 0.552) / (0.4 + 27.6)));
}

TEST_CASE("encode_examples: the byte tokenizer's prefix encoding keeps exactly the first max_len ids") {
  // bench train --data showed encoding whole e-mails dominating the load; the prefix
  // shortcut must not change a single id.
  auto tok = make_byte_tokenizer();
  const int64_t max_len = 8;
  std::vector<std::string> texts{"", "a", "abcdefg", "abcdefgh", "abcdefghi", std::string(100, 'z'),
                                 "caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9" "e", std::string("\0\x01\xff", 3)};
  std::vector<int64_t> labels{0, 1, 0, 1, 0, 1, 0, 1};
  auto enc = encode_examples(*tok, texts, labels, model::Task::Classify, max_len);
  REQUIRE(enc.size() == texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    CAPTURE(i);
    std::vector<int32_t> want = tok->encode(texts[i]);
    if (int64_t(want.size()) > max_len) want.resize(size_t(max_len));
    if (want.empty()) want.push_back(kEos);
    CHECK(enc[i].ids == want);
    CHECK(enc[i].label == labels[i]);
  }
}
