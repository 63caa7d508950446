// The .bet container: one self-checking file holding a JSON header and named tensors.
//
//   "BETCKPT1" u32 version u32 reserved
//   u64 header_len | header JSON | u64 xxh64(header)
//   tensor frames: each a zstd frame (with content checksum) of the tensor's
//                  byte-plane-shuffled data (byte k of every element, then k+1, ...;
//                  floats compress far better with their exponents side by side)
//   index JSON: [{name, dtype, shape, offset, compressed_size, raw_size, checksum}]
//   footer: u64 index_offset | u64 index_len | u64 xxh64(index) | u64 xxh64(footer) | "BETFOOT1"
//
// Every integer is little-endian. Reading verifies every checksum and bound and
// rejects a damaged or truncated file with an error naming the file and the part.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace bet::runtime {

using NamedTensorList = std::vector<std::pair<std::string, Tensor>>;

struct BetContents {
  nlohmann::json header;
  NamedTensorList tensors;  // in file order
};

// Serialises to bytes (used by the writer, and by tests that damage the bytes).
std::string encode_bet(const nlohmann::json& header, const NamedTensorList& tensors, int zstd_level = 1);
BetContents decode_bet(std::string_view bytes, const std::string& name_for_errors);

// Writes atomically (temp file, fsync, rename, fsync dir).
void write_bet_file(const std::string& path, const nlohmann::json& header, const NamedTensorList& tensors,
                    int zstd_level = 1);
BetContents read_bet_file(const std::string& path);

// Byte-plane shuffle and its inverse (exposed for tests).
void shuffle_bytes(const uint8_t* in, uint8_t* out, size_t n_elems, size_t elem_size);
void unshuffle_bytes(const uint8_t* in, uint8_t* out, size_t n_elems, size_t elem_size);

}  // namespace bet::runtime
