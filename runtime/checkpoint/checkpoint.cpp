#include "runtime/checkpoint/checkpoint.h"

#include <oneapi/dnnl/dnnl.h>
#include <zstd.h>

#include <cmath>
#include <cstring>
#include <ctime>
#include <map>
#include <set>

#include "bet_config.h"
#include "engine/autograd.h"
#include "engine/quantized.h"
#include "engine/random.h"
#include "model/bet_model.h"
#include "runtime/checkpoint/config_json.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/bounded_json.h"

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

Tensor pack_int8_rows(const std::vector<int8_t>& wq, int64_t out, int64_t in) {
  BET_CHECK(int64_t(wq.size()) == out * in, "pack_int8_rows: ", wq.size(), " values for [", out, ", ", in, "]");
  const int64_t words = (in + 3) / 4;
  Tensor t = Tensor::zeros({out, words}, DType::I32);
  auto* dst = static_cast<uint8_t*>(t.raw_data());
  for (int64_t o = 0; o < out; ++o) std::memcpy(dst + o * words * 4, wq.data() + o * in, size_t(in));
  return t;
}

std::vector<int8_t> unpack_int8_rows(const Tensor& packed, int64_t out, int64_t in, const std::string& where) {
  const int64_t words = (in + 3) / 4;
  BET_CHECK(packed.dtype() == DType::I32 && (packed.shape() == Shape{out, words}), where, " is ",
            dtype_name(packed.dtype()), " ", shape_str(packed.shape()), ", an int8 weight [", out, ", ", in,
            "] is stored as i32 [", out, ", ", words, "]");
  Tensor c = packed.to(Device::cpu()).contiguous();
  const auto* src = static_cast<const uint8_t*>(c.raw_data());
  std::vector<int8_t> wq(size_t(out * in));
  for (int64_t o = 0; o < out; ++o) {
    std::memcpy(wq.data() + o * in, src + o * words * 4, size_t(in));
    for (int64_t k = in; k < words * 4; ++k)
      BET_CHECK(src[o * words * 4 + k] == 0, where, ": row ", o, " has non-zero padding (damaged)");
    for (int64_t k = 0; k < in; ++k)
      BET_CHECK(wq[size_t(o * in + k)] != -128, where, ": row ", o, " holds -128, outside the symmetric range [-127, 127] (damaged)");
  }
  return wq;
}

Checkpoint make_checkpoint(const model::BetModel& m, const optim::Optimizer* opt, const json& tokenizer,
                           const std::string& kind) {
  Checkpoint ck;
  ck.config = m.config();
  ck.tokenizer = tokenizer;
  ck.weights = m.named_parameters();
  if (model::has_int8(m)) {
    // Each int8 Linear's weight is stored as its int8 bytes and scales (checkpoint.h).
    std::map<std::string, const Int8Linear*> q;
    for (auto& [name, l] : model::named_linears(m))
      if (l->int8) q.emplace(name + ".weight", l->int8.get());
    NamedTensorList w;
    for (auto& [n, t] : ck.weights) {
      auto it = q.find(n);
      if (it == q.end()) {
        w.emplace_back(n, t);
        continue;
      }
      const Int8Linear& l = *it->second;
      w.emplace_back(n + kInt8Suffix, pack_int8_rows(l.weight(), l.out_features(), l.in_features()));
      w.emplace_back(n + kScaleSuffix, Tensor::from_vector(l.scale(), {l.out_features()}));
    }
    ck.weights = std::move(w);
    ck.quantize = "int8";
  }
  if (opt) ck.optimizer = opt->state();
  ck.kind = kind;
  return ck;
}

namespace {
void apply_f32(const Checkpoint& ck, model::BetModel& m, optim::Optimizer* opt);

// An int8 checkpoint: its int8 weights as the f32 (model dtype) values they stand for,
// and the int8 forms by Linear weight name.
struct Int8Parts {
  Checkpoint f32;  // weights only (the rest is not read)
  std::map<std::string, std::pair<std::vector<int8_t>, std::vector<float>>> int8;  // "<prefix>.weight" -> (wq, scale)
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Int8Parts split_int8(const Checkpoint& ck, DType dt) {
  Int8Parts out;
  out.f32.config = ck.config;
  out.f32.kind = ck.kind;
  std::map<std::string, const Tensor*> scales;
  for (const auto& [n, t] : ck.weights)
    if (ends_with(n, kScaleSuffix)) scales.emplace(n.substr(0, n.size() - std::strlen(kScaleSuffix)), &t);
  std::set<std::string> used;
  for (const auto& [n, t] : ck.weights) {
    if (ends_with(n, kScaleSuffix)) continue;
    if (!ends_with(n, kInt8Suffix)) {
      out.f32.weights.emplace_back(n, t);
      continue;
    }
    const std::string base = n.substr(0, n.size() - std::strlen(kInt8Suffix));
    auto it = scales.find(base);
    BET_CHECK(it != scales.end(), "checkpoint: int8 weight '", n, "' has no '", base, kScaleSuffix, "'");
    const Tensor& sc = *it->second;
    const int64_t o = sc.numel();
    BET_CHECK(sc.dtype() == DType::F32 && sc.dim() == 1 && t.dim() == 2 && t.size(0) == o, "checkpoint: '", base,
              kScaleSuffix, "' is ", dtype_name(sc.dtype()), " ", shape_str(sc.shape()), ", expected f32 [",
              t.dim() == 2 ? t.size(0) : 0, "]");
    used.insert(base);
    int64_t in = -1;
    for (const auto& p : model::parameter_specs(ck.config))
      if (p.name == base && p.shape.size() == 2) in = p.shape[1];
    BET_CHECK(in >= 1, "checkpoint: int8 weight '", n, "' is not a [out, in] parameter of the model");
    std::vector<int8_t> wq = unpack_int8_rows(t, o, in, "checkpoint: int8 weight '" + n + "'");
    std::vector<float> s = sc.to(Device::cpu()).contiguous().to_vector<float>();
    for (int64_t r = 0; r < o; ++r)
      BET_CHECK(std::isfinite(s[size_t(r)]) && s[size_t(r)] >= 0.f, "checkpoint: '", base, kScaleSuffix, "' row ", r,
                " is ", s[size_t(r)], " (a scale is finite and >= 0; damaged)");
    std::vector<float> deq(wq.size());
    for (int64_t r = 0; r < o; ++r)
      for (int64_t k = 0; k < in; ++k) deq[size_t(r * in + k)] = float(wq[size_t(r * in + k)]) * s[size_t(r)];
    out.f32.weights.emplace_back(base, Tensor::from_vector(deq, {o, in}).to(dt));
    out.int8.emplace(base, std::make_pair(std::move(wq), std::move(s)));
  }
  for (const auto& [base, t] : scales)
    BET_CHECK(used.count(base), "checkpoint: '", base, kScaleSuffix, "' has no '", base, kInt8Suffix, "'");
  return out;
}
}  // namespace

void apply_checkpoint(const Checkpoint& ck, model::BetModel& m, optim::Optimizer* opt) {
  if (ck.quantize.empty()) return apply_f32(ck, m, opt);
  BET_CHECK(ck.quantize == "int8", "checkpoint: quantize '", ck.quantize, "' is not supported (this build knows int8)");
  BET_CHECK(!opt, "checkpoint: an int8 (quantized) checkpoint is for inference only (predict, serve, eval); train "
            "or fine-tune from the f32 checkpoint it was exported from");
  DType dt = DType::F32;
  for (const auto& [n, p] : m.named_parameters())
    if (n == "embed.weight") dt = p.dtype();
  Int8Parts parts = split_int8(ck, dt);
  std::map<std::string, model::Linear*> linears;
  for (auto& [name, l] : model::named_linears(m)) linears.emplace(name + ".weight", l);
  for (const auto& [base, q] : parts.int8)
    BET_CHECK(linears.count(base), "checkpoint: int8 weight '", base, kInt8Suffix, "' is not a Linear layer's weight");
  apply_f32(parts.f32, m, nullptr);
  for (auto& [base, q] : parts.int8) {
    model::Linear* l = linears.at(base);
    std::vector<float> bias;
    if (l->bias.defined()) bias = l->bias.detach().to(Device::cpu()).to(DType::F32).contiguous().to_vector<float>();
    l->set_int8(std::make_shared<Int8Linear>(q.first, q.second, std::move(bias), l->out_features, l->in_features));
  }
}

namespace {
void apply_f32(const Checkpoint& ck, model::BetModel& m, optim::Optimizer* opt) {
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
}  // namespace

json checkpoint_header(const Checkpoint& ck) {
  json h{{"format", kCheckpointFormat},
              {"format_version", kCheckpointFormatVersion},
              {"kind", ck.kind},
              {"config", config_to_json(ck.config)},
              {"tokenizer", ck.tokenizer},
              {"training_state", ck.training_state.is_null() ? json::object() : ck.training_state},
              {"metrics", ck.metrics.is_null() ? json::object() : ck.metrics},
              {"card", ck.card.is_null() ? json::object() : ck.card},
              {"created_at", utc_timestamp()},
              {"versions", library_versions()}};
  if (!ck.quantize.empty()) {
    h["quantize"] = ck.quantize;
    h["quantization"] = {{"weights", "int8, symmetric, per output channel: '<name>.weight.int8' (i32 [out, ceil(in/4)], "
                                     "the row's int8 bytes, zero-padded) and '<name>.weight.scale' (f32 [out])"},
                         {"activations", "u8, asymmetric, dynamic per row"}};
  }
  return h;
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

namespace {

bool is_float(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16; }

// Every field of the header but the tensors; the config is validated (every bound).
Checkpoint checkpoint_from_header(const json& h, const std::string& file) {
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
  if (h.contains("quantize")) {
    BET_CHECK(h["quantize"].is_string(), file, ": header 'quantize' is not a string");
    ck.quantize = h["quantize"].get<std::string>();
    BET_CHECK(ck.quantize == "int8", file, ": header 'quantize' is '", ck.quantize,
              "'; this build reads int8 (or no field: f32)");
    BET_CHECK(ck.kind == "production", file, ": an int8 checkpoint must be a production checkpoint, not ", ck.kind);
  }
  return ck;
}

// Per-parameter optimizer state: AdamW keeps two moments per parameter, SGD one
// momentum buffer; no optimizer here keeps more.
constexpr int kMaxOptimizerSlots = 2;

// The index of "<optimizer>.<slot>.<i>" state (i a parameter index), or -1.
int64_t state_index(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos || dot + 1 == name.size() || name.size() - dot - 1 > 9) return -1;
  int64_t i = 0;
  for (size_t k = dot + 1; k < name.size(); ++k) {
    if (name[k] < '0' || name[k] > '9') return -1;
    i = i * 10 + (name[k] - '0');
  }
  return i;
}

// A checkpoint's tensor table must be exactly what its config implies, so that what a
// file declares is bounded by the config's bounds before anything is allocated: every
// parameter of the config's model once, with its shape, all in one floating dtype, and
// nothing else; optimizer state ("optim.*") only per trainable parameter (with its
// shape, at most kMaxOptimizerSlots tensors each) and one step count [P] of i64.
void check_tensor_table(const Checkpoint& ck, const std::vector<BetIndexEntry>& table, const std::string& file) {
  const std::vector<model::ParamSpec> specs = model::parameter_specs(ck.config);
  std::map<std::string, size_t> spec_of;  // name -> index in specs
  for (size_t i = 0; i < specs.size(); ++i) spec_of.emplace(specs[i].name, i);
  // The optimizer sees the trainable parameters, every one but temperature, in order.
  std::vector<const model::ParamSpec*> trainable;
  for (const auto& p : specs)
    if (p.name != "temperature") trainable.push_back(&p);

  std::set<std::string> seen;
  std::vector<bool> present(specs.size(), false);
  std::vector<int> slots(trainable.size(), 0);
  bool have_step = false;
  const BetIndexEntry* first_weight = nullptr;
  std::set<std::string> int8_seen, scale_seen;
  for (const BetIndexEntry& e : table) {
    const std::string where = file + ": tensor '" + e.name + "'";
    BET_CHECK(seen.insert(e.name).second, where, " appears twice");
    if (e.name.rfind(kOptimPrefix, 0) == 0) {
      BET_CHECK(ck.kind != "production", file, ": production checkpoint carries optimizer tensors (mislabelled)");
      const std::string n = e.name.substr(std::strlen(kOptimPrefix));
      if (n.size() > 5 && n.compare(n.size() - 5, 5, ".step") == 0) {
        BET_CHECK(!have_step, where, ": a second optimizer step count");
        BET_CHECK(e.dtype == DType::I64 && e.shape == Shape{int64_t(trainable.size())}, where, " is ",
                  dtype_name(e.dtype), " ", shape_str(e.shape), ", a step count is i64 [", trainable.size(), "]");
        have_step = true;
        continue;
      }
      const int64_t i = state_index(n);
      BET_CHECK(i >= 0 && i < int64_t(trainable.size()), where,
                " is neither per-parameter optimizer state ('<name>.<parameter index>', index below ",
                trainable.size(), ") nor a step count ('<name>.step')");
      const model::ParamSpec& p = *trainable[size_t(i)];
      BET_CHECK(e.shape == p.shape, where, " has shape ", shape_str(e.shape), ", parameter ", i, " ('", p.name,
                "') has ", shape_str(p.shape));
      BET_CHECK(is_float(e.dtype), where, " is ", dtype_name(e.dtype), "; optimizer state is floating point");
      BET_CHECK(++slots[size_t(i)] <= kMaxOptimizerSlots, where, ": more than ", kMaxOptimizerSlots,
                " optimizer tensors for parameter ", i, " ('", p.name, "')");
      continue;
    }
    if (!ck.quantize.empty() && (ends_with(e.name, kInt8Suffix) || ends_with(e.name, kScaleSuffix))) {
      const bool is_q = ends_with(e.name, kInt8Suffix);
      const std::string base = e.name.substr(0, e.name.size() - std::strlen(is_q ? kInt8Suffix : kScaleSuffix));
      auto it = spec_of.find(base);
      BET_CHECK(it != spec_of.end() && specs[it->second].shape.size() == 2 && base != "embed.weight" &&
                    base != "pos.weight",
                where, " is not the int8 form of a Linear weight of the config's model");
      const Shape& ps = specs[it->second].shape;
      if (is_q) {
        BET_CHECK(e.dtype == DType::I32 && (e.shape == Shape{ps[0], (ps[1] + 3) / 4}), where, " is ",
                  dtype_name(e.dtype), " ", shape_str(e.shape), ", the int8 form of ", shape_str(ps), " is i32 [",
                  ps[0], ", ", (ps[1] + 3) / 4, "]");
        int8_seen.insert(base);
      } else {
        BET_CHECK(e.dtype == DType::F32 && (e.shape == Shape{ps[0]}), where, " is ", dtype_name(e.dtype), " ",
                  shape_str(e.shape), ", int8 scales of ", shape_str(ps), " are f32 [", ps[0], "]");
        scale_seen.insert(base);
      }
      continue;
    }
    auto it = spec_of.find(e.name);
    BET_CHECK(it != spec_of.end(), where, " is not a parameter of the config's model (", ck.config.layers, " ",
              model::to_string(ck.config.layer), " layers, d_model ", ck.config.d_model, ")");
    const model::ParamSpec& p = specs[it->second];
    BET_CHECK(e.shape == p.shape, where, " has shape ", shape_str(e.shape), ", the config's model expects ",
              shape_str(p.shape));
    BET_CHECK(is_float(e.dtype), where, " is ", dtype_name(e.dtype), "; model weights are floating point");
    if (!first_weight) first_weight = &e;
    BET_CHECK(e.dtype == first_weight->dtype, where, " is ", dtype_name(e.dtype), " but '", first_weight->name,
              "' is ", dtype_name(first_weight->dtype), " (a model has one dtype)");
    present[it->second] = true;
  }
  for (const std::string& b : int8_seen) {
    BET_CHECK(scale_seen.count(b), file, ": tensor '", b, kInt8Suffix, "' has no '", b, kScaleSuffix, "'");
    BET_CHECK(!present[spec_of.at(b)], file, ": tensor '", b, "' is stored both as f32 and as int8");
    present[spec_of.at(b)] = true;
  }
  for (const std::string& b : scale_seen)
    BET_CHECK(int8_seen.count(b), file, ": tensor '", b, kScaleSuffix, "' has no '", b, kInt8Suffix, "'");
  for (size_t i = 0; i < specs.size(); ++i)
    BET_CHECK(present[i], file, ": tensor '", specs[i].name, "' of the config's model is missing");
}

std::vector<BetIndexEntry> table_of(const BetContents& c) {
  std::vector<BetIndexEntry> table;
  for (const auto& [n, t] : c.tensors) table.push_back({n, t.dtype(), t.shape(), uint64_t(t.nbytes())});
  return table;
}

// Moves the decoded tensors into a checkpoint whose header and table were checked.
Checkpoint with_tensors(Checkpoint&& ck, BetContents&& c) {
  for (auto& [n, t] : c.tensors) {
    if (n.rfind(kOptimPrefix, 0) == 0)
      ck.optimizer.emplace_back(n.substr(std::strlen(kOptimPrefix)), std::move(t));
    else
      ck.weights.emplace_back(n, std::move(t));
  }
  return std::move(ck);
}

// For decode_bet: refuses a file whose header or tensor table is wrong before any
// tensor is allocated; keeps the parsed header in *out.
BetIndexCheck checkpoint_check(const std::string& file, Checkpoint* out) {
  return [file, out](const json& header, const std::vector<BetIndexEntry>& table) {
    *out = checkpoint_from_header(header, file);
    check_tensor_table(*out, table, file);
  };
}

}  // namespace

Checkpoint checkpoint_from_contents(BetContents&& c, const std::string& file) {
  Checkpoint ck = checkpoint_from_header(c.header, file);
  check_tensor_table(ck, table_of(c), file);
  return with_tensors(std::move(ck), std::move(c));
}

std::unique_ptr<model::BetModel> build_model(const Checkpoint& ck, const std::string& file) {
  // The model is built in its weights' dtype (check_tensor_table made it one dtype).
  DType dt = DType::F32;
  for (const auto& [name, t] : ck.weights)
    if (name == "embed.weight") dt = t.dtype();
  std::unique_ptr<model::BetModel> m;
  try {
    Generator g(0);
    m = std::make_unique<model::BetModel>(ck.config, g, dt);
    apply_checkpoint(ck, *m);
  } catch (const std::bad_alloc&) {
    fail(file, ": out of memory building the model (", model::parameter_count(ck.config), " parameters of ",
         dtype_size(dt), " bytes)");
  } catch (const Error& e) {
    fail(file, ": building the model: ", e.what());
  }
  return m;
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

Checkpoint load_checkpoint(const std::string& path) {
  Checkpoint ck;
  BetContents c = read_bet_file(path, checkpoint_check(path, &ck));
  return with_tensors(std::move(ck), std::move(c));
}

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
    Checkpoint header;
    BetContents contents = decode_bet(bytes, path, checkpoint_check(path, &header));
    Checkpoint ck = with_tensors(std::move(header), std::move(contents));
    out["format"] = "bet";
    out["kind"] = ck.kind;
    if (!ck.quantize.empty()) out["quantize"] = ck.quantize;
    out["config"] = config_to_json(ck.config);
    out["tokenizer"] = ck.tokenizer.value("kind", "");
    // int8: the model's parameters, not the stored tensors' elements (four int8 to an i32).
    out["parameter_count"] = ck.quantize.empty() ? count(ck.weights) : model::parameter_count(ck.config);
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
      if (it == st.metadata.end()) return json();
      return io::parse_json(it->second, io::JsonLimits{}).value_or(json());
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
