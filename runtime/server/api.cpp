#include "runtime/server/api.h"

#include <cmath>

namespace bet::server {

using nlohmann::json;

namespace {

bool set_error(ApiError* err, int status, std::string code, std::string message) {
  if (err) {
    err->status = status;
    err->code = std::move(code);
    err->message = std::move(message);
  }
  return false;
}

bool bad(ApiError* err, std::string message) { return set_error(err, 400, "bad_request", std::move(message)); }

// A field that is absent or null counts as not given.
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

bool get_int(const json& body, const char* name, int64_t lo, int64_t hi, std::optional<int64_t>* out,
             ApiError* err) {
  const json* v = field(body, name);
  if (!v) return true;
  // 3.0 is a float in JSON terms; an integer field takes only integers.
  if (!v->is_number_integer())
    return bad(err, std::string("field '") + name + "' must be an integer");
  // Unsigned values past INT64_MAX must not wrap into range.
  bool out_of_range = v->is_number_unsigned() ? v->get<uint64_t>() > static_cast<uint64_t>(hi) ||
                                                    static_cast<int64_t>(v->get<uint64_t>()) < lo
                                              : (v->get<int64_t>() < lo || v->get<int64_t>() > hi);
  if (out_of_range)
    return bad(err, std::string("field '") + name + "' must be between " + std::to_string(lo) + " and " +
                        std::to_string(hi));
  *out = v->get<int64_t>();
  return true;
}

// lo_open: the lower bound itself is excluded.
bool get_number(const json& body, const char* name, double lo, bool lo_open, double hi,
                std::optional<double>* out, ApiError* err) {
  const json* v = field(body, name);
  if (!v) return true;
  if (!v->is_number()) return bad(err, std::string("field '") + name + "' must be a number");
  double d = v->get<double>();
  if (!std::isfinite(d) || d < lo || (lo_open && d == lo) || d > hi) {
    std::string msg = std::string("field '") + name + "' must be in ";
    msg += lo_open ? '(' : '[';
    msg += json(lo).dump();
    msg += ", ";
    msg += json(hi).dump();
    msg += ']';
    return bad(err, std::move(msg));
  }
  *out = d;
  return true;
}

bool check_text(size_t bytes, const ApiLimits& limits, const std::string& what, ApiError* err) {
  if (bytes == 0) return set_error(err, 422, "empty_text", what + " is empty");
  if (bytes > limits.max_text_bytes)
    return set_error(err, 422, "text_too_long",
                     what + " is " + std::to_string(bytes) + " bytes, over the limit of " +
                         std::to_string(limits.max_text_bytes));
  return true;
}

// The options shared by /v1/predict and /v1/predict/batch.
bool parse_options(const json& body, const ApiLimits& limits, PredictRequest* out, ApiError* err) {
  if (const json* v = field(body, "return_uncertainty")) {
    if (!v->is_boolean()) return bad(err, "field 'return_uncertainty' must be a boolean");
    out->return_uncertainty = v->get<bool>();
  }
  std::optional<int64_t> k, mc;
  if (!get_int(body, "permutations", 1, limits.max_members, &k, err)) return false;
  if (!get_int(body, "mc_dropout", 0, limits.max_members, &mc, err)) return false;
  std::optional<double> t;
  if (!get_number(body, "temperature", 0.0, true, 1000.0, &t, err)) return false;
  if (k) out->permutations = static_cast<int>(*k);
  out->mc_dropout = mc ? static_cast<int>(*mc) : limits.default_mc_dropout;
  out->temperature = t;
  return true;
}

// Deepest bracket nesting outside strings. Checked before parsing because the parser
// keeps a stack entry per open bracket even for values the callback drops.
int max_nesting(std::string_view s, int limit) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > limit) return depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return 0;
}

}  // namespace

int status_for_error_code(std::string_view code) {
  if (code == "empty_text" || code == "text_too_long") return 422;
  if (code == "too_many_items") return 413;
  return 400;
}

std::optional<json> parse_json_body(std::string_view body, const ApiLimits& limits, ApiError* err) {
  size_t values = 0;
  bool too_deep = max_nesting(body, limits.max_json_depth) > limits.max_json_depth, too_many = false;
  if (too_deep) {
    set_error(err, 400, "bad_request", "JSON nested deeper than " + std::to_string(limits.max_json_depth));
    return std::nullopt;
  }
  // The callback sees every event; refusing (returning false) drops that value, so a
  // hostile body is walked but never stored.
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json&) {
    if (event == json::parse_event_t::key || event == json::parse_event_t::object_end ||
        event == json::parse_event_t::array_end)
      return !too_deep && !too_many;
    if (depth > limits.max_json_depth) too_deep = true;
    if (++values > limits.max_json_values) too_many = true;
    return !too_deep && !too_many;
  };
  json j = json::parse(body.begin(), body.end(), cb, /*allow_exceptions=*/false);
  if (too_deep) {
    set_error(err, 400, "bad_request", "JSON nested deeper than " + std::to_string(limits.max_json_depth));
    return std::nullopt;
  }
  if (too_many) {
    set_error(err, 400, "bad_request", "JSON has more than " + std::to_string(limits.max_json_values) + " values");
    return std::nullopt;
  }
  if (j.is_discarded()) {
    set_error(err, 400, "bad_request", "body is not valid JSON");
    return std::nullopt;
  }
  return j;
}

bool parse_predict(const json& body, const ApiLimits& limits, PredictRequest* out, ApiError* err) {
  if (!body.is_object()) return bad(err, "body must be a JSON object");
  const json* text = field(body, "text");
  const json* chunks = field(body, "chunks");
  if (text && chunks) return bad(err, "give either 'text' or 'chunks', not both");
  if (!text && !chunks) return bad(err, "missing field 'text' (or 'chunks')");
  *out = PredictRequest{};
  if (text) {
    if (!text->is_string()) return bad(err, "field 'text' must be a string");
    const std::string& s = text->get_ref<const std::string&>();
    if (!check_text(s.size(), limits, "text", err)) return false;
    out->text = s;
  } else {
    if (!chunks->is_array()) return bad(err, "field 'chunks' must be an array of strings");
    if (chunks->empty()) return set_error(err, 422, "empty_text", "chunks is empty");
    size_t total = 0;
    for (const json& c : *chunks) {
      if (!c.is_string()) return bad(err, "field 'chunks' must be an array of strings");
      total += c.get_ref<const std::string&>().size();
    }
    if (!check_text(total, limits, "chunks", err)) return false;
    out->chunks.reserve(chunks->size());
    for (const json& c : *chunks) out->chunks.push_back(c.get<std::string>());
  }
  return parse_options(body, limits, out, err);
}

bool parse_batch(const json& body, const ApiLimits& limits, std::vector<PredictRequest>* out, ApiError* err) {
  if (!body.is_object()) return bad(err, "body must be a JSON object");
  const json* texts = field(body, "texts");
  if (!texts) return bad(err, "missing field 'texts'");
  if (!texts->is_array()) return bad(err, "field 'texts' must be an array of strings");
  if (texts->empty()) return bad(err, "field 'texts' is empty");
  if (texts->size() > limits.max_batch_items)
    return set_error(err, 413, "too_many_items",
                     "'texts' has " + std::to_string(texts->size()) + " items, over the limit of " +
                         std::to_string(limits.max_batch_items));
  PredictRequest options;
  if (!parse_options(body, limits, &options, err)) return false;
  for (size_t i = 0; i < texts->size(); ++i) {
    const json& t = (*texts)[i];
    if (!t.is_string()) return bad(err, "texts[" + std::to_string(i) + "] must be a string");
    if (!check_text(t.get_ref<const std::string&>().size(), limits, "texts[" + std::to_string(i) + "]", err))
      return false;
  }
  out->clear();
  out->reserve(texts->size());
  for (const json& t : *texts) {
    out->push_back(options);
    out->back().text = t.get<std::string>();
  }
  return true;
}

bool parse_generate(const json& body, const ApiLimits& limits, GenerateRequest* out, ApiError* err) {
  if (!body.is_object()) return bad(err, "body must be a JSON object");
  *out = GenerateRequest{};
  const json* prompt = field(body, "prompt");
  if (!prompt) return bad(err, "missing field 'prompt'");
  if (!prompt->is_string()) return bad(err, "field 'prompt' must be a string");
  if (!check_text(prompt->get_ref<const std::string&>().size(), limits, "prompt", err)) return false;
  out->prompt = prompt->get<std::string>();

  std::optional<int64_t> max_tokens, top_k;
  if (!get_int(body, "max_tokens", 1, 65536, &max_tokens, err)) return false;
  if (const json* cot = field(body, "cot")) {
    if (!cot->is_string() || cot->get_ref<const std::string&>() != "auto")
      return bad(err, "field 'cot' must be \"auto\"");
    if (max_tokens) return bad(err, "give either 'max_tokens' or 'cot', not both");
    out->cot_auto = true;
  }
  if (max_tokens) out->max_tokens = static_cast<int>(*max_tokens);
  if (!get_int(body, "top_k", 0, 1 << 20, &top_k, err)) return false;
  if (top_k) out->top_k = static_cast<int>(*top_k);
  if (!get_number(body, "temperature", 0.0, false, 1000.0, &out->temperature, err)) return false;
  if (!get_number(body, "top_p", 0.0, true, 1.0, &out->top_p, err)) return false;
  if (const json* seed = field(body, "seed")) {
    if (!seed->is_number_integer() || (!seed->is_number_unsigned() && seed->get<int64_t>() < 0))
      return bad(err, "field 'seed' must be a non-negative integer");
    out->seed = seed->get<uint64_t>();
  }
  return true;
}

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace bet::server
