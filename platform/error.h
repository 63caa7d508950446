// Errors thrown by the engine. Every check names the op at fault, so a user sees
// "matmul: inner dims differ: [2, 3] vs [4, 5]" rather than a crash.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace bet {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  throw Error(os.str());
}

}  // namespace bet

// BET_CHECK(cond, "op: message ", value, ...): throws bet::Error naming what is wrong.
#define BET_CHECK(cond, ...)              \
  do {                                    \
    if (!(cond)) ::bet::fail(__VA_ARGS__); \
  } while (0)
