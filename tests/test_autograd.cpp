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
