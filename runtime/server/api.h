// Request bodies of the JSON API: parsed with nlohmann::json under size and depth
// bounds, then checked field by field (types and ranges) and turned into the typed
// requests the predictor takes. Every refusal carries the status and error code the
// client will see.
#pragma once
#include <optional>
#include <stdexcept>
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

// Thrown by a predictor for a request it cannot answer as given (e.g. a text with no
// tokens): the server answers status with {"error": {code, message}} instead of 500.
class RequestError : public std::runtime_error {
 public:
  RequestError(int status, std::string code, const std::string& message)
      : std::runtime_error(message), status_(status), code_(std::move(code)) {}
  int status() const { return status_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string code_;
};

// The status of an error code a predictor puts in a result slot or a RequestError
// carries: 422 for the text errors of product.md ("text empty or over the limit"),
// 413 for too many items, 400 for every other invalid field.
int status_for_error_code(std::string_view code);

struct ApiLimits {
  size_t max_text_bytes = 1u << 20;
  size_t max_batch_items = 64;
  // Bound on "permutations" and "mc_dropout": the predictor's ensemble limit
  // (inference::kMaxMembers; a test keeps the two equal), so the API refuses what the
  // model would refuse, with the same 400.
  int max_members = 64;
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
