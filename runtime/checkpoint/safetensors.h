// The safetensors format (Hugging Face), for moving weights to and from PyTorch:
//
//   u64 LE N | N bytes of JSON header, padded with spaces to 8-byte alignment |
//   byte buffer
//   header: {"__metadata__": {str: str}, name: {"dtype": "F32"|"F64"|"I32"|"I64"|"BF16"|"F16",
//            "shape": [...], "data_offsets": [begin, end]}, ...}
//   offsets are relative to the buffer start; tensors lie in order, with no gaps, and
//   cover the buffer exactly. Data is little-endian, row-major.
//
// Import checks all of that and names the file and tensor at fault.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/checkpoint/bet_format.h"
#include "runtime/checkpoint/checkpoint.h"

namespace bet::runtime {

using SafetensorsMetadata = std::map<std::string, std::string>;

struct SafetensorsContents {
  NamedTensorList tensors;  // in buffer order
  SafetensorsMetadata metadata;
};

// The safetensors reference implementation refuses headers above this size.
constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;
// Values in the header (each tensor entry takes about ten): 8M leaves room for the
// largest files while bounding what a hostile header can make the parser build.
constexpr size_t kMaxSafetensorsValues = size_t(1) << 23;

std::string encode_safetensors(const NamedTensorList& tensors, const SafetensorsMetadata& metadata = {});
SafetensorsContents decode_safetensors(const std::string& bytes, const std::string& name_for_errors);

// Atomic write (temp, fsync, rename, fsync dir).
void export_safetensors(const std::string& path, const NamedTensorList& tensors,
                        const SafetensorsMetadata& metadata = {});
SafetensorsContents import_safetensors(const std::string& path);

// A checkpoint's weights (no optimizer state) with metadata "format" = "betctl",
// "config", "tokenizer", "metrics", "card" (each a JSON text) and "kind".
void export_checkpoint_safetensors(const std::string& path, const Checkpoint& ck);

// Rebuilds a production checkpoint from a safetensors file. The config comes from
// `config` when given (`betctl import --config`, for files exported by PyTorch), else
// from the metadata; likewise the tokenizer (a byte tokenizer is assumed when neither
// says and the vocabulary is the byte tokenizer's 259). The tensors are checked against
// a model built from the config: every parameter present with its shape, no unknown
// names; a missing `temperature` is 1; f64/f16/bf16 weights are converted to f32.
Checkpoint import_checkpoint_safetensors(const std::string& path, const nlohmann::json* config = nullptr,
                                         const nlohmann::json* tokenizer = nullptr);

}  // namespace bet::runtime
