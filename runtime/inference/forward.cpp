#include "runtime/inference/forward.h"

#include <algorithm>

#include "engine/autograd.h"
#include "engine/random.h"
#include "runtime/tokenizer/tokenizer.h"

namespace bet::inference {

namespace {
constexpr uint64_t kDropoutTag = 0x696e662d64726f70ULL;  // "inf-drop"
constexpr int64_t kLogitBudget = int64_t(1) << 25;     // lm logits per forward (128 MiB of f32)
thread_local int64_t t_row_cap = 0;                      // ForwardRowCap; 0: none
}  // namespace

std::string utf8_safe(std::string_view s) {
  if (runtime::is_valid_utf8(s)) return std::string(s);
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const uint8_t c = uint8_t(s[i]);
    const size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (len > 0 && i + len <= s.size() && runtime::is_valid_utf8(s.substr(i, len))) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

ForwardRowCap::ForwardRowCap(int64_t max_rows) noexcept : prev_(t_row_cap) { t_row_cap = max_rows; }
ForwardRowCap::~ForwardRowCap() { t_row_cap = prev_; }

int64_t forward_token_budget(const model::BetModel& m) {
  const model::ModelConfig& cfg = m.config();
  if (cfg.task == model::Task::Classify) return kForwardTokenBudget;
  return std::max<int64_t>(1, std::min<int64_t>(kForwardTokenBudget, kLogitBudget / cfg.vocab_size));
}

bool forward_fits(const model::BetModel& m, int64_t rows, int64_t len) {
  // 4M scores (16 MiB of f32): about what stays in this class of CPU's L2 + L3. Measured
  // with `betctl bench serve` (256-token texts, 64 connections): one 64-row forward ran
  // 5x slower per request than single-row forwards.
  // A GPU has no such cliff short of its memory: 256M scores (1 GiB of f32).
  const int64_t kAttentionBudget = m.device().is_cpu() ? int64_t(1) << 22 : int64_t(1) << 28;
  const model::ModelConfig& cfg = m.config();
  const int64_t paths = cfg.layer == model::LayerKind::Bet && cfg.pe == model::PosEncoding::Rope
                            ? 1 + cfg.k_permutations
                            : 1;
  if (rows <= 1) return true;
  if (t_row_cap > 0 && rows > t_row_cap) return false;
  return rows * len <= forward_token_budget(m) && rows * paths * cfg.heads * len * len <= kAttentionBudget;
}

std::vector<MemberOutput> forward_rows(const model::BetModel& m, const std::vector<const std::vector<int32_t>*>& rows,
                                       bool mc_dropout) {
  const model::ModelConfig& cfg = m.config();
  const int64_t B = int64_t(rows.size());
  BET_CHECK(B > 0, "inference: no rows");
  int64_t S = 1;
  for (const auto* r : rows) {
    BET_CHECK(!r->empty() && int64_t(r->size()) <= cfg.max_len, "inference: a row has ", r->size(),
              " tokens (1..", cfg.max_len, " allowed)");
    S = std::max<int64_t>(S, int64_t(r->size()));
  }
  std::vector<int64_t> ids(static_cast<size_t>(B * S), runtime::kPad), lengths(static_cast<size_t>(B)),
      last(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const auto& r = *rows[size_t(b)];
    std::copy(r.begin(), r.end(), ids.begin() + b * S);
    lengths[size_t(b)] = int64_t(r.size());
    last[size_t(b)] = b * S + int64_t(r.size()) - 1;
  }

  autograd::NoGradGuard no_grad;
  const Device dev = m.device();
  model::SeqContext ctx = model::SeqContext::from_lengths(lengths, S, cfg.causal(), m.dtype(), dev);
  model::ForwardOptions opt;
  opt.temperature = 1.0;  // raw logits: each request applies its own temperature
  uint64_t offset = 0;
  if (mc_dropout && cfg.dropout > 0) {
    // Dropout sites on; the relabellings keep their inference keys (only `training`
    // switches them), so member k differs from the deterministic answer by its mask alone.
    ctx.mc_dropout = true;
    ctx.seed = mix_key({kDropoutTag, cfg.inference_seed});
    ctx.dropout_offset = &offset;
  }
  model::ForwardOutput out = m.forward(Tensor::from_vector<int64_t>(ids, {B, S}).to(dev), ctx, opt);

  Tensor logits = out.logits;
  if (cfg.task != model::Task::Classify) {
    const int64_t V = logits.size(2);
    logits = index_select(reshape(logits, {B * S, V}), 0, Tensor::from_vector<int64_t>(last, {B}).to(dev));
  }
  const int64_t C = logits.size(1);
  const std::vector<double> lv = logits.to_vector<double>();
  const std::vector<double> disp = out.attention_dispersion.to_vector<double>();
  std::vector<double> alpha, beta, pm, pv, cot;
  const model::LayerDiagnostics& d = out.layers.back();
  if (d.alpha.defined()) {
    alpha = model::at_last_valid(d.alpha, ctx).to_vector<double>();
    beta = model::at_last_valid(d.beta, ctx).to_vector<double>();
    pm = model::at_last_valid(d.posterior_mean, ctx).to_vector<double>();
    pv = model::at_last_valid(d.posterior_variance, ctx).to_vector<double>();
  }
  if (d.optimal_length.defined()) cot = model::at_last_valid(d.optimal_length, ctx).to_vector<double>();

  std::vector<MemberOutput> res(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    MemberOutput& o = res[size_t(b)];
    o.logits.assign(lv.begin() + b * C, lv.begin() + (b + 1) * C);
    o.attention_dispersion = disp[size_t(b)];
    if (!alpha.empty()) {
      o.has_beta = true;
      o.alpha = alpha[size_t(b)];
      o.beta = beta[size_t(b)];
      o.posterior_mean = pm[size_t(b)];
      o.posterior_variance = pv[size_t(b)];
    }
    if (!cot.empty()) {
      o.has_cot = true;
      o.cot_length = cot[size_t(b)];
    }
  }
  return res;
}

}  // namespace bet::inference
