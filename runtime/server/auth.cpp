#include "runtime/server/auth.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <stdexcept>

#include "runtime/io/atomic_file.h"

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
  // A directory would otherwise open and read as a file without keys.
  std::ifstream in = runtime::open_input_file(path);
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
  runtime::check_read(in, path);
  if (keys.empty()) throw std::runtime_error(path + ": no API keys in file (it would leave the /v1 routes open)");
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

std::optional<double> parse_rate_limit(std::string_view spec, std::string* error) {
  auto refuse = [&](const char* why) -> std::optional<double> {
    if (error) {
      // Built with push_back/append: "'" + std::string(...) trips GCC 12's -Wrestrict false positive.
      error->clear();
      error->push_back('\'');
      error->append(spec).append("' ").append(why);
      error->append("; expected N/s, N/m or N/h (requests per second, minute or hour per client) with N a number in "
                    "(0, 1000000] and at least 1/h, e.g. 50/s or 1.5/m");
    }
    return std::nullopt;
  };
  const size_t slash = spec.find('/');
  if (slash == std::string_view::npos) return refuse("has no unit");
  const std::string_view count = spec.substr(0, slash), unit = spec.substr(slash + 1);
  double seconds = 0;
  if (unit == "s") seconds = 1;
  else if (unit == "m") seconds = 60;
  else if (unit == "h") seconds = 3600;
  else return refuse("has an unknown unit");
  // Digits with an optional fraction and nothing else: from_chars alone would also take
  // a sign, an exponent, "inf" and "nan".
  auto all_digits = [](std::string_view d) {
    return !d.empty() && std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  const size_t dot = count.find('.');
  const bool plain = dot == std::string_view::npos
                         ? all_digits(count)
                         : all_digits(count.substr(0, dot)) && all_digits(count.substr(dot + 1));
  if (!plain) return refuse("is not a plain number per unit");
  double n = 0;
  auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), n);
  if (ec == std::errc::result_out_of_range) return refuse("is out of range");
  if (ec != std::errc() || end != count.data() + count.size()) return refuse("is not a plain number per unit");
  if (!(n > 0)) return refuse("is zero (to turn limiting off, leave --rate-limit out)");
  if (n > kMaxRateCount) return refuse("is out of range");
  const double rate = n / seconds;
  if (rate < 1.0 / 3600) return refuse("is below one request per hour");
  return rate;
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
  if (retry_after_s) {
    // Clamped while still a double: for a tiny (or zero) rate the wait is beyond int's
    // range or infinite, and converting such a double to int is undefined.
    const double wait = std::ceil((1.0 - tokens_) / rate_);
    *retry_after_s = kMaxRetryAfterS;  // also for NaN
    if (wait < kMaxRetryAfterS) *retry_after_s = wait >= 1 ? static_cast<int>(wait) : 1;
  }
  return false;
}

bool TokenBucket::available(Clock::time_point now, int* retry_after_s) const {
  TokenBucket copy = *this;
  return copy.take(now, retry_after_s);
}

bool TokenBucket::full(Clock::time_point now) const {
  double elapsed = std::chrono::duration<double>(now - last_).count();
  return tokens_ + elapsed * rate_ >= burst_;
}

bool RateLimiter::would_allow(std::string_view client, TokenBucket::Clock::time_point now, int* retry_after_s) {
  if (!enabled()) return true;
  scratch_.assign(client);
  auto it = buckets_.find(scratch_);
  return it == buckets_.end() || it->second.available(now, retry_after_s);
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
