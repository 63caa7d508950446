// A byte queue for socket I/O: append at the tail, consume from the head, with the
// storage kept between requests so a keep-alive connection stops allocating once its
// buffers have grown to the sizes its traffic needs (the server shrinks them with
// shrink_to() after a request, so only ordinary sizes are kept). Unlike std::string,
// making room for a read does not zero-fill it.
#pragma once
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

namespace bet::server {

class Buffer {
 public:
  size_t size() const { return w_ - r_; }
  bool empty() const { return w_ == r_; }
  const char* data() const { return data_.get() + r_; }
  std::string_view view() const { return {data(), size()}; }
  size_t capacity() const { return cap_; }

  void consume(size_t n) {
    r_ += n;
    if (r_ >= w_) r_ = w_ = 0;
  }
  void clear() { r_ = w_ = 0; }

  // At least `n` writable bytes at the tail; fill them, then commit() how many were used.
  char* prepare(size_t n) {
    if (cap_ - w_ >= n) return data_.get() + w_;
    if (r_ > 0 && cap_ - size() >= n && r_ >= size()) {
      // Compacting is cheap when little is left unread; otherwise growing is better.
      std::memmove(data_.get(), data(), size());
      w_ -= r_;
      r_ = 0;
      return data_.get() + w_;
    }
    size_t want = size() + n;
    size_t cap = cap_ ? cap_ : 1024;
    while (cap < want) cap *= 2;
    std::unique_ptr<char[]> fresh(new char[cap]);
    if (size()) std::memcpy(fresh.get(), data(), size());
    w_ -= r_;
    r_ = 0;
    data_ = std::move(fresh);
    cap_ = cap;
    return data_.get() + w_;
  }
  void commit(size_t n) { w_ += n; }

  void append(const char* p, size_t n) {
    if (n == 0) return;
    std::memcpy(prepare(n), p, n);
    w_ += n;
  }
  void append(std::string_view s) { append(s.data(), s.size()); }
  void push_back(char c) { *prepare(1) = c; ++w_; }

  // Drops storage grown by an unusual request, so an idle connection holds little
  // (shrink_to(0) frees it all). Only an empty buffer is shrunk: what it holds is
  // still needed.
  void shrink_to(size_t max_capacity) {
    if (cap_ > max_capacity && empty()) {
      data_.reset();
      cap_ = r_ = w_ = 0;
    }
  }

 private:
  std::unique_ptr<char[]> data_;
  size_t cap_ = 0, r_ = 0, w_ = 0;
};

}  // namespace bet::server
