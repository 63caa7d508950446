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
//
// Nothing is allocated by what a file claims before the claim is checked: the header
// and index are parsed with limits (runtime/io/bounded_json.h), every index entry is
// validated (dtype, bounded shape, raw size, frame location and checksum), the caller's
// BetIndexCheck sees the whole table (a checkpoint checks it against its config), and
// only then are the tensors allocated and their frames decompressed, each into exactly
// the bytes its entry declares (a frame must state that size, and is never allowed to
// produce more).
#pragma once
#include <cstdint>
#include <functional>
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

// What the index declares for one tensor, after decode_bet has checked it.
struct BetIndexEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t raw_size;  // numel x dtype size
};

// Sees the header and the checked index before anything is allocated for the tensors;
// throws bet::Error to refuse the file (decode_bet adds nothing to its message).
using BetIndexCheck = std::function<void(const nlohmann::json& header, const std::vector<BetIndexEntry>& index)>;

// Bounds on what any stored file may declare (.bet and safetensors share the shape bounds).
constexpr size_t kMaxBetTensors = size_t(1) << 20;
constexpr uint64_t kMaxBetRawBytes = uint64_t(1) << 37;  // all tensors together: 128 GiB
constexpr size_t kMaxStoredDims = 16;
constexpr uint64_t kMaxStoredSpan = uint64_t(1) << 40;  // elements, counting a 0 dim as 1

// The shape of a stored tensor from its dims: at most kMaxStoredDims of them, and the
// product of max(d, 1) at most kMaxStoredSpan, so the element count and the strides fit
// easily even when a zero among huge dims makes the tensor empty. Throws bet::Error
// "<where>: shape ..." otherwise; sets *numel.
Shape checked_stored_shape(const std::vector<uint64_t>& dims, const std::string& where, uint64_t* numel);

// Serialises to bytes (used by the writer, and by tests that damage the bytes).
std::string encode_bet(const nlohmann::json& header, const NamedTensorList& tensors, int zstd_level = 1);
// Decodes the bytes of a whole file where they lie (a string, or a file mapping: see
// read_bet_file); nothing is copied but the tensors' decompressed contents. Every read
// is bounds-checked against bytes.size().
BetContents decode_bet(std::string_view bytes, const std::string& name_for_errors, const BetIndexCheck& check = {});

// Writes atomically (temp file, fsync, rename, fsync dir).
void write_bet_file(const std::string& path, const nlohmann::json& header, const NamedTensorList& tensors,
                    int zstd_level = 1);
// How read_bet_file gets the bytes. Map (the default): decode straight from a read-only
// mapping of the file (runtime/io/mapped_file.h; files that cannot be mapped are read).
// Read: read() the whole file into memory first (the old path, kept for bench ckpt's
// comparison).
enum class LoadMode { Map, Read };
// With Map, a file whose size or mtime changed during the decode is an error ("changed
// while being read"); see mapped_file.h for truncation in place (SIGBUS).
BetContents read_bet_file(const std::string& path, const BetIndexCheck& check = {}, LoadMode mode = LoadMode::Map);

// Byte-plane shuffle and its inverse (exposed for tests).
void shuffle_bytes(const uint8_t* in, uint8_t* out, size_t n_elems, size_t elem_size);
void unshuffle_bytes(const uint8_t* in, uint8_t* out, size_t n_elems, size_t elem_size);

}  // namespace bet::runtime
