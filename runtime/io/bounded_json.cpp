#include "runtime/io/bounded_json.h"

#include <iterator>
#include <vector>

#include "engine/error.h"

namespace bet::io {

using nlohmann::json;

namespace {

// A SAX handler that builds the DOM as nlohmann's own json_sax_dom_parser does (a stack
// of open containers, values placed where they belong), checking each limit before it
// stores anything. Returning false stops the tokenizer at once.
class BoundedDomBuilder {
 public:
  // `*read` is how far the tokenizer has read in the text starting at `begin`.
  BoundedDomBuilder(const JsonLimits& limits, JsonError* err, const char* begin, const char* const* read)
      : limits_(limits), err_(err), begin_(begin), read_(read) {}

  json take() { return std::move(root_); }

  bool null() { return place(json(nullptr)); }
  bool boolean(bool v) { return place(json(v)); }
  bool number_integer(json::number_integer_t v) { return place(json(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return place(json(v)); }
  bool number_float(json::number_float_t v, const json::string_t&) { return place(json(v)); }
  bool string(json::string_t& v) {
    if (!check_string(v)) return false;
    return place(json(std::move(v)));
  }
  bool binary(json::binary_t&) { return fail(JsonError::Kind::kSyntax, "binary values are not JSON"); }

  bool start_object(size_t) { return open(json::value_t::object); }
  bool start_array(size_t) { return open(json::value_t::array); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(json::string_t& k) {
    json::object_t& obj = stack_.back()->get_ref<json::object_t&>();
    if (limits_.reject_duplicate_keys && obj.count(k))
      return fail(JsonError::Kind::kDuplicateKey, "duplicate key \"" + printable(k) + "\"");
    // A map node never moves, so the pointer stays valid until the value arrives.
    slot_ = &obj[std::move(k)];
    return true;
  }

  bool parse_error(size_t position, const std::string&, const nlohmann::detail::exception& ex) {
    if (err_) {
      err_->kind = JsonError::Kind::kSyntax;
      err_->offset = position;
      // nlohmann's message reads "[json.exception.parse_error.101] parse error at line 1,
      // column 5: syntax error while parsing value - ..."; keep the part after the tag.
      std::string what = ex.what();
      if (auto at = what.find("] "); at != std::string::npos) what.erase(0, at + 2);
      err_->message = "invalid JSON: " + what;
    }
    return false;
  }

 private:
  bool fail(JsonError::Kind kind, std::string message) {
    if (err_) {
      err_->kind = kind;
      err_->offset = size_t(*read_ - begin_);
      err_->message = std::move(message);
    }
    return false;
  }

  static std::string printable(const std::string& s) {
    std::string out = s.substr(0, 64);
    for (char& c : out)
      if (static_cast<unsigned char>(c) < 0x20 || c == '"' || c == '\\') c = '?';
    return s.size() > 64 ? out + "..." : out;
  }

  bool check_string(const std::string& s) {
    if (s.size() > limits_.max_string_bytes)
      return fail(JsonError::Kind::kStringTooLong, "a string of " + std::to_string(s.size()) +
                                                       " bytes is over the limit of " +
                                                       std::to_string(limits_.max_string_bytes));
    return true;
  }

  // Counts the value and finds where it goes: the root, the next element of the open
  // array, or the slot of the last key of the open object.
  json* claim() {
    if (++values_ > limits_.max_values) {
      fail(JsonError::Kind::kTooManyValues,
           "more than " + std::to_string(limits_.max_values) + " values");
      return nullptr;
    }
    if (stack_.empty()) return &root_;
    json* top = stack_.back();
    if (top->is_object()) {
      json* s = slot_;
      slot_ = nullptr;
      return s;
    }
    json::array_t& arr = top->get_ref<json::array_t&>();
    if (arr.size() >= limits_.max_array_items) {
      fail(JsonError::Kind::kArrayTooLong,
           "an array has more than " + std::to_string(limits_.max_array_items) + " items");
      return nullptr;
    }
    // The array cannot grow again until this element (if a container) is closed, so
    // a pointer to it stays valid while it is on the stack.
    arr.emplace_back();
    return &arr.back();
  }

  bool place(json&& v) {
    json* where = claim();
    if (!where) return false;
    *where = std::move(v);
    return true;
  }

  bool open(json::value_t type) {
    if (static_cast<int>(stack_.size()) >= limits_.max_depth)
      return fail(JsonError::Kind::kTooDeep, "nested deeper than " + std::to_string(limits_.max_depth));
    json* where = claim();
    if (!where) return false;
    *where = json(type);
    stack_.push_back(where);
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  const JsonLimits& limits_;
  JsonError* err_;
  const char* begin_;
  const char* const* read_;
  json root_;
  std::vector<json*> stack_;
  json* slot_ = nullptr;
  size_t values_ = 0;
};

// Hands the text to the tokenizer and records how far it has read: a limit is noticed
// by the handler, and the tokenizer tells a handler its position only on a syntax error.
class TrackedIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;

  TrackedIterator(const char* p, const char** read) : p_(p), read_(read) {}
  reference operator*() const { return *p_; }
  TrackedIterator& operator++() {
    *read_ = ++p_;
    return *this;
  }
  TrackedIterator operator++(int) {
    TrackedIterator before = *this;
    ++*this;
    return before;
  }
  bool operator==(const TrackedIterator& o) const { return p_ == o.p_; }
  bool operator!=(const TrackedIterator& o) const { return p_ != o.p_; }

 private:
  const char* p_;
  const char** read_;
};

}  // namespace

std::optional<json> parse_json(std::string_view text, const JsonLimits& limits, JsonError* err) {
  const char* read = text.data();
  BoundedDomBuilder builder(limits, err, text.data(), &read);
  const TrackedIterator first(text.data(), &read), last(text.data() + text.size(), &read);
  const bool ok = json::sax_parse(first, last, &builder, json::input_format_t::json, /*strict=*/true,
                                  /*ignore_comments=*/false);
  if (!ok) return std::nullopt;
  return builder.take();
}

json parse_json_or_throw(std::string_view text, const JsonLimits& limits, std::string_view what) {
  JsonError err;
  std::optional<json> j = parse_json(text, limits, &err);
  if (!j) throw Error(std::string(what) + ": " + err.message);
  return std::move(*j);
}

}  // namespace bet::io
