// Shared by the sanitizer builds of the .bet reader (test_bet_reader_asan.cpp and
// fuzz_bet_reader.cpp, both built by run_bet_reader_asan.sh): a sample file, and a
// "reseal" step that rebuilds a file around a given header, index and data with every
// checksum and the footer correct, so damage reaches the parsing and bounds checks
// behind the checksums (random flips alone almost never get past them).
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/checkpoint/bet_format.h"

namespace bet::fuzz {

// Several tensors of every stored dtype, a scalar and an empty one; all contiguous.
runtime::NamedTensorList sample_tensors();
std::string sample_file();

// The three parts of an encoded file (throws if `file` is not well formed).
struct BetParts {
  std::string header;  // JSON text
  std::string data;    // the tensor frames, from the end of the header to the index
  nlohmann::json index;  // offsets made relative to the start of `data`
};
BetParts split_bet(const std::string& file);

// Builds a file from parts with correct preamble, header checksum, footer and index
// checksum. Index offsets are relative to the data; when fix_frame_checksums is set,
// every entry whose offset and compressed_size lie inside the data (and are unsigned
// integers) gets the right frame checksum, so the frame itself is parsed.
std::string reseal(const std::string& header, const std::string& data, nlohmann::json index,
                   bool fix_frame_checksums);

}  // namespace bet::fuzz
