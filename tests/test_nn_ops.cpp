// softmax / log_softmax (masked), layer_norm, cross_entropy_sum, rope and dropout:
// forward values against PyTorch (tests/reference/gen_nn_ops.py) and the properties the
// model relies on (fully masked rows give zeros, dropout masks independent of the thread
// count). Finite-difference gradients, f32 against f64 and the GPU are the op table's
// (tests/op_table.h, tests/test_op_table.cpp).
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "bet_config.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "platform/threads.h"
#include "tests/gradcheck.h"
#include "tests/reference_data.h"

using namespace bet;
using namespace bet::testing;
using nlohmann::json;

namespace {

const json& reference() { return reference_file("nn_ops.json"); }

std::vector<double> values(const json& t) { return ref_values(t); }  // null: -inf (masked log-probabilities)

Tensor from_json(const json& t, DType dtype = DType::F64) { return ref_tensor(t, dtype); }

// Max |a - ref| where -inf must match -inf exactly; NaN anywhere counts as infinite error.
double diff_to(const Tensor& a, const json& ref) {
  REQUIRE(a.shape() == ref["shape"].get<Shape>());
  auto va = a.to_vector<double>();
  auto vr = values(ref);
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    if (std::isinf(vr[i]) || std::isinf(va[i])) {
      if (va[i] != vr[i]) return std::numeric_limits<double>::infinity();
      continue;
    }
    double d = std::abs(va[i] - vr[i]);
    if (!(d <= m)) m = std::isnan(d) ? std::numeric_limits<double>::infinity() : d;
  }
  return m;
}

bool all_finite(const Tensor& t) {
  for (double v : t.to_vector<double>())
    if (!std::isfinite(v)) return false;
  return true;
}

template <typename T>
Tensor ints(const std::vector<T>& v, const Shape& shape) {
  return Tensor::from_vector<T>(v, shape);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct ThreadGuard {
  int prev = platform::num_threads();
  ~ThreadGuard() { platform::set_num_threads(prev); }
};

}  // namespace

// ---------------------------------------------------------------- softmax

TEST_CASE("softmax and log_softmax match torch along every dim") {
  const json& r = reference()["softmax"];
  for (DType dt : {DType::F64, DType::F32}) {
    const double tol = dt == DType::F64 ? 1e-12 : 2e-6;
    Tensor x = from_json(r["x"], dt);
    for (const auto& c : r["dims"]) {
      int64_t dim = c["dim"].get<int64_t>();
      INFO("dim " << dim << " dtype " << dtype_name(dt));
      CHECK(diff_to(softmax(x, dim), c["softmax"]) < tol);
      CHECK(diff_to(log_softmax(x, dim), c["log_softmax"]) < tol * 4);
    }
  }
}

TEST_CASE("masked softmax matches torch; a fully masked row gives zeros, never NaN") {
  const json& r = reference()["softmax"];
  for (DType dt : {DType::F64, DType::F32}) {
    const double tol = dt == DType::F64 ? 1e-12 : 2e-6;
    Tensor x = from_json(r["x"], dt);
    Tensor mask = from_json(r["mask"]);  // [2, 1, 5], f64, batch 1 fully masked
    Tensor p = softmax(x, -1, mask);
    CHECK(diff_to(p, r["masked_last"]["softmax"]) < tol);
    CHECK(diff_to(log_softmax(x, -1, mask), r["masked_last"]["log_softmax"]) < tol * 4);
    CHECK(all_finite(p));
    CHECK(sum(select(p, 0, 1)).item() == 0.0);
    // Integer masks behave the same as float ones.
    CHECK(max_abs_diff(softmax(x, -1, mask.to(DType::I32)), p) == 0.0);
    CHECK(max_abs_diff(softmax(x, -1, mask.to(DType::I64)), p) == 0.0);
    // Along a non-last dim, with the mask broadcast over dim 0.
    Tensor mask1 = from_json(r["masked_dim1"]["mask"], DType::F32);
    CHECK(diff_to(softmax(x, 1, mask1), r["masked_dim1"]["softmax"]) < tol);
    CHECK(diff_to(log_softmax(x, 1, mask1), r["masked_dim1"]["log_softmax"]) < tol * 4);
  }
}

TEST_CASE("softmax rows sum to one and f32 agrees with f64 on long rows") {
  // Long rows exercise the vector bodies and tails and the parallel row split.
  for (int64_t n : {1, 7, 33, 1000, 4099}) {
    Tensor x64 = rand64({40, n}, 10 + uint64_t(n), -20, 20);
    Tensor p32 = softmax(x64.to(DType::F32), -1);
    Tensor p64 = softmax(x64, -1);
    INFO("n = " << n);
    CHECK(max_abs_diff(sum(p64, {1}), Tensor::ones({40}, DType::F64)) < 1e-12);
    CHECK(max_abs_diff(p32, p64) < 1e-6);
    CHECK(max_abs_diff(log_softmax(x64.to(DType::F32), -1), log_softmax(x64, -1)) < 1e-4);
  }
  // Huge logits do not overflow.
  Tensor big = Tensor::from_vector<float>({1000.f, 999.f, -1000.f}, {1, 3});
  Tensor pb = softmax(big, -1);
  CHECK(all_finite(pb));
  CHECK(pb.to_vector<double>()[0] == doctest::Approx(1.0 / (1.0 + std::exp(-1.0))).epsilon(1e-6));
  // 0-d input: softmax of one value is 1. Empty dims give empty results.
  CHECK(softmax(Tensor::scalar(3.0, DType::F64), 0).item() == 1.0);
  CHECK(softmax(Tensor::zeros({0, 5}), -1).shape() == Shape{0, 5});
  CHECK(log_softmax(Tensor::zeros({3, 0}), -1, Tensor::ones({0})).shape() == Shape{3, 0});
  Tensor e = leaf(Tensor::zeros({2, 0, 3}, DType::F64));
  sum(softmax(e, 1)).backward();
  CHECK(e.grad().shape() == Shape{2, 0, 3});
}

TEST_CASE("masked entries and fully masked rows get zero gradient, whatever flows into them") {
  Tensor mask = Tensor::from_vector<int64_t>({1, 0, 1, 0, 0, 0}, {2, 3});  // row 1 fully masked
  Tensor keep = mask.to(DType::F64);
  for (bool log : {false, true}) {
    Tensor x = leaf(rand64({2, 3}, 30));
    Tensor g = rand64({2, 3}, 31, 0.5, 2.0);  // nonzero at masked entries too
    Tensor y = log ? log_softmax(x, -1, mask) : softmax(x, -1, mask);
    y.backward(g);
    Tensor gx = x.grad();
    CHECK(all_finite(gx));
    CHECK(max_abs_diff(mul(gx, rsub(1.0, keep)), Tensor::zeros({2, 3}, DType::F64)) == 0.0);
    // Same gradient as when nothing flows into masked entries.
    Tensor x2 = leaf(x.detach().clone());
    (log ? log_softmax(x2, -1, mask) : softmax(x2, -1, mask)).backward(mul(g, keep));
    CHECK(max_abs_diff(x2.grad(), gx) < 1e-15);
  }
}

TEST_CASE("softmax argument errors name the op and the shapes") {
  Tensor x = Tensor::zeros({2, 3});
  CHECK(error_of([&] { softmax(x, -1, Tensor::ones({3, 3})); }).find("softmax") != std::string::npos);
  CHECK(error_of([&] { log_softmax(x, 2); }).find("log_softmax") != std::string::npos);
  CHECK(error_of([&] { softmax(Tensor::zeros({2}, DType::I64), 0); }).find("f32 or f64") != std::string::npos);
}

// ---------------------------------------------------------------- layer_norm

TEST_CASE("layer_norm matches torch with and without affine parameters") {
  const json& r = reference()["layer_norm"];
  for (DType dt : {DType::F64, DType::F32}) {
    const double tol = dt == DType::F64 ? 1e-12 : 1e-5;
    Tensor x = from_json(r["x"], dt), w = from_json(r["weight"], dt), b = from_json(r["bias"], dt);
    CHECK(diff_to(layer_norm(x, w, b, 1e-5), r["affine"]) < tol);
    CHECK(diff_to(layer_norm(x, Tensor(), Tensor(), 1e-5), r["plain"]) < tol);
    CHECK(diff_to(layer_norm(x, w, b, 0.5), r["eps_big"]) < tol);
    // Non-contiguous input: the same rows reached through a transpose.
    Tensor xt = transpose(transpose(x, 0, 1).contiguous(), 0, 1);
    REQUIRE_FALSE(xt.is_contiguous());
    CHECK(diff_to(layer_norm(xt, w, b, 1e-5), r["affine"]) < tol);
  }
  // Rows with a large common offset: the two-pass variance keeps full precision.
  Tensor off = add(rand64({4, 64}, 40), 1e4);
  Tensor y = layer_norm(off.to(DType::F32), Tensor(), Tensor(), 1e-5);
  CHECK(max_abs_diff(y, layer_norm(off, Tensor(), Tensor(), 1e-5)) < 2e-3);
}

TEST_CASE("layer_norm: empty batch, thread-count independent parameter gradients, errors") {
  Tensor w = leaf(rand64({4}, 52)), b = leaf(rand64({4}, 53));
  Tensor e = leaf(Tensor::zeros({0, 4}, DType::F64));
  sum(layer_norm(e, w, b)).backward();
  CHECK(max_abs_diff(w.grad(), Tensor::zeros({4}, DType::F64)) == 0.0);
  CHECK(max_abs_diff(b.grad(), Tensor::zeros({4}, DType::F64)) == 0.0);

  ThreadGuard guard;
  Tensor x = Generator(54).uniform({3000, 48});
  Tensor g = Generator(55).uniform({3000, 48});
  Tensor wf = Generator(56).uniform({48}), bf = Generator(57).uniform({48});
  std::vector<std::vector<float>> dws;
  for (int nt : {1, 2}) {
    platform::set_num_threads(nt);
    Tensor wl = leaf(wf.clone()), xl = leaf(x.clone());
    layer_norm(xl, wl, bf).backward(g);
    dws.push_back(wl.grad().to_vector<float>());
    dws.push_back(xl.grad().to_vector<float>());
  }
  CHECK(dws[0] == dws[2]);
  CHECK(dws[1] == dws[3]);

  CHECK(error_of([&] { layer_norm(Tensor::zeros({2, 3}), Tensor::ones({4}), Tensor()); }).find("[4]") !=
        std::string::npos);
  CHECK(error_of([&] { layer_norm(Tensor::zeros({2, 3}), Tensor::ones({3}, DType::F64), Tensor()); })
            .find("layer_norm") != std::string::npos);
}

// ---------------------------------------------------------------- cross_entropy

TEST_CASE("cross_entropy_sum matches torch; ignore_index skipped; count_valid") {
  const json& r = reference()["cross_entropy"];
  auto tv = r["targets"].get<std::vector<int64_t>>();
  Tensor t64 = ints<int64_t>(tv, {int64_t(tv.size())});
  Tensor t32 = t64.to(DType::I32);
  for (DType dt : {DType::F64, DType::F32}) {
    Tensor lg = from_json(r["logits"], dt);
    const double tol = dt == DType::F64 ? 1e-12 : 1e-4;
    Tensor l = cross_entropy_sum(lg, t64);
    CHECK(l.dim() == 0);
    CHECK(l.dtype() == dt);
    CHECK(std::abs(l.item() - r["sum"].get<double>()) < tol);
    CHECK(std::abs(cross_entropy_sum(lg, t32).item() - r["sum"].get<double>()) < tol);
    // Non-contiguous logits: a transposed copy viewed back.
    Tensor lt = transpose(transpose(lg, 0, 1).contiguous(), 0, 1);
    CHECK(std::abs(cross_entropy_sum(lt, t64).item() - r["sum"].get<double>()) < tol);
    const json& r7 = reference()["cross_entropy_ignore7"];
    auto t7 = r7["targets"].get<std::vector<int64_t>>();
    CHECK(std::abs(cross_entropy_sum(lg, ints<int64_t>(t7, {7}), 7).item() - r7["sum"].get<double>()) < tol);
  }
  CHECK(count_valid(t64) == r["count"].get<int64_t>());
  CHECK(count_valid(t32) == r["count"].get<int64_t>());
  CHECK(count_valid(t64, 0) == 6);
  // Nothing counted: the sum is 0.
  Tensor lg = rand64({2, 3}, 60);
  CHECK(cross_entropy_sum(lg, ints<int64_t>({-100, -100}, {2})).item() == 0.0);
  CHECK(cross_entropy_sum(Tensor::zeros({0, 3}, DType::F64), Tensor::zeros({0}, DType::I64)).item() == 0.0);
}

TEST_CASE("cross_entropy_sum gradient is softmax - onehot, zero on ignored rows") {
  Tensor t = ints<int64_t>({2, -100, 0, 3, 3}, {5});
  // Seeded with g, the gradient is g * (softmax - onehot) exactly, ignored row zero.
  Tensor l = leaf(rand64({5, 4}, 63));
  cross_entropy_sum(l, t.to(DType::I32)).backward(Tensor::scalar(2.5, DType::F64));
  auto gr = l.grad().to_vector<double>();
  auto p = softmax(l.detach(), -1).to_vector<double>();
  auto tv = t.to_vector<int64_t>();
  double worst = 0;
  for (size_t i = 0; i < 5; ++i)
    for (size_t j = 0; j < 4; ++j) {
      double want = tv[i] < 0 ? 0.0 : 2.5 * (p[i * 4 + j] - (int64_t(j) == tv[i] ? 1.0 : 0.0));
      worst = std::max(worst, std::abs(gr[i * 4 + j] - want));
    }
  CHECK(worst < 1e-12);
}

TEST_CASE("cross_entropy_sum rejects bad targets, naming the value and the row") {
  Tensor lg = rand64({4, 3}, 64);
  std::string e = error_of([&] { cross_entropy_sum(lg, ints<int64_t>({0, 2, 5, 1}, {4})); });
  CHECK(e.find("target 5") != std::string::npos);
  CHECK(e.find("row 2") != std::string::npos);
  e = error_of([&] { cross_entropy_sum(lg, ints<int32_t>({0, -1, 1, 1}, {4})); });
  CHECK(e.find("target -1") != std::string::npos);
  CHECK(e.find("row 1") != std::string::npos);
  CHECK(error_of([&] { cross_entropy_sum(lg, ints<int64_t>({0, 1, 1}, {3})); }).find("[4, 3]") != std::string::npos);
  CHECK(error_of([&] { cross_entropy_sum(lg, Tensor::zeros({4}, DType::F64)); }).find("i32 or i64") !=
        std::string::npos);
}

// ---------------------------------------------------------------- rope

TEST_CASE("rope matches the half-split torch formula") {
  const json& r = reference()["rope"];
  auto pb = r["pos_batch"].get<std::vector<std::vector<int64_t>>>();
  std::vector<int64_t> pbf;
  for (auto& row : pb) pbf.insert(pbf.end(), row.begin(), row.end());
  Tensor pos_b = ints<int64_t>(pbf, {2, 4});
  auto ps = r["pos_seq"].get<std::vector<int32_t>>();
  Tensor pos_s = ints<int32_t>(ps, {4});
  for (DType dt : {DType::F64, DType::F32}) {
    const double tol = dt == DType::F64 ? 1e-12 : 1e-5;
    Tensor x = from_json(r["x"], dt);
    CHECK(diff_to(rope(x, pos_b), r["out_batch"]) < tol);
    CHECK(diff_to(rope(x, pos_b.to(DType::F32)), r["out_batch"]) < tol);  // float positions
    CHECK(diff_to(rope(x, pos_s, 100.0), r["out_seq_base100"]) < tol);
    // Non-contiguous x gives the same values.
    Tensor xt = transpose(transpose(x, 1, 2).contiguous(), 1, 2);
    CHECK(diff_to(rope(xt, pos_b), r["out_batch"]) < tol);
  }
}

TEST_CASE("rope: inverse rotation and argument checks") {
  Tensor pos = ints<int64_t>({0, 3, 1, 9, 2, 5}, {2, 3});
  Tensor x = leaf(rand64({2, 2, 3, 6}, 70));
  Tensor pos1 = ints<int32_t>({4, 0, 7}, {3});
  // A rotation: rotating by -pos undoes it.
  Tensor y = rope(x.detach(), pos);
  CHECK(max_abs_diff(rope(y, neg(pos.to(DType::F64))), x.detach()) < 1e-12);
  CHECK(error_of([&] { rope(Tensor::zeros({1, 1, 3, 5}), pos1); }).find("even") != std::string::npos);
  CHECK(error_of([&] { rope(Tensor::zeros({1, 1, 4, 4}), pos1); }).find("positions") != std::string::npos);
}

// ---------------------------------------------------------------- dropout

TEST_CASE("dropout keeps element i iff philox_uniform(seed, offset + i) >= p, scaled by 1/(1-p)") {
  const double p = 0.4;
  Tensor base = rand64({6, 7}, 80, 1, 2);  // no zeros, so a zero output means dropped
  Tensor xt = transpose(base, 0, 1);       // logical order of the view, not storage order
  Tensor y = dropout(xt, p, true, 99, 13);
  auto vy = y.to_vector<double>(), vx = xt.to_vector<double>();
  int mismatches = 0;
  for (size_t i = 0; i < vy.size(); ++i) {
    bool keep = philox_uniform(99, 13 + i) >= p;
    double want = keep ? vx[i] / (1 - p) : 0.0;
    if (std::abs(vy[i] - want) > 1e-15) ++mismatches;
  }
  CHECK(mismatches == 0);
}

TEST_CASE("dropout masks: deterministic, thread-count independent, offset-dependent, keep rate 1-p") {
  ThreadGuard guard;
  const double p = 0.3;
  Tensor x = Tensor::ones({200, 500});
  platform::set_num_threads(1);
  auto a1 = dropout(x, p, true, 7, 1000).to_vector<float>();
  platform::set_num_threads(2);
  auto a2 = dropout(x, p, true, 7, 1000).to_vector<float>();
  auto a3 = dropout(x, p, true, 7, 1000).to_vector<float>();
  auto b = dropout(x, p, true, 7, 1001).to_vector<float>();
  auto c = dropout(x, p, true, 8, 1000).to_vector<float>();
  CHECK(a1 == a2);
  CHECK(a2 == a3);
  CHECK(a1 != b);
  CHECK(a1 != c);
  // Offset shifts the stream by one element: element i at offset 1001 is element i+1 at 1000.
  CHECK(std::equal(b.begin(), b.end() - 1, a1.begin() + 1));
  double kept = 0;
  for (float v : a1) kept += v != 0.0f;
  CHECK(std::abs(kept / double(a1.size()) - (1 - p)) < 0.01);
  int odd = 0;
  for (float v : a1) odd += !(v == 0.0f || std::abs(v - float(1 / (1 - p))) < 1e-6f);
  CHECK(odd == 0);
}

TEST_CASE("dropout identity cases and gradient mask/(1-p)") {
  Tensor x = leaf(rand64({4, 5}, 81));
  CHECK(dropout(x, 0.5, false, 1, 0).same(x));
  CHECK(dropout(x, 0.0, true, 1, 0).same(x));
  CHECK(max_abs_diff(dropout(x, 1.0, true, 1, 0), Tensor::zeros({4, 5}, DType::F64)) == 0.0);
  // d out / d x = mask / (1 - p): the output of dropout on ones.
  Tensor xl = leaf(rand64({4, 5}, 83));
  sum(dropout(xl, 0.25, true, 9, 40)).backward();
  CHECK(max_abs_diff(xl.grad(), dropout(Tensor::ones({4, 5}, DType::F64), 0.25, true, 9, 40)) == 0.0);
  CHECK(error_of([&] { dropout(x, 1.5, true, 0, 0); }).find("dropout") != std::string::npos);
}

TEST_CASE("vectorised dropout mask equals scalar Philox at every alignment, size and p") {
  // The kernel draws 16 Philox blocks at a time and compares integers; element i must
  // still be exactly philox_uniform(seed, offset + i) >= p. Offsets cover every word
  // alignment, a counter past 2^32 blocks (high word in use), and chunk tails.
  ThreadGuard guard;
  platform::set_num_threads(2);
  const uint64_t seed = 0x1234'5678'9abcull;
  for (double p : {0.1, 0.5, 1.0 / 3.0, 1.0 - 1.0 / 16777216.0}) {
    for (uint64_t offset : {uint64_t(0), uint64_t(1), uint64_t(2), uint64_t(3), uint64_t(65),
                            (uint64_t(1) << 34) + 7}) {
      for (int64_t n : {int64_t(1), int64_t(63), int64_t(64), int64_t(65), int64_t(40001)}) {
        auto y = dropout(Tensor::ones({n}), p, true, seed, offset).to_vector<float>();
        int64_t mismatches = 0;
        for (int64_t i = 0; i < n; ++i) {
          const bool keep = double(philox_uniform(seed, offset + uint64_t(i))) >= p;
          if ((y[size_t(i)] != 0.0f) != keep) ++mismatches;
        }
        CAPTURE(p);
        CAPTURE(offset);
        CAPTURE(n);
        CHECK(mismatches == 0);
      }
    }
  }
}
