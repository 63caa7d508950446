// The OpenAPI 3.0 description of `betctl serve`, served at GET /openapi.json.
#pragma once
#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/inference/request.h"

namespace bet::server {

struct OpenApiOptions {
  std::string version = "0.0.0";   // info.version: the betctl version
  size_t max_batch_items = 64;
  size_t max_text_bytes = 1u << 20;
  int max_members = inference::RequestLimits::kMaxMembers;  // maximum of permutations and mc_dropout
  bool api_keys = false;           // mark /v1 routes as needing a bearer key
};

nlohmann::json openapi_document(const OpenApiOptions& options);

}  // namespace bet::server
