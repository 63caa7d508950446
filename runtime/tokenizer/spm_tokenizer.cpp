// SentencePiece tokenizers (libsentencepiece). Piece i of the model is id 3 + i, so
// any existing .model loads, whatever its own special ids are.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <sstream>

#include "engine/error.h"
#include "runtime/io/atomic_file.h"
#include "runtime/tokenizer/tokenizer.h"

namespace bet::runtime {

namespace {

class SpmTokenizer : public Tokenizer {
 public:
  explicit SpmTokenizer(std::string proto) : proto_(std::move(proto)) {
    auto st = sp_.LoadFromSerializedProto(proto_);
    BET_CHECK(st.ok(), "tokenizer: cannot load sentencepiece model: ", st.ToString());
  }
  std::string kind() const override { return "spm"; }
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int> pieces;
    auto st = sp_.Encode(absl::string_view(text.data(), text.size()), &pieces);
    BET_CHECK(st.ok(), "tokenizer: sentencepiece encode failed: ", st.ToString());
    std::vector<int32_t> ids(pieces.size());
    for (size_t i = 0; i < pieces.size(); ++i) ids[i] = kFirstTokenId + pieces[i];
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> pieces;
    for (int32_t id : ids)
      if (id >= kFirstTokenId && id < vocab_size()) pieces.push_back(id - kFirstTokenId);
    std::string out;
    auto st = sp_.Decode(pieces, &out);
    BET_CHECK(st.ok(), "tokenizer: sentencepiece decode failed: ", st.ToString());
    return out;
  }
  int64_t vocab_size() const override { return kFirstTokenId + sp_.GetPieceSize(); }
  nlohmann::json to_json() const override {
    return {{"kind", "spm"}, {"vocab_size", vocab_size()}, {"model", base64_encode(proto_)}};
  }

 private:
  std::string proto_;
  sentencepiece::SentencePieceProcessor sp_;
};

// Feeds training sentences from memory.
class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& v_;
  size_t i_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> spm_from_bytes(const std::string& bytes) { return std::make_unique<SpmTokenizer>(bytes); }

std::unique_ptr<Tokenizer> load_spm_tokenizer(const std::string& path) {
  return std::make_unique<SpmTokenizer>(read_file(path));
}

std::unique_ptr<Tokenizer> train_spm_tokenizer(const std::vector<std::string>& texts, int vocab_size,
                                               const std::string& model_path) {
  BET_CHECK(vocab_size >= 8, "tokenizer train: vocab size ", vocab_size, " is too small");
  BET_CHECK(!texts.empty(), "tokenizer train: no training text");
  std::vector<std::string> lines;
  for (const auto& t : texts)
    if (!t.empty()) lines.push_back(t.size() > 4096 ? t.substr(0, 4096) : t);
  VectorIterator it(lines);
  std::string proto;
  std::ostringstream args;
  // hard_vocab_limit=false: a small corpus may not support the requested size.
  args << "--model_type=unigram --vocab_size=" << vocab_size
       << " --character_coverage=1.0 --byte_fallback=true --hard_vocab_limit=false"
       << " --max_sentence_length=8192 --num_threads=2 --minloglevel=2"
       << " --input_sentence_size=200000 --shuffle_input_sentence=true";
  auto st = sentencepiece::SentencePieceTrainer::Train(args.str(), &it, &proto);
  BET_CHECK(st.ok(), "tokenizer train: ", st.ToString());
  if (!model_path.empty()) atomic_write_file(model_path, proto);
  return std::make_unique<SpmTokenizer>(proto);
}

}  // namespace bet::runtime
