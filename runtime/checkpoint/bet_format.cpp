#include "runtime/checkpoint/bet_format.h"

#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string_view>

#include "runtime/io/atomic_file.h"
#include "runtime/io/bounded_json.h"
#include "runtime/io/mapped_file.h"

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
  // Nothing in the parallel region may throw (an exception leaving an OpenMP region
  // terminates the process): failures are recorded as static strings and raised after.
  std::vector<const char*> errors(tensors.size(), nullptr);
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
  constexpr const char* kNoMemory = "out of memory";
#pragma omp parallel if (n_frames > 1)
  {
    ZSTD_CCtx* cctx = ZSTD_createCCtx();
    if (cctx) {
      ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
      ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    }
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
        shuffled.reset(new (std::nothrow) uint8_t[raw]);
        capacity = shuffled ? raw : 0;
      }
      const size_t bound = ZSTD_compressBound(raw);
      enc.frames[i].reset(new (std::nothrow) uint8_t[bound]);
      if (!cctx || (raw && !shuffled) || !enc.frames[i]) {
        errors[i] = kNoMemory;
        continue;
      }
      shuffle_bytes(static_cast<const uint8_t*>(t.raw_data()), shuffled.get(), n, es);
      const size_t c = ZSTD_compress2(cctx, enc.frames[i].get(), bound, shuffled.get(), raw);
      if (ZSTD_isError(c)) errors[i] = ZSTD_getErrorName(c);
      else enc.frame_sizes[i] = c;
    }
    ZSTD_freeCCtx(cctx);
  }
  nlohmann::json index = nlohmann::json::array();
  uint64_t offset = out.size();
  for (size_t i = 0; i < ts.size(); ++i) {
    BET_CHECK(!errors[i], "checkpoint: compressing '", tensors[i].first, "' (", raw_sizes[i], " bytes): ", errors[i]);
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

Shape checked_stored_shape(const std::vector<uint64_t>& dims, const std::string& where, uint64_t* numel) {
  BET_CHECK(dims.size() <= kMaxStoredDims, where, ": shape has ", dims.size(), " dims, over the limit of ",
            kMaxStoredDims);
  Shape shape;
  uint64_t n = 1, span = 1;  // span: the product of max(d, 1), what strides reach
  for (uint64_t d : dims) {
    const uint64_t extent = std::max<uint64_t>(d, 1);
    // Checked before multiplying, so neither product can overflow; a zero dim makes the
    // tensor empty but its strides still multiply the other dims.
    if (extent > kMaxStoredSpan / span) {
      std::string s = "[";
      for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
      fail(where, ": shape ", s, "] is too large (over ", kMaxStoredSpan, " elements, counting a 0 dim as 1)");
    }
    span *= extent;
    n *= d;
    shape.push_back(int64_t(d));
  }
  *numel = n;
  return shape;
}

namespace {

// The header carries the config, tokenizer (a SentencePiece model is a base64 string of
// a few MB), training state, metrics and card: small documents, one possibly long string.
io::JsonLimits header_limits() {
  io::JsonLimits l;
  l.max_depth = 64;
  l.max_values = size_t(1) << 20;
  l.max_string_bytes = size_t(256) << 20;
  return l;
}

// The index is a list of flat entries with a shape list: three levels, short strings.
io::JsonLimits index_limits() {
  io::JsonLimits l;
  l.max_depth = 3;
  l.max_values = kMaxBetTensors * 32;
  l.max_array_items = kMaxBetTensors;
  l.max_string_bytes = 4096;
  return l;
}

nlohmann::json parse_part(std::string_view text, const io::JsonLimits& limits, const std::string& file,
                          const char* part) {
  io::JsonError err;
  std::optional<nlohmann::json> j = io::parse_json(text, limits, &err);
  if (!j) fail(file, ": ", part, ": ", err.message, " (damaged?)");
  return std::move(*j);
}

// One index entry, checked: everything decode_bet needs to read its frame.
struct IndexEntry {
  BetIndexEntry decl;
  uint64_t off, csize;
  std::string where;  // "<file>: tensor '<name>'"
};

IndexEntry parse_entry(const nlohmann::json& e, size_t i, const std::string& file, uint64_t data_start,
                       uint64_t index_offset, std::string_view bytes) {
  BET_CHECK(e.is_object(), file, ": tensor index entry ", i, " is not an object (damaged)");
  auto field = [&](const char* key) -> const nlohmann::json* {
    auto it = e.find(key);
    return it == e.end() ? nullptr : &*it;
  };
  const nlohmann::json* name = field("name");
  BET_CHECK(name && name->is_string(), file, ": tensor index entry ", i, " has no name (damaged)");
  IndexEntry out;
  out.decl.name = name->get<std::string>();
  out.where = file + ": tensor '" + out.decl.name + "'";
  const std::string& where = out.where;
  for (const char* key : {"dtype", "shape", "offset", "compressed_size", "raw_size", "checksum"})
    BET_CHECK(field(key), where, ": index entry incomplete (no ", key, ")");
  BET_CHECK(field("dtype")->is_string(), where, ": dtype is not a string (damaged)");
  out.decl.dtype = parse_dtype(field("dtype")->get<std::string>(), where);
  BET_CHECK(field("shape")->is_array(), where, ": bad shape");
  std::vector<uint64_t> dims;
  for (const auto& d : *field("shape")) dims.push_back(index_uint(d, where, "shape"));
  uint64_t numel = 0;
  out.decl.shape = checked_stored_shape(dims, where, &numel);
  out.off = index_uint(*field("offset"), where, "offset");
  out.csize = index_uint(*field("compressed_size"), where, "compressed_size");
  const uint64_t rsize = index_uint(*field("raw_size"), where, "raw_size");
  BET_CHECK(out.off >= data_start && out.off <= index_offset && out.csize <= index_offset - out.off, where,
            ": data out of bounds");
  BET_CHECK(rsize == numel * dtype_size(out.decl.dtype), where, ": raw size ", rsize, " does not match shape ",
            shape_str(out.decl.shape));
  out.decl.raw_size = rsize;
  // No zstd frame expands more than 32768x (a 128 KiB RLE block takes 4 bytes), so a
  // larger claim is damage.
  BET_CHECK(rsize / 32768 <= out.csize, where, ": raw size ", rsize, " is impossible for ", out.csize,
            " compressed bytes (damaged)");
  BET_CHECK(field("checksum")->is_string(), where, ": checksum is not a string (damaged)");
  BET_CHECK(hex64(hash(bytes.data() + out.off, out.csize)) == field("checksum")->get<std::string>(), where,
            ": checksum mismatch (damaged)");
  return out;
}

// Writes decompressed bytes [at, at + len) of the byte-plane stream of n elements of
// es bytes to their places in dst: stream byte q is byte q / n of element q % n.
void unshuffle_chunk(const uint8_t* src, size_t len, uint64_t at, uint8_t* dst, uint64_t n, size_t es) {
  if (len == 0) return;
  uint64_t k = at / n, i = at % n;
  for (size_t j = 0; j < len;) {
    const size_t run = size_t(std::min<uint64_t>(len - j, n - i));
    uint8_t* d = dst + i * es + k;
    for (size_t r = 0; r < run; ++r) d[r * es] = src[j + r];
    j += run;
    i += run;
    if (i == n) {
      i = 0;
      ++k;
    }
  }
}

// Why a frame could not be read; static strings, as this runs in a parallel region
// where nothing may throw.
struct FrameError {
  const char* what = nullptr;  // null: read
  const char* detail = nullptr;
};

constexpr size_t kChunk = size_t(128) << 10;  // decompressed a chunk at a time, in cache

// Decompresses one frame of exactly `rsize` bytes into the tensor at `dst` (n elements of
// es bytes), a chunk at a time: no buffer of the tensor's size, and never more output
// than declared. The frame must state its content size, equal to rsize, and fill csize.
FrameError read_frame(ZSTD_DCtx* dctx, const uint8_t* src, size_t csize, uint64_t rsize, uint8_t* dst, uint64_t n,
                      size_t es, uint8_t* chunk) {
  const unsigned long long declared = ZSTD_getFrameContentSize(src, csize);
  if (declared == ZSTD_CONTENTSIZE_ERROR) return {"is not a zstd frame"};
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN) return {"frame does not state its size"};
  if (declared != rsize) return {"frame states a size other than the index's raw size"};
  const size_t frame_size = ZSTD_findFrameCompressedSize(src, csize);
  if (ZSTD_isError(frame_size) || frame_size != csize) return {"is not exactly one zstd frame"};
  ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);
  ZSTD_inBuffer in{src, csize, 0};
  uint64_t produced = 0;
  uint8_t spare;
  for (;;) {
    const size_t room = size_t(std::min<uint64_t>(kChunk, rsize - produced));
    // Once the declared bytes are out, a one-byte buffer catches a frame that goes on.
    ZSTD_outBuffer out{room ? chunk : &spare, room ? room : 1, 0};
    const size_t in_before = in.pos;
    const size_t ret = ZSTD_decompressStream(dctx, &out, &in);
    if (ZSTD_isError(ret)) return {"cannot decompress", ZSTD_getErrorName(ret)};
    if (!room && out.pos) return {"frame holds more than its declared size"};
    unshuffle_chunk(chunk, out.pos, produced, dst, n, es);
    produced += out.pos;
    if (ret == 0) break;  // frame complete, its content checksum verified
    if (out.pos == 0 && in.pos == in_before) return {"frame is truncated"};
  }
  if (produced != rsize) return {"frame holds less than its declared size"};
  return {};
}

}  // namespace

BetContents decode_bet(std::string_view bytes, const std::string& file, const BetIndexCheck& check) {
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
  out.header = parse_part(bytes.substr(header_at, header_len), header_limits(), file, "header");
  const nlohmann::json index = parse_part(bytes.substr(index_offset, index_len), index_limits(), file, "tensor index");
  BET_CHECK(index.is_array(), file, ": tensor index is not a list");

  // Every entry checked, in order (the first damage reported is the first in the file),
  // and the sum of what they declare bounded, before anything is allocated for them.
  std::vector<IndexEntry> entries;
  std::vector<BetIndexEntry> table;
  entries.reserve(index.size());
  table.reserve(index.size());
  uint64_t total = 0;
  for (size_t i = 0; i < index.size(); ++i) {
    entries.push_back(parse_entry(index[i], i, file, data_start, index_offset, bytes));
    table.push_back(entries.back().decl);
    total += table.back().raw_size;  // each at most 2^43, at most 2^20 of them: no overflow
    BET_CHECK(total <= kMaxBetRawBytes, file, ": the tensors declare more than ", kMaxBetRawBytes,
              " bytes together (damaged?)");
  }
  if (check) check(out.header, table);

  out.tensors.reserve(entries.size());
  for (const IndexEntry& e : entries) {
    try {
      out.tensors.emplace_back(e.decl.name, Tensor::empty(e.decl.shape, e.decl.dtype));
    } catch (const std::bad_alloc&) {
      fail(e.where, ": out of memory allocating ", e.decl.raw_size, " bytes");
    } catch (const Error& err) {
      fail(e.where, ": ", err.what());
    }
  }

  // Nothing in the parallel region may throw (an exception leaving an OpenMP region
  // terminates the process): errors are recorded and raised after it.
  std::vector<FrameError> errors(entries.size());
  const long n_frames = long(entries.size());
#pragma omp parallel if (n_frames > 1)
  {
    ZSTD_DCtx* dctx = ZSTD_createDCtx();
    std::unique_ptr<uint8_t[]> chunk(new (std::nothrow) uint8_t[kChunk]);
#pragma omp for schedule(dynamic, 1)
    for (long k = 0; k < n_frames; ++k) {
      const IndexEntry& e = entries[size_t(k)];
      const Tensor& t = out.tensors[size_t(k)].second;
      if (!dctx || !chunk) {
        errors[size_t(k)] = {"cannot decompress", "out of memory"};
        continue;
      }
      errors[size_t(k)] = read_frame(dctx, reinterpret_cast<const uint8_t*>(bytes.data() + e.off), e.csize,
                                     e.decl.raw_size, static_cast<uint8_t*>(t.raw_data()), uint64_t(t.numel()),
                                     dtype_size(t.dtype()), chunk.get());
    }
    ZSTD_freeDCtx(dctx);
  }
  for (size_t k = 0; k < entries.size(); ++k) {
    const FrameError& e = errors[k];
    if (e.what) fail(entries[k].where, ": ", e.what, e.detail ? ": " : "", e.detail ? e.detail : "", " (damaged)");
  }
  return out;
}

void write_bet_file(const std::string& path, const nlohmann::json& header, const NamedTensorList& tensors, int level) {
  const EncodedBet enc = encode_parts(header, tensors, level);
  atomic_write_file(path, enc.pieces());
}

BetContents read_bet_file(const std::string& path, const BetIndexCheck& check, LoadMode mode) {
  if (mode == LoadMode::Read) return decode_bet(read_file(path), path, check);
  const MappedFile file(path);
  BetContents out;
  try {
    out = decode_bet(file.bytes(), path, check);
  } catch (const Error&) {
    file.check_unchanged();  // damage from a change under the mapping says so
    throw;
  }
  file.check_unchanged();
  return out;
}

}  // namespace bet::runtime
