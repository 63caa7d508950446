#include "tests/fuzz/bet_reader_support.h"

#include <xxhash.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "engine/autograd.h"
#include "kernels/copy.h"

// The sanitizer build compiles only the reader and the few files its Tensor needs
// (engine: tensor, storage, the op dispatcher; platform: allocator, shape, device,
// memory), not the whole engine: a -Db_sanitize=address meson build of
// test_bet_format means rebuilding every library
// (engine, kernels, model, runtime: ~110 objects, several minutes on two cores), while
// these eleven files build in well under a minute. tensor.cpp refers to four functions
// of the rest of the engine that decoding never calls (copies of non-contiguous views,
// fills, autograd); they abort here, so a reader path that ever needs them shows up
// as a crash of this harness, not as a silent gap. A new dependency of tensor.cpp
// shows up as a link error of run_bet_reader_asan.sh.
namespace bet {
namespace {
[[noreturn]] void not_in_harness(const char* what) {
  std::fprintf(stderr, "bet reader sanitizer harness: %s is not linked in (see bet_reader_support.cpp)\n", what);
  std::abort();
}
}  // namespace
namespace autograd {
Tensor record(const char*, Tensor, std::vector<Tensor>, BackwardFn) { not_in_harness("autograd::record"); }
void run_backward(const Tensor&, const Tensor&) { not_in_harness("autograd::run_backward"); }
}  // namespace autograd
namespace kernels::cpu {
void copy(const TensorRef&, const TensorRef&) { not_in_harness("kernels::cpu::copy"); }
void fill(const TensorRef&, double) { not_in_harness("kernels::cpu::fill"); }
}  // namespace kernels::cpu
}  // namespace bet

namespace bet::fuzz {

using nlohmann::json;

namespace {

// Mirrors the layout documented in bet_format.h.
constexpr size_t kPreamble = 16, kFooter = 40;

void put_u64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}
uint64_t get_u64(const std::string& s, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(uint8_t(s[at + size_t(i)])) << (8 * i);
  return v;
}
uint64_t h64(const void* p, size_t n) { return XXH3_64bits(p, n); }
std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

template <typename T>
Tensor filled(const Shape& shape, uint64_t salt) {
  Tensor t = Tensor::empty(shape, dtype_of<T>::value);
  T* p = t.data<T>();
  uint64_t x = salt * 0x9e3779b97f4a7c15ULL + 1;
  for (int64_t i = 0; i < t.numel(); ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    p[i] = static_cast<T>(int64_t(x % 2001) - 1000) / static_cast<T>(std::is_floating_point_v<T> ? 997 : 1);
  }
  return t;
}

}  // namespace

runtime::NamedTensorList sample_tensors() {
  runtime::NamedTensorList t;
  t.emplace_back("embed.weight", filled<float>({9, 16}, 1));
  t.emplace_back("layers.0.attn.lam", filled<double>({}, 2));
  t.emplace_back("f64", filled<double>({3, 5}, 3));
  t.emplace_back("ids", filled<int64_t>({4}, 4));
  t.emplace_back("i32", filled<int32_t>({3, 1}, 5));
  t.emplace_back("empty", Tensor::empty({0, 8}, DType::F32));
  t.emplace_back("w", filled<float>({6, 4}, 6));
  return t;
}

std::string sample_file() {
  return runtime::encode_bet({{"config", {{"d_model", 16}}}, {"card", {{"version", "1.0.0"}}}}, sample_tensors());
}

BetParts split_bet(const std::string& f) {
  runtime::decode_bet(f, "split");  // only well-formed files are split
  BetParts p;
  const size_t hlen = size_t(get_u64(f, kPreamble));
  p.header = f.substr(kPreamble + 8, hlen);
  const size_t data_at = kPreamble + 8 + hlen + 8;
  const size_t foot = f.size() - kFooter;
  const size_t index_at = size_t(get_u64(f, foot)), index_len = size_t(get_u64(f, foot + 8));
  p.data = f.substr(data_at, index_at - data_at);
  p.index = json::parse(f.substr(index_at, index_len));
  for (auto& e : p.index) e["offset"] = e["offset"].get<uint64_t>() - data_at;
  return p;
}

std::string reseal(const std::string& header, const std::string& data, json index, bool fix_frame_checksums) {
  std::string out("BETCKPT1", 8);
  out.append("\x01\0\0\0\0\0\0\0", 8);
  put_u64(out, header.size());
  out += header;
  put_u64(out, h64(header.data(), header.size()));
  const uint64_t data_at = out.size();
  out += data;
  if (index.is_array()) {
    for (auto& e : index) {
      if (!e.is_object()) continue;
      auto off = e.find("offset");
      if (off == e.end() || !off->is_number_unsigned()) continue;
      const uint64_t rel = off->get<uint64_t>();
      *off = rel + data_at;
      auto size = e.find("compressed_size");
      if (fix_frame_checksums && size != e.end() && size->is_number_unsigned() && rel <= data.size() &&
          size->get<uint64_t>() <= data.size() - rel)
        e["checksum"] = hex64(h64(data.data() + rel, size_t(size->get<uint64_t>())));
    }
  }
  const std::string idx = index.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string footer;
  put_u64(footer, out.size());
  put_u64(footer, idx.size());
  put_u64(footer, h64(idx.data(), idx.size()));
  put_u64(footer, h64(footer.data(), footer.size()));
  footer.append("BETFOOT1", 8);
  out += idx;
  out += footer;
  return out;
}

}  // namespace bet::fuzz
