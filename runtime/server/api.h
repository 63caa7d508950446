// Request bodies of the JSON API: the raw body of a /v1 route turned into the typed
// requests of runtime/inference/request.h, and every refusal turned into the status and
// error code the client sees. This file is the only place where an input problem gets
// an HTTP status.
//
// decode_job() runs on the server's intake thread, never on the event loop: parsing a
// body is linear in its size (runtime/io/bounded_json.h) but a 4 MiB body still takes
// milliseconds that other connections must not wait for.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/inference/request.h"

namespace bet::server {

struct ApiError {
  int status = 400;
  std::string code;     // e.g. "bad_request", "empty_text"
  std::string message;  // names the field at fault
  int retry_after_s = 0;  // > 0: sent as Retry-After (503)
};

// 422 for the text errors of product.md ("text empty or over the limit"), 413 for too
// many items or too much work, 400 for every other invalid input.
int status_for(inference::InputIssueKind kind);
ApiError api_error(const inference::InputIssue& issue);

// The request limits plus the bounds on the JSON itself.
struct ApiLimits {
  inference::RequestLimits request;
  int max_json_depth = 64;
  size_t max_json_values = 65536;  // raised to fit a full batch when max_batch_items needs more
};

// The JSON document of a body, with the limits enforced while parsing (a small body of
// "[[[[..." or "[0,0,0,..." never becomes a large tree). `batch`: the body of
// /v1/predict/batch, whose array past max_batch_items is 413 too_many_items; a string
// over max_text_bytes is 422 text_too_long on every route.
std::optional<nlohmann::json> parse_json_body(std::string_view body, const ApiLimits& limits, bool batch,
                                              ApiError* err);

// parse_json_body + inference::decode_*: the typed request, or *err.
bool parse_predict(std::string_view body, const ApiLimits& limits, inference::PredictRequest* out, ApiError* err);
bool parse_batch(std::string_view body, const ApiLimits& limits, std::vector<inference::PredictRequest>* out,
                 ApiError* err);
bool parse_generate(std::string_view body, const ApiLimits& limits, inference::GenerateRequest* out, ApiError* err);

// Serialises a response body; invalid UTF-8 from the model side is replaced, not thrown.
std::string dump_json(const nlohmann::json& j);

}  // namespace bet::server
