// Reductions and cumsum: values against PyTorch (tests/reference/gen_elementwise.py),
// every kernel path (inner / outer / split reductions, strided inputs) against naive
// sums at sizes that go parallel, and empty dims. Finite-difference gradients, f32
// against f64 and the GPU are the op table's (tests/op_table.h, tests/test_op_table.cpp).
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
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

const json& reference() { return reference_file("elementwise.json")["reduce"]; }

Tensor from_json(const json& t, DType dtype = DType::F64) { return ref_tensor(t, dtype); }

double diff_to(const Tensor& a, const json& ref) {
  REQUIRE(a.shape() == ref["shape"].get<Shape>());
  auto va = a.to_vector<double>();
  auto vr = ref["data"].get<std::vector<double>>();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::abs(va[i] - vr[i]));
  return m;
}

double tol(DType t) { return t == DType::F64 ? 1e-12 : 3e-6; }

// Naive reduction of a row-major array of `shape` over the dims in `red` (keepdim order).
std::vector<double> naive_sum(const std::vector<double>& v, const Shape& shape, const std::vector<bool>& red) {
  Shape out_shape = shape;
  for (size_t d = 0; d < shape.size(); ++d)
    if (red[d]) out_shape[d] = 1;
  std::vector<double> out(size_t(shape_numel(out_shape)), 0.0);
  Shape ost = contiguous_strides(out_shape);
  std::vector<int64_t> idx(shape.size(), 0);
  for (size_t e = 0; e < v.size(); ++e) {
    int64_t o = 0;
    for (size_t d = 0; d < shape.size(); ++d)
      if (!red[d]) o += idx[d] * ost[d];
    out[size_t(o)] += v[e];
    for (int64_t d = int64_t(shape.size()) - 1; d >= 0; --d) {
      if (++idx[size_t(d)] < shape[size_t(d)]) break;
      idx[size_t(d)] = 0;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("sum and mean match torch over dim lists, keepdim or not") {
  const json& r = reference();
  for (DType dt : {DType::F64, DType::F32}) {
    CAPTURE(dtype_name(dt));
    Tensor x = from_json(r["x"], dt);
    for (const auto& c : r["sums"]) {
      auto dims = c["dims"].get<std::vector<int64_t>>();
      bool keep = c["keepdim"].get<bool>();
      CAPTURE(c["dims"].dump());
      CAPTURE(keep);
      Tensor s = sum(x, dims, keep), m = mean(x, dims, keep);
      CHECK(s.dtype() == dt);
      CHECK(diff_to(s, c["sum"]) < 10 * tol(dt));
      CHECK(diff_to(m, c["mean"]) < tol(dt));
      // The same through a non-contiguous view of the same values.
      Tensor xt = transpose(transpose(x, 0, 2).contiguous(), 0, 2);
      CHECK(diff_to(sum(xt, dims, keep), c["sum"]) < 10 * tol(dt));
    }
  }
  CHECK_THROWS_WITH_AS(sum(Tensor::ones({2, 3}), {1, -1}), doctest::Contains("sum: dim -1 repeated"), Error);
  CHECK_THROWS_WITH_AS(mean(Tensor::ones({2, 3}), {2}), doctest::Contains("mean: dim 2 out of range"), Error);
}

TEST_CASE("max, argmax match torch; ties give the first index") {
  const json& r = reference();
  for (DType dt : {DType::F64, DType::F32, DType::I64}) {
    CAPTURE(dtype_name(dt));
    Tensor x = from_json(r["xi"], dt);
    for (const auto& c : r["max"]) {
      int64_t dim = c["dim"].get<int64_t>();
      CAPTURE(dim);
      CHECK(diff_to(max(x, dim), c["values"]) == 0.0);
      CHECK(argmax(x, dim).dtype() == DType::I64);
      CHECK(argmax(x, dim).to_vector<int64_t>() == c["argmax"].get<std::vector<int64_t>>());
      CHECK(argmax(x, dim).to_vector<int64_t>() == c["indices"].get<std::vector<int64_t>>());
      Shape kept = x.shape();
      kept[size_t(normalize_dim(dim, 3, "test"))] = 1;
      CHECK(max(x, dim, true).shape() == kept);
      CHECK(argmax(x, dim, true).shape() == kept);
    }
  }
  // Gradient goes to the first argmax only.
  Tensor a = leaf(Tensor::from_vector<double>({1, 3, 3, 2, 5, 5, 5, 0}, {2, 4}));
  sum(mul(max(a, 1), Tensor::from_vector<double>({10, 20}, {2}))).backward();
  CHECK(a.grad().to_vector<double>() == std::vector<double>{0, 10, 0, 0, 20, 0, 0, 0});
  CHECK_THROWS_WITH_AS(max(Tensor::zeros({2, 0}), 1), doctest::Contains("max: dim 1"), Error);
}

TEST_CASE("cumsum matches torch along every dim") {
  const json& r = reference();
  for (DType dt : {DType::F64, DType::F32}) {
    Tensor x = from_json(r["x"], dt);
    for (const auto& c : r["cumsum"]) {
      CAPTURE(c["dim"].get<int64_t>());
      CHECK(diff_to(cumsum(x, c["dim"].get<int64_t>()), c["out"]) < 10 * tol(dt));
      Tensor xt = transpose(transpose(x, 0, 1).contiguous(), 0, 1);
      CHECK(diff_to(cumsum(xt, c["dim"].get<int64_t>()), c["out"]) < 10 * tol(dt));
    }
  }
}

TEST_CASE("cumsum on long inputs equals the naive running sum, forward and backward") {
  const int64_t n = 200003;
  Generator g(77);
  Tensor x = leaf(g.uniform({n}, -1, 1, DType::F64));
  Tensor w = g.uniform({n}, -1, 1, DType::F64);
  Tensor y = cumsum(x, 0);
  auto vx = x.to_vector<double>(), vy = y.to_vector<double>(), vw = w.to_vector<double>();
  double acc = 0, err = 0;
  for (int64_t i = 0; i < n; ++i) {
    acc += vx[size_t(i)];
    err = std::max(err, std::abs(vy[size_t(i)] - acc));
  }
  CHECK(err < 1e-9);
  // d sum(cumsum(x) * w) / dx_i = sum_{j >= i} w_j
  sum(mul(y, w)).backward();
  auto gx = x.grad().to_vector<double>();
  acc = 0, err = 0;
  for (int64_t i = n - 1; i >= 0; --i) {
    acc += vw[size_t(i)];
    err = std::max(err, std::abs(gx[size_t(i)] - acc));
  }
  CHECK(err < 1e-9);

  // Along a leading dim (the vectorised strip path) in f32, against a double naive scan.
  const int64_t rows = 5000, cols = 300;
  Tensor m = g.uniform({rows, cols}, -1, 1, DType::F32);
  auto vm = m.to_vector<double>();
  auto vc = cumsum(m, 0).to_vector<double>();
  std::vector<double> run(size_t(cols), 0.0);
  err = 0;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      run[size_t(j)] += vm[size_t(i * cols + j)];
      err = std::max(err, std::abs(vc[size_t(i * cols + j)] - run[size_t(j)]));
    }
  CHECK(err < 1e-4);  // f32 rounding of the output only: accumulation is in double
}

TEST_CASE("sum kernels agree with a naive sum at parallel sizes and layouts") {
  struct Case {
    Shape shape;
    std::vector<int64_t> dims;
  };
  const std::vector<Case> cases = {
      {{1, 300001}, {1}},      // one long row: split into blocks
      {{3, 120000}, {1}},      // few outputs, long rows
      {{20000, 7}, {1}},       // many short rows
      {{120000, 3}, {0}},      // bias-gradient shape with a narrow strip: rows split
      {{5000, 300}, {0}},      // wide strips
      {{40, 900, 7}, {1}},     // a middle dim
      {{40, 900, 7}, {0, 2}},  // outer and inner dims together
      {{300, 400}, {}},        // everything
  };
  for (DType dt : {DType::F32, DType::F64}) {
    for (const Case& c : cases) {
      CAPTURE(dtype_name(dt));
      CAPTURE(shape_str(c.shape));
      Generator g(3);
      Tensor x = g.uniform(c.shape, -1, 1, dt);
      std::vector<bool> red(c.shape.size(), c.dims.empty());
      for (int64_t d : c.dims) red[size_t(d)] = true;
      auto want = naive_sum(x.to_vector<double>(), c.shape, red);
      auto got = sum(x, c.dims, true).to_vector<double>();
      REQUIRE(got.size() == want.size());
      double err = 0;
      for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::abs(got[i] - want[i]));
      // f32: the inputs' sum in double is exact enough; the output rounding dominates.
      CHECK(err < (dt == DType::F32 ? 2e-3 : 1e-9));
      // A transposed view of the same data reduces to the same values.
      if (c.shape.size() == 2 && !c.dims.empty()) {
        Tensor xt = transpose(transpose(x, 0, 1).contiguous(), 0, 1);
        auto got_t = sum(xt, c.dims, true).to_vector<double>();
        double et = 0;
        for (size_t i = 0; i < got.size(); ++i) et = std::max(et, std::abs(got_t[i] - want[i]));
        CHECK(et < (dt == DType::F32 ? 2e-3 : 1e-9));
      }
    }
  }
}

TEST_CASE("max, argmax and cumsum kernels agree with naive loops across blocks and strips") {
  Generator g(11);
  // Integer values in [-20, 20]: many ties, so the first-index rule is exercised
  // across the row blocks and strips.
  auto ints = [&](const Shape& s, DType dt) {
    auto v = g.uniform(s, -20.5, 20.5, DType::F64).to_vector<double>();
    for (double& x : v) x = std::round(x);
    return Tensor::from_vector<double>(v, s).to(dt);
  };
  for (DType dt : {DType::F32, DType::F64}) {
    for (auto [shape, dim] : std::vector<std::pair<Shape, int64_t>>{
             {{37, 1000}, 1}, {{3, 1500}, 0}, {{5, 7, 1100}, 1}, {{9, 333}, 1}, {{2, 3000, 3}, 1}}) {
      CAPTURE(shape_str(shape));
      Tensor x = ints(shape, dt);
      auto v = x.to_vector<double>();
      int64_t outer = 1, n = shape[size_t(dim)], inner = 1;
      for (int64_t d = 0; d < dim; ++d) outer *= shape[size_t(d)];
      for (size_t d = size_t(dim) + 1; d < shape.size(); ++d) inner *= shape[d];
      auto mv = max(x, dim).to_vector<double>();
      auto mi = argmax(x, dim).to_vector<int64_t>();
      auto cs = cumsum(x, dim).to_vector<double>();
      bool max_ok = true, cum_ok = true;
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < inner; ++j) {
          double best = v[size_t(o * n * inner + j)], run = 0;
          int64_t bi = 0;
          for (int64_t r = 0; r < n; ++r) {
            double e = v[size_t((o * n + r) * inner + j)];
            if (e > best) best = e, bi = r;
            run += e;
            cum_ok &= cs[size_t((o * n + r) * inner + j)] == run;  // small integers: exact
          }
          max_ok &= mv[size_t(o * inner + j)] == best && mi[size_t(o * inner + j)] == bi;
        }
      CHECK(max_ok);
      CHECK(cum_ok);
    }
  }
  // NaN is the maximum, at its first position, as in torch.
  double nan = std::nan("");
  Tensor xn = Tensor::from_vector<double>({1, nan, 7, nan, 2, 3, 9, 4}, {2, 4});
  auto v = max(xn, 1).to_vector<double>();
  CHECK(std::isnan(v[0]));
  CHECK(v[1] == 9);
  CHECK(argmax(xn, 1).to_vector<int64_t>() == std::vector<int64_t>{1, 2});
  CHECK(argmax(transpose(xn, 0, 1), 0).to_vector<int64_t>() == std::vector<int64_t>{1, 2});
  std::vector<float> longrow(700, 1.f);
  longrow[600] = std::nanf("");
  longrow[650] = std::nanf("");
  CHECK(argmax(Tensor::from_vector<float>(longrow, {700}), 0).item() == 600.0);
}

TEST_CASE("a sum does not depend on the thread count") {
  Generator g(9);
  Tensor x = g.uniform({7, 100003}, -1, 1, DType::F32);
  Tensor y = g.uniform({100003, 5}, -1, 1, DType::F32);
  const int prev = platform::num_threads();
  platform::set_num_threads(1);
  auto a1 = sum(x, {1}).to_vector<float>(), b1 = sum(y, {0}).to_vector<float>(), c1 = sum(x).to_vector<float>();
  platform::set_num_threads(std::max(2, prev));
  auto a2 = sum(x, {1}).to_vector<float>(), b2 = sum(y, {0}).to_vector<float>(), c2 = sum(x).to_vector<float>();
  platform::set_num_threads(prev);
  CHECK(a1 == a2);
  CHECK(b1 == b2);
  CHECK(c1 == c2);
}

TEST_CASE("empty dims and integer sums") {
  Tensor e = Tensor::zeros({0, 3}, DType::F64);
  CHECK(sum(e, {0}).shape() == Shape{3});
  CHECK(sum(e, {0}).to_vector<double>() == std::vector<double>{0, 0, 0});
  CHECK(sum(e, {1}).shape() == Shape{0});
  CHECK(sum(e).item() == 0.0);
  CHECK(std::isnan(mean(e).item()));
  CHECK(cumsum(e, 0).shape() == Shape{0, 3});
  CHECK(max(Tensor::zeros({0, 3}), 1).shape() == Shape{0});
  Tensor le = leaf(Tensor::zeros({2, 0, 3}, DType::F64));
  Tensor s = sum(le, {1});
  CHECK(s.to_vector<double>() == std::vector<double>(6, 0.0));
  sum(s).backward();
  CHECK(le.grad().shape() == Shape{2, 0, 3});

  Tensor i = Tensor::from_vector<int64_t>({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(sum(i).item() == 21.0);
  CHECK(sum(i, {0}).to_vector<int64_t>() == std::vector<int64_t>{5, 7, 9});
  CHECK(cumsum(i, 1).to_vector<int64_t>() == std::vector<int64_t>{1, 3, 6, 4, 9, 15});
  CHECK_THROWS_WITH_AS(mean(i), doctest::Contains("mean"), Error);
}
