// Elementwise ops: forward values against PyTorch (tests/reference/gen_elementwise.py),
// exact gradient routing, the kernels' fast paths against a naive loop, and dtype rules.
// The generic checks (f64 finite-difference gradients over broadcast, non-contiguous,
// size-1 and empty shapes; f32 against f64; the GPU) are the op table's
// (tests/op_table.h, tests/test_op_table.cpp).
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "bet_config.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "tests/gradcheck.h"
#include "tests/reference_data.h"

using namespace bet;
using namespace bet::testing;
using nlohmann::json;

namespace {

const json& reference() { return reference_file("elementwise.json"); }

Tensor from_json(const json& t, DType dtype = DType::F64) { return ref_tensor(t, dtype); }

// Largest |a - ref| / (atol + rtol |ref|); <= 1 passes. NaN counts as a failure.
double scaled_err(const Tensor& a, const json& ref, double rtol, double atol) {
  REQUIRE(a.shape() == ref["shape"].get<Shape>());
  auto va = a.to_vector<double>();
  auto vr = ref["data"].get<std::vector<double>>();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    double e = std::abs(va[i] - vr[i]) / (atol + rtol * std::abs(vr[i]));
    if (!(e <= m)) m = std::isnan(e) ? 1e300 : e;
  }
  return m;
}

// Tolerances per dtype: f64 to near rounding, f32 to its precision.
struct Tol {
  double rtol, atol;
};
Tol tol(DType t) { return t == DType::F64 ? Tol{1e-12, 1e-14} : Tol{2e-6, 1e-6}; }

#define CHECK_REF(tensor, ref, dt)                                 \
  do {                                                             \
    Tol _t = tol(dt);                                              \
    CHECK(scaled_err(tensor, ref, _t.rtol, _t.atol) <= 1.0);       \
  } while (0)

using Unary = Tensor (*)(const Tensor&);

}  // namespace

TEST_CASE("unary forward matches torch") {
  const json& r = reference()["unary"];
  const std::pair<const char*, Unary> ops[] = {
      {"exp", [](const Tensor& t) { return exp(t); }},         {"tanh", [](const Tensor& t) { return tanh(t); }},
      {"sigmoid", [](const Tensor& t) { return sigmoid(t); }}, {"relu", [](const Tensor& t) { return relu(t); }},
      {"gelu", [](const Tensor& t) { return gelu(t); }},       {"softplus", [](const Tensor& t) { return softplus(t); }},
      {"abs", [](const Tensor& t) { return abs(t); }},         {"neg", [](const Tensor& t) { return neg(t); }},
  };
  const std::pair<const char*, Unary> pos_ops[] = {
      {"log", [](const Tensor& t) { return log(t); }},
      {"sqrt", [](const Tensor& t) { return sqrt(t); }},
  };
  for (DType dt : {DType::F64, DType::F32}) {
    CAPTURE(dtype_name(dt));
    Tensor x = from_json(r["x"], dt), pos = from_json(r["pos"], dt);
    for (auto& [name, fn] : ops) {
      CAPTURE(name);
      Tensor y = fn(x);
      CHECK(y.dtype() == dt);
      CHECK_REF(y, r[name], dt);
    }
    for (auto& [name, fn] : pos_ops) {
      CAPTURE(name);
      CHECK_REF(fn(pos), r[name], dt);
    }
    CHECK_REF(clamp(x, r["clamp"]["lo"].get<double>(), r["clamp"]["hi"].get<double>()), r["clamp"]["out"], dt);
    for (const auto& p : r["pow"]) {
      CAPTURE(p["e"].get<double>());
      CHECK_REF(pow(pos, p["e"].get<double>()), p["out"], dt);
    }
  }
}

TEST_CASE("unary gradients match torch's formulas, tails included") {
  const json& r = reference()["unary"];
  const std::pair<const char*, Unary> ops[] = {
      {"gelu", [](const Tensor& t) { return gelu(t); }},
      {"softplus", [](const Tensor& t) { return softplus(t); }},
      {"sigmoid", [](const Tensor& t) { return sigmoid(t); }},
      {"tanh", [](const Tensor& t) { return tanh(t); }},
  };
  for (DType dt : {DType::F64, DType::F32}) {
    for (auto& [name, fn] : ops) {
      CAPTURE(name);
      Tensor x = leaf(from_json(r["x"], dt));
      sum(fn(x)).backward();
      CHECK_REF(x.grad(), r["grad"][name], dt);
    }
  }
}

TEST_CASE("broadcasting binaries and scalar forms match torch") {
  const json& r = reference()["binary"];
  for (DType dt : {DType::F64, DType::F32}) {
    CAPTURE(dtype_name(dt));
    Tensor a = from_json(r["a"], dt), b = from_json(r["b"], dt);
    CHECK(add(a, b).shape() == Shape{3, 2, 4});
    CHECK_REF(add(a, b), r["add"], dt);
    CHECK_REF(sub(a, b), r["sub"], dt);
    CHECK_REF(mul(a, b), r["mul"], dt);
    CHECK_REF(div(a, b), r["div"], dt);
    CHECK_REF(maximum(a, b), r["maximum"], dt);
    CHECK_REF(a + b, r["add"], dt);
    CHECK_REF(b * a + a * 0.0, r["mul"], dt);  // operand order and broadcasting commute
    double s = r["scalar"]["s"].get<double>();
    CHECK_REF(add(a, s), r["scalar"]["add"], dt);
    CHECK_REF(mul(a, s), r["scalar"]["mul"], dt);
    CHECK_REF(rsub(s, a), r["scalar"]["rsub"], dt);
    CHECK_REF(s - a, r["scalar"]["rsub"], dt);
  }
}

TEST_CASE("where and masked_fill match torch; any nonzero mask value selects") {
  const json& r = reference()["select"];
  for (DType dt : {DType::F64, DType::F32}) {
    Tensor a = from_json(r["a"], dt), b = from_json(r["b"], dt);
    for (DType ct : {DType::I64, DType::I32, DType::F32, DType::F64}) {
      CAPTURE(dtype_name(ct));
      Tensor cond = from_json(r["cond"], ct);
      CHECK_REF(where(cond, a, b), r["where"], dt);
      // Scaling by -3 keeps zeros zero and makes "true" a value other than 1.
      CHECK_REF(where(mul(cond, -3.0), a, b), r["where"], dt);
      Tensor ma = from_json(r["mf_a"], dt), mm = from_json(r["mf_mask"], ct);
      CHECK_REF(masked_fill(ma, mm, r["mf_value"].get<double>()), r["masked_fill"], dt);
    }
  }
  // The mask must broadcast to a, not the other way round.
  CHECK_THROWS_WITH_AS(masked_fill(Tensor::zeros({3}), Tensor::ones({2, 3}), 1.0),
                       doctest::Contains("masked_fill"), Error);
}

TEST_CASE("where's gradient routes to the selected side") {
  // Exact: where's gradient is g on the chosen side, 0 on the other.
  Tensor c2 = Tensor::from_vector<float>({0.f, 2.f, -1.f}, {3});
  Tensor p = leaf(Tensor::from_vector<double>({1, 2, 3}, {3})), q = leaf(Tensor::from_vector<double>({4, 5, 6}, {3}));
  sum(where(c2, p, q)).backward();
  CHECK(p.grad().to_vector<double>() == std::vector<double>{0, 1, 1});
  CHECK(q.grad().to_vector<double>() == std::vector<double>{1, 0, 0});
}

TEST_CASE("relu, clamp and maximum gradients at non-boundary points; ties go to a") {
  Tensor x = leaf(Tensor::from_vector<double>({-2.0, -0.3, 0.2, 0.6, 0.9, 3.0}, {6}));
  sum(relu(x)).backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{0, 0, 1, 1, 1, 1});
  x.zero_grad();
  sum(clamp(x, -0.5, 0.7)).backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{0, 1, 1, 1, 0, 0});
  CHECK(clamp(x, -0.5, 0.7).to_vector<double>() == std::vector<double>{-0.5, -0.3, 0.2, 0.6, 0.7, 0.7});

  Tensor a = leaf(Tensor::from_vector<double>({1, 5, 3}, {3}));
  Tensor b = leaf(Tensor::from_vector<double>({2, 4, 3}, {3}));
  Tensor w = Tensor::from_vector<double>({10, 20, 30}, {3});
  sum(mul(maximum(a, b), w)).backward();
  CHECK(a.grad().to_vector<double>() == std::vector<double>{0, 20, 30});
  CHECK(b.grad().to_vector<double>() == std::vector<double>{10, 0, 0});

  // Broadcast maximum: the row's gradient sums over the rows it won.
  Tensor row = leaf(Tensor::from_vector<double>({0.5, 0.5}, {2}));
  Tensor m = Tensor::from_vector<double>({0, 1, 0, 0, 1, 1}, {3, 2});
  sum(maximum(row, m)).backward();
  CHECK(row.grad().to_vector<double>() == std::vector<double>{2, 1});
}

TEST_CASE("empty dims: forward works and gives empty results") {
  Tensor e = Tensor::zeros({0, 3}, DType::F64);
  CHECK(add(e, Tensor::ones({3}, DType::F64)).shape() == Shape{0, 3});
  CHECK(mul(e, Tensor::ones({1, 3}, DType::F64)).shape() == Shape{0, 3});
  CHECK(add(Tensor::ones({2, 1}, DType::F64), Tensor::zeros({0}, DType::F64)).shape() == Shape{2, 0});
  CHECK(exp(e).shape() == Shape{0, 3});
  CHECK(gelu(e).numel() == 0);
  CHECK(where(Tensor::zeros({0, 1}, DType::I64), e, e).shape() == Shape{0, 3});
  CHECK(masked_fill(e, Tensor::ones({3}, DType::I32), 1.0).shape() == Shape{0, 3});
  Tensor le = leaf(Tensor::zeros({0, 3}, DType::F64));
  Tensor y = sum(mul(exp(le), 2.0));
  CHECK(y.item() == 0.0);
  y.backward();
  CHECK(le.grad().shape() == Shape{0, 3});
}

TEST_CASE("fast paths agree with a naive loop at parallel sizes") {
  // Big enough to split across threads; odd widths leave vector remainders.
  const int64_t R = 301, C = 257;
  for (DType dt : {DType::F32, DType::F64}) {
    CAPTURE(dtype_name(dt));
    Generator g(5);
    Tensor a = g.uniform({R, C}, -1, 1, dt), b = g.uniform({R, C}, 0.5, 1.5, dt);
    Tensor row = g.uniform({C}, -1, 1, dt), col = g.uniform({R, 1}, -1, 1, dt);
    auto va = a.to_vector<double>(), vb = b.to_vector<double>(), vr = row.to_vector<double>(),
         vc = col.to_vector<double>();
    auto check = [&](const Tensor& out, auto ref) {
      REQUIRE(out.shape() == Shape{R, C});
      auto vo = out.to_vector<double>();
      double err = 0;
      for (int64_t i = 0; i < R; ++i)
        for (int64_t j = 0; j < C; ++j) {
          double want = ref(i, j);
          err = std::max(err, std::abs(vo[size_t(i * C + j)] - want) / (1 + std::abs(want)));
        }
      CHECK(err < (dt == DType::F32 ? 1e-6 : 1e-15));
    };
    auto at = [C](const std::vector<double>& v, int64_t i, int64_t j) { return v[size_t(i * C + j)]; };
    check(add(a, b), [&](int64_t i, int64_t j) { return at(va, i, j) + at(vb, i, j); });
    check(div(a, b), [&](int64_t i, int64_t j) { return at(va, i, j) / at(vb, i, j); });
    check(add(a, row), [&](int64_t i, int64_t j) { return at(va, i, j) + vr[size_t(j)]; });
    check(sub(row, a), [&](int64_t i, int64_t j) { return vr[size_t(j)] - at(va, i, j); });
    check(mul(a, col), [&](int64_t i, int64_t j) { return at(va, i, j) * vc[size_t(i)]; });
    check(mul(col, row), [&](int64_t i, int64_t j) { return vc[size_t(i)] * vr[size_t(j)]; });
    check(add(a, transpose(transpose(b, 0, 1).contiguous(), 0, 1)),
          [&](int64_t i, int64_t j) { return at(va, i, j) + at(vb, i, j); });
    check(mul(a, 3.0), [&](int64_t i, int64_t j) { return at(va, i, j) * 3.0; });
    check(exp(a), [&](int64_t i, int64_t j) { return std::exp(at(va, i, j)); });
    check(tanh(a), [&](int64_t i, int64_t j) { return std::tanh(at(va, i, j)); });
    check(gelu(a), [&](int64_t i, int64_t j) {
      double x = at(va, i, j);
      return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    });
  }
}

TEST_CASE("transposed operands (tiled walk) give the same values as contiguous ones") {
  Generator g(6);
  for (DType dt : {DType::F32, DType::F64}) {
    Tensor x = g.uniform({3, 70, 45}, -1, 1, dt), y = g.uniform({3, 45, 70}, -1, 1, dt);
    Tensor xt = transpose(x, 1, 2), xtc = xt.contiguous();
    CHECK(max_abs_diff(add(xt, y), add(xtc, y)) == 0.0);
    CHECK(max_abs_diff(mul(y, xt), mul(y, xtc)) == 0.0);
    CHECK(max_abs_diff(sub(xt, xt), Tensor::zeros({3, 45, 70}, dt)) == 0.0);
    CHECK(max_abs_diff(exp(xt), exp(xtc)) == 0.0);
    CHECK(max_abs_diff(gelu(xt), gelu(xtc)) == 0.0);
    Tensor row = g.uniform({70}, -1, 1, dt);
    CHECK(max_abs_diff(add(xt, row), add(xtc, row)) == 0.0);
  }
}

TEST_CASE("dtype rules: mixed floats are an error naming op and dtypes; ints do the cheap ops") {
  Tensor f = Tensor::ones({2}, DType::F32), d = Tensor::ones({2}, DType::F64);
  CHECK_THROWS_WITH_AS(add(f, d), doctest::Contains("add: dtypes differ: f32"), Error);
  CHECK_THROWS_WITH_AS(mul(d, f), doctest::Contains("f64 [2] and f32 [2]"), Error);
  CHECK_THROWS_WITH_AS(where(Tensor::ones({2}, DType::I64), f, d), doctest::Contains("where"), Error);
  CHECK_THROWS_WITH_AS(add(Tensor::ones({2, 3}), Tensor::ones({4})), doctest::Contains("do not broadcast"), Error);

  Tensor i = Tensor::from_vector<int64_t>({1, -2, 3}, {3}), j = Tensor::from_vector<int64_t>({4, 5, -6}, {3});
  CHECK(add(i, j).to_vector<int64_t>() == std::vector<int64_t>{5, 3, -3});
  CHECK(sub(i, j).to_vector<int64_t>() == std::vector<int64_t>{-3, -7, 9});
  CHECK(mul(i, j).to_vector<int64_t>() == std::vector<int64_t>{4, -10, -18});
  CHECK(mul(i, 2.0).to_vector<int64_t>() == std::vector<int64_t>{2, -4, 6});
  CHECK(maximum(i, j).to_vector<int64_t>() == std::vector<int64_t>{4, 5, 3});
  CHECK(abs(i).to_vector<int64_t>() == std::vector<int64_t>{1, 2, 3});
  CHECK(clamp(i, -1.5, INFINITY).to_vector<int64_t>() == std::vector<int64_t>{1, -1, 3});
  CHECK(relu(i).to_vector<int64_t>() == std::vector<int64_t>{1, 0, 3});
  CHECK_THROWS_WITH_AS(div(i, j), doctest::Contains("div"), Error);
  CHECK_THROWS_WITH_AS(exp(i), doctest::Contains("exp"), Error);
  CHECK_THROWS_WITH_AS(add(i, 0.5), doctest::Contains("add"), Error);
}
