#include "runtime/checkpoint/checkpoint.h"

#include <oneapi/dnnl/dnnl.h>
#include <zstd.h>

#include <cstring>
#include <ctime>
#include <map>
#include <set>

#include "bet_config.h"
#include "engine/autograd.h"
#include "model/bet_model.h"
#include "runtime/checkpoint/config_json.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/io/atomic_file.h"

namespace bet::runtime {

using nlohmann::json;

bool is_checkpoint_kind(const std::string& kind) {
  return kind == "training" || kind == "milestone" || kind == "production";
}

std::string utc_timestamp() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json library_versions() {
  const dnnl_version_t* dv = dnnl_version();
  return json{{"betctl", BET_VERSION},
              {"onednn", std::to_string(dv->major) + "." + std::to_string(dv->minor) + "." + std::to_string(dv->patch)},
              {"zstd", ZSTD_versionString()}};
}

Checkpoint make_checkpoint(const model::BetModel& m, const optim::Optimizer* opt, const json& tokenizer,
                           const std::string& kind) {
  Checkpoint ck;
  ck.config = m.config();
  ck.tokenizer = tokenizer;
  ck.weights = m.named_parameters();
  if (opt) ck.optimizer = opt->state();
  ck.kind = kind;
  return ck;
}

void apply_checkpoint(const Checkpoint& ck, model::BetModel& m, optim::Optimizer* opt) {
  // Validate everything first, so a mismatched checkpoint leaves the model untouched.
  std::map<std::string, const Tensor*> given;
  for (const auto& [n, t] : ck.weights)
    BET_CHECK(given.emplace(n, &t).second, "checkpoint: weight '", n, "' appears twice");
  auto params = m.named_parameters();
  for (const auto& [n, p] : params) {
    auto it = given.find(n);
    BET_CHECK(it != given.end(), "checkpoint: weight '", n, "' is missing (checkpoint of a different model?)");
    const Tensor& t = *it->second;
    BET_CHECK(t.shape() == p.shape(), "checkpoint: weight '", n, "' has shape ", shape_str(t.shape()),
              ", the model expects ", shape_str(p.shape()));
    BET_CHECK(t.dtype() == p.dtype(), "checkpoint: weight '", n, "' is ", dtype_name(t.dtype()),
              ", the model is ", dtype_name(p.dtype()));
  }
  if (given.size() != params.size()) {
    std::set<std::string> known;
    for (const auto& [n, p] : params) known.insert(n);
    for (const auto& [n, t] : ck.weights)
      BET_CHECK(known.count(n), "checkpoint: weight '", n, "' is not a parameter of this model");
  }
  if (opt) {
    BET_CHECK(!ck.optimizer.empty(), "checkpoint: has no optimizer state (a ", ck.kind,
              " checkpoint cannot resume training)");
    std::map<std::string, const Tensor*> st;
    for (const auto& [n, t] : ck.optimizer)
      BET_CHECK(st.emplace(n, &t).second, "checkpoint: optimizer tensor '", n, "' appears twice");
    const auto mine = opt->state();
    for (const auto& [n, t] : mine) {
      auto it = st.find(n);
      BET_CHECK(it != st.end(), "checkpoint: optimizer tensor '", n, "' is missing (different optimizer?)");
      BET_CHECK(it->second->shape() == t.shape() && it->second->dtype() == t.dtype(), "checkpoint: optimizer tensor '",
                n, "' is ", dtype_name(it->second->dtype()), " ", shape_str(it->second->shape()), ", expected ",
                dtype_name(t.dtype()), " ", shape_str(t.shape()));
    }
    BET_CHECK(st.size() == mine.size(), "checkpoint: ", st.size(), " optimizer tensors, this optimizer has ",
              mine.size(), " (different optimizer?)");
  }
  autograd::NoGradGuard ng;
  m.load_parameters(ck.weights, true);
  if (opt) opt->load_state(ck.optimizer);
}

json checkpoint_header(const Checkpoint& ck) {
  return json{{"format", kCheckpointFormat},
              {"format_version", kCheckpointFormatVersion},
              {"kind", ck.kind},
              {"config", config_to_json(ck.config)},
              {"tokenizer", ck.tokenizer},
              {"training_state", ck.training_state.is_null() ? json::object() : ck.training_state},
              {"metrics", ck.metrics.is_null() ? json::object() : ck.metrics},
              {"card", ck.card.is_null() ? json::object() : ck.card},
              {"created_at", utc_timestamp()},
              {"versions", library_versions()}};
}

NamedTensorList checkpoint_tensors(const Checkpoint& ck) {
  BET_CHECK(is_checkpoint_kind(ck.kind), "checkpoint: unknown kind '", ck.kind,
            "' (expected training, milestone or production)");
  BET_CHECK(ck.kind != "production" || ck.optimizer.empty(), "checkpoint: a production checkpoint carries no optimizer state");
  BET_CHECK(!ck.weights.empty(), "checkpoint: no weights");
  BET_CHECK(ck.tokenizer.is_object() && ck.tokenizer.contains("kind"),
            "checkpoint: tokenizer must be a Tokenizer::to_json object (with 'kind')");
  std::set<std::string> seen;
  NamedTensorList out;
  out.reserve(ck.weights.size() + ck.optimizer.size());
  for (const auto& [n, t] : ck.weights) {
    BET_CHECK(n.rfind(kOptimPrefix, 0) != 0, "checkpoint: weight name '", n, "' uses the reserved prefix '",
              kOptimPrefix, "'");
    BET_CHECK(seen.insert(n).second, "checkpoint: weight '", n, "' appears twice");
    out.emplace_back(n, t);
  }
  for (const auto& [n, t] : ck.optimizer) {
    BET_CHECK(seen.insert(kOptimPrefix + n).second, "checkpoint: optimizer tensor '", n, "' appears twice");
    out.emplace_back(kOptimPrefix + n, t);
  }
  return out;
}

Checkpoint checkpoint_from_contents(BetContents&& c, const std::string& file) {
  const json& h = c.header;
  BET_CHECK(h.is_object(), file, ": header is not a JSON object");
  BET_CHECK(h.contains("format"), file, ": not a betctl checkpoint (header has no 'format')");
  BET_CHECK(h["format"] == kCheckpointFormat, file, ": not a betctl checkpoint (format ", h["format"].dump(), ")");
  BET_CHECK(h.contains("format_version") && h["format_version"].is_number_integer(), file,
            ": header has no integer 'format_version'");
  const int64_t fv = h["format_version"].get<int64_t>();
  BET_CHECK(fv >= 1 && fv <= kCheckpointFormatVersion, file, ": checkpoint format_version ", fv,
            " is not supported (this build reads 1..", kCheckpointFormatVersion, ")");

  Checkpoint ck;
  BET_CHECK(h.contains("kind") && h["kind"].is_string(), file, ": header has no 'kind'");
  ck.kind = h["kind"].get<std::string>();
  BET_CHECK(is_checkpoint_kind(ck.kind), file, ": unknown checkpoint kind '", ck.kind,
            "' (expected training, milestone or production)");
  BET_CHECK(h.contains("config"), file, ": header has no model 'config'");
  ck.config = config_from_json(h["config"], file + ": header");
  BET_CHECK(h.contains("tokenizer") && h["tokenizer"].is_object() && h["tokenizer"].contains("kind"), file,
            ": header has no 'tokenizer' (with 'kind')");
  ck.tokenizer = h["tokenizer"];
  for (const char* key : {"training_state", "metrics", "card", "versions"})
    BET_CHECK(!h.contains(key) || h[key].is_object(), file, ": header '", key, "' is not a JSON object");
  ck.training_state = h.value("training_state", json::object());
  ck.metrics = h.value("metrics", json::object());
  ck.card = h.value("card", json::object());
  ck.versions = h.value("versions", json::object());
  ck.created_at = h.contains("created_at") && h["created_at"].is_string() ? h["created_at"].get<std::string>() : "";

  std::set<std::string> seen;
  for (auto& [n, t] : c.tensors) {
    BET_CHECK(seen.insert(n).second, file, ": tensor '", n, "' appears twice");
    if (n.rfind(kOptimPrefix, 0) == 0)
      ck.optimizer.emplace_back(n.substr(std::strlen(kOptimPrefix)), std::move(t));
    else
      ck.weights.emplace_back(n, std::move(t));
  }
  BET_CHECK(!ck.weights.empty(), file, ": checkpoint holds no weights");
  BET_CHECK(ck.kind != "production" || ck.optimizer.empty(), file,
            ": production checkpoint carries optimizer tensors (mislabelled)");
  return ck;
}

void save_checkpoint(const std::string& path, const Checkpoint& ck, int zstd_level) {
  autograd::NoGradGuard ng;  // contiguous() on a parameter must not record a graph node
  NamedTensorList tensors;
  try {
    tensors = checkpoint_tensors(ck);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  write_bet_file(path, checkpoint_header(ck), tensors, zstd_level);
}

Checkpoint load_checkpoint(const std::string& path) { return checkpoint_from_contents(read_bet_file(path), path); }

json inspect_checkpoint(const std::string& path) {
  const std::string bytes = read_file(path);
  json out;
  out["file"] = path;
  uint64_t raw = 0, fp32 = 0;
  auto describe = [&](const NamedTensorList& ts, const std::string& prefix) {
    json list = json::array();
    for (const auto& [n, t] : ts) {
      list.push_back({{"name", prefix + n}, {"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}});
      raw += t.nbytes();
      fp32 += uint64_t(t.numel()) * 4;
    }
    return list;
  };
  auto count = [](const NamedTensorList& ts) {
    int64_t n = 0;
    for (const auto& [name, t] : ts) n += t.numel();
    return n;
  };
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), "BETCKPT1", 8) == 0) {
    Checkpoint ck = checkpoint_from_contents(decode_bet(bytes, path), path);
    out["format"] = "bet";
    out["kind"] = ck.kind;
    out["config"] = config_to_json(ck.config);
    out["tokenizer"] = ck.tokenizer.value("kind", "");
    out["parameter_count"] = count(ck.weights);
    json tensors = describe(ck.weights, "");
    for (auto& e : describe(ck.optimizer, kOptimPrefix)) tensors.push_back(e);
    out["tensors"] = tensors;
    out["optimizer_tensors"] = ck.optimizer.size();
    out["training_state"] = ck.training_state;
    out["metrics"] = ck.metrics;
    out["card"] = ck.card;
    out["created_at"] = ck.created_at;
    out["versions"] = ck.versions;
  } else {
    SafetensorsContents st = decode_safetensors(bytes, path);
    out["format"] = "safetensors";
    out["kind"] = "safetensors";
    out["parameter_count"] = count(st.tensors);
    out["tensors"] = describe(st.tensors, "");
    out["metadata"] = st.metadata;
    auto meta_json = [&](const char* key) {
      auto it = st.metadata.find(key);
      return it == st.metadata.end() ? json() : json::parse(it->second, nullptr, false);
    };
    if (json c = meta_json("config"); c.is_object()) out["config"] = c;
    if (json c = meta_json("metrics"); c.is_object()) out["metrics"] = c;
    if (json c = meta_json("card"); c.is_object()) out["card"] = c;
  }
  out["sizes"] = {{"file_bytes", bytes.size()},
                  {"raw_bytes", raw},
                  {"raw_fp32_bytes", fp32},
                  {"ratio_vs_fp32", fp32 ? double(bytes.size()) / double(fp32) : 0.0}};
  return out;
}

}  // namespace bet::runtime
