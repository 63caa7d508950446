// embedding, gather, index_select, concat, split: values against torch
// (gen_matmul_index.py), determinism, error messages. Finite-difference gradients, f32
// against f64 and the GPU are the op table's (tests/op_table.h, tests/test_op_table.cpp).
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "bet_config.h"
#include "engine/ops.h"
#include "platform/threads.h"
#include "tests/gradcheck.h"
#include "tests/reference_data.h"

using namespace bet;
using namespace bet::testing;
using nlohmann::json;

namespace {

const json& reference() { return reference_file("matmul_index.json"); }

Tensor from_json(const json& t) { return ref_tensor(t); }

Tensor ids_from_json(const json& t, DType dt = DType::I64) {
  return Tensor::from_vector<int64_t>(t.at("data").get<std::vector<int64_t>>(), t.at("shape").get<Shape>()).to(dt);
}

Tensor ids(const std::vector<int64_t>& v, const Shape& shape, DType dt = DType::I64) {
  return Tensor::from_vector<int64_t>(v, shape).to(dt);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

// ---------------------------------------------------------------- embedding

TEST_CASE("embedding matches torch, forward and weight gradient") {
  const json& c = reference().at("embedding");
  for (DType idt : {DType::I64, DType::I32}) {
    Tensor w = leaf(from_json(c.at("weight")));
    Tensor out = embedding(w, ids_from_json(c.at("ids"), idt));
    CHECK(max_abs_diff(out, from_json(c.at("out"))) == 0.0);
    sum(mul(out, from_json(c.at("grad_out")))).backward();
    CHECK(max_abs_diff(w.grad(), from_json(c.at("grad_weight"))) < 1e-14);
  }
}

TEST_CASE("embedding: a scalar id gives [D]; empty ids give [0, D] and a zero gradient") {
  Tensor w = leaf(rand64({6, 3}, 1));
  // scalar id -> [D]
  Tensor one = ids({3}, {});
  CHECK(embedding(w, one).shape() == Shape{3});
  // empty ids: [0, D], and a zero gradient
  Tensor none = ids({}, {0});
  Tensor e = embedding(w, none);
  CHECK(e.shape() == Shape{0, 3});
  w.zero_grad();
  sum(e).backward();
  REQUIRE(w.grad().defined());
  CHECK(max_abs_diff(w.grad(), Tensor::zeros({6, 3}, DType::F64)) == 0.0);
}

TEST_CASE("embedding backward is deterministic across thread counts") {
  // Many repeated ids: a racy scatter-add would lose or reorder contributions.
  const int64_t V = 17, D = 300, n = 4000;
  std::vector<int64_t> v(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = (i * 7 + i / 13) % V;
  Tensor id = ids(v, {n / 40, 40});
  Tensor w32 = rand64({V, D}, 3).to(DType::F32);
  Tensor g = rand64({n / 40, 40, D}, 4).to(DType::F32);
  const int saved = platform::num_threads();
  std::vector<float> first;
  for (int nt : {1, 2, 4}) {
    platform::set_num_threads(nt);
    Tensor w = leaf(w32.clone().detach());
    sum(mul(embedding(w, id), g)).backward();
    auto gv = w.grad().to_vector<float>();
    if (first.empty()) first = gv;
    else CHECK(gv == first);
  }
  platform::set_num_threads(saved);
  // and the sums are right (against f64)
  Tensor w64 = leaf(w32.to(DType::F64).detach());
  sum(mul(embedding(w64, id), g.to(DType::F64))).backward();
  CHECK(max_abs_diff(Tensor::from_vector<float>(first, {V, D}), w64.grad()) < 1e-3);
}

TEST_CASE("embedding rejects out-of-range ids, naming the id and V") {
  Tensor w = rand64({5, 3}, 5);
  std::string m = error_of([&] { embedding(w, ids({1, 7, 2}, {3})); });
  CHECK(has(m, "embedding"));
  CHECK(has(m, "7"));
  CHECK(has(m, "5"));
  m = error_of([&] { embedding(w, ids({-1}, {1}, DType::I32)); });
  CHECK(has(m, "embedding"));
  CHECK(has(m, "-1"));
  m = error_of([&] { embedding(w, Tensor::zeros({2})); });
  CHECK(has(m, "embedding"));
  CHECK(has(m, "f32"));
}

// ---------------------------------------------------------------- gather

TEST_CASE("gather matches torch") {
  const json& c = reference().at("gather");
  Tensor x = from_json(c.at("x"));
  for (const json& g : c.at("cases")) {
    Tensor out = gather(x, g.at("dim").get<int64_t>(), ids_from_json(g.at("index")));
    CHECK(max_abs_diff(out, from_json(g.at("out"))) == 0.0);
    Tensor out32 = gather(x.to(DType::F32), g.at("dim").get<int64_t>(), ids_from_json(g.at("index"), DType::I32));
    CHECK(max_abs_diff(out32, from_json(g.at("out"))) < 1e-6);
  }
}

TEST_CASE("gather checks its index") {
  Tensor x = rand64({3, 4}, 12);
  std::string m = error_of([&] { gather(x, 1, ids({0, 4}, {1, 2})); });
  CHECK(has(m, "gather"));
  CHECK(has(m, "4"));
  m = error_of([&] { gather(x, 1, ids({0, 1}, {2})); });
  CHECK(has(m, "gather"));
  CHECK(has(m, "[2]"));
  m = error_of([&] { gather(x, 0, ids({0, 0, 0, 0, 0}, {1, 5})); });
  CHECK(has(m, "gather"));
  CHECK(has(m, "[1, 5]"));
}

// ---------------------------------------------------------------- index_select

TEST_CASE("index_select matches torch") {
  const json& c = reference().at("index_select");
  Tensor x = from_json(c.at("x"));
  for (const json& s : c.at("cases")) {
    Tensor out = index_select(x, s.at("dim").get<int64_t>(), ids_from_json(s.at("index"), DType::I32));
    CHECK(max_abs_diff(out, from_json(s.at("out"))) == 0.0);
  }
}

TEST_CASE("index_select: an empty index, and errors naming the op") {
  Tensor x = rand64({3, 4, 5}, 20);
  CHECK(index_select(x, 1, ids({}, {0})).shape() == Shape{3, 0, 5});
  std::string m = error_of([&] { index_select(x, 2, ids({5}, {1})); });
  CHECK(has(m, "index_select"));
  CHECK(has(m, "5"));
  m = error_of([&] { index_select(x, 0, ids({0, 1}, {1, 2})); });
  CHECK(has(m, "index_select"));
  CHECK(has(m, "1-D"));
}

// ---------------------------------------------------------------- concat and split

TEST_CASE("concat matches torch") {
  const json& c = reference().at("concat");
  std::vector<Tensor> in;
  for (const json& t : c.at("inputs")) in.push_back(from_json(t));
  CHECK(max_abs_diff(concat(in, c.at("dim").get<int64_t>()), from_json(c.at("out"))) == 0.0);
  CHECK(max_abs_diff(concat(in, -1), from_json(c.at("out"))) == 0.0);
}

TEST_CASE("concat checks shapes and dtypes") {
  std::string m = error_of([] { concat({Tensor::zeros({2, 3}), Tensor::zeros({3, 3})}, 1); });
  CHECK(has(m, "concat"));
  CHECK(has(m, "[3, 3]"));
  CHECK(has(m, "[2, 3]"));
  m = error_of([] { concat({Tensor::zeros({2, 3}), Tensor::zeros({2, 3}, DType::F64)}, 0); });
  CHECK(has(m, "concat"));
  CHECK(has(m, "f64"));
  m = error_of([] { concat({}, 0); });
  CHECK(has(m, "concat"));
  m = error_of([] { concat({Tensor::zeros({2, 3}), Tensor::zeros({2, 3, 1})}, 0); });
  CHECK(has(m, "concat"));
  CHECK(has(m, "[2, 3, 1]"));
}

TEST_CASE("split returns views that concat reassembles") {
  Tensor x = rand64({3, 7}, 40);
  auto parts = split(x, {2, 0, 4, 1}, 1);
  REQUIRE(parts.size() == 4);
  CHECK(parts[0].shape() == Shape{3, 2});
  CHECK(parts[1].shape() == Shape{3, 0});
  CHECK(parts[2].shape() == Shape{3, 4});
  for (const Tensor& p : parts) CHECK(p.storage() == x.storage());  // no copies
  CHECK(max_abs_diff(concat(parts, 1), x) == 0.0);
  CHECK(max_abs_diff(parts[2], slice(x, 1, 2, 6)) == 0.0);
  auto rows = split(x, {1, 2}, -2);
  CHECK(max_abs_diff(rows[1], slice(x, 0, 1, 3)) == 0.0);

  std::string m = error_of([&] { split(x, {2, 2}, 1); });
  CHECK(has(m, "split"));
  CHECK(has(m, "[3, 7]"));
  m = error_of([&] { split(x, {8, -1}, 1); });
  CHECK(has(m, "split"));
}
