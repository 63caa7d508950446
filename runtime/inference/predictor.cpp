#include "runtime/inference/predictor.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

#include "engine/autograd.h"
#include "engine/random.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/config_json.h"
#include "runtime/inference/forward.h"
#include "runtime/inference/uncertainty.h"

namespace bet::inference {

using nlohmann::json;

namespace {

// Distinct leading tags keep these streams from sharing keys with any other
// mix_key user (the attention relabellings have their own tags).
constexpr uint64_t kOrderTag = 0x696e662d6f726472ULL;  // "inf-ordr"

// One request turned into model inputs.
struct Prepared {
  std::vector<std::vector<int32_t>> members;  // ids per member (lm: BOS first)
  bool orderings = false;
  bool truncated = false;
  bool want_uncertainty = true;
  int permutations = 1;
  int mc = 0;
  double temperature = 1.0;
  UncertaintySignal signal;  // the one the answer reports
};

std::vector<int32_t> encode_or_throw(const runtime::Tokenizer& tok, const std::string& text, const char* field) {
  try {
    return tok.encode(text);
  } catch (const std::exception& e) {
    throw InputError(InputIssueKind::kBadField, std::string(field) + ": " + e.what());
  }
}

// Throws InputError for a request that check_predict refuses or that would cost more
// than the limits allow on this model; otherwise the model's inputs. `signal` is the one
// the answer reports; its members run when the request names none.
Prepared prepare(const LoadedModel& L, const PredictRequest& req, const RequestLimits& limits,
                 const UncertaintySignal& signal) {
  if (std::optional<InputIssue> issue = check_predict(req, limits)) throw InputError(std::move(*issue));
  const model::ModelConfig& cfg = L.model->config();
  const bool signal_members = req.signal_members && !req.permutations && req.mc_dropout == 0;
  const int P = signal_members ? signal.permutations() : req.permutations.value_or(1);
  Prepared p;
  p.temperature = req.temperature ? *req.temperature : L.model->temperature_value();
  p.want_uncertainty = req.return_uncertainty;
  p.permutations = P;
  p.mc = signal_members ? signal.mc_dropout() : req.mc_dropout;
  p.orderings = P > 1;
  p.signal = signal;

  // Units: one per token, or one per chunk; `offsets` delimits them in `tokens`.
  std::vector<int32_t> tokens;
  std::vector<size_t> offsets{0};
  if (!req.chunks.empty()) {
    for (size_t i = 0; i < req.chunks.size(); ++i) {
      std::vector<int32_t> c = encode_or_throw(*L.tokenizer, req.chunks[i], "chunks");
      tokens.insert(tokens.end(), c.begin(), c.end());
      offsets.push_back(tokens.size());
    }
  } else {
    tokens = encode_or_throw(*L.tokenizer, req.text, "text");
    for (size_t i = 1; i <= tokens.size(); ++i) offsets.push_back(i);
  }
  if (tokens.empty())
    throw InputError(InputIssueKind::kEmptyText, req.chunks.empty() ? "text: has no tokens" : "chunks: have no tokens");

  // Truncate before ordering, so every member reads the same content. A classifier
  // keeps the beginning; a language model keeps the end (the context of the next token).
  const size_t limit = size_t(cfg.causal() ? cfg.max_len - 1 : cfg.max_len);
  size_t lo = 0, hi = tokens.size();
  if (tokens.size() > limit) {
    p.truncated = true;
    if (cfg.causal())
      lo = hi - limit;
    else
      hi = limit;
  }
  std::vector<std::pair<size_t, size_t>> units;  // [begin, end) in tokens, non-empty
  for (size_t u = 0; u + 1 < offsets.size(); ++u) {
    const size_t b = std::max(offsets[u], lo), e = std::min(offsets[u + 1], hi);
    if (b < e) units.emplace_back(b, e);
  }
  const int64_t n = int64_t(units.size());
  const int K = std::max({P, p.mc, 1});
  const int64_t row_len = int64_t(hi - lo) + (cfg.causal() ? 1 : 0);
  // Members the signal added are subject to the same bound as members asked for.
  if (auto issue = check_cost(forward_cost(cfg, K, row_len), limits,
                              "this request (" + std::to_string(K) + " members of " + std::to_string(row_len) +
                                  " tokens" +
                                  (signal_members && K > 1 ? ", the members of uncertainty signal " + signal.to_string()
                                                           : std::string()) +
                                  ")"))
    throw InputError(std::move(*issue));
  p.members.resize(size_t(K));
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int k = 0; k < K; ++k) {
    if (p.orderings && k > 0) {
      order = member_ordering(cfg.inference_seed, k, n);
    } else {
      std::iota(order.begin(), order.end(), int64_t(0));
    }
    std::vector<int32_t>& ids = p.members[size_t(k)];
    ids.reserve(hi - lo + 1);
    if (cfg.causal()) ids.push_back(runtime::kBos);
    for (int64_t u : order) {
      auto [b, e] = units[size_t(u)];
      ids.insert(ids.end(), tokens.begin() + std::ptrdiff_t(b), tokens.begin() + std::ptrdiff_t(e));
    }
  }
  return p;
}

}  // namespace

std::vector<int64_t> member_ordering(uint64_t inference_seed, int64_t k, int64_t n) {
  if (k == 0) {
    std::vector<int64_t> id(static_cast<size_t>(n));
    std::iota(id.begin(), id.end(), int64_t(0));
    return id;
  }
  Generator g(mix_key({kOrderTag, inference_seed, uint64_t(k), uint64_t(n)}));
  return g.permutation(n);
}

namespace {

std::string label_name(const model::ModelConfig& cfg, int64_t c) {
  return c < int64_t(cfg.labels.size()) ? cfg.labels[size_t(c)] : std::to_string(c);
}

// The fields /v1/predict answers for one request, from its members' outputs.
json answer_json(const LoadedModel& L, const Prepared& p, const std::vector<MemberOutput>& outs) {
  const model::ModelConfig& cfg = L.model->config();
  std::vector<std::vector<double>> probs;
  probs.reserve(outs.size());
  for (const auto& o : outs) probs.push_back(softmax(o.logits, p.temperature));
  const EnsembleSummary s = summarize_members(probs, p.orderings);
  json r = json::object();
  if (cfg.task == model::Task::Classify) {
    r["label"] = label_name(cfg, s.argmax);
    json pr = json::object();
    for (size_t c = 0; c < s.pbar.size(); ++c) pr[label_name(cfg, int64_t(c))] = s.pbar[c];
    r["probabilities"] = std::move(pr);
  } else {
    std::vector<int32_t> idx(s.pbar.size());
    std::iota(idx.begin(), idx.end(), 0);
    const size_t top = std::min(idx.size(), size_t(kTopTokens));
    std::partial_sort(idx.begin(), idx.begin() + std::ptrdiff_t(top), idx.end(), [&](int32_t a, int32_t b) {
      return s.pbar[size_t(a)] > s.pbar[size_t(b)] || (s.pbar[size_t(a)] == s.pbar[size_t(b)] && a < b);
    });
    json tops = json::array();
    for (size_t i = 0; i < top; ++i)
      tops.push_back({{"id", idx[i]}, {"text", utf8_safe(L.tokenizer->decode({idx[i]}))}, {"probability", s.pbar[size_t(idx[i])]}});
    r["label"] = utf8_safe(L.tokenizer->decode({int32_t(s.argmax)}));
    r["token_id"] = s.argmax;
    r["top_tokens"] = std::move(tops);
  }
  r["confidence"] = s.confidence;
  const MemberOutput& m0 = outs[0];
  if (p.want_uncertainty) {
    json u = ensemble_json(s);
    if (m0.has_beta) u["beta"] = beta_json(summarize_beta(m0.alpha, m0.beta, m0.posterior_mean, m0.posterior_variance));
    r["uncertainty"] = std::move(u);
    r["attention_dispersion"] = m0.attention_dispersion;
    // Read from the answer just built, so the score is the value the signal names in it.
    const std::optional<double> score = signal_score(p.signal, r, p.permutations, p.mc);
    r["uncertainty"]["signal"] = p.signal.to_string();
    r["uncertainty"]["score"] = score ? json(*score) : json(nullptr);
  }
  r["cot_length"] = m0.has_cot ? json(m0.cot_length) : json(nullptr);
  r["truncated"] = p.truncated;
  return r;
}

// Answers every prepared request. Deterministic requests share padded forwards (rows
// sorted by length to cut padding); each Monte Carlo request runs alone.
std::vector<json> run_prepared(const LoadedModel& L, const std::vector<const Prepared*>& reqs) {
  std::vector<std::vector<MemberOutput>> outs(reqs.size());
  std::vector<std::pair<size_t, size_t>> rows;  // (request, member) of the deterministic rows
  for (size_t i = 0; i < reqs.size(); ++i) {
    outs[i].resize(reqs[i]->members.size());
    if (reqs[i]->mc == 0)
      for (size_t k = 0; k < reqs[i]->members.size(); ++k) rows.emplace_back(i, k);
  }
  auto len = [&](const std::pair<size_t, size_t>& r) { return reqs[r.first]->members[r.second].size(); };
  std::stable_sort(rows.begin(), rows.end(), [&](const auto& a, const auto& b) { return len(a) < len(b); });
  for (size_t at = 0; at < rows.size();) {
    // Rows are sorted, so the chunk's padded length is its last row's length.
    size_t end = at + 1;
    while (end < rows.size() && forward_fits(*L.model, int64_t(end + 1 - at), int64_t(len(rows[end])))) ++end;
    std::vector<const std::vector<int32_t>*> ids;
    for (size_t r = at; r < end; ++r) ids.push_back(&reqs[rows[r].first]->members[rows[r].second]);
    std::vector<MemberOutput> o = forward_rows(*L.model, ids, false);
    for (size_t r = at; r < end; ++r) outs[rows[r].first][rows[r].second] = std::move(o[r - at]);
    at = end;
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (reqs[i]->mc == 0) continue;
    std::vector<const std::vector<int32_t>*> ids;
    for (const auto& m : reqs[i]->members) ids.push_back(&m);
    outs[i] = forward_rows(*L.model, ids, true);
  }
  std::vector<json> res;
  res.reserve(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) res.push_back(answer_json(L, *reqs[i], outs[i]));
  return res;
}

}  // namespace

std::shared_ptr<const LoadedModel> wrap_model(std::shared_ptr<const model::BetModel> m, const json& tokenizer_json,
                                              const json& card) {
  BET_CHECK(m != nullptr, "predictor: no model");
  auto L = std::make_shared<LoadedModel>();
  L->tokenizer = runtime::Tokenizer::from_json(tokenizer_json);
  const model::ModelConfig& cfg = m->config();
  BET_CHECK(L->tokenizer->vocab_size() <= cfg.vocab_size, "predictor: the tokenizer has ", L->tokenizer->vocab_size(),
            " ids but the model's vocabulary is ", cfg.vocab_size);
  L->model = std::move(m);
  const double T = L->model->temperature_value();
  L->info = {{"task", model::to_string(cfg.task)},
             {"layer", model::to_string(cfg.layer)},
             {"config", runtime::config_to_json(cfg)},
             {"parameter_count", L->model->parameter_count()},
             {"labels", cfg.labels},
             {"tokenizer", L->tokenizer->kind()},
             {"calibration", {{"temperature", T}, {"calibrated", T != 1.0}}},
             {"card", card.is_object() ? card : json::object()}};
  L->info["version"] = card.is_object() && card.contains("version") && card["version"].is_string()
                           ? card["version"].get<std::string>()
                           : std::string("unversioned");
  if (card.is_object() && card.contains("name") && card["name"].is_string()) L->info["name"] = card["name"];
  L->uncertainty = default_uncertainty_signal();
  L->info["uncertainty"] = {{"signal", L->uncertainty.to_string()}, {"source", "default"}};
  return L;
}

namespace {

// metrics.calibration.uncertainty as `betctl calibrate --uncertainty` stored it (with the
// signal checked against the model), or nullopt when the checkpoint stores no choice.
std::optional<UncertaintySignal> stored_uncertainty(const json& metrics, const model::ModelConfig& cfg) {
  if (!metrics.is_object() || !metrics.contains("calibration") || !metrics["calibration"].is_object() ||
      !metrics["calibration"].contains("uncertainty"))
    return std::nullopt;
  const json& stored = metrics["calibration"]["uncertainty"];
  BET_CHECK(stored.is_object() && stored.contains("signal"),
            "metrics.calibration.uncertainty: must be an object with a \"signal\"");
  UncertaintySignal s;
  try {
    s = stored["signal"].get<UncertaintySignal>();
  } catch (const Error& e) {
    fail("metrics.calibration.uncertainty.signal: ", e.what());
  }
  if (auto why = why_not_offered(s, cfg)) fail("metrics.calibration.uncertainty.signal: ", *why);
  return s;
}

}  // namespace

std::shared_ptr<const LoadedModel> load_model(const std::string& path, Device device) {
  runtime::Checkpoint ck = runtime::load_checkpoint(path);
  // In the weights' dtype; out of memory is an Error naming the file (checkpoint.h).
  std::shared_ptr<model::BetModel> m = runtime::build_model(ck, path);
  m->to(device);
  m->eval();
  std::shared_ptr<const LoadedModel> base;
  try {
    base = wrap_model(m, ck.tokenizer, ck.card);
  } catch (const std::exception& e) {
    throw Error(path + ": " + e.what());
  }
  auto L = std::make_shared<LoadedModel>(*base);
  L->path = path;
  L->info["path"] = path;
  L->info["kind"] = ck.kind;
  L->info["metrics"] = ck.metrics;
  L->info["created_at"] = ck.created_at;
  L->info["versions"] = ck.versions;
  L->info["device"] = device.str();
  try {
    if (std::optional<UncertaintySignal> s = stored_uncertainty(ck.metrics, L->model->config())) {
      L->uncertainty = *s;
      L->info["uncertainty"] = ck.metrics["calibration"]["uncertainty"];
      L->info["uncertainty"]["source"] = "calibration";
    }
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  return L;
}

ModelPredictor::ModelPredictor(const std::string& path, Device device) : device_(device) { reload(path); }

ModelPredictor::ModelPredictor(std::shared_ptr<const LoadedModel> loaded) : loaded_(std::move(loaded)) {
  BET_CHECK(loaded_ != nullptr, "predictor: no model");
  path_ = loaded_->path;
  device_ = loaded_->model->device();
}

std::shared_ptr<const LoadedModel> ModelPredictor::current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return loaded_;
}

bool ModelPredictor::ready() { return current() != nullptr; }

json ModelPredictor::model_info() {
  auto L = current();
  if (!L) return json{{"error", "no model loaded"}};
  json info = L->info;
  std::lock_guard<std::mutex> lock(mu_);
  if (uncertainty_override_)
    info["uncertainty"] = {{"signal", uncertainty_override_->to_string()}, {"source", "command line"}};
  return info;
}

std::optional<std::string> ModelPredictor::override_uncertainty(const UncertaintySignal& signal) {
  std::lock_guard<std::mutex> lock(mu_);
  if (loaded_)
    if (auto why = why_not_offered(signal, loaded_->model->config())) return why;
  uncertainty_override_ = signal;
  return std::nullopt;
}

UncertaintySignal ModelPredictor::uncertainty_signal() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (uncertainty_override_) return *uncertainty_override_;
  return loaded_ ? loaded_->uncertainty : default_uncertainty_signal();
}

static std::shared_ptr<const LoadedModel> need(const std::shared_ptr<const LoadedModel>& L) {
  BET_CHECK(L != nullptr, "predictor: no model loaded");
  return L;
}

void ModelPredictor::set_limits(const RequestLimits& limits) {
  std::lock_guard<std::mutex> lock(mu_);
  limits_ = limits;
}

RequestLimits ModelPredictor::limits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return limits_;
}

UncertaintySignal ModelPredictor::signal_for(const LoadedModel& L) const {
  std::lock_guard<std::mutex> lock(mu_);
  return uncertainty_override_ ? *uncertainty_override_ : L.uncertainty;
}

json ModelPredictor::predict(const PredictRequest& req) {
  auto L = need(current());
  const WorkerArena::Scope arena = worker_arena_.enter(L->model);
  const Prepared p = prepare(*L, req, limits(), signal_for(*L));
  return run_prepared(*L, {&p})[0];
}

std::vector<PredictOutcome> ModelPredictor::predict_batch(const std::vector<PredictRequest>& requests) {
  auto L = need(current());
  const WorkerArena::Scope arena = worker_arena_.enter(L->model);
  const RequestLimits lim = limits();
  const UncertaintySignal signal = signal_for(*L);
  std::vector<PredictOutcome> res(requests.size());
  std::vector<Prepared> prepared;
  std::vector<size_t> slot;
  prepared.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    try {
      prepared.push_back(prepare(*L, requests[i], lim, signal));
      slot.push_back(i);
    } catch (const InputError& e) {
      res[i].issue = e.issue();
    }
  }
  std::vector<const Prepared*> ptrs;
  for (const auto& p : prepared) ptrs.push_back(&p);
  std::vector<json> answered = run_prepared(*L, ptrs);
  for (size_t j = 0; j < slot.size(); ++j) res[slot[j]].answer = std::move(answered[j]);
  return res;
}

void ModelPredictor::prepare_worker(size_t max_batch) {
  auto L = current();
  // Rows: the members the uncertainty signal gives each item of a full batch (more run
  // as more forwards); Monte Carlo members: the signal's or --default-mc-dropout.
  const UncertaintySignal signal = uncertainty_signal();
  const int64_t rows = int64_t(std::max<size_t>(max_batch, 1)) * std::max(1, signal.permutations());
  const int mc = std::max(signal.mc_dropout(), limits().default_mc_dropout);
  worker_arena_.start({rows, mc}, L ? L->model : nullptr);
  // What one request frees outside the arena, the next reuses: no page handed back
  // between requests (process-wide, so only where a model worker asks for it).
  platform::keep_freed_memory_resident();
}

bool ModelPredictor::can_generate() {
  auto L = current();
  return L && L->model->config().causal();
}

json ModelPredictor::generate(const GenerateRequest& req) {
  auto L = need(current());
  const WorkerArena::Scope arena = worker_arena_.enter(L->model);
  return generate_text(*L, req, limits());
}

void ModelPredictor::reload(const std::string& path) {
  // Built aside: a bad file throws here and the serving model is untouched.
  std::shared_ptr<const LoadedModel> fresh = load_model(path, device_);
  std::lock_guard<std::mutex> lock(mu_);
  if (uncertainty_override_)
    if (auto why = why_not_offered(*uncertainty_override_, fresh->model->config()))
      throw Error(path + ": --uncertainty " + *why);
  loaded_ = std::move(fresh);
  path_ = path;
}

bool ModelPredictor::reload(std::string* why) {
  std::string path;
  {
    std::lock_guard<std::mutex> lock(mu_);
    path = path_;
  }
  // Any failure, out of memory included, leaves the serving model in place.
  try {
    BET_CHECK(!path.empty(), "predictor: no model file to reload");
    reload(path);
    return true;
  } catch (const std::bad_alloc&) {
    if (why) *why = path + ": out of memory while loading the model";
  } catch (const std::exception& e) {
    if (why) *why = e.what();
  }
  return false;
}

}  // namespace bet::inference
