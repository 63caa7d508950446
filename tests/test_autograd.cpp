// The tape: accumulation, no_grad, detach, retain_grad, diamonds. The gradients of the
// view ops are the op table's (tests/op_table.h, tests/test_op_table.cpp).
#include <doctest/doctest.h>

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
