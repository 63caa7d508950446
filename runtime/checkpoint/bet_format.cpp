#include "runtime/checkpoint/bet_format.h"

#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string_view>

#include "runtime/io/atomic_file.h"

namespace bet::runtime {

namespace {

constexpr char kMagic[8] = {'B', 'E', 'T', 'C', 'K', 'P', 'T', '1'};
constexpr char kFooterMagic[8] = {'B', 'E', 'T', 'F', 'O', 'O', 'T', '1'};
constexpr uint32_t kVersion = 1;
constexpr size_t kFooterSize = 40;
constexpr size_t kPreambleSize = 16;

void put_u64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}
void put_u32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}
uint64_t get_u64(std::string_view s, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(uint8_t(s[at + i])) << (8 * i);
  return v;
}
uint32_t get_u32(std::string_view s, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(uint8_t(s[at + i])) << (8 * i);
  return v;
}
uint64_t hash(const void* p, size_t n) { return XXH3_64bits(p, n); }

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Index numbers must be JSON unsigned integers: nlohmann's get<uint64_t>() converts a
// float or a negative number with a cast (undefined out of range; found by fuzzing).
uint64_t index_uint(const nlohmann::json& v, const std::string& where, const char* field) {
  BET_CHECK(v.is_number_unsigned(), where, ": ", field, " is not a non-negative integer (damaged)");
  return v.get<uint64_t>();
}

DType parse_dtype(const std::string& s, const std::string& where) {
  for (DType t : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32, DType::I64})
    if (s == dtype_name(t)) return t;
  fail(where, ": unknown dtype '", s, "'");
}

}  // namespace

void shuffle_bytes(const uint8_t* in, uint8_t* out, size_t n, size_t es) {
  for (size_t k = 0; k < es; ++k)
    for (size_t i = 0; i < n; ++i) out[k * n + i] = in[i * es + k];
}

void unshuffle_bytes(const uint8_t* in, uint8_t* out, size_t n, size_t es) {
  for (size_t k = 0; k < es; ++k)
    for (size_t i = 0; i < n; ++i) out[i * es + k] = in[k * n + i];
}

namespace {

// A file in pieces: the preamble and header, one zstd frame per tensor, the index and
// footer. The writer sends the pieces to the file as they are; nothing file-sized is
// assembled or copied (encode_bet joins them for tests).
struct EncodedBet {
  std::string head;
  std::vector<std::unique_ptr<uint8_t[]>> frames;
  std::vector<size_t> frame_sizes;
  std::string tail;

  std::vector<std::string_view> pieces() const {
    std::vector<std::string_view> v{head};
    for (size_t i = 0; i < frames.size(); ++i) v.emplace_back(reinterpret_cast<const char*>(frames[i].get()), frame_sizes[i]);
    v.push_back(tail);
    return v;
  }
};

EncodedBet encode_parts(const nlohmann::json& header, const NamedTensorList& tensors, int level) {
  EncodedBet enc;
  std::string& out = enc.head;
  out.assign(kMagic, 8);
  put_u32(out, kVersion);
  put_u32(out, 0);
  const std::string h = header.dump();
  put_u64(out, h.size());
  out += h;
  put_u64(out, hash(h.data(), h.size()));

  // Shuffle and compress the tensors in parallel (largest first, one at a time per
  // thread from the shared OpenMP pool). Buffers are not zero-filled: every byte that
  // is read was written.
  std::vector<Tensor> ts(tensors.size());
  std::vector<std::string> errors(tensors.size());
  std::vector<size_t> raw_sizes(tensors.size());
  enc.frames.resize(tensors.size());
  enc.frame_sizes.assign(tensors.size(), 0);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t0] = tensors[i];
    // Files are device-independent: a GPU tensor is brought over first (dense).
    ts[i] = t0.detach().contiguous().to(Device::cpu());
  }
  std::vector<size_t> order(ts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return ts[x].nbytes() > ts[y].nbytes(); });
  const long n_frames = long(order.size());
#pragma omp parallel if (n_frames > 1)
  {
    ZSTD_CCtx* cctx = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    std::unique_ptr<uint8_t[]> shuffled;
    size_t capacity = 0;
#pragma omp for schedule(dynamic, 1)
    for (long k = 0; k < n_frames; ++k) {
      const size_t i = order[size_t(k)];
      const Tensor& t = ts[i];
      const size_t es = dtype_size(t.dtype());
      const size_t n = size_t(t.numel());
      const size_t raw = n * es;
      raw_sizes[i] = raw;
      if (raw > capacity) {
        shuffled.reset(new uint8_t[raw]);
        capacity = raw;
      }
      shuffle_bytes(static_cast<const uint8_t*>(t.raw_data()), shuffled.get(), n, es);
      const size_t bound = ZSTD_compressBound(raw);
      enc.frames[i].reset(new uint8_t[bound]);
      const size_t c = ZSTD_compress2(cctx, enc.frames[i].get(), bound, shuffled.get(), raw);
      if (ZSTD_isError(c)) errors[i] = ZSTD_getErrorName(c);
      else enc.frame_sizes[i] = c;
    }
    ZSTD_freeCCtx(cctx);
  }
  nlohmann::json index = nlohmann::json::array();
  uint64_t offset = out.size();
  for (size_t i = 0; i < ts.size(); ++i) {
    BET_CHECK(errors[i].empty(), "checkpoint: compressing '", tensors[i].first, "': ", errors[i]);
    index.push_back({{"name", tensors[i].first},
                     {"dtype", dtype_name(ts[i].dtype())},
                     {"shape", ts[i].shape()},
                     {"offset", offset},
                     {"compressed_size", enc.frame_sizes[i]},
                     {"raw_size", raw_sizes[i]},
                     {"checksum", hex64(hash(enc.frames[i].get(), enc.frame_sizes[i]))}});
    offset += enc.frame_sizes[i];
  }

  const std::string idx = index.dump();
  const uint64_t index_offset = offset;
  enc.tail = idx;
  std::string footer;
  put_u64(footer, index_offset);
  put_u64(footer, idx.size());
  put_u64(footer, hash(idx.data(), idx.size()));
  put_u64(footer, hash(footer.data(), footer.size()));
  footer.append(kFooterMagic, 8);
  enc.tail += footer;
  return enc;
}

}  // namespace

std::string encode_bet(const nlohmann::json& header, const NamedTensorList& tensors, int level) {
  const EncodedBet enc = encode_parts(header, tensors, level);
  std::string out;
  size_t total = 0;
  for (auto p : enc.pieces()) total += p.size();
  out.reserve(total);
  for (auto p : enc.pieces()) out += p;
  return out;
}

BetContents decode_bet(std::string_view bytes, const std::string& file) {
  BET_CHECK(bytes.size() >= kPreambleSize + 16 + kFooterSize, file, ": not a .bet file (", bytes.size(),
            " bytes is too short; truncated?)");
  BET_CHECK(std::memcmp(bytes.data(), kMagic, 8) == 0, file, ": not a .bet file (bad magic)");
  const uint32_t version = get_u32(bytes, 8);
  BET_CHECK(version == kVersion, file, ": unsupported .bet version ", version, " (this build reads ", kVersion, ")");
  BET_CHECK(get_u32(bytes, 12) == 0, file, ": reserved preamble field is not zero (damaged)");

  // Footer first: it locates the index and guards itself.
  const size_t f = bytes.size() - kFooterSize;
  BET_CHECK(std::memcmp(bytes.data() + f + 32, kFooterMagic, 8) == 0, file,
            ": footer missing (file truncated or not fully written)");
  BET_CHECK(hash(bytes.data() + f, 24) == get_u64(bytes, f + 24), file, ": footer checksum mismatch (damaged)");
  const uint64_t index_offset = get_u64(bytes, f), index_len = get_u64(bytes, f + 8);
  BET_CHECK(index_offset <= f && index_len <= f - index_offset && index_offset + index_len == f, file,
            ": index location out of bounds (damaged)");
  BET_CHECK(hash(bytes.data() + index_offset, index_len) == get_u64(bytes, f + 16), file,
            ": tensor index checksum mismatch (damaged)");

  // Header.
  const uint64_t header_len = get_u64(bytes, kPreambleSize);
  BET_CHECK(header_len <= index_offset && kPreambleSize + 8 + header_len + 8 <= index_offset, file,
            ": header length out of bounds (damaged)");
  const size_t header_at = kPreambleSize + 8;
  BET_CHECK(hash(bytes.data() + header_at, header_len) == get_u64(bytes, header_at + header_len), file,
            ": header checksum mismatch (damaged)");
  const size_t data_start = header_at + header_len + 8;

  BetContents out;
  try {
    out.header = nlohmann::json::parse(bytes.begin() + long(header_at), bytes.begin() + long(header_at + header_len));
  } catch (const nlohmann::json::exception& e) {
    fail(file, ": header is not valid JSON: ", e.what());
  }
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(bytes.begin() + long(index_offset), bytes.begin() + long(index_offset + index_len));
  } catch (const nlohmann::json::exception& e) {
    fail(file, ": tensor index is not valid JSON: ", e.what());
  }
  BET_CHECK(index.is_array(), file, ": tensor index is not a list");

  // Validate every entry (in order, so the first damage reported is the first in the
  // file) and allocate its tensor; then decompress the frames in parallel.
  struct Job {
    uint64_t off, csize, rsize;
    std::string where;
    std::string error;
  };
  std::vector<Job> jobs;
  try {
    for (size_t i = 0; i < index.size(); ++i) {
      const auto& e = index[i];
      const std::string name = e.value("name", std::string("#") + std::to_string(i));
      const std::string where = file + ": tensor '" + name + "'";
      BET_CHECK(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("offset") &&
                    e.contains("compressed_size") && e.contains("raw_size") && e.contains("checksum"),
                where, ": index entry incomplete");
      const DType dt = parse_dtype(e["dtype"].get<std::string>(), where);
      BET_CHECK(e["shape"].is_array(), where, ": bad shape");
      Shape shape;
      // Sizes are bounded as they are built: a crafted shape whose product overflows
      // could otherwise agree with a small raw_size, and the strides of an empty one
      // (a zero among huge dims) overflow too (both found under UBSan).
      uint64_t numel = 1, span = 1;  // span: the product of max(d, 1), what strides reach
      for (const auto& dim : e["shape"]) {
        const uint64_t d = index_uint(dim, where, "shape");
        BET_CHECK(d < (uint64_t(1) << 40), where, ": bad shape");
        shape.push_back(int64_t(d));
        const uint64_t extent = std::max<uint64_t>(d, 1);
        BET_CHECK(span <= (uint64_t(1) << 40) / extent, where, ": shape ", shape_str(shape), "... is too large");
        span *= extent;
        numel *= d;
      }
      const uint64_t off = index_uint(e["offset"], where, "offset");
      const uint64_t csize = index_uint(e["compressed_size"], where, "compressed_size");
      const uint64_t rsize = index_uint(e["raw_size"], where, "raw_size");
      BET_CHECK(off >= data_start && off <= index_offset && csize <= index_offset - off, where,
                ": data out of bounds");
      BET_CHECK(rsize == numel * dtype_size(dt), where, ": raw size ", rsize, " does not match shape ",
                shape_str(shape));
      // No zstd frame expands more than 32768x (a 128 KiB RLE block takes 4 bytes), so a
      // larger claim is damage; checked before allocating what it claims.
      BET_CHECK(rsize / 32768 <= csize, where, ": raw size ", rsize, " is impossible for ", csize,
                " compressed bytes (damaged)");
      BET_CHECK(hex64(hash(bytes.data() + off, csize)) == e["checksum"].get<std::string>(), where,
                ": checksum mismatch (damaged)");
      out.tensors.emplace_back(name, Tensor::empty(shape, dt));
      jobs.push_back({off, csize, rsize, where, {}});
    }
  } catch (const nlohmann::json::exception& e) {
    fail(file, ": tensor index malformed: ", e.what());
  }
  const long n_jobs = long(jobs.size());
#pragma omp parallel if (n_jobs > 1)
  {
    ZSTD_DCtx* dctx = ZSTD_createDCtx();
    std::unique_ptr<uint8_t[]> raw;
    size_t capacity = 0;
#pragma omp for schedule(dynamic, 1)
    for (long k = 0; k < n_jobs; ++k) {
      Job& j = jobs[size_t(k)];
      const Tensor& t = out.tensors[size_t(k)].second;
      if (j.rsize > capacity) {
        raw.reset(new uint8_t[j.rsize]);
        capacity = j.rsize;
      }
      const size_t got = ZSTD_decompressDCtx(dctx, raw.get(), j.rsize, bytes.data() + j.off, j.csize);
      if (ZSTD_isError(got)) {
        j.error = std::string(": cannot decompress: ") + ZSTD_getErrorName(got);
      } else if (got != j.rsize) {
        j.error = ": decompressed " + std::to_string(got) + " bytes, expected " + std::to_string(j.rsize);
      } else {
        unshuffle_bytes(raw.get(), static_cast<uint8_t*>(t.raw_data()), size_t(t.numel()), dtype_size(t.dtype()));
      }
    }
    ZSTD_freeDCtx(dctx);
  }
  for (const Job& j : jobs) BET_CHECK(j.error.empty(), j.where, j.error);
  return out;
}

void write_bet_file(const std::string& path, const nlohmann::json& header, const NamedTensorList& tensors, int level) {
  const EncodedBet enc = encode_parts(header, tensors, level);
  atomic_write_file(path, enc.pieces());
}

BetContents read_bet_file(const std::string& path) { return decode_bet(read_file(path), path); }

}  // namespace bet::runtime
