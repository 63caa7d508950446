// The bounded JSON parser (runtime/io/bounded_json.h): the same documents as nlohmann's
// parser, every limit enforced while parsing with the offset where it stopped, duplicate
// keys refused, and work linear in the input (counted in allocations, not time).
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>
#include <thread>

#include "engine/error.h"
#include "tests/alloc_hooks.h"
#include "runtime/io/bounded_json.h"

using bet::io::JsonError;
using bet::io::JsonLimits;
using bet::io::parse_json;
using nlohmann::json;

namespace {

// The error of parsing `text` under `limits` (which must fail).
JsonError error_of(std::string_view text, const JsonLimits& limits = {}) {
  JsonError err;
  err.offset = 12345;
  const std::optional<json> j = parse_json(text, limits, &err);
  CHECK_MESSAGE(!j.has_value(), text);
  return err;
}

uint64_t allocations_to_parse(const std::string& text) {
  bet::test::g_counted_allocs = 0;
  bet::test::g_counted_thread = std::this_thread::get_id();
  const std::optional<json> j = parse_json(text, JsonLimits{});
  bet::test::g_counted_thread = std::thread::id();
  REQUIRE(j.has_value());
  return bet::test::g_counted_allocs.load();
}

}  // namespace

TEST_CASE("bounded_json: documents parse exactly as nlohmann parses them") {
  const std::string text = R"({"a": [1, -2, 18446744073709551615, 2.5e-3, true, false, null, "x\u00e9\n"],
    "nested": {"deep": [[[{}]], [], {"k": {"l": [0]}}]}, "": "", "unicode": "\ud83d\ude00",
    "num": -9223372036854775808, "f": 1e300})";
  const std::optional<json> j = parse_json(text, JsonLimits{});
  REQUIRE(j.has_value());
  CHECK(*j == json::parse(text));
  CHECK(j->dump() == json::parse(text).dump());
  CHECK((*j)["a"][2].is_number_unsigned());
  CHECK((*j)["num"].is_number_integer());
  for (const char* scalar : {"0", "-1", "\"s\"", "true", "null", "3.25", "[]", "{}"}) {
    CAPTURE(scalar);
    CHECK(parse_json(scalar, JsonLimits{}) == json::parse(scalar));
  }
}

TEST_CASE("bounded_json: depth, value count, array items and string bytes are limits, named with their values") {
  JsonLimits l;
  l.max_depth = 3;
  CHECK(parse_json("[[[1]]]", l).has_value());
  CHECK(parse_json(R"({"a":{"b":[1, {}]}})", l) == std::nullopt);
  JsonError e = error_of("[[[[1]]]]", l);
  CHECK(e.kind == JsonError::Kind::kTooDeep);
  CHECK(e.message == "nested deeper than 3");
  CHECK(e.offset == 4);  // the fourth '[' was read
  // The default depth refuses a deep document without recursing through it.
  e = error_of(std::string(100000, '['));
  CHECK(e.kind == JsonError::Kind::kTooDeep);
  CHECK(e.offset == 65);

  l = JsonLimits{};
  l.max_values = 5;  // containers count, keys do not
  CHECK(parse_json("[1,2,3,4]", l).has_value());
  CHECK(parse_json(R"({"a":1,"b":2,"c":3,"d":4})", l).has_value());
  e = error_of("[1,2,3,4,5]", l);
  CHECK(e.kind == JsonError::Kind::kTooManyValues);
  CHECK(e.message == "more than 5 values");
  CHECK(e.offset >= 9);  // stopped at the fifth item, not before
  CHECK(e.offset <= 11);

  l = JsonLimits{};
  l.max_array_items = 3;  // per array
  CHECK(parse_json("[[1,2,3],[1,2,3],{\"a\":[1,2,3]}]", l).has_value());
  e = error_of("[[1,2,3],[1,2,3,4]]", l);
  CHECK(e.kind == JsonError::Kind::kArrayTooLong);
  CHECK(e.message == "an array has more than 3 items");
  CHECK(e.offset >= 16);

  l = JsonLimits{};
  l.max_string_bytes = 4;  // bytes after unescaping
  CHECK(parse_json(R"(["abcd", "\u00e9\u00e9"])", l).has_value());
  e = error_of(R"(["abcd", "\u00e9\u00e9\u00e9"])", l);
  CHECK(e.kind == JsonError::Kind::kStringTooLong);
  CHECK(e.message == "a string of 6 bytes is over the limit of 4");
  CHECK(e.offset >= 27);
}

TEST_CASE("bounded_json: duplicate keys are refused unless allowed, then the last wins as in nlohmann") {
  JsonError e = error_of(R"({"a":1,"b":{"c":1,"c":2}})");
  CHECK(e.kind == JsonError::Kind::kDuplicateKey);
  CHECK(e.message == "duplicate key \"c\"");
  CHECK(e.offset >= 20);
  CHECK(parse_json(R"({"a":{"a":1},"b":{"a":2}})", JsonLimits{}).has_value());  // one per object
  // A long or unprintable key is shortened and made printable in the message.
  e = error_of("{\"" + std::string(100, 'k') + "\\n\":1,\"" + std::string(100, 'k') + "\\n\":2}");
  CHECK(e.message == "duplicate key \"" + std::string(64, 'k') + "...\"");
  JsonLimits l;
  l.reject_duplicate_keys = false;
  const std::optional<json> j = parse_json(R"({"a":1,"a":[2]})", l);
  REQUIRE(j.has_value());
  CHECK(*j == json::parse(R"({"a":1,"a":[2]})"));
}

TEST_CASE("bounded_json: syntax errors say where") {
  JsonError e = error_of("[1,2,}");
  CHECK(e.kind == JsonError::Kind::kSyntax);
  CHECK(e.offset == 6);
  CHECK(e.message.rfind("invalid JSON: parse error at line 1, column 6", 0) == 0);
  for (const std::string bad : {"", " ", "{} x", "[1,]", "{\"a\"}", "\"\xff\"", "1e400", "[01]", "nul", "{\"a\":1"}) {
    CAPTURE(bad);
    CHECK(error_of(bad).kind == JsonError::Kind::kSyntax);
  }
  CHECK(error_of("{} x").offset == 4);
  CHECK(parse_json("[1]", JsonLimits{}, nullptr).has_value());
  CHECK(parse_json("[", JsonLimits{}, nullptr) == std::nullopt);  // no error to fill: fine
  CHECK_THROWS_WITH_AS(bet::io::parse_json_or_throw("[[1]]", JsonLimits{1}, "req.json"),
                       "req.json: nested deeper than 1", bet::Error);
  CHECK(bet::io::parse_json_or_throw(" [1] ", JsonLimits{}, "x") == json::array({1}));
}

TEST_CASE("bounded_json: work is linear in the input (allocations counted, not time)") {
  // A flat object of n small entries, as a safetensors header of n tensors is. nlohmann's
  // callback parser, used for those headers before, grew quadratically in time here
  // (20k entries: 4 s); allocations are counted because time on a shared machine is not
  // a measure. Each entry costs the same few allocations however many came before: a
  // builder that copied or rescanned what it had built would show it here.
  auto doc = [](int n) {
    std::string s = "{";
    for (int i = 0; i < n; ++i) {
      if (i) s += ',';
      s += "\"tensor.";
      s += std::to_string(i);
      s += R"(":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]})";
    }
    return s + "}";
  };
  const uint64_t a = allocations_to_parse(doc(10000)), b = allocations_to_parse(doc(20000)),
                 c = allocations_to_parse(doc(80000));
  MESSAGE("allocations: 10k entries " << a << ", 20k " << b << ", 80k " << c);
  CHECK(a > 10000);  // the count sees the parse at all
  CHECK(b <= 2 * a + 64);
  CHECK(c <= 8 * a + 256);
  // Deep nesting is linear too (the container stack, not recursion).
  const uint64_t d1 = allocations_to_parse(std::string(30, '[') + std::string(30, ']')),
                 d2 = allocations_to_parse(std::string(60, '[') + std::string(60, ']'));
  CHECK(d2 <= 2 * d1 + 16);
}
