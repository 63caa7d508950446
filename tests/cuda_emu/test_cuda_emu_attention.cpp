// The fused attention kernels of kernels/cuda/attention.cu, emulated, against the CPU
// composite bet::attention (matmul / softmax / dropout / matmul) in f64: forward out
// and lse, and dq, dk, dv from the same upstream gradient. Ragged tiles (S off 64 and
// 32), head dims padded to 32/64/128, shared and per-path v, key, causal and per-head
// masks with fully masked rows, dropout (so the Philox mapping), permuted q.
#include <cmath>

#include "kernels/attention.h"
#include "tests/cuda_emu/emu_test_util.h"

using namespace emutest;

namespace {

struct Case {
  const char* name;
  int64_t P, B, H, S, hd, Pv;
  int mask_kind;  // 0 none, 1 key mask [B,1,1,S] f32 with a dead batch, 2 causal [B,1,S,S], 3 i64 [P,B,H,S,S]
  double p;
  bool permuted_q, want_dq, want_dkv, bf16;
};

Tensor randn(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return g.normal(s, 0.0, 1.0, DType::F64);
}

Tensor make_mask(const Case& c) {
  Generator g(77);
  if (c.mask_kind == 0) return Tensor();
  if (c.mask_kind == 1) {
    std::vector<double> m(size_t(c.B * c.S));
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t s = 0; s < c.S; ++s) m[size_t(b * c.S + s)] = (b == 1) ? 0.0 : (s == 0 || g.randint(3) != 0);
    return Tensor::from_vector(m, {c.B, 1, 1, c.S}).to(DType::F32);
  }
  if (c.mask_kind == 2) {  // causal, with row 0 of batch 0 fully masked
    std::vector<double> m(size_t(c.B * c.S * c.S));
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t t = 0; t < c.S; ++t)
        for (int64_t s = 0; s <= t; ++s) m[size_t((b * c.S + t) * c.S + s)] = (b == 0 && s == 0) ? 0.0 : g.randint(5) != 0;
    return Tensor::from_vector(m, {c.B, 1, c.S, c.S}).to(DType::F32);
  }
  std::vector<int64_t> m(size_t(c.P * c.B * c.H * c.S * c.S));
  for (auto& x : m) x = g.randint(3) != 0;
  return Tensor::from_vector(m, {c.P, c.B, c.H, c.S, c.S});
}

// The mask as the kernel takes it: a view of shape [P, B, H, S, S] (stride 0 where it
// broadcasts).
Tensor mask_view(const Tensor& mask, const Shape& scores) {
  const size_t lead = scores.size() - size_t(mask.dim());
  Shape st(scores.size(), 0);
  for (size_t i = lead; i < st.size(); ++i) st[i] = mask.shape()[i - lead] == 1 ? 0 : mask.strides()[i - lead];
  return make_view(mask, scores, st, mask.offset());
}

// x rounded to the device dtype, back in f64: the reference sees the device's inputs.
Tensor rounded(const Tensor& x, DType dt) { return x.to(dt).to(DType::F64); }

// f32: f32 accumulation against f64. bf16: the outputs are rounded to 8 bits and the
// inputs of the backward (out, dout) too; judged against 1% of the largest magnitude.
void check_attn(const Tensor& got, const Tensor& want, DType dt, const std::string& what) {
  if (dt == DType::F32) return check_close(got, want, {1e-4, 1e-5}, what);
  double mx = 0;
  for (double x : want.to_vector<double>()) mx = std::max(mx, std::abs(x));
  check_close(got, want, {0.0, 0.01 * mx}, what);
}

void run(const Case& c) {
  const DType dt = c.bf16 ? DType::BF16 : DType::F32;
  const Shape qs{c.P, c.B, c.H, c.S, c.hd};
  Tensor q = rounded(mul(randn(qs, 1), 0.4), dt), k = rounded(randn(qs, 2), dt);
  Tensor v = rounded(randn({c.Pv, c.B, c.H, c.S, c.hd}, 3), dt);
  Tensor mask = make_mask(c);
  const uint64_t seed = 4242, offset = 11;
  // Reference: the CPU composite in f64, and its gradients of sum(out * R).
  Tensor qr = q.detach().set_requires_grad(), kr = k.detach().set_requires_grad(), vr = v.detach().set_requires_grad();
  Tensor want = attention(qr, kr, vr, mask, c.p, true, seed, offset);
  Tensor R = rounded(randn(want.shape(), 5), dt);
  sum(mul(want, R)).backward();
  // Device operands; q optionally stored as [P, B, S, H, hd] and viewed back.
  Tensor qd = to_dev(q.to(dt)), kd = to_dev(k.to(dt)), vd = to_dev(v.to(dt));
  if (c.permuted_q) {
    Tensor store = to_dev(permute(q, {0, 1, 3, 2, 4}).contiguous().to(dt));
    qd = make_view(store, qs, {store.strides()[0], store.strides()[1], store.strides()[3], store.strides()[2], 1},
                   store.offset());
  }
  Tensor md = mask.defined() ? mask_view(to_dev(mask), {c.P, c.B, c.H, c.S, c.S}) : Tensor();
  Tensor out = empty_dev(qs, dt), lse = empty_dev({c.P * c.B * c.H * c.S}, DType::F32);
  kcuda::attention_forward(qd, kd, vd, md, c.p, seed, offset, out, lse);
  check_attn(out, want, dt, std::string(c.name) + ": out");
  // lse: log-sum-exp of the kept scores (+inf for a fully masked row), from f64 scores.
  {
    Tensor scores = matmul(q, transpose(k, -1, -2));
    Tensor keep = mask.defined() ? expand(mask, scores.shape()).to(DType::F64) : Tensor::ones(scores.shape(), DType::F64);
    std::vector<double> s = scores.contiguous().to_vector<double>(), kv = keep.contiguous().to_vector<double>();
    std::vector<double> w(size_t(c.P * c.B * c.H * c.S));
    for (size_t r = 0; r < w.size(); ++r) {
      double m = -INFINITY, acc = 0;
      for (int64_t j = 0; j < c.S; ++j)
        if (kv[r * size_t(c.S) + size_t(j)] != 0) m = std::max(m, s[r * size_t(c.S) + size_t(j)]);
      for (int64_t j = 0; j < c.S; ++j)
        if (kv[r * size_t(c.S) + size_t(j)] != 0) acc += std::exp(s[r * size_t(c.S) + size_t(j)] - m);
      w[r] = m == -INFINITY ? INFINITY : m + std::log(acc);
    }
    check_close(lse, Tensor::from_vector(w, {int64_t(w.size())}), {1e-4, 1e-5}, std::string(c.name) + ": lse");
  }
  Tensor dq = c.want_dq ? empty_dev(qs, dt) : Tensor();
  Tensor dk = c.want_dkv ? empty_dev(qs, dt) : Tensor();
  Tensor dv = c.want_dkv ? empty_dev(v.shape(), dt) : Tensor();
  kcuda::attention_backward(qd, kd, vd, md, out, lse, to_dev(R.to(dt)), c.p, seed, offset, dq, dk, dv);
  if (c.want_dq) check_attn(dq, qr.grad(), dt, std::string(c.name) + ": dq");
  if (c.want_dkv) {
    check_attn(dk, kr.grad(), dt, std::string(c.name) + ": dk");
    check_attn(dv, vr.grad(), dt, std::string(c.name) + ": dv");
  }
}

}  // namespace

TEST_CASE("attention.cu forward and backward against the CPU composite") {
  NoEmuErrors guard;
  const Case cases[] = {
      {"S=70 hd=8 shared v, causal + dead row, dropout 0.2, permuted q", 2, 2, 2, 70, 8, 1, 2, 0.2, true, true, true,
       false},
      {"S=33 hd=40 per-path v, key mask with a dead batch", 2, 2, 1, 33, 40, 2, 1, 0.0, false, true, true, false},
      {"S=5 hd=128 shared v, no mask", 3, 1, 2, 5, 128, 1, 0, 0.0, false, true, true, false},
      {"S=3 hd=1 i64 per-head mask, dropout 0.5", 2, 2, 2, 3, 1, 2, 3, 0.5, false, true, true, false},
      {"S=65 hd=64 shared v, key mask, dropout 0.1, dq only", 2, 1, 1, 65, 64, 1, 1, 0.1, false, true, false, false},
      {"S=40 hd=100 P=1 causal, dk/dv only", 1, 2, 2, 40, 100, 1, 2, 0.0, true, false, true, false},
      {"bf16 S=37 hd=16 shared v, causal, dropout 0.3", 2, 2, 1, 37, 16, 1, 2, 0.3, true, true, true, true},
      {"bf16 S=20 hd=128 per-path v, key mask", 2, 1, 2, 20, 128, 2, 1, 0.0, false, true, true, true},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    run(c);
  }
}

TEST_CASE("attention.cu edge cases: P = 0 (dv is an empty sum), f64 refused, head dim over 128 refused") {
  NoEmuErrors guard;
  const DType f32 = DType::F32;
  Tensor q = empty_dev({0, 1, 2, 4, 8}, f32), v = to_dev(Tensor::ones({1, 1, 2, 4, 8}, f32));
  Tensor out = empty_dev({0, 1, 2, 4, 8}, f32), lse = empty_dev({0}, f32);
  kcuda::attention_forward(q, q, v, Tensor(), 0.0, 0, 0, out, lse);
  Tensor dv = empty_dev({1, 1, 2, 4, 8}, f32), dk = empty_dev({0, 1, 2, 4, 8}, f32);
  kcuda::attention_backward(q, q, v, Tensor(), out, lse, out, 0.0, 0, 0, Tensor(), dk, dv);
  check_close(dv, Tensor::zeros({1, 1, 2, 4, 8}, f32), kExact, "P = 0: dv");
  Tensor q64 = to_dev(Tensor::zeros({1, 1, 1, 4, 8}, DType::F64));
  CHECK_THROWS_WITH_AS(kcuda::attention_forward(q64, q64, q64, Tensor(), 0.0, 0, 0, empty_dev({1, 1, 1, 4, 8}, DType::F64),
                                             empty_dev({4}, f32)),
                       doctest::Contains("not supported by the fused kernels"), Error);
  Tensor big = to_dev(Tensor::zeros({1, 1, 1, 4, 129}, f32));
  CHECK_THROWS_WITH_AS(kcuda::attention_forward(big, big, big, Tensor(), 0.0, 0, 0, empty_dev({1, 1, 1, 4, 129}, f32),
                                             empty_dev({4}, f32)),
                       doctest::Contains("head dim 129"), Error);
}
