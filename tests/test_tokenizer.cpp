// Tokenizers: byte and SentencePiece, their round trips and their trip through JSON.
#include <doctest/doctest.h>

#include "runtime/tokenizer/tokenizer.h"

using namespace bet::runtime;

TEST_CASE("byte tokenizer maps bytes to 3..258 and back") {
  auto t = make_byte_tokenizer();
  std::string s = std::string("h\xc3\xa9", 3) + std::string(1, '\0') + "\xff";
  auto ids = t->encode(s);
  REQUIRE(ids.size() == s.size());
  CHECK(ids[0] == 3 + 'h');
  CHECK(ids[3] == 3);
  CHECK(ids[4] == 258);
  CHECK(t->decode(ids) == s);
  CHECK(t->vocab_size() == 259);
  auto back = Tokenizer::from_json(t->to_json());
  CHECK(back->encode(s) == ids);
}

TEST_CASE("utf-8 validation rejects what is invalid") {
  CHECK(is_valid_utf8("plain ascii"));
  CHECK(is_valid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  CHECK_FALSE(is_valid_utf8("\xc3"));              // truncated
  CHECK_FALSE(is_valid_utf8("\xc0\xaf"));          // overlong
  CHECK_FALSE(is_valid_utf8("\xed\xa0\x80"));      // surrogate
  CHECK_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // > U+10FFFF
  CHECK_FALSE(is_valid_utf8("\x80"));
}

TEST_CASE("base64 round trips every length") {
  std::string s;
  for (int n = 0; n < 40; ++n) {
    CHECK(base64_decode(base64_encode(s)) == s);
    s.push_back(char(n * 37));
  }
  CHECK(base64_encode("foob") == "Zm9vYg==");
  CHECK_THROWS(base64_decode("abc"));
}

TEST_CASE("sentencepiece: train, encode, decode, and identical ids after a JSON trip") {
  std::vector<std::string> texts;
  const char* words[] = {"free", "money", "click", "here", "meeting", "tomorrow", "report", "attached", "offer", "now"};
  for (int i = 0; i < 400; ++i) {
    std::string line;
    for (int k = 0; k < 8; ++k) line += std::string(words[(i * 7 + k * 3) % 10]) + " ";
    texts.push_back(line);
  }
  auto t = train_spm_tokenizer(texts, 300);  // byte fallback needs 256 pieces of its own
  CHECK(t->kind() == "spm");
  CHECK(t->vocab_size() > 259);
  std::string probe = "click here for free money tomorrow";
  auto ids = t->encode(probe);
  CHECK(!ids.empty());
  for (int32_t id : ids) {
    CHECK(id >= kFirstTokenId);
    CHECK(id < t->vocab_size());
  }
  CHECK(t->decode(ids) == probe);
  auto back = Tokenizer::from_json(t->to_json());
  CHECK(back->encode(probe) == ids);
  // unseen characters survive through byte fallback
  CHECK(back->decode(back->encode("zebra \xc3\xa9")) == "zebra \xc3\xa9");
}
