#include "model/martingale_attention.h"

#include <cmath>
#include <vector>

#include "model/relabelling.h"

namespace bet::model {

Tensor site_dropout(const Tensor& x, double p, const SeqContext& ctx) {
  if (!ctx.dropout_active() || p <= 0.0) return x;
  BET_CHECK(ctx.dropout_offset != nullptr,
            "dropout: a training context needs dropout_offset (sites would share random numbers)");
  // Row r of the global batch owns words [r * per_row, (r + 1) * per_row) of the site.
  const int64_t B = ctx.batch(), G = ctx.dropout_rows();
  BET_CHECK(x.dim() >= 1 && x.size(0) == B, "dropout: a site's input must lead with the batch (", B, " rows), got ",
            shape_str(x.shape()));
  const uint64_t per_row = uint64_t(x.numel() / B);
  const uint64_t off = *ctx.dropout_offset + uint64_t(ctx.row0) * per_row;
  *ctx.dropout_offset += uint64_t(G) * per_row;
  return dropout(x, p, true, ctx.seed, off);
}

Tensor attention_mask(const SeqContext& ctx) {
  const int64_t B = ctx.batch(), S = ctx.seq_len();
  Tensor keys = reshape(ctx.mask, {B, 1, 1, S});
  if (!ctx.causal) return keys;
  std::vector<double> tri(size_t(S * S), 0.0);
  for (int64_t t = 0; t < S; ++t)
    for (int64_t s = 0; s <= t; ++s) tri[size_t(t * S + s)] = 1.0;
  Tensor lower = Tensor::from_vector<double>(tri, {S, S}).to(ctx.mask.dtype()).to(ctx.mask.device());
  return mul(keys, lower);
}

MartingaleAwareAttention::MartingaleAwareAttention(const ModelConfig& cfg, int64_t layer_, Generator& g,
                                                   bool permutation_averaging, DType dtype)
    : heads(cfg.heads),
      head_dim(cfg.head_dim()),
      k_paths(permutation_averaging ? cfg.k_permutations : 0),
      layer(layer_),
      max_len(cfg.max_len),
      use_rope(cfg.pe == PosEncoding::Rope),
      dropout(cfg.dropout),
      inference_seed(cfg.inference_seed) {
  BET_CHECK(cfg.d_model % cfg.heads == 0, "attention: d_model ", cfg.d_model, " not divisible by heads ", cfg.heads);
  BET_CHECK(!use_rope || head_dim % 2 == 0, "attention: rope needs an even head dim, got ", head_dim);
  const int64_t D = cfg.d_model;
  if (permutation_averaging) {
    lam = register_parameter("lam", Tensor::ones({}, dtype));
    gamma = register_parameter("gamma", Tensor::ones({}, dtype));
  }
  q = register_module("q", std::make_shared<Linear>(D, D, g, true, Linear::Init::Xavier, dtype));
  k = register_module("k", std::make_shared<Linear>(D, D, g, true, Linear::Init::Xavier, dtype));
  v = register_module("v", std::make_shared<Linear>(D, D, g, true, Linear::Init::Xavier, dtype));
  o = register_module("o", std::make_shared<Linear>(D, D, g, true, Linear::Init::Xavier, dtype));
}

Tensor MartingaleAwareAttention::relabellings(const SeqContext& ctx) const {
  return relabelling_ids(ctx, layer, k_paths, max_len, inference_seed);
}

Tensor MartingaleAwareAttention::path_weight(const SeqContext& ctx) const {
  BET_CHECK(lam.defined(), "attention: path_weight without permutation averaging");
  const Tensor& n = ctx.n_ctx;
  Tensor w = clamp(mul(lam, div(log(n), n)), 0.01, 1.0);
  Tensor single = clamp(rsub(2.0, n), 0.0, 1.0);  // nonzero exactly where n <= 1 (n is whole)
  return where(single, Tensor::ones({}, w.dtype(), w.device()), w);
}

AttentionOutput MartingaleAwareAttention::forward(const Tensor& x, const SeqContext& ctx, const Tensor& perm_ids,
                                                  const Tensor& mask) const {
  BET_CHECK(x.dim() == 3, "attention: input must be [B, S, D], got ", shape_str(x.shape()));
  const int64_t B = x.size(0), S = x.size(1), D = x.size(2), H = heads, hd = head_dim;
  BET_CHECK(D == H * hd, "attention: input width ", D, " but the layer has d_model ", H * hd);
  BET_CHECK(ctx.batch() == B && ctx.seq_len() == S, "attention: input ", shape_str(x.shape()),
            " does not match the context's [", ctx.batch(), ", ", ctx.seq_len(), "]");
  const Tensor m = mask.defined() ? mask : attention_mask(ctx);

  auto split_heads = [&](const Tensor& t) { return transpose(reshape(t, {B, S, H, hd}), 1, 2); };
  // Scaling q (S*hd values) is cheaper than scaling the scores (S*S values).
  // q, k and v read the same x: one GEMM over their stacked weights (forward and backward).
  auto qkv = split(fused_linear({q.get(), k.get(), v.get()}, x), {D, D, D}, 2);
  Tensor qh = mul(split_heads(qkv[0]), 1.0 / std::sqrt(double(hd)));
  Tensor kh = split_heads(qkv[1]);
  Tensor vh = split_heads(qkv[2]);

  // Only RoPE lets position ids reach attention, so only then do the permutation paths
  // differ from the standard path; they are folded into the batch dimension (path 0 is
  // the standard path), sharing the one Q, K, V projection.
  const bool fold = use_rope && k_paths > 0;
  const int64_t P = fold ? k_paths + 1 : 1;
  if (fold) {
    Tensor ids = perm_ids.defined() ? perm_ids : relabellings(ctx);
    BET_CHECK(ids.shape() == Shape({k_paths, B, S}), "attention: relabellings must be [", k_paths, ", ", B,
              ", ", S, "], got ", shape_str(ids.shape()));
    std::vector<int64_t> pos(size_t(P * B * S));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < S; ++t) pos[size_t(b * S + t)] = t;
    std::vector<int64_t> drawn = ids.to(DType::I64).to_vector<int64_t>();
    std::copy(drawn.begin(), drawn.end(), pos.begin() + B * S);
    Tensor positions = Tensor::from_vector<int64_t>(pos, {P * B, S}).to(x.device());
    qh = rope(reshape(expand(unsqueeze(qh, 0), {P, B, H, S, hd}), {P * B, H, S, hd}), positions);
    kh = rope(reshape(expand(unsqueeze(kh, 0), {P, B, H, S, hd}), {P * B, H, S, hd}), positions);
  } else if (use_rope) {
    qh = rope(qh, ctx.positions);
    kh = rope(kh, ctx.positions);
  }
  qh = reshape(qh, {P, B, H, S, hd});
  kh = reshape(kh, {P, B, H, S, hd});

  // softmax(q k^T, mask) -> dropout -> @ v, [P, B, H, S, hd]: one fused kernel on a GPU
  // (scores never materialised), the composite of matmul/softmax/dropout on the CPU.
  // The mask broadcasts over paths and heads, v over paths. The dropout site draws
  // P*B*H*S*S numbers from the step's stream, as a dropout of the probabilities would.
  const bool drop = ctx.dropout_active() && dropout > 0.0;
  // The site's words are laid out as the global batch's [P, G, H, S, S]: a slice of it
  // (data parallelism) is contiguous per path, so a sliced batch with several paths
  // runs one attention per path, each at its own offset.
  const int64_t G = ctx.dropout_rows();
  const uint64_t block = uint64_t(H * S * S);
  uint64_t offset = 0;
  if (drop) {
    BET_CHECK(ctx.dropout_offset != nullptr,
              "dropout: a training context needs dropout_offset (sites would share random numbers)");
    offset = *ctx.dropout_offset;
    *ctx.dropout_offset += uint64_t(P * G) * block;
  }
  Tensor heads_out;
  if (!drop || (G == B && ctx.row0 == 0)) {
    heads_out = attention(qh, kh, unsqueeze(vh, 0), m, dropout, drop, ctx.seed, offset);
  } else {
    std::vector<Tensor> paths;
    for (int64_t p = 0; p < P; ++p)
      paths.push_back(attention(slice(qh, 0, p, p + 1), slice(kh, 0, p, p + 1), unsqueeze(vh, 0), m, dropout, true,
                                ctx.seed, offset + uint64_t(p * G + ctx.row0) * block));
    heads_out = P == 1 ? paths[0] : concat(paths, 0);
  }
  Tensor merged = reshape(permute(heads_out, {0, 1, 3, 2, 4}), {P, B, S, D});

  AttentionOutput res;
  if (k_paths == 0) {
    res.out = o->forward(select(merged, 0, 0));
    res.order_dispersion = Tensor::zeros({B}, x.dtype(), x.device());
    return res;
  }
  // The output O_p = W m_p + b is linear in the merged heads m_p, and the combination
  // (1 - w) O_std + w gamma mean_i O_pi_i weighs each position by a scalar, so it equals
  //   W ((1 - w) m_std + w gamma mean_i m_pi_i) + (1 - w + w gamma) b:
  // one projection of [B, S, D] instead of one per path (model.md's value, reassociated).
  Tensor w = unsqueeze(path_weight(ctx), 2);  // [B, S, 1]
  Tensor w_shift = mul(w, add(gamma, -1.0));  // (1 - w + w gamma) - 1
  if (!fold) {
    // pe is none, sinusoidal or learned: positions never enter attention, so every
    // permutation path computes exactly O_std and the combination is
    // (1 - w + w gamma) O_std. One path is computed instead of k + 1 equal ones.
    res.out = mul(o->forward(select(merged, 0, 0)), add(w_shift, 1.0));
    res.order_dispersion = Tensor::zeros({B}, x.dtype(), x.device());
    return res;
  }
  Tensor m_std = select(merged, 0, 0);
  Tensor m_perm = slice(merged, 0, 1, P);  // [k, B, S, D]
  Tensor m_mean = mean(m_perm, {0});
  Tensor mixed = add(mul(m_std, rsub(1.0, w)), mul(m_mean, mul(w, gamma)));
  res.out = o->forward(mixed);  // adds b once; the rest of (1 - w + w gamma) b below
  if (o->bias.defined()) res.out = add(res.out, mul(w_shift, o->bias));
  {
    // The paths' spread: O_pi_i - mean_i O_pi_i = W (m_pi_i - mean_i m_pi_i), the bias
    // cancels. A diagnostic, so a forward product only.
    autograd::NoGradGuard ng;
    Tensor dev = o->forward(sub(m_perm.detach(), unsqueeze(m_mean.detach(), 0)));
    if (o->bias.defined()) dev = sub(dev, o->bias.detach());
    Tensor sd = mean(sqrt(mean(mul(dev, dev), {0})), {2});  // [B, S]
    res.order_dispersion = div(sum(mul(sd, ctx.mask), {1}), ctx.lengths.to(sd.dtype()));
  }
  return res;
}

}  // namespace bet::model
