// Tokenizers map text to ids and back. Ids 0, 1, 2 are PAD, BOS and EOS for every
// tokenizer (model.md); a tokenizer's own ids start at 3. A tokenizer serialises to a
// JSON object that travels inside every checkpoint, so a model file is self-contained.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace bet::runtime {

constexpr int32_t kPad = 0, kBos = 1, kEos = 2, kFirstTokenId = 3;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;
  // Ids of the text, without BOS/EOS. Text must be valid UTF-8 for spm (bytes for byte).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Text of ids; specials are skipped.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  // Size of the id space, specials included.
  virtual int64_t vocab_size() const = 0;
  virtual nlohmann::json to_json() const = 0;

  static std::unique_ptr<Tokenizer> from_json(const nlohmann::json& j);
};

// Bytes 0..255 map to ids 3..258. Needs no training.
std::unique_ptr<Tokenizer> make_byte_tokenizer();
// A SentencePiece model file (any existing .model); its piece i becomes id 3 + i.
std::unique_ptr<Tokenizer> load_spm_tokenizer(const std::string& model_path);
// Trains a unigram SentencePiece model of `vocab_size` pieces on the texts and returns
// it (also writing `model_path` when not empty).
std::unique_ptr<Tokenizer> train_spm_tokenizer(const std::vector<std::string>& texts, int vocab_size,
                                               const std::string& model_path = "");

// true when `s` is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool is_valid_utf8(std::string_view s);

std::string base64_encode(std::string_view bytes);
std::string base64_decode(std::string_view text);

}  // namespace bet::runtime
