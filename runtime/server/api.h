// Request bodies of the JSON API: parsed with nlohmann::json under size and depth
// bounds, then checked field by field (types and ranges) and turned into the typed
// requests the predictor takes. Every refusal carries the status and error code the
// client will see.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/server/predictor.h"

namespace bet::server {

struct ApiError {
  int status = 400;
  std::string code;     // e.g. "bad_request", "empty_text"
  std::string message;  // names the field at fault
};

struct ApiLimits {
  size_t max_text_bytes = 1u << 20;
  size_t max_batch_items = 64;
  int default_mc_dropout = 0;
  int max_json_depth = 64;
  size_t max_json_values = 65536;
};

// nullopt and *err on malformed JSON, nesting deeper than max_json_depth, or more than
// max_json_values values (a small body of "[[[[..." or "[0,0,0,..." must not become
// a large tree).
std::optional<nlohmann::json> parse_json_body(std::string_view body, const ApiLimits& limits, ApiError* err);

bool parse_predict(const nlohmann::json& body, const ApiLimits& limits, PredictRequest* out, ApiError* err);
bool parse_batch(const nlohmann::json& body, const ApiLimits& limits, std::vector<PredictRequest>* out,
                 ApiError* err);
bool parse_generate(const nlohmann::json& body, const ApiLimits& limits, GenerateRequest* out, ApiError* err);

// Serialises a response body; invalid UTF-8 from the model side is replaced, not thrown.
std::string dump_json(const nlohmann::json& j);

}  // namespace bet::server
