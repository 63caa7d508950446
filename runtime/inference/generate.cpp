// Text generation for lm models: one full forward per new token over the last max_len
// tokens (no key/value cache yet), sampling from the next-token distribution with
// temperature, top-k and top-p, and a Philox stream keyed by the request's seed, so a
// seed fixes the text.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

#include "engine/random.h"
#include "runtime/inference/forward.h"
#include "runtime/inference/uncertainty.h"

namespace bet::inference {

namespace {
constexpr uint64_t kSampleTag = 0x696e662d73616d70ULL;  // "inf-samp"
constexpr int kDefaultMaxTokens = 64;
constexpr double kMaxCotLength = 512;  // model.md: optimal_length is clamped to [1, 512]
}  // namespace

nlohmann::json generate_text(const LoadedModel& L, const GenerateRequest& req, const RequestLimits& limits) {
  const model::BetModel& m = *L.model;
  const model::ModelConfig& cfg = m.config();
  if (!cfg.causal())
    throw InputError(InputIssueKind::kNotALanguageModel, "generate: the model is a classifier; only lm models generate");
  if (std::optional<InputIssue> issue = check_generate(req, limits)) throw InputError(std::move(*issue));

  std::vector<int32_t> seq;
  try {
    seq = L.tokenizer->encode(req.prompt);
  } catch (const std::exception& e) {
    throw InputError(InputIssueKind::kBadField, std::string("prompt: ") + e.what());
  }
  const size_t window = size_t(cfg.max_len - 1);  // BOS takes one position
  // Each new token costs one forward over the window (no key/value cache): bound the
  // whole generation before running any of it.
  auto check_budget = [&](int steps) {
    const int64_t len = std::min<int64_t>(int64_t(seq.size()) + 1 + steps, cfg.max_len);
    if (auto issue = check_cost(forward_cost(cfg, steps, len), limits,
                                "generating " + std::to_string(steps) + " tokens"))
      throw InputError(std::move(*issue));
  };
  std::vector<int32_t> row;
  auto next = [&]() {
    row.assign(1, runtime::kBos);
    const size_t from = seq.size() > window ? seq.size() - window : 0;
    row.insert(row.end(), seq.begin() + std::ptrdiff_t(from), seq.end());
    return std::move(forward_rows(m, {&row}, false)[0]);
  };

  int budget = req.max_tokens.value_or(kDefaultMaxTokens);
  std::optional<MemberOutput> first;
  if (req.cot_auto) {
    check_budget(1);
    first = next();
    if (!first->has_cot) throw InputError(InputIssueKind::kBadField, "cot: \"auto\" needs a model with bet layers");
    budget = int(std::clamp(std::round(first->cot_length), 1.0, kMaxCotLength));
  }
  check_budget(budget);
  const double T = req.temperature.value_or(m.temperature_value());
  const uint64_t key = mix_key({kSampleTag, req.seed.value_or(0)});

  std::vector<int32_t> out;
  std::string stop = "length";
  std::vector<size_t> idx;
  for (int step = 0; step < budget; ++step) {
    MemberOutput o = (step == 0 && first) ? *first : next();
    std::vector<double>& lg = o.logits;
    // The model never emits padding or a new sequence start.
    lg[size_t(runtime::kPad)] = -INFINITY;
    lg[size_t(runtime::kBos)] = -INFINITY;
    int32_t tok;
    if (T == 0) {
      tok = int32_t(std::max_element(lg.begin(), lg.end()) - lg.begin());
    } else {
      std::vector<double> p = softmax(lg, T);
      idx.resize(p.size());
      std::iota(idx.begin(), idx.end(), size_t(0));
      std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return p[a] > p[b]; });
      size_t keep = idx.size();
      if (req.top_k && *req.top_k > 0) keep = std::min(keep, size_t(*req.top_k));
      if (req.top_p && *req.top_p < 1) {
        double cum = 0;
        for (size_t i = 0; i < keep; ++i) {
          cum += p[idx[i]];
          if (cum >= *req.top_p) {
            keep = i + 1;
            break;
          }
        }
      }
      double z = 0;
      for (size_t i = 0; i < keep; ++i) z += p[idx[i]];
      auto r = philox4x32(key, uint64_t(step));
      const double u = uints_to_unit_double(r[0], r[1]) * z;
      double cum = 0;
      tok = int32_t(idx[keep - 1]);
      for (size_t i = 0; i < keep; ++i) {
        cum += p[idx[i]];
        if (u < cum) {
          tok = int32_t(idx[i]);
          break;
        }
      }
    }
    if (tok == runtime::kEos) {
      stop = "eos";
      break;
    }
    out.push_back(tok);
    seq.push_back(tok);
  }
  nlohmann::json j = {{"text", utf8_safe(L.tokenizer->decode(out))}, {"tokens", out.size()}, {"stop", stop}};
  j["cot_budget"] = req.cot_auto ? nlohmann::json(budget) : nlohmann::json(nullptr);
  return j;
}

}  // namespace bet::inference
