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
  // whitespace is trimmed. Throws std::runtime_error naming the file (and line) at fault.
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

// Token bucket: `rate` tokens per second, holding at most `burst`.
class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;
  TokenBucket(double rate, double burst, Clock::time_point now);
  // Takes a token when one is available; otherwise returns false and sets
  // *retry_after_s to the whole seconds until one will be (at least 1).
  bool take(Clock::time_point now, int* retry_after_s);
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

 private:
  double rate_;
  size_t max_clients_;
  std::unordered_map<std::string, TokenBucket> buckets_;
  std::string scratch_;
};

}  // namespace bet::server
