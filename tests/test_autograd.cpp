// The tape: accumulation, no_grad, detach, retain_grad, diamonds. The gradients of the
// view ops are the op table's (tests/op_table.h, tests/test_op_table.cpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "tests/gradcheck.h"

using namespace bet;
using namespace bet::testing;

TEST_CASE("gradients accumulate across backward calls and uses") {
  Tensor x = leaf(Tensor::from_vector<double>({1, 2, 3}, {3}));
  Tensor y = sum(add(x, x));  // dy/dx = 2
  y.backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{2, 2, 2});
  sum(x).backward();
  CHECK(x.grad().to_vector<double>() == std::vector<double>{3, 3, 3});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("no_grad records nothing; detach cuts the graph") {
  Tensor x = leaf(rand64({4}, 3));
  {
    autograd::NoGradGuard g;
    Tensor y = mul(x, x);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
  }
  Tensor d = x.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.storage() == x.storage());
  Tensor y = sum(mul(x, d));  // gradient only through the first factor: d
  y.backward();
  CHECK(max_abs_diff(x.grad(), d) == 0.0);
}

TEST_CASE("retain_grad keeps an intermediate gradient") {
  Tensor x = leaf(rand64({5}, 4));
  Tensor h = mul(x, 3.0);
  h.retain_grad();
  Tensor y = sum(mul(h, h));
  y.backward();
  REQUIRE(h.grad().defined());
  CHECK(max_abs_diff(h.grad(), mul(h.detach(), 2.0)) < 1e-12);
  CHECK(max_abs_diff(x.grad(), mul(h.detach(), 6.0)) < 1e-12);
}

TEST_CASE("diamond graph sums both paths") {
  Tensor x = leaf(rand64({2, 3}, 5));
  CHECK_GRAD([](const std::vector<Tensor>& in) {
    Tensor a = exp(in[0]);
    return add(mul(a, in[0]), sum(a, {1}, true));
  }, {x});
}

TEST_CASE("GradReadyScope: each leaf is ready once, after its last reader, saying whether it got a gradient") {
  // y = sum(a * b) + sum(exp(a)); c feeds nothing. Backward runs the nodes from the root
  // down; a is read by two nodes, b by one, so b can be ready before a, never after.
  Tensor a = leaf(Tensor::from_vector<double>({1, 2}, {2}));
  Tensor b = leaf(Tensor::from_vector<double>({3, 4}, {2}));
  Tensor c = leaf(Tensor::from_vector<double>({5}, {1}));
  Tensor y = add(sum(mul(a, b)), sum(exp(a)));
  std::vector<size_t> order;
  std::vector<bool> grad_final;
  const std::vector<Tensor> watched{a, b, c};
  {
    autograd::GradReadyScope scope(watched, [&](size_t i, bool received) {
      order.push_back(i);
      CHECK(received == (i != 2));
      // When a leaf is reported, its gradient is complete.
      const Tensor g = watched[i].grad();
      if (i == 0) grad_final.push_back(g.defined() && std::abs(g.to_vector<double>()[0] - (3.0 + std::exp(1.0))) < 1e-12);
      if (i == 1) grad_final.push_back(g.defined() && g.to_vector<double>()[1] == 2.0);
      if (i == 2) grad_final.push_back(!g.defined());
    });
    y.backward();
  }
  REQUIRE(order.size() == 3);
  CHECK(order[0] == 2);  // unreached: ready before anything runs
  CHECK(std::count(order.begin(), order.end(), 0) == 1);
  CHECK(std::count(order.begin(), order.end(), 1) == 1);
  CHECK(grad_final == std::vector<bool>{true, true, true});
  // Outside the scope nothing is reported.
  order.clear();
  a.zero_grad();
  sum(a).backward();
  CHECK(order.empty());
}

// Slices of a non-leaf hand their gradients to backprop as pieces, written once into the
// sliced tensor's gradient (engine/ops/slice_backward.h). Each case has a closed-form
// gradient, so a piece copied instead of added, written into the wrong region, a gap
// left unzeroed, or a gradient another tensor shares written through would all show.
TEST_CASE("slice gradients: split parts, overlaps, steps, and a gradient shared with another input") {
  SUBCASE("split into parts, each used, plus overlapping and strided slices") {
    Tensor x = leaf(rand64({3, 7}, 11));
    Tensor h = mul(x, 2.0);  // non-leaf: the in-place path
    auto parts = split(h, {2, 4, 1}, 1);
    Tensor c0 = rand64({3, 2}, 12), c1 = rand64({3, 4}, 13), c2 = rand64({3, 1}, 14);
    Tensor over = slice(h, 1, 1, 4);          // overlaps parts 0 and 1
    Tensor stepped = slice(h, 1, 0, 7, 3);    // columns 0, 3, 6
    Tensor c3 = rand64({3, 3}, 15), c4 = rand64({3, 3}, 16);
    Tensor y = add(add(add(sum(mul(parts[0], c0)), sum(mul(parts[1], c1))), add(sum(mul(parts[2], c2)),
                                                                                   sum(mul(over, c3)))),
                   sum(mul(stepped, c4)));
    y.backward();
    // d y / d h, assembled column by column, times dh/dx = 2.
    std::vector<double> want(21, 0.0);
    auto put = [&](const Tensor& c, int64_t col0, int64_t step) {
      auto v = c.to_vector<double>();
      const int64_t w = c.size(1);
      for (int64_t r = 0; r < 3; ++r)
        for (int64_t j = 0; j < w; ++j) want[size_t(r * 7 + col0 + j * step)] += 2.0 * v[size_t(r * w + j)];
    };
    put(c0, 0, 1);
    put(c1, 2, 1);
    put(c2, 6, 1);
    put(c3, 1, 1);
    put(c4, 0, 3);
    auto got = x.grad().to_vector<double>();
    for (size_t i = 0; i < want.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-12));
  }
  SUBCASE("a pending gradient shared with another input is not written through") {
    // add's backward hands the same gradient to both inputs; adding u's slices into it
    // in place would change v's gradient too.
    // Both orders of the two terms, so the slice's gradient arrives both before and
    // after the shared one.
    for (bool slice_first : {false, true}) {
      CAPTURE(slice_first);
      Tensor x = leaf(rand64({4, 5}, 21));
      Tensor u = mul(x, 2.0), v = mul(x, 3.0);
      Tensor c = rand64({4, 5}, 22), d = rand64({4, 2}, 23), e = rand64({4, 1}, 24);
      // Both u and v are also sliced, so whichever slice runs first finds the shared one.
      Tensor shared = sum(mul(add(u, v), c));
      Tensor sliced = add(sum(mul(slice(u, 1, 1, 3), d)), sum(mul(slice(v, 1, 4, 5), e)));
      Tensor y = slice_first ? add(sliced, shared) : add(shared, sliced);
      y.backward();
      auto cv = c.to_vector<double>(), dv = d.to_vector<double>(), ev = e.to_vector<double>();
      auto got = x.grad().to_vector<double>();
      for (int64_t r = 0; r < 4; ++r)
        for (int64_t j = 0; j < 5; ++j) {
          double want = 5.0 * cv[size_t(r * 5 + j)];
          if (j >= 1 && j < 3) want += 2.0 * dv[size_t(r * 2 + j - 1)];
          if (j == 4) want += 3.0 * ev[size_t(r)];
          CHECK(got[size_t(r * 5 + j)] == doctest::Approx(want).epsilon(1e-12));
        }
    }
  }
  SUBCASE("disjoint slices with gaps: the gaps get zero, a dense gradient adds on top") {
    for (bool dense : {false, true}) {
      CAPTURE(dense);
      Tensor x = leaf(rand64({3, 7}, 41));
      Tensor h = mul(x, 2.0);
      Tensor c0 = rand64({3, 2}, 42), c1 = rand64({3, 2}, 43), c2 = rand64({3, 7}, 44);
      Tensor y = add(sum(mul(slice(h, 1, 5, 7), c1)), sum(mul(slice(h, 1, 1, 3), c0)));  // gaps 0, 3-4
      if (dense) y = add(y, sum(mul(h, c2)));
      { Tensor junk = Tensor::full({3, 7}, 7.0, DType::F64); }  // a reused block is not zero
      y.backward();
      std::vector<double> want(21, 0.0);
      auto v0 = c0.to_vector<double>(), v1 = c1.to_vector<double>(), v2 = c2.to_vector<double>();
      for (int64_t r = 0; r < 3; ++r) {
        for (int64_t j = 0; j < 2; ++j) {
          want[size_t(r * 7 + 1 + j)] += 2.0 * v0[size_t(r * 2 + j)];
          want[size_t(r * 7 + 5 + j)] += 2.0 * v1[size_t(r * 2 + j)];
        }
        if (dense)
          for (int64_t j = 0; j < 7; ++j) want[size_t(r * 7 + j)] += 2.0 * v2[size_t(r * 7 + j)];
      }
      auto got = x.grad().to_vector<double>();
      for (size_t i = 0; i < want.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-12));
    }
  }
  SUBCASE("finite differences through split, slice of a slice, and a leaf's slices") {
    Tensor x = leaf(rand64({2, 6, 4}, 31));
    CHECK_GRAD([](const std::vector<Tensor>& in) {
      Tensor h = exp(in[0]);
      auto p = split(h, {1, 3, 2}, 1);
      Tensor inner = slice(slice(h, 1, 1, 6), 2, 1, 4, 2);
      Tensor leafy = slice(in[0], 2, 0, 2);  // a leaf's slice: the dense path
      return add(add(sum(mul(p[1], p[1])), sum(mul(p[0], p[2]))), add(sum(inner), sum(mul(leafy, leafy))));
    }, {x});
  }
}
