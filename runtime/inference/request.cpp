#include "runtime/inference/request.h"

#include <cmath>
#include <cstdio>

namespace bet::inference {

using nlohmann::json;

std::string_view issue_code(InputIssueKind kind) {
  switch (kind) {
    case InputIssueKind::kBadRequest: return "bad_request";
    case InputIssueKind::kBadField: return "bad_field";
    case InputIssueKind::kEmptyText: return "empty_text";
    case InputIssueKind::kTextTooLong: return "text_too_long";
    case InputIssueKind::kTooManyItems: return "too_many_items";
    case InputIssueKind::kTooMuchWork: return "too_much_work";
    case InputIssueKind::kNotALanguageModel: return "not_a_language_model";
  }
  return "bad_request";
}

namespace {

bool set_issue(InputIssue* issue, InputIssueKind kind, std::string message) {
  if (issue) *issue = InputIssue{kind, std::move(message)};
  return false;
}

bool bad(InputIssue* issue, std::string message) {
  return set_issue(issue, InputIssueKind::kBadRequest, std::move(message));
}

std::optional<InputIssue> field_issue(std::string message) {
  return InputIssue{InputIssueKind::kBadField, std::move(message)};
}

// A field that is absent or null counts as not given.
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

// Integers only (3.0 is a float in JSON terms). A value outside int's range is kept as
// a saturated int so that check_* names it as out of range rather than wrapping.
bool get_int(const json& body, const char* name, std::optional<int>* out, InputIssue* issue) {
  const json* v = field(body, name);
  if (!v) return true;
  if (!v->is_number_integer()) return bad(issue, std::string("field '") + name + "' must be an integer");
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    *out = u > uint64_t(INT32_MAX) ? INT32_MAX : int(u);
  } else {
    const int64_t s = v->get<int64_t>();
    *out = s > INT32_MAX ? INT32_MAX : s < INT32_MIN ? INT32_MIN : int(s);
  }
  return true;
}

bool get_number(const json& body, const char* name, std::optional<double>* out, InputIssue* issue) {
  const json* v = field(body, name);
  if (!v) return true;
  if (!v->is_number()) return bad(issue, std::string("field '") + name + "' must be a number");
  *out = v->get<double>();
  return true;
}

bool get_string(const json& body, const char* name, std::string* out, InputIssue* issue) {
  const json* v = field(body, name);
  if (!v) return true;
  if (!v->is_string()) return bad(issue, std::string("field '") + name + "' must be a string");
  *out = v->get<std::string>();
  return true;
}

// The options shared by /v1/predict and /v1/predict/batch.
bool decode_options(const json& body, const RequestLimits& limits, PredictRequest* out, InputIssue* issue) {
  if (const json* v = field(body, "return_uncertainty")) {
    if (!v->is_boolean()) return bad(issue, "field 'return_uncertainty' must be a boolean");
    out->return_uncertainty = v->get<bool>();
  }
  std::optional<int> mc;
  if (!get_int(body, "permutations", &out->permutations, issue)) return false;
  if (!get_int(body, "mc_dropout", &mc, issue)) return false;
  if (!get_number(body, "temperature", &out->temperature, issue)) return false;
  out->mc_dropout = mc.value_or(limits.default_mc_dropout);
  out->signal_members = !out->permutations && !mc && limits.default_mc_dropout == 0;
  return true;
}

std::string range_text(double lo, double hi) {
  return "[" + json(lo).dump() + ", " + json(hi).dump() + "]";
}

std::optional<InputIssue> check_text(size_t bytes, const RequestLimits& limits, const std::string& what) {
  if (bytes == 0) return InputIssue{InputIssueKind::kEmptyText, what + " is empty"};
  if (bytes > limits.max_text_bytes)
    return InputIssue{InputIssueKind::kTextTooLong, what + " is " + std::to_string(bytes) +
                                                         " bytes, over the limit of " +
                                                         std::to_string(limits.max_text_bytes)};
  return std::nullopt;
}

}  // namespace

bool decode_predict(const json& body, const RequestLimits& limits, PredictRequest* out, InputIssue* issue) {
  if (!body.is_object()) return bad(issue, "body must be a JSON object");
  const json* text = field(body, "text");
  const json* chunks = field(body, "chunks");
  if (text && chunks) return bad(issue, "give either 'text' or 'chunks', not both");
  if (!text && !chunks) return bad(issue, "missing field 'text' (or 'chunks')");
  *out = PredictRequest{};
  if (text) {
    if (!text->is_string()) return bad(issue, "field 'text' must be a string");
    out->text = text->get<std::string>();
  } else {
    if (!chunks->is_array()) return bad(issue, "field 'chunks' must be an array of strings");
    out->chunks.reserve(chunks->size());
    for (const json& c : *chunks) {
      if (!c.is_string()) return bad(issue, "field 'chunks' must be an array of strings");
      out->chunks.push_back(c.get<std::string>());
    }
    if (chunks->empty()) return set_issue(issue, InputIssueKind::kEmptyText, "chunks is empty");
  }
  return decode_options(body, limits, out, issue);
}

bool decode_batch(const json& body, const RequestLimits& limits, std::vector<PredictRequest>* out,
                  InputIssue* issue) {
  if (!body.is_object()) return bad(issue, "body must be a JSON object");
  const json* texts = field(body, "texts");
  if (!texts) return bad(issue, "missing field 'texts'");
  if (!texts->is_array()) return bad(issue, "field 'texts' must be an array of strings");
  if (texts->empty()) return bad(issue, "field 'texts' is empty");
  if (texts->size() > limits.max_batch_items)
    return set_issue(issue, InputIssueKind::kTooManyItems,
                     "'texts' has " + std::to_string(texts->size()) + " items, over the limit of " +
                         std::to_string(limits.max_batch_items));
  PredictRequest options;
  if (!decode_options(body, limits, &options, issue)) return false;
  out->clear();
  out->reserve(texts->size());
  for (size_t i = 0; i < texts->size(); ++i) {
    const json& t = (*texts)[i];
    if (!t.is_string()) return bad(issue, "texts[" + std::to_string(i) + "] must be a string");
    out->push_back(options);
    out->back().text = t.get<std::string>();
  }
  return true;
}

bool decode_generate(const json& body, GenerateRequest* out, InputIssue* issue) {
  if (!body.is_object()) return bad(issue, "body must be a JSON object");
  *out = GenerateRequest{};
  if (!field(body, "prompt")) return bad(issue, "missing field 'prompt'");
  if (!get_string(body, "prompt", &out->prompt, issue)) return false;
  if (!get_int(body, "max_tokens", &out->max_tokens, issue)) return false;
  if (const json* cot = field(body, "cot")) {
    if (!cot->is_string() || cot->get_ref<const std::string&>() != "auto")
      return bad(issue, "field 'cot' must be \"auto\"");
    out->cot_auto = true;
  }
  if (!get_int(body, "top_k", &out->top_k, issue)) return false;
  if (!get_number(body, "temperature", &out->temperature, issue)) return false;
  if (!get_number(body, "top_p", &out->top_p, issue)) return false;
  if (const json* seed = field(body, "seed")) {
    if (!seed->is_number_integer() || (!seed->is_number_unsigned() && seed->get<int64_t>() < 0))
      return bad(issue, "field 'seed' must be a non-negative integer");
    out->seed = seed->get<uint64_t>();
  }
  return true;
}

std::optional<InputIssue> check_predict(const PredictRequest& req, const RequestLimits& limits) {
  constexpr int K = RequestLimits::kMaxMembers;
  if (req.permutations && (*req.permutations < 1 || *req.permutations > K))
    return field_issue("permutations: must be in [1, " + std::to_string(K) + "], got " +
                       std::to_string(*req.permutations));
  if (req.mc_dropout < 0 || req.mc_dropout > K)
    return field_issue("mc_dropout: must be in [0, " + std::to_string(K) + "], got " +
                       std::to_string(req.mc_dropout));
  if (req.temperature) {
    const double t = *req.temperature;
    // !(a <= t) also catches NaN.
    if (!(t >= RequestLimits::kMinTemperature && t <= RequestLimits::kMaxTemperature))
      return field_issue("temperature: must be in " +
                         range_text(RequestLimits::kMinTemperature, RequestLimits::kMaxTemperature) + ", got " +
                         json(t).dump());
  }
  if (req.chunks.empty()) return check_text(req.text.size(), limits, "text");
  size_t total = 0;
  for (const std::string& c : req.chunks) total += c.size();
  return check_text(total, limits, "chunks");
}

std::optional<InputIssue> check_generate(const GenerateRequest& req, const RequestLimits& limits) {
  if (auto t = check_text(req.prompt.size(), limits, "prompt")) return t;
  if (req.max_tokens && req.cot_auto) return field_issue("give either 'max_tokens' or 'cot', not both");
  constexpr int N = RequestLimits::kMaxGenerateTokens;
  if (req.max_tokens && (*req.max_tokens < 1 || *req.max_tokens > N))
    return field_issue("max_tokens: must be in [1, " + std::to_string(N) + "], got " +
                       std::to_string(*req.max_tokens));
  if (req.temperature) {
    const double t = *req.temperature;
    if (!(t == 0 || (t >= RequestLimits::kMinTemperature && t <= RequestLimits::kMaxTemperature)))
      return field_issue("temperature: must be 0 (greedy) or in " +
                         range_text(RequestLimits::kMinTemperature, RequestLimits::kMaxTemperature) + ", got " +
                         json(t).dump());
  }
  if (req.top_k && (*req.top_k < 0 || *req.top_k > (1 << 20)))
    return field_issue("top_k: must be in [0, 1048576], got " + std::to_string(*req.top_k));
  if (req.top_p && !(*req.top_p > 0 && *req.top_p <= 1))
    return field_issue("top_p: must be in (0, 1], got " + json(*req.top_p).dump());
  return std::nullopt;
}

ForwardCost forward_cost(const model::ModelConfig& cfg, int64_t rows, int64_t len) {
  const bool bet = cfg.layer == model::LayerKind::Bet;
  const double d = double(cfg.d_model);
  // Attention passes: the bet layer's permutation paths fold into attention under RoPE.
  const double paths = bet && cfg.pe == model::PosEncoding::Rope ? double(1 + cfg.k_permutations) : 1.0;
  // Weights a token meets per layer: projections 4d^2 and the 4x feed-forward 8d^2; the
  // bet layer's stats encoder, gates, CoT and debiasing add about 4d^2 more.
  const double layer_weights = (bet ? 16.0 : 12.0) * d * d;
  const double n = double(len);
  const double per_row = double(cfg.layers) * (2.0 * n * layer_weights + paths * 4.0 * n * n * d) +
                         2.0 * n * d * double(cfg.causal() ? cfg.vocab_size : cfg.num_classes);
  ForwardCost c;
  c.gflop = double(rows) * per_row / 1e9;
  c.row_attention_scores = int64_t(paths) * cfg.heads * len * len;
  return c;
}

std::optional<InputIssue> check_cost(const ForwardCost& cost, const RequestLimits& limits, const std::string& what) {
  if (cost.row_attention_scores > RequestLimits::kMaxRowAttentionScores)
    return InputIssue{InputIssueKind::kTooMuchWork,
                      what + " needs " + std::to_string(cost.row_attention_scores) +
                          " attention scores per row, over the limit of " +
                          std::to_string(RequestLimits::kMaxRowAttentionScores) + "; send a shorter text"};
  if (cost.gflop > limits.max_request_gflop) {
    char buf[160];
    std::snprintf(buf, sizeof buf, " costs an estimated %.0f GFLOP, over the limit of %.0f", cost.gflop,
                  limits.max_request_gflop);
    return InputIssue{InputIssueKind::kTooMuchWork,
                      what + buf + "; use fewer permutations/mc_dropout members, fewer tokens or a shorter text"};
  }
  return std::nullopt;
}

}  // namespace bet::inference
