#include "runtime/server/auth.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <stdexcept>

namespace bet::server {

bool constant_time_equal(std::string_view given, std::string_view expected) {
  // Walk the expected key's length whatever was given, folding every difference
  // (length included) into one accumulator; no early exit.
  volatile unsigned char acc = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    unsigned char g = given.empty() ? 0 : static_cast<unsigned char>(given[i % given.size()]);
    acc = acc | static_cast<unsigned char>(g ^ static_cast<unsigned char>(expected[i]));
  }
  return acc == 0 && !expected.empty();
}

ApiKeys::ApiKeys(std::vector<std::string> keys) : keys_(std::move(keys)) {
  keys_.erase(std::remove(keys_.begin(), keys_.end(), std::string()), keys_.end());
}

ApiKeys ApiKeys::load_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open API key file");
  std::vector<std::string> keys;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    std::string_view s(line);
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
    if (s.empty() || s.front() == '#') continue;
    for (char c : s)
      if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
        throw std::runtime_error(path + ":" + std::to_string(lineno) + ": API key contains whitespace or a control character");
    keys.emplace_back(s);
  }
  if (keys.empty()) throw std::runtime_error(path + ": no API keys in file");
  return ApiKeys(std::move(keys));
}

std::optional<size_t> ApiKeys::find(std::string_view presented) const {
  std::optional<size_t> found;
  for (size_t i = 0; i < keys_.size(); ++i)
    if (constant_time_equal(presented, keys_[i]) && !found) found = i;
  return found;
}

std::optional<std::string_view> ApiKeys::bearer_token(std::string_view authorization) {
  constexpr std::string_view kScheme = "bearer";
  if (authorization.size() <= kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    char c = authorization[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    if (c != kScheme[i]) return std::nullopt;
  }
  std::string_view rest = authorization.substr(kScheme.size());
  if (rest.front() != ' ' && rest.front() != '\t') return std::nullopt;
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  if (rest.empty()) return std::nullopt;
  return rest;
}

TokenBucket::TokenBucket(double rate, double burst, Clock::time_point now)
    : rate_(rate), burst_(burst), tokens_(burst), last_(now) {}

bool TokenBucket::take(Clock::time_point now, int* retry_after_s) {
  double elapsed = std::chrono::duration<double>(now - last_).count();
  if (elapsed > 0) {
    tokens_ = std::min(burst_, tokens_ + elapsed * rate_);
    last_ = now;
  }
  if (tokens_ >= 1.0) {
    tokens_ -= 1.0;
    return true;
  }
  if (retry_after_s) *retry_after_s = std::max(1, static_cast<int>(std::ceil((1.0 - tokens_) / rate_)));
  return false;
}

bool TokenBucket::full(Clock::time_point now) const {
  double elapsed = std::chrono::duration<double>(now - last_).count();
  return tokens_ + elapsed * rate_ >= burst_;
}

RateLimiter::RateLimiter(double rate_per_s, size_t max_clients)
    : rate_(rate_per_s), max_clients_(std::max<size_t>(1, max_clients)) {}

bool RateLimiter::allow(std::string_view client, TokenBucket::Clock::time_point now, int* retry_after_s) {
  if (!enabled()) return true;
  scratch_.assign(client);
  auto it = buckets_.find(scratch_);
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_clients_) {
      // A full bucket holds no state worth keeping: forgetting it changes nothing.
      std::erase_if(buckets_, [&](const auto& kv) { return kv.second.full(now); });
      if (buckets_.size() >= max_clients_) buckets_.erase(buckets_.begin());
    }
    // Burst of one second's worth (at least one request).
    it = buckets_.emplace(scratch_, TokenBucket(rate_, std::max(1.0, rate_), now)).first;
  }
  return it->second.take(now, retry_after_s);
}

}  // namespace bet::server
