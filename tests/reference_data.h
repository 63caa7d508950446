// Reference values written by the PyTorch scripts in tests/reference/ and committed as
// JSON; the tests read them here, never running torch themselves. A tensor is stored as
// {"shape": [...], "data": [...]} in row-major order; null stands for -inf.
#pragma once
#include <doctest/doctest.h>

#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bet_config.h"
#include "engine/tensor.h"

namespace bet::testing {

// tests/reference/<name>, parsed once per process.
inline const nlohmann::json& reference_file(const std::string& name) {
  static std::map<std::string, nlohmann::json> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  std::ifstream f(std::string(BET_SOURCE_DIR) + "/tests/reference/" + name);
  REQUIRE_MESSAGE(f.good(), "missing tests/reference/" << name);
  return cache.emplace(name, nlohmann::json::parse(f)).first->second;
}

inline std::vector<double> ref_values(const nlohmann::json& t) {
  std::vector<double> v;
  v.reserve(t.at("data").size());
  for (const auto& e : t.at("data"))
    v.push_back(e.is_null() ? -std::numeric_limits<double>::infinity() : e.get<double>());
  return v;
}

inline Tensor ref_tensor(const nlohmann::json& t, DType dtype = DType::F64) {
  return Tensor::from_vector<double>(ref_values(t), t.at("shape").get<Shape>()).to(dtype);
}

}  // namespace bet::testing
