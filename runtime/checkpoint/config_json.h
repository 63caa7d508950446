// ModelConfig <-> JSON, every field, as stored in checkpoint headers and accepted from
// `betctl import --config FILE`. Errors name the field ("config.d_model: ...") and the
// place the JSON came from, so a user can fix the file at fault.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "model/config.h"

namespace bet::runtime {

// Every field of the config, enums as their CLI spellings ("classify", "bet", "rope").
nlohmann::json config_to_json(const model::ModelConfig& c);

// Parses and validates (ModelConfig::validate plus labels/num_classes consistency).
// `where` prefixes every error (a file name, "checkpoint x.bet", ...). Unknown keys are
// errors (a typo must not silently fall back to a default). With `partial` a missing
// field keeps its default (hand-written configs); without it every field is required
// (checkpoint headers: a default that changes between versions must not change a model).
model::ModelConfig config_from_json(const nlohmann::json& j, const std::string& where = "config",
                                    bool partial = false);

// Field-by-field equality (ModelConfig has no operator==).
bool config_equal(const model::ModelConfig& a, const model::ModelConfig& b);

}  // namespace bet::runtime
