// Tensor storage, views and the caching allocator.
#include <doctest/doctest.h>

#include "engine/allocator.h"
#include "engine/ops.h"
#include "tests/gradcheck.h"

using namespace bet;

TEST_CASE("factories fill and report shape") {
  Tensor t = Tensor::full({2, 3}, 1.5);
  CHECK(t.shape() == Shape{2, 3});
  CHECK(t.numel() == 6);
  CHECK(t.is_contiguous());
  for (float v : t.to_vector<float>()) CHECK(v == 1.5f);
  Tensor e = Tensor::zeros({0, 4});
  CHECK(e.numel() == 0);
  CHECK(e.to_vector<float>().empty());
}

TEST_CASE("transpose is a view and contiguous copies in logical order") {
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor t = transpose(a, 0, 1);
  CHECK(t.shape() == Shape{3, 2});
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.storage() == a.storage());
  CHECK(t.contiguous().to_vector<float>() == std::vector<float>{1, 4, 2, 5, 3, 6});
}

TEST_CASE("slice with step, select, expand and reshape views") {
  Tensor a = Tensor::from_vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 4});
  CHECK(slice(a, 1, 1, 4, 2).to_vector<int64_t>() == std::vector<int64_t>{1, 3, 5, 7, 9, 11});
  CHECK(select(a, 0, -1).to_vector<int64_t>() == std::vector<int64_t>{8, 9, 10, 11});
  Tensor col = slice(a, 1, 0, 1);  // [3,1]
  Tensor ex = expand(col, {3, 2});
  CHECK(ex.strides()[1] == 0);
  CHECK(ex.to_vector<int64_t>() == std::vector<int64_t>{0, 0, 4, 4, 8, 8});
  // reshape of a transposed tensor must copy, and keep logical order
  Tensor r = reshape(transpose(a, 0, 1), {12});
  CHECK(r.to_vector<int64_t>() == std::vector<int64_t>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  // reshape of a contiguous tensor is a view
  CHECK(reshape(a, {2, -1}).storage() == a.storage());
  CHECK(reshape(a, {2, -1}).shape() == Shape{2, 6});
}

TEST_CASE("shape errors name the op and the shapes") {
  Tensor a = Tensor::zeros({2, 3});
  try {
    reshape(a, {4, 2});
    FAIL("reshape should have thrown");
  } catch (const Error& e) {
    std::string m = e.what();
    CHECK(m.find("reshape") != std::string::npos);
    CHECK(m.find("[2, 3]") != std::string::npos);
    CHECK(m.find("[4, 2]") != std::string::npos);
  }
  CHECK_THROWS_AS(permute(a, {0, 0}), Error);
  CHECK_THROWS_AS(expand(a, {3, 3}), Error);
  CHECK_THROWS_AS(a.data<double>(), Error);
}

TEST_CASE("caching allocator reuses freed blocks") {
  auto& alloc = CachingAllocator::host();
  { Tensor warm = Tensor::empty({1000, 37}); }
  auto before = alloc.stats();
  for (int i = 0; i < 10; ++i) {
    Tensor t = Tensor::empty({1000, 37});
  }
  auto after = alloc.stats();
  CHECK(after.system_allocs == before.system_allocs);
  CHECK(after.cache_hits >= before.cache_hits + 10);
  CHECK(CachingAllocator::round_size(100) == 128);
  CHECK(CachingAllocator::round_size(3u << 20) >= (3u << 20));
}

TEST_CASE("dtype conversion round trips integers") {
  Tensor a = Tensor::from_vector<int32_t>({-3, 0, 7}, {3});
  CHECK(a.to(DType::F64).to(DType::I64).to_vector<int64_t>() == std::vector<int64_t>{-3, 0, 7});
}
