// The process's one oneDNN CPU engine, and a stream per thread (a stream is not meant to
// be shared between threads; primitives are). Every oneDNN caller (the f32/bf16 matmul,
// the int8 matmul) uses these.
#pragma once
#include <dnnl.hpp>

#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace bet::kernels::cpu {

inline dnnl::engine& dnnl_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

inline dnnl::stream& dnnl_stream() {
  thread_local dnnl::stream s(dnnl_engine());
  return s;
}

// Primitives by geometry (creating one costs tens of microseconds, comparable to a small
// GEMM; a training loop sees a handful of geometries). Shared by every thread; bounded,
// since an unbounded stream of shapes would otherwise grow it for ever.
template <typename Entry>
class PrimitiveCache {
 public:
  using Key = std::vector<int64_t>;
  std::shared_ptr<const Entry> find(const Key& key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : it->second;
  }
  void insert(const Key& key, std::shared_ptr<const Entry> e) {
    std::lock_guard<std::mutex> lock(mu_);
    if (map_.size() >= kCapacity) map_.clear();  // unbounded shape streams: start over
    map_.emplace(key, std::move(e));
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return map_.size();
  }

 private:
  struct Hash {
    size_t operator()(const Key& k) const {
      uint64_t h = 1469598103934665603ull;  // FNV-1a over the dims
      for (int64_t v : k) h = (h ^ uint64_t(v)) * 1099511628211ull;
      return size_t(h);
    }
  };
  static constexpr size_t kCapacity = 1024;
  std::mutex mu_;
  std::unordered_map<Key, std::shared_ptr<const Entry>, Hash> map_;
};

}  // namespace bet::kernels::cpu
