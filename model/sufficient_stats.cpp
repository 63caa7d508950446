#include "model/sufficient_stats.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace bet::model {

namespace {

// nn.ModuleList: children named "0", "1", ...
class ModuleList : public Module {
 public:
  template <typename M>
  void append(std::shared_ptr<M> m) {
    register_module(std::to_string(size_++), std::move(m));
  }

 private:
  int64_t size_ = 0;
};

Tensor as_dtype(const Tensor& t, DType dtype) { return t.dtype() == dtype ? t : t.to(dtype); }

void check_input(const Tensor& x, const SeqContext& ctx, int64_t d_model, const char* who) {
  BET_CHECK(x.dim() == 3 && x.size(2) == d_model, who, ": expected x [B, S, ", d_model, "], got ",
            shape_str(x.shape()));
  BET_CHECK(ctx.mask.defined() && ctx.mask.dim() == 2 && ctx.mask.size(0) == x.size(0) &&
                ctx.mask.size(1) == x.size(1),
            who, ": context mask ", ctx.mask.defined() ? shape_str(ctx.mask.shape()) : "undefined",
            " does not match x ", shape_str(x.shape()));
}

}  // namespace

Tensor context_mask(const SeqContext& ctx, DType dtype) { return unsqueeze(as_dtype(ctx.mask, dtype), 2); }

Tensor context_sum(const Tensor& v, const SeqContext& ctx) {
  Tensor masked = mul(v, context_mask(ctx, v.dtype()));
  // Causal contexts grow by one token per step: a prefix sum, never an S x S matrix.
  return ctx.causal ? cumsum(masked, 1) : sum(masked, {1}, true);
}

Tensor context_count(const SeqContext& ctx, DType dtype) {
  Tensor n = as_dtype(ctx.n_ctx, dtype);
  // Bidirectional n(t) = n_b at every position; one column is the whole story.
  if (!ctx.causal) n = slice(n, 1, 0, 1);
  return unsqueeze(clamp(n, 1.0, INFINITY), 2);
}

int64_t SufficientStatsEncoder::num_stats(int64_t d_model) {
  return std::max<int64_t>(3, int64_t(std::floor(std::log(double(d_model)))));
}

SufficientStatsEncoder::SufficientStatsEncoder(int64_t d, Generator& g, DType dtype, StatsFeatures feats)
    : d_model(d), m(num_stats(d)), features(feats) {
  BET_CHECK(d >= 2, "SufficientStatsEncoder: d_model must be at least 2, got ", d);
  prior = register_parameter("prior", Tensor::full({2}, std::log(std::exp(1.0) - 1.0), dtype));
  auto list = std::make_shared<ModuleList>();
  for (int64_t j = 0; j < m; ++j) {
    moment.push_back(std::make_shared<MLP2>(d, d / 2, 1, g, dtype));
    list->append(moment.back());
  }
  register_module("moment", list);
  count = register_module("count", std::make_shared<Linear>(d, m, g, true, Linear::Init::Default, dtype));
  beta_head = register_module("beta_head", std::make_shared<Linear>(d, 1, g, true, Linear::Init::Default, dtype));
  proj = register_module("proj", std::make_shared<Linear>(2 * m + 2, d, g, true, Linear::Init::Default, dtype));
  std::vector<double> eye(size_t(m * m), 0.0);
  for (int64_t j = 0; j < m; ++j) eye[size_t(j * m + j)] = 1.0;
  moment_block_ = Tensor::from_vector<double>(eye, {m, m, 1}).to(dtype);
}

StatsOutput SufficientStatsEncoder::forward(const Tensor& x, const SeqContext& ctx) const {
  check_input(x, ctx, d_model, "SufficientStatsEncoder");
  const int64_t B = x.size(0), S = x.size(1), h = d_model / 2;

  // Every per-token quantity that reads x (the m moment hidden layers, the m count
  // logits, the Beta logit) comes from one GEMM over a stacked weight.
  std::vector<const Linear*> first;
  std::vector<Tensor> w2, b2;
  for (const auto& f : moment) {
    first.push_back(f->fc1.get());
    w2.push_back(f->fc2->weight);  // [1, h]
    b2.push_back(f->fc2->bias);    // [1]
  }
  first.push_back(count.get());
  first.push_back(beta_head.get());
  Tensor z = fused_linear(first, x);  // [B, S, m*h + m + 1]
  auto parts = split(z, {m * h, m, 1}, 2);

  // Moment j's output layer reads only its own h hidden units: one GEMM against the
  // block-diagonal [m, m*h] weight (row j holds w2_j in columns j*h..(j+1)*h) reads the
  // hidden layer once, where a broadcast product and a sum over h would write and reread
  // an m*h-wide temporary per token, forward and backward.
  Tensor w2_block = reshape(mul(moment_block_, unsqueeze(concat(w2, 0), 0)), {m, m * h});  // [m, m*h]
  Tensor f = linear(relu(parts[0]), w2_block, concat(b2, 0));                     // [B, S, m]
  Tensor c = sigmoid(parts[1]);                                          // [B, S, m]
  Tensor p = sigmoid(parts[2]);                                          // [B, S, 1]

  // One aggregation over the context for all 2m + 2 channels; (1 - p) is summed as
  // its own channel so alpha + beta counts exactly the tokens the mask admits.
  Tensor agg = context_sum(concat({f, c, p, rsub(1.0, p)}, 2), ctx);
  Tensor n = context_count(ctx, x.dtype());
  auto a = split(agg, {2 * m, 1, 1}, 2);
  Tensor means = div(a[0], n);  // [mu, c / max(n, 1)]

  Tensor priors = softplus(prior);
  Tensor alpha = add(squeeze(a[1], 2), select(priors, 0, 0));
  Tensor beta = add(squeeze(a[2], 2), select(priors, 0, 1));

  Tensor total = add(alpha, beta);
  Tensor log_a = log(alpha), log_b = log(beta);
  if (features == StatsFeatures::Mean) {
    Tensor log_total = log(total);
    log_a = sub(log_a, log_total);  // log posterior mean
    log_b = sub(log_b, log_total);  // log (1 - posterior mean)
  }
  Tensor feats = concat({means, unsqueeze(log_a, 2), unsqueeze(log_b, 2)}, 2);
  Tensor stats = proj->forward(feats);

  StatsOutput out;
  out.posterior_mean = div(alpha, total);
  out.posterior_variance = div(mul(alpha, beta), mul(mul(total, total), add(total, 1.0)));
  out.alpha = alpha;
  out.beta = beta;
  out.stats = stats;
  if (!ctx.causal) {
    // The statistics were computed once per sequence; give each position its copy.
    out.stats = expand(stats, {B, S, d_model}).contiguous();
    for (Tensor* t : {&out.alpha, &out.beta, &out.posterior_mean, &out.posterior_variance})
      *t = expand(*t, {B, S}).contiguous();
  }
  return out;
}

}  // namespace bet::model
