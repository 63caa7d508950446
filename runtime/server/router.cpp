#include "runtime/server/router.h"

namespace bet::server {

const std::array<Route, 11>& routes() {
  static const std::array<Route, 11> table = {{
      {"/health", "GET", Handler::kHealth, false, "GET, HEAD"},
      {"/ready", "GET", Handler::kReady, false, "GET, HEAD"},
      {"/v1/model", "GET", Handler::kModel, true, "GET, HEAD"},
      {"/v1/predict", "POST", Handler::kPredict, true, "POST"},
      {"/v1/predict/batch", "POST", Handler::kPredictBatch, true, "POST"},
      {"/metrics", "GET", Handler::kMetrics, false, "GET, HEAD"},
      {"/v1/generate", "POST", Handler::kGenerate, true, "POST"},
      {"/openapi.json", "GET", Handler::kOpenApi, false, "GET, HEAD"},
      // Aliases kept for clients of the earlier API.
      {"/predict", "POST", Handler::kPredict, true, "POST"},
      {"/batch-predict", "POST", Handler::kPredictBatch, true, "POST"},
      {"/model-info", "GET", Handler::kModel, true, "GET, HEAD"},
  }};
  return table;
}

RouteMatch match_route(std::string_view method, std::string_view path) {
  const auto& table = routes();
  RouteMatch m;
  m.index = table.size();
  for (size_t i = 0; i < table.size(); ++i) {
    if (table[i].path != path) continue;
    m.route = &table[i];
    m.index = i;
    if (method == table[i].method) {
      m.result = RouteResult::kFound;
    } else if (method == "HEAD" && table[i].method == "GET") {
      m.result = RouteResult::kFound;
      m.head = true;
    } else {
      m.result = RouteResult::kMethodNotAllowed;
    }
    return m;
  }
  return m;
}

}  // namespace bet::server
