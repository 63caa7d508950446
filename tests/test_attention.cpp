// MartingaleAwareAttention and its relabellings against a plain-C++ reference that
// loops over paths, heads and positions (no engine op is trusted by the reference).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "model/martingale_attention.h"
#include "model/relabelling.h"
#include "tests/gradcheck.h"

using namespace bet;
using namespace bet::model;
using namespace bet::testing;

namespace {

ModelConfig small_config(PosEncoding pe, int64_t k, int64_t D = 8, int64_t H = 2) {
  ModelConfig c;
  c.pe = pe;
  c.k_permutations = k;
  c.d_model = D;
  c.heads = H;
  c.max_len = 16;
  c.dropout = 0.0;
  return c;
}

// One attention path in plain C++: x [B, S, D] row-major, ids [B, S] position ids (only
// used with rope), mask [B, S]. Returns [B, S, D] after the output projection.
std::vector<double> ref_path(const MartingaleAwareAttention& a, const std::vector<double>& x, int64_t B,
                             int64_t S, const std::vector<int64_t>& ids, const std::vector<double>& mask,
                             bool causal) {
  const int64_t H = a.heads, hd = a.head_dim, D = H * hd;
  auto Wq = a.q->weight.to_vector<double>(), bq = a.q->bias.to_vector<double>();
  auto Wk = a.k->weight.to_vector<double>(), bk = a.k->bias.to_vector<double>();
  auto Wv = a.v->weight.to_vector<double>(), bv = a.v->bias.to_vector<double>();
  auto Wo = a.o->weight.to_vector<double>(), bo = a.o->bias.to_vector<double>();
  auto lin = [&](const std::vector<double>& W, const std::vector<double>& bias, const double* in, double* out) {
    for (int64_t o = 0; o < D; ++o) {
      double s = bias[size_t(o)];
      for (int64_t i = 0; i < D; ++i) s += W[size_t(o * D + i)] * in[i];
      out[o] = s;
    }
  };
  const size_t N = size_t(B * S * D);
  std::vector<double> q(N), k(N), v(N), ctxv(N, 0.0), out(N);
  for (int64_t r = 0; r < B * S; ++r) {
    lin(Wq, bq, &x[size_t(r * D)], &q[size_t(r * D)]);
    lin(Wk, bk, &x[size_t(r * D)], &k[size_t(r * D)]);
    lin(Wv, bv, &x[size_t(r * D)], &v[size_t(r * D)]);
  }
  if (a.use_rope) {
    for (int64_t r = 0; r < B * S; ++r)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < hd / 2; ++i) {
          const double ang = double(ids[size_t(r)]) * std::pow(10000.0, -2.0 * double(i) / double(hd));
          const double c = std::cos(ang), s = std::sin(ang);
          for (auto* t : {&q, &k}) {
            double& x1 = (*t)[size_t(r * D + h * hd + i)];
            double& x2 = (*t)[size_t(r * D + h * hd + i + hd / 2)];
            const double a1 = x1, a2 = x2;
            x1 = a1 * c - a2 * s;
            x2 = a2 * c + a1 * s;
          }
        }
  }
  const double scale = 1.0 / std::sqrt(double(hd));
  std::vector<double> p(static_cast<size_t>(S));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < S; ++t) {
        double mx = -1e300;
        for (int64_t s = 0; s < S; ++s) {
          const bool ok = mask[size_t(b * S + s)] != 0 && (!causal || s <= t);
          double sc = 0;
          for (int64_t j = 0; j < hd; ++j)
            sc += q[size_t((b * S + t) * D + h * hd + j)] * k[size_t((b * S + s) * D + h * hd + j)];
          p[size_t(s)] = ok ? sc * scale : -INFINITY;
          mx = std::max(mx, p[size_t(s)]);
        }
        double z = 0;
        for (int64_t s = 0; s < S; ++s) z += (p[size_t(s)] = std::exp(p[size_t(s)] - mx));
        for (int64_t s = 0; s < S; ++s)
          for (int64_t j = 0; j < hd; ++j)
            ctxv[size_t((b * S + t) * D + h * hd + j)] += p[size_t(s)] / z * v[size_t((b * S + s) * D + h * hd + j)];
      }
  for (int64_t r = 0; r < B * S; ++r) lin(Wo, bo, &ctxv[size_t(r * D)], &out[size_t(r * D)]);
  return out;
}

// w of model.md, in plain C++.
double ref_weight(double lam, double n) {
  if (n <= 1) return 1.0;
  return std::clamp(lam * std::log(n) / n, 0.01, 1.0);
}

struct Case {
  std::vector<int64_t> lengths;
  int64_t S;
  bool causal;
};

// The whole module in plain C++: (1 - w) O_std + w gamma mean_i O_pi_i, with the paths
// looped explicitly; also the order dispersion.
std::vector<double> ref_attention(const MartingaleAwareAttention& a, const Tensor& x, const SeqContext& ctx,
                                  const Tensor& perm_ids, std::vector<double>* dispersion = nullptr) {
  const int64_t B = x.size(0), S = x.size(1), D = x.size(2), k = a.k_paths;
  auto xv = x.to_vector<double>();
  auto mask = ctx.mask.to_vector<double>();
  auto nctx = ctx.n_ctx.to_vector<double>();
  std::vector<int64_t> std_ids(size_t(B * S));
  for (int64_t i = 0; i < B * S; ++i) std_ids[size_t(i)] = i % S;
  std::vector<double> o_std = ref_path(a, xv, B, S, std_ids, mask, ctx.causal);
  if (k == 0) return o_std;
  const double lam = a.lam.item(), gamma = a.gamma.item();
  auto ids = perm_ids.to_vector<int64_t>();
  std::vector<std::vector<double>> paths;
  for (int64_t p = 0; p < k; ++p) {
    std::vector<int64_t> pid(ids.begin() + p * B * S, ids.begin() + (p + 1) * B * S);
    paths.push_back(ref_path(a, xv, B, S, pid, mask, ctx.causal));
  }
  std::vector<double> out(size_t(B * S * D));
  if (dispersion) dispersion->assign(size_t(B), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    double nb = 0;
    for (int64_t t = 0; t < S; ++t) {
      const double w = ref_weight(lam, nctx[size_t(b * S + t)]);
      const bool valid = mask[size_t(b * S + t)] != 0;
      nb += valid;
      for (int64_t f = 0; f < D; ++f) {
        const size_t e = size_t((b * S + t) * D + f);
        double m = 0, m2 = 0;
        for (auto& P : paths) m += P[e] / double(k);
        for (auto& P : paths) m2 += (P[e] - m) * (P[e] - m) / double(k);
        out[e] = (1 - w) * o_std[e] + w * gamma * m;
        if (dispersion && valid) (*dispersion)[size_t(b)] += std::sqrt(m2) / double(D);
      }
    }
    if (dispersion) (*dispersion)[size_t(b)] /= nb;
  }
  return out;
}

// Max |a - b| over valid positions only (padding rows are unspecified).
double valid_diff(const std::vector<double>& a, const std::vector<double>& b, const SeqContext& ctx, int64_t D) {
  auto mask = ctx.mask.to_vector<double>();
  double m = 0;
  for (size_t r = 0; r < mask.size(); ++r)
    if (mask[r] != 0)
      for (int64_t f = 0; f < D; ++f) m = std::max(m, std::abs(a[r * size_t(D) + size_t(f)] - b[r * size_t(D) + size_t(f)]));
  return m;
}

const std::vector<Case> kCases = {
    {{5, 3, 1}, 5, false},
    {{5, 3, 1}, 5, true},
    {{4}, 4, false},
    {{2, 6}, 6, true},
};

}  // namespace

TEST_CASE("relabellings: bidirectional ids permute the valid positions, padding keeps n..S-1") {
  for (int64_t n : {1, 2, 5, 9}) {
    auto ids = bidirectional_relabelling(inference_relabel_key(7, 0, 1, n), n, 12);
    REQUIRE(ids.size() == 12u);
    std::vector<int64_t> head(ids.begin(), ids.begin() + n);
    std::sort(head.begin(), head.end());
    for (int64_t t = 0; t < n; ++t) CHECK(head[size_t(t)] == t);
    for (int64_t t = n; t < 12; ++t) CHECK(ids[size_t(t)] == t);
  }
  // A permutation of 9 tokens is not the identity for every key (a broken draw would be).
  int identity = 0;
  for (int64_t p = 0; p < 8; ++p) {
    auto ids = bidirectional_relabelling(inference_relabel_key(7, 0, p, 9), 9, 9);
    bool id = true;
    for (int64_t t = 0; t < 9; ++t) id = id && ids[size_t(t)] == t;
    identity += id;
  }
  CHECK(identity == 0);
}

TEST_CASE("relabellings: causal ids are distinct, below max_len, and a prefix of the longer sequence") {
  const uint64_t key = inference_relabel_key(3, 1, 0);
  auto a = causal_relabelling(key, 5, 32), b = causal_relabelling(key, 11, 32);
  std::set<int64_t> seen(b.begin(), b.end());
  CHECK(seen.size() == b.size());
  for (int64_t v : b) CHECK((v >= 0 && v < 32));
  for (size_t t = 0; t < a.size(); ++t) CHECK(a[t] == b[t]);
  CHECK_THROWS_AS(causal_relabelling(key, 33, 32), Error);
}

TEST_CASE("relabellings: pure functions of their keys") {
  // Inference: sequence b's ids depend on its length alone, not on the batch around it.
  SeqContext batch = SeqContext::from_lengths({3, 7, 5}, 7, false);
  SeqContext alone = SeqContext::from_lengths({5}, 5, false);
  Tensor ib = relabelling_ids(batch, 1, 3, 16, 99), ia = relabelling_ids(alone, 1, 3, 16, 99);
  REQUIRE(ib.shape() == Shape({3, 3, 7}));
  for (int64_t p = 0; p < 3; ++p)
    for (int64_t t = 0; t < 5; ++t) CHECK(ib.data<int64_t>()[(p * 3 + 2) * 7 + t] == ia.data<int64_t>()[p * 5 + t]);
  // Same call twice (through the cache): same ids; other layer or seed: other ids.
  CHECK(max_abs_diff(relabelling_ids(batch, 1, 3, 16, 99).to(DType::F64), ib.to(DType::F64)) == 0);
  CHECK(max_abs_diff(relabelling_ids(batch, 0, 3, 16, 99).to(DType::F64), ib.to(DType::F64)) > 0);
  CHECK(max_abs_diff(relabelling_ids(batch, 1, 3, 16, 98).to(DType::F64), ib.to(DType::F64)) > 0);

  // Causal inference: one relabelling per (layer, path) shared by every sequence.
  SeqContext causal = SeqContext::from_lengths({3, 7}, 7, true);
  Tensor ic = relabelling_ids(causal, 0, 2, 16, 99);
  for (int64_t p = 0; p < 2; ++p)
    for (int64_t t = 0; t < 7; ++t) CHECK(ic.data<int64_t>()[(p * 2 + 0) * 7 + t] == ic.data<int64_t>()[(p * 2 + 1) * 7 + t]);

  // Training: keyed by (seed, step, layer, path, global sequence index).
  SeqContext tr = SeqContext::from_lengths({6, 6}, 6, false);
  tr.training = true;
  tr.seed = 5;
  tr.step = 10;
  Tensor t0 = relabelling_ids(tr, 0, 2, 16, 99);
  auto v0 = t0.to_vector<int64_t>();
  CHECK(std::vector<int64_t>(v0.begin(), v0.begin() + 6) != std::vector<int64_t>(v0.begin() + 6, v0.begin() + 12));
  tr.sequence_index = Tensor::from_vector<int64_t>({1, 0}, {2});
  auto v1 = relabelling_ids(tr, 0, 2, 16, 99).to_vector<int64_t>();
  CHECK(std::vector<int64_t>(v1.begin(), v1.begin() + 6) == std::vector<int64_t>(v0.begin() + 6, v0.begin() + 12));
  tr.step = 11;
  CHECK(relabelling_ids(tr, 0, 2, 16, 99).to_vector<int64_t>() != v1);
  auto key = training_relabel_key(5, 10, 0, 1, 0);
  auto expect = bidirectional_relabelling(key, 6, 6);
  CHECK(std::vector<int64_t>(v0.begin() + 12, v0.begin() + 18) == expect);
}

TEST_CASE("attention without positions in attention: (1 - w + w gamma) times plain attention") {
  for (PosEncoding pe : {PosEncoding::None, PosEncoding::Sinusoidal, PosEncoding::Learned}) {
    for (const Case& cs : kCases) {
      for (uint64_t seed : {1u, 2u}) {
        Generator g(seed);
        MartingaleAwareAttention a(small_config(pe, 3), 0, g, true, DType::F64);
        const double lam = 0.2 + 3.0 * Generator(seed + 10).uniform({1}, 0, 1, DType::F64).item();
        const double gamma = -1.0 + 3.0 * Generator(seed + 20).uniform({1}, 0, 1, DType::F64).item();
        a.lam.fill_(lam);
        a.gamma.fill_(gamma);
        SeqContext ctx = SeqContext::from_lengths(cs.lengths, cs.S, cs.causal, DType::F64);
        const int64_t B = int64_t(cs.lengths.size()), D = 8;
        Tensor x = rand64({B, cs.S, D}, seed + 30);
        AttentionOutput out = a.forward(x, ctx);
        auto plain = ref_path(a, x.to_vector<double>(), B, cs.S, std::vector<int64_t>(size_t(B * cs.S), 0),
                              ctx.mask.to_vector<double>(), cs.causal);
        auto nctx = ctx.n_ctx.to_vector<double>();
        std::vector<double> expect(plain.size());
        for (size_t e = 0; e < plain.size(); ++e) {
          const double w = ref_weight(lam, nctx[e / size_t(D)]);
          expect[e] = (1 - w + w * gamma) * plain[e];
        }
        CHECK(valid_diff(out.out.to_vector<double>(), expect, ctx, D) < 1e-10);
        CHECK(out.order_dispersion.to_vector<double>() == std::vector<double>(size_t(B), 0.0));
        // gamma = 1: plain attention.
        a.gamma.fill_(1.0);
        CHECK(valid_diff(a.forward(x, ctx).out.to_vector<double>(), plain, ctx, D) < 1e-10);
      }
    }
  }
}

TEST_CASE("attention with rope: the folded paths equal an explicit loop over relabellings") {
  for (int64_t k : {0, 1, 3}) {
    for (const Case& cs : kCases) {
      Generator g(40 + k);
      MartingaleAwareAttention a(small_config(PosEncoding::Rope, k), 2, g, true, DType::F64);
      if (k > 0) {
        a.lam.fill_(1.7);
        a.gamma.fill_(0.6);
      }
      SeqContext ctx = SeqContext::from_lengths(cs.lengths, cs.S, cs.causal, DType::F64);
      const int64_t B = int64_t(cs.lengths.size()), D = 8;
      Tensor x = rand64({B, cs.S, D}, 50 + k);
      Tensor ids = k > 0 ? a.relabellings(ctx) : Tensor();
      std::vector<double> disp;
      auto expect = ref_attention(a, x, ctx, ids, &disp);
      AttentionOutput out = a.forward(x, ctx);
      CHECK(valid_diff(out.out.to_vector<double>(), expect, ctx, D) < 1e-10);
      if (k > 0) {
        auto od = out.order_dispersion.to_vector<double>();
        for (int64_t b = 0; b < B; ++b) CHECK(od[size_t(b)] == doctest::Approx(disp[size_t(b)]).epsilon(1e-9));
        // Explicit relabellings are used as given.
        Generator gi(77);
        Tensor other = relabelling_ids(ctx, 5, k, 16, 1234);
        auto expect2 = ref_attention(a, x, ctx, other);
        CHECK(valid_diff(a.forward(x, ctx, other).out.to_vector<double>(), expect2, ctx, D) < 1e-10);
      }
    }
  }
  // With k >= 2 on sequences longer than one token, the paths really differ.
  Generator g(9);
  MartingaleAwareAttention a(small_config(PosEncoding::Rope, 3), 0, g, true, DType::F64);
  SeqContext ctx = SeqContext::from_lengths({6}, 6, false, DType::F64);
  CHECK(a.forward(rand64({1, 6, 8}, 3), ctx).order_dispersion.item() > 1e-6);
}

TEST_CASE("attention: masked keys get no weight; causal outputs never read later tokens") {
  for (PosEncoding pe : {PosEncoding::Rope, PosEncoding::None}) {
    for (const Case& cs : kCases) {
      Generator g(60);
      MartingaleAwareAttention a(small_config(pe, 3), 0, g, true, DType::F64);
      SeqContext ctx = SeqContext::from_lengths(cs.lengths, cs.S, cs.causal, DType::F64);
      const int64_t B = int64_t(cs.lengths.size()), S = cs.S, D = 8;
      Tensor x = rand64({B, S, D}, 61);
      auto base = a.forward(x, ctx).out.to_vector<double>();
      // Padding rows replaced by large values: valid outputs unchanged.
      Tensor xp = x.clone();
      double* p = xp.data<double>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = cs.lengths[size_t(b)]; t < S; ++t)
          for (int64_t f = 0; f < D; ++f) p[(b * S + t) * D + f] = 50.0 * std::sin(double(t + f));
      CHECK(valid_diff(a.forward(xp, ctx).out.to_vector<double>(), base, ctx, D) < 1e-12);
      if (!cs.causal) continue;
      // Causal: change token u; every output before u is unchanged, u's own output changes.
      for (int64_t u = 1; u < S; ++u) {
        Tensor xc = x.clone();
        for (int64_t b = 0; b < B; ++b)
          for (int64_t f = 0; f < D; ++f) xc.data<double>()[(b * S + u) * D + f] += 3.0;
        auto changed = a.forward(xc, ctx).out.to_vector<double>();
        double before = 0, at = 0;
        for (int64_t b = 0; b < B; ++b)
          for (int64_t f = 0; f < D; ++f) {
            for (int64_t t = 0; t < u; ++t)
              before = std::max(before, std::abs(changed[size_t((b * S + t) * D + f)] - base[size_t((b * S + t) * D + f)]));
            if (u < cs.lengths[size_t(b)])
              at = std::max(at, std::abs(changed[size_t((b * S + u) * D + f)] - base[size_t((b * S + u) * D + f)]));
          }
        CHECK(before < 1e-12);
        CHECK(at > 1e-6);
      }
    }
  }
}

TEST_CASE("attention: the same input gives the same output alone and inside a batch") {
  for (PosEncoding pe : {PosEncoding::Rope, PosEncoding::None}) {
    for (bool causal : {false, true}) {
      Generator g(70);
      MartingaleAwareAttention a(small_config(pe, 3), 1, g, true, DType::F64);
      const std::vector<int64_t> lengths = {4, 7, 2};
      SeqContext ctx = SeqContext::from_lengths(lengths, 7, causal, DType::F64);
      Tensor x = rand64({3, 7, 8}, 71);
      auto batched = a.forward(x, ctx);
      auto bv = batched.out.to_vector<double>();
      for (int64_t b = 0; b < 3; ++b) {
        const int64_t n = lengths[size_t(b)];
        SeqContext c1 = SeqContext::from_lengths({n}, n, causal, DType::F64);
        Tensor x1 = slice(slice(x, 0, b, b + 1), 1, 0, n).contiguous();
        auto alone = a.forward(x1, c1);
        auto av = alone.out.to_vector<double>();
        double m = 0;
        for (int64_t t = 0; t < n; ++t)
          for (int64_t f = 0; f < 8; ++f) m = std::max(m, std::abs(av[size_t(t * 8 + f)] - bv[size_t((b * 7 + t) * 8 + f)]));
        CHECK(m < 1e-12);
        CHECK(alone.order_dispersion.item() == doctest::Approx(batched.order_dispersion.to_vector<double>()[size_t(b)]).epsilon(1e-10));
      }
    }
  }
}

TEST_CASE("attention: finite-difference gradients (x, projections, lam, gamma)") {
  for (PosEncoding pe : {PosEncoding::Rope, PosEncoding::None}) {
    for (bool causal : {false, true}) {
      Generator g(80);
      MartingaleAwareAttention a(small_config(pe, 2), 0, g, true, DType::F64);
      a.lam.fill_(1.3);
      a.gamma.fill_(0.7);
      SeqContext ctx = SeqContext::from_lengths({4, 2}, 4, causal, DType::F64);
      Tensor x = leaf(rand64({2, 4, 8}, 81));
      auto f = [&](const std::vector<Tensor>& in) { return a.forward(in[0], ctx).out; };
      CHECK_GRAD(f, (std::vector<Tensor>{x, a.lam, a.gamma, a.q->weight, a.k->weight, a.v->bias, a.o->weight,
                                         a.o->bias}));
    }
  }
  // Plain attention (the standard layer's) and training mode with dropout on the
  // probabilities: the dropout stream restarts at the same offset on every evaluation.
  for (bool averaging : {false, true}) {
    ModelConfig c = small_config(PosEncoding::Rope, 2);
    c.dropout = 0.3;
    Generator g(82);
    MartingaleAwareAttention a(c, 0, g, averaging, DType::F64);
    SeqContext ctx = SeqContext::from_lengths({3, 4}, 4, true, DType::F64);
    uint64_t offset = 0;
    ctx.training = true;
    ctx.seed = 17;
    ctx.dropout_offset = &offset;
    Tensor x = leaf(rand64({2, 4, 8}, 83));
    auto f = [&](const std::vector<Tensor>& in) {
      offset = 0;
      return a.forward(in[0], ctx).out;
    };
    CHECK_GRAD(f, (std::vector<Tensor>{x, a.q->weight, a.v->weight}));
    CHECK(offset == uint64_t((averaging ? 3 : 1) * 2 * 2 * 4 * 4));  // one site: [P, B, H, S, S]
  }
}

TEST_CASE("attention: parameter names and initialisation") {
  Generator g(90);
  MartingaleAwareAttention a(small_config(PosEncoding::Rope, 3, 16, 4), 0, g, true);
  std::vector<std::string> names;
  for (auto& [n, t] : a.named_parameters()) names.push_back(n);
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"gamma", "k.bias", "k.weight", "lam", "o.bias", "o.weight", "q.bias",
                                          "q.weight", "v.bias", "v.weight"});
  CHECK(a.lam.shape() == Shape{});
  CHECK(a.lam.item() == 1.0);
  CHECK(a.gamma.item() == 1.0);
  const double bound = std::sqrt(6.0 / 32.0);
  for (auto* l : {a.q.get(), a.k.get(), a.v.get(), a.o.get()}) {
    auto w = l->weight.to_vector<float>();
    double mx = 0;
    for (float v : w) mx = std::max(mx, double(std::abs(v)));
    CHECK(mx <= bound);
    CHECK(mx > 0.8 * bound);  // Xavier, not the default 1/sqrt(16) = 0.25 bound
    CHECK(max_abs_diff(l->bias.to(DType::F64), Tensor::zeros({16}, DType::F64)) == 0);
  }
  MartingaleAwareAttention plain(small_config(PosEncoding::Rope, 3, 16, 4), 0, g, false);
  CHECK(plain.named_parameters().size() == 8u);
  CHECK(plain.k_paths == 0);
}
