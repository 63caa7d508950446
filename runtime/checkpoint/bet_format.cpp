#include "runtime/checkpoint/bet_format.h"

#include <xxhash.h>
#include <zstd.h>

#include <cstring>

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
uint64_t get_u64(const std::string& s, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(uint8_t(s[at + i])) << (8 * i);
  return v;
}
uint32_t get_u32(const std::string& s, size_t at) {
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

std::string encode_bet(const nlohmann::json& header, const NamedTensorList& tensors, int level) {
  std::string out(kMagic, 8);
  put_u32(out, kVersion);
  put_u32(out, 0);
  const std::string h = header.dump();
  put_u64(out, h.size());
  out += h;
  put_u64(out, hash(h.data(), h.size()));

  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  nlohmann::json index = nlohmann::json::array();
  std::vector<uint8_t> shuffled, frame;
  for (const auto& [name, t0] : tensors) {
    BET_CHECK(t0.device().is_cpu(), "checkpoint: tensor '", name, "' must be on cpu to be saved");
    Tensor t = t0.contiguous();
    const size_t es = dtype_size(t.dtype());
    const size_t n = size_t(t.numel());
    shuffled.resize(n * es);
    shuffle_bytes(static_cast<const uint8_t*>(t.raw_data()), shuffled.data(), n, es);
    frame.resize(ZSTD_compressBound(shuffled.size()));
    size_t c = ZSTD_compress2(cctx, frame.data(), frame.size(), shuffled.data(), shuffled.size());
    if (ZSTD_isError(c)) {
      ZSTD_freeCCtx(cctx);
      fail("checkpoint: compressing '", name, "': ", ZSTD_getErrorName(c));
    }
    index.push_back({{"name", name},
                     {"dtype", dtype_name(t.dtype())},
                     {"shape", t.shape()},
                     {"offset", out.size()},
                     {"compressed_size", c},
                     {"raw_size", shuffled.size()},
                     {"checksum", hex64(hash(frame.data(), c))}});
    out.append(reinterpret_cast<const char*>(frame.data()), c);
  }
  ZSTD_freeCCtx(cctx);

  const std::string idx = index.dump();
  const uint64_t index_offset = out.size();
  out += idx;
  std::string footer;
  put_u64(footer, index_offset);
  put_u64(footer, idx.size());
  put_u64(footer, hash(idx.data(), idx.size()));
  put_u64(footer, hash(footer.data(), footer.size()));
  footer.append(kFooterMagic, 8);
  out += footer;
  return out;
}

BetContents decode_bet(const std::string& bytes, const std::string& file) {
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

  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  std::vector<uint8_t> raw;
  try {
    for (size_t i = 0; i < index.size(); ++i) {
      const auto& e = index[i];
      const std::string name = e.value("name", std::string("#") + std::to_string(i));
      const std::string where = file + ": tensor '" + name + "'";
      BET_CHECK(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("offset") &&
                    e.contains("compressed_size") && e.contains("raw_size") && e.contains("checksum"),
                where, ": index entry incomplete");
      const DType dt = parse_dtype(e["dtype"].get<std::string>(), where);
      const Shape shape = e["shape"].get<Shape>();
      for (auto d : shape) BET_CHECK(d >= 0 && d < (int64_t(1) << 40), where, ": bad shape");
      const uint64_t off = e["offset"].get<uint64_t>(), csize = e["compressed_size"].get<uint64_t>();
      const uint64_t rsize = e["raw_size"].get<uint64_t>();
      BET_CHECK(off >= data_start && off <= index_offset && csize <= index_offset - off, where,
                ": data out of bounds");
      BET_CHECK(rsize == uint64_t(shape_numel(shape)) * dtype_size(dt), where, ": raw size ", rsize,
                " does not match shape ", shape_str(shape));
      BET_CHECK(hex64(hash(bytes.data() + off, csize)) == e["checksum"].get<std::string>(), where,
                ": checksum mismatch (damaged)");
      raw.resize(rsize);
      size_t got = ZSTD_decompressDCtx(dctx, raw.data(), raw.size(), bytes.data() + off, csize);
      BET_CHECK(!ZSTD_isError(got), where, ": cannot decompress: ", ZSTD_isError(got) ? ZSTD_getErrorName(got) : "");
      BET_CHECK(got == rsize, where, ": decompressed ", got, " bytes, expected ", rsize);
      Tensor t = Tensor::empty(shape, dt);
      unshuffle_bytes(raw.data(), static_cast<uint8_t*>(t.raw_data()), size_t(t.numel()), dtype_size(dt));
      out.tensors.emplace_back(name, t);
    }
  } catch (const nlohmann::json::exception& e) {
    ZSTD_freeDCtx(dctx);
    fail(file, ": tensor index malformed: ", e.what());
  } catch (...) {
    ZSTD_freeDCtx(dctx);
    throw;
  }
  ZSTD_freeDCtx(dctx);
  return out;
}

void write_bet_file(const std::string& path, const nlohmann::json& header, const NamedTensorList& tensors, int level) {
  atomic_write_file(path, encode_bet(header, tensors, level));
}

BetContents read_bet_file(const std::string& path) { return decode_bet(read_file(path), path); }

}  // namespace bet::runtime
