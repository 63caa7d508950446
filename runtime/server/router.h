// The fixed route table of `betctl serve`: which handler a (method, path) reaches,
// whether it needs an API key, and what 405 answers list in Allow.
#pragma once
#include <array>
#include <cstdint>
#include <string_view>

namespace bet::server {

enum class Handler : uint8_t {
  kHealth,
  kReady,
  kModel,
  kPredict,
  kPredictBatch,
  kMetrics,
  kGenerate,
  kOpenApi,
};

struct Route {
  std::string_view path;
  std::string_view method;  // "GET" (HEAD is accepted too) or "POST"
  Handler handler;
  bool needs_key;           // /v1/* and the aliases, when keys are configured
  std::string_view allow;   // the Allow header of a 405 on this path
};

// Every route, aliases included; index order is stable (used for metric labels).
const std::array<Route, 11>& routes();

enum class RouteResult : uint8_t { kFound, kNotFound, kMethodNotAllowed };

struct RouteMatch {
  RouteResult result = RouteResult::kNotFound;
  const Route* route = nullptr;  // set unless kNotFound
  size_t index = 0;              // into routes(); routes().size() for not found
  bool head = false;             // a HEAD request on a GET route
};

RouteMatch match_route(std::string_view method, std::string_view path);

}  // namespace bet::server
