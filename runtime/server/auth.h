// API keys and per-key rate limits for the /v1 routes.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace bet::server {

// Equality whose running time depends only on the lengths (and on the expected key's
// length, not on where the first difference is), so a caller cannot find a key byte
// by byte from response times.
bool constant_time_equal(std::string_view given, std::string_view expected);

class ApiKeys {
 public:
  // One key per line; blank lines and lines starting with '#' are skipped, surrounding
  // whitespace is trimmed. Throws std::runtime_error naming the file (and line) at fault,
  // also for a directory and for a file without keys: no keys would mean no auth.
  static ApiKeys load_file(const std::string& path);
  explicit ApiKeys(std::vector<std::string> keys = {});

  bool enabled() const { return !keys_.empty(); }
  size_t size() const { return keys_.size(); }
  const std::vector<std::string>& keys() const { return keys_; }  // e.g. for ServerConfig::api_keys
  // Index of the key that matches, checking every key so the time does not say which.
  std::optional<size_t> find(std::string_view presented) const;
  // The token of "Authorization: Bearer <token>" (scheme case-insensitive), or nullopt.
  static std::optional<std::string_view> bearer_token(std::string_view authorization);

 private:
  std::vector<std::string> keys_;
};

// `betctl serve --rate-limit`: "N/s", "N/m" or "N/h" (per second, minute, hour), N a
// plain decimal number (digits with an optional fraction: no sign, exponent, nan or inf)
// in (0, kMaxRateCount], and the rate at least one request per hour. Returns requests
// per second; otherwise nullopt, with *error (when given) saying what is wrong and the
// accepted forms. A bare number is refused: "50" could be meant per minute.
inline constexpr double kMaxRateCount = 1e6;
std::optional<double> parse_rate_limit(std::string_view spec, std::string* error);

// Longest Retry-After a 429 announces: the wait for one token at the slowest rate
// --rate-limit accepts (1/h).
inline constexpr int kMaxRetryAfterS = 3600;

// Token bucket: `rate` tokens per second, holding at most `burst`.
class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;
  TokenBucket(double rate, double burst, Clock::time_point now);
  // Takes a token when one is available; otherwise returns false and sets
  // *retry_after_s to the whole seconds until one will be (at least 1, at most
  // kMaxRetryAfterS whatever the rate).
  bool take(Clock::time_point now, int* retry_after_s);
  // Whether take() would succeed now, without taking; when not, *retry_after_s as take().
  bool available(Clock::time_point now, int* retry_after_s) const;
  bool full(Clock::time_point now) const;

 private:
  double rate_, burst_, tokens_;
  Clock::time_point last_;
};

// One bucket per client: per API key when keys are configured, otherwise per peer
// address. Idle (full) buckets are pruned so the table stays bounded.
class RateLimiter {
 public:
  explicit RateLimiter(double rate_per_s, size_t max_clients = 65536);
  bool enabled() const { return rate_ > 0; }
  bool allow(std::string_view client, TokenBucket::Clock::time_point now, int* retry_after_s);
  // allow() without taking a token: false only for a client whose bucket is empty.
  bool would_allow(std::string_view client, TokenBucket::Clock::time_point now, int* retry_after_s);

 private:
  double rate_;
  size_t max_clients_;
  std::unordered_map<std::string, TokenBucket> buckets_;
  std::string scratch_;
};

}  // namespace bet::server
