#include "runtime/server/api.h"

#include <algorithm>

#include "runtime/io/bounded_json.h"

namespace bet::server {

using nlohmann::json;
using inference::InputIssue;
using inference::InputIssueKind;

int status_for(InputIssueKind kind) {
  switch (kind) {
    case InputIssueKind::kEmptyText:
    case InputIssueKind::kTextTooLong:
      return 422;
    case InputIssueKind::kTooManyItems:
    case InputIssueKind::kTooMuchWork:
      return 413;
    case InputIssueKind::kBadRequest:
    case InputIssueKind::kBadField:
    case InputIssueKind::kNotALanguageModel:
      return 400;
  }
  return 400;
}

ApiError api_error(const InputIssue& issue) {
  return ApiError{status_for(issue.kind), std::string(inference::issue_code(issue.kind)), issue.message};
}

std::optional<json> parse_json_body(std::string_view body, const ApiLimits& limits, bool batch, ApiError* err) {
  const size_t max_items = limits.request.max_batch_items;
  io::JsonLimits jl;
  jl.max_depth = limits.max_json_depth;
  // A full batch is its texts, the options and the object: never refused by the value
  // count before its item count is (413 too_many_items, whatever the size).
  jl.max_values = std::max(limits.max_json_values, max_items + 64);
  if (batch) jl.max_array_items = max_items;
  jl.max_string_bytes = limits.request.max_text_bytes;
  io::JsonError je;
  std::optional<json> j = io::parse_json(body, jl, &je);
  if (j) return j;
  if (err) {
    switch (je.kind) {
      case io::JsonError::Kind::kArrayTooLong:
        *err = api_error({InputIssueKind::kTooManyItems,
                          "'texts' has more items than the limit of " + std::to_string(max_items)});
        break;
      case io::JsonError::Kind::kStringTooLong:
        *err = api_error({InputIssueKind::kTextTooLong,
                          "a text is over the limit of " + std::to_string(limits.request.max_text_bytes) + " bytes"});
        break;
      case io::JsonError::Kind::kTooDeep:
        *err = ApiError{400, "bad_request", "JSON " + je.message};
        break;
      case io::JsonError::Kind::kTooManyValues:
        *err = ApiError{400, "bad_request", "JSON has " + je.message};
        break;
      case io::JsonError::Kind::kDuplicateKey:
        *err = ApiError{400, "bad_request", "JSON has a " + je.message};
        break;
      case io::JsonError::Kind::kSyntax:
        *err = ApiError{400, "bad_request", "body is not valid JSON: " + je.message};
        break;
    }
  }
  return std::nullopt;
}

namespace {

template <typename Decode>
bool parse_with(std::string_view body, const ApiLimits& limits, bool batch, ApiError* err, Decode decode) {
  std::optional<json> j = parse_json_body(body, limits, batch, err);
  if (!j) return false;
  InputIssue issue;
  if (decode(*j, &issue)) return true;
  if (err) *err = api_error(issue);
  return false;
}

}  // namespace

bool parse_predict(std::string_view body, const ApiLimits& limits, inference::PredictRequest* out, ApiError* err) {
  return parse_with(body, limits, false, err, [&](const json& j, InputIssue* issue) {
    return inference::decode_predict(j, limits.request, out, issue);
  });
}

bool parse_batch(std::string_view body, const ApiLimits& limits, std::vector<inference::PredictRequest>* out,
                 ApiError* err) {
  return parse_with(body, limits, true, err, [&](const json& j, InputIssue* issue) {
    return inference::decode_batch(j, limits.request, out, issue);
  });
}

bool parse_generate(std::string_view body, const ApiLimits& limits, inference::GenerateRequest* out, ApiError* err) {
  return parse_with(body, limits, false, err,
                    [&](const json& j, InputIssue* issue) { return inference::decode_generate(j, out, issue); });
}

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace bet::server
