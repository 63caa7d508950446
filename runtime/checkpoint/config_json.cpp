#include "runtime/checkpoint/config_json.h"

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "engine/error.h"

namespace bet::runtime {

using nlohmann::json;
using model::ModelConfig;

json config_to_json(const ModelConfig& c) {
  return json{{"task", model::to_string(c.task)},
              {"layer", model::to_string(c.layer)},
              {"pe", model::to_string(c.pe)},
              {"vocab_size", c.vocab_size},
              {"d_model", c.d_model},
              {"heads", c.heads},
              {"layers", c.layers},
              {"max_len", c.max_len},
              {"k_permutations", c.k_permutations},
              {"n_harmonics", c.n_harmonics},
              {"branch_init", model::to_string(c.branch_init)},
              {"stats_features", model::to_string(c.stats_features)},
              {"num_classes", c.num_classes},
              {"dropout", c.dropout},
              {"tie_embeddings", c.tie_embeddings},
              {"inference_seed", c.inference_seed},
              {"labels", c.labels}};
}

namespace {

std::string type_of(const json& v) {
  if (v.is_number_integer()) return "an integer";
  if (v.is_number_float()) return "a number";
  return std::string("a ") + v.type_name();
}

int64_t get_int(const json& v, const std::string& f) {
  // A float such as 128.0 is refused too: a config is written by a program or a careful
  // person, and 1e3 vs 1000 ambiguity is not worth supporting.
  BET_CHECK(v.is_number_integer(), f, ": expected an integer, got ", type_of(v), " (", v.dump(), ")");
  if (v.is_number_unsigned())
    BET_CHECK(v.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max()), f, ": ", v.dump(),
              " is out of range");
  return v.get<int64_t>();
}

}  // namespace

ModelConfig config_from_json(const json& j, const std::string& where, bool partial) {
  const std::string pre = where.empty() ? "config" : where;
  BET_CHECK(j.is_object(), pre, ": the model config must be a JSON object, got ", type_of(j));
  ModelConfig c;
  // Files written before these fields existed hold model.md's layer, whatever today's
  // defaults are: stats_features changes what the forward computes.
  c.branch_init = model::BranchInit::Spec;
  c.stats_features = model::StatsFeatures::Counts;
  const std::string p = pre + ": config.";
  using Setter = std::function<void(const json&, const std::string&)>;
  const std::map<std::string, Setter> fields = {
      {"task",
       [&](const json& v, const std::string& f) {
         BET_CHECK(v.is_string(), f, ": expected a string (classify|lm), got ", type_of(v));
         c.task = model::parse_task(v.get<std::string>());
       }},
      {"layer",
       [&](const json& v, const std::string& f) {
         BET_CHECK(v.is_string(), f, ": expected a string (bet|standard), got ", type_of(v));
         c.layer = model::parse_layer(v.get<std::string>());
       }},
      {"pe",
       [&](const json& v, const std::string& f) {
         BET_CHECK(v.is_string(), f, ": expected a string (rope|sinusoidal|learned|none), got ", type_of(v));
         c.pe = model::parse_pe(v.get<std::string>());
       }},
      {"vocab_size", [&](const json& v, const std::string& f) { c.vocab_size = get_int(v, f); }},
      {"d_model", [&](const json& v, const std::string& f) { c.d_model = get_int(v, f); }},
      {"heads", [&](const json& v, const std::string& f) { c.heads = get_int(v, f); }},
      {"layers", [&](const json& v, const std::string& f) { c.layers = get_int(v, f); }},
      {"max_len", [&](const json& v, const std::string& f) { c.max_len = get_int(v, f); }},
      {"k_permutations", [&](const json& v, const std::string& f) { c.k_permutations = get_int(v, f); }},
      {"n_harmonics", [&](const json& v, const std::string& f) { c.n_harmonics = get_int(v, f); }},
      {"branch_init",  // absent in files written before it existed: they were trained from `spec`
       [&](const json& v, const std::string& f) {
         BET_CHECK(v.is_string(), f, ": expected a string (spec|zero), got ", type_of(v));
         c.branch_init = model::parse_branch_init(v.get<std::string>());
       }},
      {"stats_features",  // absent in files written before it existed: they read counts
       [&](const json& v, const std::string& f) {
         BET_CHECK(v.is_string(), f, ": expected a string (counts|mean), got ", type_of(v));
         c.stats_features = model::parse_stats_features(v.get<std::string>());
       }},
      {"num_classes", [&](const json& v, const std::string& f) { c.num_classes = get_int(v, f); }},
      {"dropout",
       [&](const json& v, const std::string& f) {
         BET_CHECK(v.is_number(), f, ": expected a number, got ", type_of(v));
         c.dropout = v.get<double>();
       }},
      {"tie_embeddings",
       [&](const json& v, const std::string& f) {
         BET_CHECK(v.is_boolean(), f, ": expected true or false, got ", type_of(v));
         c.tie_embeddings = v.get<bool>();
       }},
      {"inference_seed",
       [&](const json& v, const std::string& f) {
         BET_CHECK(v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0), f,
                   ": expected a non-negative integer, got ", type_of(v), " (", v.dump(), ")");
         c.inference_seed = v.get<uint64_t>();
       }},
      {"labels",
       [&](const json& v, const std::string& f) {
         BET_CHECK(v.is_array(), f, ": expected a list of strings, got ", type_of(v));
         BET_CHECK(v.size() <= size_t(model::bounds::kMaxClasses), f, ": ", v.size(),
                   " names is over the limit of ", model::bounds::kMaxClasses);
         c.labels.clear();
         for (size_t i = 0; i < v.size(); ++i) {
           BET_CHECK(v[i].is_string(), f, "[", i, "]: expected a string, got ", type_of(v[i]));
           c.labels.push_back(v[i].get<std::string>());
         }
       }},
  };

  for (const auto& [key, value] : j.items()) {
    auto it = fields.find(key);
    if (it == fields.end()) {
      std::string known;
      for (const auto& [k, s] : fields) known += (known.empty() ? "" : ", ") + k;
      fail(p, key, ": unknown field (known: ", known, ")");
    }
    const std::string f = p + key;
    try {
      it->second(value, f);
    } catch (const Error& e) {
      const std::string msg = e.what();
      // parse_task & co. already name the field ("task: 'x' is not one of ..."); add the place.
      if (msg.rfind(f, 0) == 0) throw;
      throw Error(p + msg);
    }
  }
  // Fields added after the format shipped may be absent: files written before them keep
  // the meaning they were written with (model.md's bet layer).
  static const std::set<std::string> optional_fields = {"branch_init", "stats_features"};
  if (!partial)
    for (const auto& [key, s] : fields)
      BET_CHECK(j.contains(key) || optional_fields.count(key), p, key, ": missing");

  // Every bound (model/config.cpp) and the parameter count, before anyone allocates by
  // this config: "x.bet: header: config.layers: 1000000000 is out of range [1, 256]".
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(pre + ": " + e.what());
  }
  return c;
}

bool config_equal(const ModelConfig& a, const ModelConfig& b) {
  return config_to_json(a) == config_to_json(b);
}

}  // namespace bet::runtime
