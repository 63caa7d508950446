// What a checkpoint holds and how it maps onto a .bet file (bet_format.h).
//
// Header JSON:
//   {"format": "betctl-checkpoint", "format_version": 1, "kind": "training|milestone|production",
//    "config": {...every ModelConfig field...}, "tokenizer": {...Tokenizer::to_json...},
//    "training_state": {...}, "metrics": {...}, "card": {...},
//    "created_at": "2024-05-01T12:00:00Z",
//    "versions": {"betctl": "0.1.0", "onednn": "2.6.0", "zstd": "1.5.4"}}
// Tensors: the model's parameters under their state_dict names ("embed.weight", ...,
// "temperature"), then the optimizer state under "optim.<name>" ("optim.adamw.m.0"), so
// the two can never collide.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/optim/optimizer.h"
#include "model/config.h"
#include "runtime/checkpoint/bet_format.h"

namespace bet::model {
class BetModel;
}

namespace bet::runtime {

constexpr const char* kCheckpointFormat = "betctl-checkpoint";
constexpr int kCheckpointFormatVersion = 1;
constexpr const char* kOptimPrefix = "optim.";

struct Checkpoint {
  model::ModelConfig config;
  nlohmann::json tokenizer = nlohmann::json::object();
  NamedTensorList weights;   // model.named_parameters(), temperature included
  optim::StateList optimizer;  // empty for production
  // Opaque here: step, epoch, batch, RNG offsets, best metrics... written by the trainer.
  nlohmann::json training_state = nlohmann::json::object();
  nlohmann::json metrics = nlohmann::json::object();
  // Model card: name, version, description, created_at, data, metrics.
  nlohmann::json card = nlohmann::json::object();
  std::string kind = "training";  // training | milestone | production
  // "" (f32 weights) or "int8" (`betctl export --quantize int8`; production only): the
  // header's "quantize" field. In an int8 checkpoint every quantised Linear's
  // "<prefix>.weight" is replaced by "<prefix>.weight.int8" (i32 [out, ceil(in / 4)]: each
  // row's int8 values as bytes, little-endian, four to an i32, the row padded with zero
  // bytes) and "<prefix>.weight.scale" (f32 [out], the per-channel scales); biases
  // and every other tensor stay as they are. Files without the field are f32.
  std::string quantize;

  // Filled by load_checkpoint from the header (save_checkpoint stamps its own).
  std::string created_at;
  nlohmann::json versions = nlohmann::json::object();
};

bool is_checkpoint_kind(const std::string& kind);

// Snapshot of a model (and optionally its optimizer) as a checkpoint of `kind`. The
// tensors alias the live ones: save before the next step, or clone.
Checkpoint make_checkpoint(const model::BetModel& m, const optim::Optimizer* opt, const nlohmann::json& tokenizer,
                           const std::string& kind = "training");
// Builds the model `ck` describes, in its weights' dtype, and copies the weights in
// (apply_checkpoint); an int8 checkpoint's Linears get their int8 forms (the stored
// bytes and scales, exactly), their f32 weights the dequantised values. Every failure, out of memory included, is a bet::Error naming
// `file` ("x.bet: out of memory building the model (N parameters of 4 bytes)").
std::unique_ptr<model::BetModel> build_model(const Checkpoint& ck, const std::string& file);
// Copies the weights into `m` (every parameter must be present with its shape and
// dtype; no unknown names) and, when `opt` is given, the optimizer state. Errors name
// the tensor; nothing is copied when anything is wrong.
// An int8 checkpoint is refused when `opt` is given (int8 is for inference only).
void apply_checkpoint(const Checkpoint& ck, model::BetModel& m, optim::Optimizer* opt = nullptr);

// make_checkpoint of a model whose Linears are int8 stores them as int8 (and sets
// quantize); these are the pieces (tests, export).
constexpr const char* kInt8Suffix = ".int8";
constexpr const char* kScaleSuffix = ".scale";
// Packs an int8 weight [out, in] into the i32 [out, ceil(in / 4)] tensor stored, and back.
Tensor pack_int8_rows(const std::vector<int8_t>& wq, int64_t out, int64_t in);
std::vector<int8_t> unpack_int8_rows(const Tensor& packed, int64_t out, int64_t in, const std::string& where);

// The header JSON and tensor list save_checkpoint writes (exposed for tests and for
// `bench ckpt`, which times encoding without the disk).
nlohmann::json checkpoint_header(const Checkpoint& ck);
NamedTensorList checkpoint_tensors(const Checkpoint& ck);
// Parses the header and checks the tensors against it (see load_checkpoint).
Checkpoint checkpoint_from_contents(BetContents&& contents, const std::string& file);

// Atomic write (temp, fsync, rename, fsync dir). Errors name the file.
void save_checkpoint(const std::string& path, const Checkpoint& ck, int zstd_level = 1);
// Verifies every checksum (bet_format), then the header: format, version, kind, config
// (every bound of model/config.h), and that the tensor table is exactly what the config
// implies (every parameter with its shape, one floating dtype, nothing else; optimizer
// state per trainable parameter), all before any tensor is allocated or decompressed:
// what a file can make this allocate is bounded by the config's bounds.
Checkpoint load_checkpoint(const std::string& path);

// Everything `betctl inspect` prints: kind, config, parameter_count, tensors (name,
// dtype, shape), sizes (file bytes, raw bytes, raw fp32 bytes, ratio), training_state,
// metrics, card, created_at, versions. Also reads .safetensors files (by their content).
nlohmann::json inspect_checkpoint(const std::string& path);

// "2024-05-01T12:00:00Z", now.
std::string utc_timestamp();
// {"betctl", "onednn", "zstd"} versions of this build.
nlohmann::json library_versions();

}  // namespace bet::runtime
