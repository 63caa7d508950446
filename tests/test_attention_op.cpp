// bet::attention on the CPU: bit for bit the composition the model computed before
// the op existed (matmul, masked softmax, dropout, matmul with a 4-D v broadcast over
// paths), an independent plain-loop reference (masking, fully masked rows, the
// Philox element mapping of the dropout mask), and argument errors that name the
// shapes. Finite-difference gradients for q, k, v (broadcast and strided inputs) and
// GPU parity are the op table's (tests/op_table.h; tests/test_op_table.cpp,
// tests/test_cuda_ops.cpp); the fused kernels' own cases are tests/test_cuda_attention.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/random.h"
#include "tests/gradcheck.h"

using namespace bet;
using namespace bet::testing;

namespace {

struct Dims {
  int64_t P, B, H, S, hd;
};

Tensor randn(const Shape& s, uint64_t seed, DType dt) {
  Generator g(seed);
  return g.normal(s, 0.0, 1.0, dt);
}

// Key mask [B, 1, 1, S] (0/1 floats); `dead_batch` >= 0 masks every key of that batch.
Tensor key_mask(const Dims& d, uint64_t seed, DType dt, int64_t dead_batch = -1) {
  Generator g(seed);
  std::vector<double> m(size_t(d.B * d.S));
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t s = 0; s < d.S; ++s) {
      const bool keep = s == 0 || g.randint(4) != 0;  // key 0 kept unless the batch is dead
      m[size_t(b * d.S + s)] = b == dead_batch ? 0.0 : keep ? 1.0 : 0.0;
    }
  return Tensor::from_vector(m, {d.B, 1, 1, d.S}).to(dt);
}

// The model's causal mask: [B, 1, S, S] = tril * keys. With key 0 masked in batch 0,
// query row 0 of that batch has no key at all.
Tensor causal_mask(const Dims& d, uint64_t seed, DType dt) {
  std::vector<double> keys = key_mask(d, seed, DType::F64).to_vector<double>();
  keys[0] = 0.0;
  std::vector<double> m(size_t(d.B * d.S * d.S));
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t t = 0; t < d.S; ++t)
      for (int64_t s = 0; s <= t; ++s) m[size_t((b * d.S + t) * d.S + s)] = keys[size_t(b * d.S + s)];
  return Tensor::from_vector(m, {d.B, 1, d.S, d.S}).to(dt);
}

// model/martingale_attention.cpp before the op: v is [B, H, S, hd], broadcast by matmul.
Tensor model_composition(const Tensor& q, const Tensor& k, const Tensor& v4, const Tensor& mask, double p,
                         bool training, uint64_t seed, uint64_t offset) {
  Tensor scores = matmul(q, transpose(k, 3, 4));
  Tensor probs = softmax(scores, 4, mask);
  if (training && p > 0.0) probs = dropout(probs, p, true, seed, offset);
  return matmul(probs, v4);
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const std::vector<double> va = a.to_vector<double>(), vb = b.to_vector<double>();
  for (size_t i = 0; i < va.size(); ++i)
    if (!(va[i] == vb[i])) return false;
  return true;
}

struct Grads {
  Tensor out, dq, dk, dv;
};

// Forward and the gradients of sum(out * R), fresh leaves each time.
Grads run(const std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>& f, const Tensor& q0,
          const Tensor& k0, const Tensor& v0) {
  Tensor q = q0.detach().clone().set_requires_grad(), k = k0.detach().clone().set_requires_grad();
  Tensor v = v0.detach().clone().set_requires_grad();
  Grads g;
  g.out = f(q, k, v);
  Tensor R = randn(g.out.shape(), 99, g.out.dtype());
  sum(mul(g.out, R)).backward();
  g.dq = q.grad(), g.dk = k.grad(), g.dv = v.grad();
  return g;
}

// Plain loops in double: softmax over kept keys (a row with none gives zeros), the
// dropout keep bit of probability element e of the contiguous [P, B, H, S, S] from
// Philox word offset + e, out = sum_j probs * v[p or 0].
std::vector<double> reference(const Dims& d, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                              double p, uint64_t seed, uint64_t offset) {
  const Shape full{d.P, d.B, d.H, d.S, d.hd}, sc{d.P, d.B, d.H, d.S, d.S};
  const std::vector<double> qv = q.to_vector<double>(), kv = k.to_vector<double>();
  const std::vector<double> vv = expand(v, full).contiguous().to_vector<double>();
  std::vector<double> mv(size_t(shape_numel(sc)), 1.0);
  if (mask.defined()) mv = expand(mask, sc).contiguous().to_vector<double>();
  const double scale = 1.0 / (1.0 - p);
  std::vector<double> out(size_t(shape_numel(full)), 0.0), row(size_t(d.S));
  for (int64_t r = 0; r < d.P * d.B * d.H * d.S; ++r) {
    double mx = -INFINITY;
    for (int64_t j = 0; j < d.S; ++j) {
      const int64_t bh = r / d.S;
      double s = 0;
      for (int64_t c = 0; c < d.hd; ++c) s += qv[size_t(r * d.hd + c)] * kv[size_t((bh * d.S + j) * d.hd + c)];
      row[size_t(j)] = mv[size_t(r * d.S + j)] != 0.0 ? s : -INFINITY;
      mx = std::max(mx, row[size_t(j)]);
    }
    if (mx == -INFINITY) continue;  // fully masked: zeros
    double z = 0;
    for (int64_t j = 0; j < d.S; ++j) z += row[size_t(j)] == -INFINITY ? 0.0 : std::exp(row[size_t(j)] - mx);
    for (int64_t j = 0; j < d.S; ++j) {
      double pr = row[size_t(j)] == -INFINITY ? 0.0 : std::exp(row[size_t(j)] - mx) / z;
      if (p > 0.0) pr = philox_uniform(seed, offset + uint64_t(r * d.S + j)) >= p ? pr * scale : 0.0;
      const int64_t bh = r / d.S;
      for (int64_t c = 0; c < d.hd; ++c) out[size_t(r * d.hd + c)] += pr * vv[size_t((bh * d.S + j) * d.hd + c)];
    }
  }
  return out;
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("attention equals the model's matmul / softmax / dropout / matmul bit for bit") {
  const Dims d{3, 2, 2, 7, 4};
  const DType dt = DType::F32;
  Tensor q = mul(randn({d.P, d.B, d.H, d.S, d.hd}, 1, dt), 0.5);
  Tensor k = randn({d.P, d.B, d.H, d.S, d.hd}, 2, dt);
  Tensor v4 = randn({d.B, d.H, d.S, d.hd}, 3, dt);
  struct Case {
    const char* name;
    Tensor mask;
    double p;
    bool training;
  };
  const Case cases[] = {
      {"no mask", Tensor(), 0.0, true},
      {"key mask", key_mask(d, 4, dt), 0.0, true},
      {"key mask, a batch fully masked", key_mask(d, 5, dt, 1), 0.0, true},
      {"causal * key mask, row 0 of batch 0 fully masked", causal_mask(d, 6, dt), 0.0, true},
      {"causal mask + dropout", causal_mask(d, 7, dt), 0.25, true},
      {"dropout, no mask", Tensor(), 0.5, true},
      {"dropout p but not training", key_mask(d, 8, dt), 0.5, false},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const uint64_t seed = 1234, offset = 77;
    auto want_fn = [&](const Tensor& a, const Tensor& b, const Tensor& v) {
      return model_composition(a, b, v, c.mask, c.p, c.training, seed, offset);
    };
    // v shared by every path: [1, B, H, S, hd], as the model will pass it.
    auto got_fn = [&](const Tensor& a, const Tensor& b, const Tensor& v) {
      return attention(a, b, unsqueeze(v, 0), c.mask, c.p, c.training, seed, offset);
    };
    const Grads want = run(want_fn, q, k, v4), got = run(got_fn, q, k, v4);
    CHECK(bit_equal(got.out, want.out));
    CHECK(bit_equal(got.dq, want.dq));
    CHECK(bit_equal(got.dk, want.dk));
    CHECK(bit_equal(got.dv, want.dv));
  }
  // v per path ([P, ...]) and as an expand() view (stride 0 over paths).
  Tensor m = causal_mask(d, 9, dt);
  Tensor vP = randn({d.P, d.B, d.H, d.S, d.hd}, 10, dt);
  auto per_path = [&](const Tensor& a, const Tensor& b, const Tensor& v) {
    return attention(a, b, v, m, 0.1, true, 5, 0);
  };
  auto per_path_want = [&](const Tensor& a, const Tensor& b, const Tensor& v) {
    return model_composition(a, b, v, m, 0.1, true, 5, 0);
  };
  const Grads gp = run(per_path, q, k, vP), wp = run(per_path_want, q, k, vP);
  CHECK(bit_equal(gp.out, wp.out));
  CHECK(bit_equal(gp.dv, wp.dv));
  auto expanded = [&](const Tensor& a, const Tensor& b, const Tensor& v) {
    return attention(a, b, expand(unsqueeze(v, 0), {d.P, d.B, d.H, d.S, d.hd}), m, 0.0, true, 0, 0);
  };
  auto shared4 = [&](const Tensor& a, const Tensor& b, const Tensor& v) {
    return model_composition(a, b, v, m, 0.0, true, 0, 0);
  };
  const Grads ge = run(expanded, q, k, v4), we = run(shared4, q, k, v4);
  CHECK(bit_equal(ge.out, we.out));
  CHECK(bit_equal(ge.dq, we.dq));
  CHECK(max_abs_diff(ge.dv, we.dv) <= 1e-5);  // summed over paths by expand's backward instead
}

TEST_CASE("attention against plain loops: masks, fully masked rows, the dropout element mapping") {
  const Dims d{2, 3, 2, 6, 5};
  Tensor q = randn({d.P, d.B, d.H, d.S, d.hd}, 11, DType::F64);
  Tensor k = randn({d.P, d.B, d.H, d.S, d.hd}, 12, DType::F64);
  Tensor v1 = randn({1, d.B, d.H, d.S, d.hd}, 13, DType::F64);
  Tensor vP = randn({d.P, d.B, d.H, d.S, d.hd}, 14, DType::F64);
  // A per-head mask [1, B, H, S, S] exercises a broadcast over P only.
  Tensor head_mask = key_mask({d.P, d.B * d.H * d.S, 1, d.S, 1}, 15, DType::F64);
  head_mask = reshape(head_mask, {1, d.B, d.H, d.S, d.S});
  for (const Tensor& v : {v1, vP}) {
    for (const Tensor& mask : {Tensor(), key_mask(d, 16, DType::F64, 2), causal_mask(d, 17, DType::F64), head_mask}) {
      for (double p : {0.0, 0.3}) {
        CAPTURE(v.shape()[0]);
        CAPTURE(mask.defined() ? shape_str(mask.shape()) : std::string("none"));
        CAPTURE(p);
        Tensor out = attention(q, k, v, mask, p, true, 4321, 13);
        CHECK(max_diff(out.to_vector<double>(), reference(d, q, k, v, mask, p, 4321, 13)) <= 1e-12);
      }
    }
  }
  // Fully masked rows are exact zeros (not NaN), with or without dropout.
  Tensor dead = key_mask(d, 18, DType::F64, 1);
  Tensor out = attention(q, k, vP, dead, 0.3, true, 1, 0);
  for (double x : select(out, 1, 1).contiguous().to_vector<double>()) CHECK(x == 0.0);
  // A different offset draws a different mask.
  CHECK(max_diff(attention(q, k, vP, Tensor(), 0.5, true, 1, 0).to_vector<double>(),
                 attention(q, k, vP, Tensor(), 0.5, true, 1, 64).to_vector<double>()) > 0.0);
}

TEST_CASE("attention in bf16 off the GPU: the f32 composite of the bf16 values, rounded") {
  const Dims d{2, 1, 2, 5, 4};
  Tensor m = causal_mask(d, 60, DType::F32);
  Tensor q0 = randn({d.P, d.B, d.H, d.S, d.hd}, 61, DType::F32).to(DType::BF16);
  Tensor k0 = randn({d.P, d.B, d.H, d.S, d.hd}, 62, DType::F32).to(DType::BF16);
  Tensor v0 = randn({1, d.B, d.H, d.S, d.hd}, 63, DType::F32).to(DType::BF16);
  Tensor R = randn({d.P, d.B, d.H, d.S, d.hd}, 64, DType::F32);
  Tensor qb = q0.detach().set_requires_grad(), kb = k0.detach().set_requires_grad(), vb = v0.detach().set_requires_grad();
  Tensor got = attention(qb, kb, vb, m, 0.3, true, 8, 1);
  REQUIRE(got.dtype() == DType::BF16);
  sum(mul(got.to(DType::F32), R)).backward();
  Tensor q = q0.to(DType::F32).detach().set_requires_grad(), k = k0.to(DType::F32).detach().set_requires_grad();
  Tensor v = v0.to(DType::F32).detach().set_requires_grad();
  Tensor want = model_composition(q, k, squeeze(v, 0), m, 0.3, true, 8, 1).to(DType::BF16);
  sum(mul(want.to(DType::F32), R)).backward();
  CHECK(bit_equal(got, want));
  REQUIRE(qb.grad().dtype() == DType::BF16);
  CHECK(bit_equal(qb.grad(), q.grad().to(DType::BF16)));
  CHECK(bit_equal(kb.grad(), k.grad().to(DType::BF16)));
  CHECK(bit_equal(vb.grad(), v.grad().to(DType::BF16)));
}

TEST_CASE("attention: empty sequence and not-training dropout") {
  Tensor q = rand64({2, 1, 1, 0, 3}, 40), v = rand64({1, 1, 1, 0, 3}, 41);
  Tensor out = attention(q, q, v, Tensor(), 0.5, true, 0, 0);
  CHECK(out.shape() == Shape{2, 1, 1, 0, 3});
  Tensor q2 = rand64({1, 1, 2, 3, 4}, 42), k2 = rand64({1, 1, 2, 3, 4}, 43), v2 = rand64({1, 1, 2, 3, 4}, 44);
  CHECK(bit_equal(attention(q2, k2, v2, Tensor(), 0.7, false, 1, 2), attention(q2, k2, v2, Tensor(), 0.0, true, 1, 2)));
}

TEST_CASE("attention: bad arguments are refused with the shapes named") {
  Tensor q = rand64({2, 1, 2, 3, 4}, 50), k = rand64({2, 1, 2, 3, 4}, 51), v = rand64({1, 1, 2, 3, 4}, 52);
  auto msg = [&](const Tensor& a, const Tensor& b, const Tensor& c, const Tensor& m, double p = 0.0) {
    return error_of([&] { attention(a, b, c, m, p, true, 0, 0); });
  };
  std::string e = msg(reshape(q, {2, 2, 3, 4}), k, v, Tensor());
  CHECK(e.find("attention: q must be [P, B, H, S, hd], got [2, 2, 3, 4]") != std::string::npos);
  e = msg(q, rand64({2, 1, 2, 3, 5}, 53), v, Tensor());
  CHECK(e.find("attention: k [2, 1, 2, 3, 5] does not match q [2, 1, 2, 3, 4]") != std::string::npos);
  e = msg(q, k, rand64({3, 1, 2, 3, 4}, 54), Tensor());
  CHECK(e.find("attention: v [3, 1, 2, 3, 4] must be [2 or 1, 1, 2, 3, 4]") != std::string::npos);
  e = msg(q, k, rand64({1, 1, 2, 4, 4}, 55), Tensor());
  CHECK(e.find("v [1, 1, 2, 4, 4]") != std::string::npos);
  e = msg(q, k, v, rand64({1, 1, 1, 2}, 56));
  CHECK(e.find("attention: mask [1, 1, 1, 2] does not broadcast to the scores [2, 1, 2, 3, 3]") != std::string::npos);
  e = msg(q, k, v, rand64({1, 2, 1, 2, 3, 3}, 57));
  CHECK(e.find("mask [1, 2, 1, 2, 3, 3]") != std::string::npos);
  e = msg(q, k.to(DType::F32), v, Tensor());
  CHECK(e.find("attention: dtypes differ: q f64, k f32, v f64") != std::string::npos);
  e = msg(q, k, v, Tensor(), 1.5);
  CHECK(e.find("attention: dropout p must be in [0, 1], got 1.5") != std::string::npos);
  e = msg(q, k, Tensor(), Tensor());
  CHECK(e.find("attention: q, k and v must be defined") != std::string::npos);
}
