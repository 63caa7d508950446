// JSON from untrusted bytes (request bodies, checkpoint headers), parsed in time and
// memory linear in the input, with limits enforced while parsing: a hostile document is
// refused at the first value past a limit, never built first and measured after.
//
// Why not nlohmann::json::parse with a callback: its callback parser rescans an
// object's parent after every child the callback looks at, which is quadratic in the
// number of children (65k empty objects took 27 s). Here nlohmann's SAX tokenizer
// (linear, no recursion) drives a DOM builder of our own.
#pragma once
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace bet::io {

struct JsonLimits {
  int max_depth = 64;                 // nesting of arrays and objects (the root value is depth 0)
  size_t max_values = size_t(1) << 20;  // every value, containers included, keys excluded
  size_t max_array_items = std::numeric_limits<size_t>::max();  // elements of any one array
  size_t max_string_bytes = std::numeric_limits<size_t>::max();  // any one string value (keys: the input's size)
  bool reject_duplicate_keys = true;  // {"a":1,"a":2} is refused, not silently the last
};

struct JsonError {
  enum class Kind { kSyntax, kTooDeep, kTooManyValues, kArrayTooLong, kStringTooLong, kDuplicateKey };
  Kind kind = Kind::kSyntax;
  size_t offset = 0;     // byte offset in the input where parsing stopped
  std::string message;   // says which limit (with its value) or what syntax error
};

// The document, or nullopt with *err set (err may be null).
std::optional<nlohmann::json> parse_json(std::string_view text, const JsonLimits& limits, JsonError* err = nullptr);

// The document, or bet::Error "<what>: <message>".
nlohmann::json parse_json_or_throw(std::string_view text, const JsonLimits& limits, std::string_view what);

}  // namespace bet::io
