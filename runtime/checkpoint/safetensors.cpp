#include "runtime/checkpoint/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <optional>
#include <set>
#include <vector>

#include "engine/autograd.h"
#include "model/config.h"
#include "runtime/checkpoint/config_json.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/bounded_json.h"

namespace bet::runtime {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; add byte swaps");

using nlohmann::json;

namespace {

const char* st_dtype(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
  }
  return "?";
}

bool parse_st_dtype(const std::string& s, DType& out) {
  for (DType t : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32, DType::I64})
    if (s == st_dtype(t)) {
      out = t;
      return true;
    }
  return false;
}

std::string range_str(uint64_t b, uint64_t e) { return "[" + std::to_string(b) + ", " + std::to_string(e) + ")"; }

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal half: normalise
    exp = 113;
    while (!(mant & 0x400)) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
  }
  return std::bit_cast<float>(bits);
}

Tensor to_f32(const Tensor& t, const std::string& where) {
  switch (t.dtype()) {
    case DType::F32: return t;
    case DType::F64: return t.to(DType::F32);
    case DType::F16:
    case DType::BF16: {
      Tensor src = t.contiguous(), out = Tensor::empty(t.shape(), DType::F32);
      const uint16_t* s = static_cast<const uint16_t*>(src.raw_data());
      float* d = out.data<float>();
      const bool bf = t.dtype() == DType::BF16;
      for (int64_t i = 0; i < t.numel(); ++i)
        d[i] = bf ? std::bit_cast<float>(uint32_t(s[i]) << 16) : half_to_float(s[i]);
      return out;
    }
    default: fail(where, " is ", dtype_name(t.dtype()), "; model weights must be floating point");
  }
}

}  // namespace

std::string encode_safetensors(const NamedTensorList& tensors, const SafetensorsMetadata& metadata) {
  autograd::NoGradGuard ng;
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<Tensor> data;
  uint64_t offset = 0;
  std::set<std::string> seen;
  for (const auto& [name, t0] : tensors) {
    BET_CHECK(name != "__metadata__", "safetensors: '__metadata__' cannot name a tensor");
    BET_CHECK(seen.insert(name).second, "safetensors: tensor '", name, "' appears twice");
    Tensor t = t0.detach().contiguous().to(Device::cpu());  // files are device-independent
    header[name] = {{"dtype", st_dtype(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
    data.push_back(t);
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + h.size() + offset);
  for (int i = 0; i < 8; ++i) out.push_back(char((uint64_t(h.size()) >> (8 * i)) & 0xff));
  out += h;
  for (const Tensor& t : data) out.append(static_cast<const char*>(t.raw_data()), t.nbytes());
  return out;
}

SafetensorsContents decode_safetensors(const std::string& bytes, const std::string& file) {
  BET_CHECK(bytes.size() >= 8, file, ": not a safetensors file (", bytes.size(), " bytes; truncated?)");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(bytes[size_t(i)])) << (8 * i);
  BET_CHECK(n <= kMaxSafetensorsHeader, file, ": safetensors header size ", n, " is too large (limit ",
            kMaxSafetensorsHeader, "; not a safetensors file?)");
  BET_CHECK(n <= bytes.size() - 8, file, ": safetensors header size ", n, " exceeds the file (", bytes.size(),
            " bytes; truncated?)");
  BET_CHECK(n >= 2 && bytes[8] == '{', file, ": safetensors header does not start with '{'");

  // Parsed in linear time with limits; duplicate keys are refused (the parser would
  // otherwise keep the last, and the reference loader refuses them). Three levels: the
  // header object, a tensor entry (or __metadata__), a shape or data_offsets list.
  io::JsonLimits limits;
  limits.max_depth = 3;
  limits.max_values = kMaxSafetensorsValues;
  limits.max_array_items = 1024;
  io::JsonError jerr;
  std::optional<json> parsed = io::parse_json(std::string_view(bytes).substr(8, n), limits, &jerr);
  if (!parsed) fail(file, ": safetensors header: ", jerr.message, " (at byte ", 8 + jerr.offset, " of the file)");
  const json header = std::move(*parsed);
  BET_CHECK(header.is_object(), file, ": safetensors header is not a JSON object");
  const uint64_t buf_start = 8 + n, buf_size = bytes.size() - buf_start;

  SafetensorsContents out;
  std::vector<Entry> entries;
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") {
      BET_CHECK(e.is_object(), file, ": __metadata__ is not an object of strings");
      for (const auto& [k, v] : e.items()) {
        BET_CHECK(v.is_string(), file, ": __metadata__ '", k, "' is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = file + ": tensor '" + name + "'";
    BET_CHECK(e.is_object(), where, ": entry is not an object");
    for (const auto& [k, v] : e.items())
      BET_CHECK(k == "dtype" || k == "shape" || k == "data_offsets", where, ": unknown field '", k, "'");
    BET_CHECK(e.contains("dtype") && e["dtype"].is_string(), where, ": no dtype");
    Entry en;
    en.name = name;
    const std::string ds = e["dtype"].get<std::string>();
    BET_CHECK(parse_st_dtype(ds, en.dtype), where, ": dtype '", ds,
              "' is not supported (F32, F64, BF16, F16, I32, I64)");
    BET_CHECK(e.contains("shape") && e["shape"].is_array(), where, ": no shape list");
    // The .bet reader's shape bounds: each dim and the product of max(d, 1) bounded, so
    // a zero among huge dims cannot pass as an empty tensor with overflowing strides.
    std::vector<uint64_t> dims;
    for (const auto& d : e["shape"]) {
      BET_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0), where,
                ": shape entries must be non-negative integers, got ", d.dump());
      dims.push_back(d.get<uint64_t>());
    }
    uint64_t numel = 0;
    en.shape = checked_stored_shape(dims, where, &numel);
    const auto& off = e.contains("data_offsets") ? e["data_offsets"] : json();
    BET_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(), where,
              ": data_offsets must be [begin, end], non-negative integers");
    en.begin = off[0].get<uint64_t>();
    en.end = off[1].get<uint64_t>();
    BET_CHECK(en.begin <= en.end, where, ": data_offsets ", range_str(en.begin, en.end), " end before they begin");
    BET_CHECK(en.end <= buf_size, where, ": data_offsets ", range_str(en.begin, en.end), " run past the buffer (",
              buf_size, " bytes; truncated?)");
    BET_CHECK(en.end - en.begin == numel * dtype_size(en.dtype), where, ": ", en.end - en.begin,
              " bytes do not match ", ds, " ", shape_str(en.shape), " (", numel * dtype_size(en.dtype), " bytes)");
    entries.push_back(std::move(en));
  }

  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end != b.end ? a.end < b.end : a.name < b.name;
  });
  uint64_t at = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& en = entries[i];
    if (en.begin < at)
      fail(file, ": tensors '", entries[i - 1].name, "' ", range_str(entries[i - 1].begin, entries[i - 1].end),
           " and '", en.name, "' ", range_str(en.begin, en.end), " overlap");
    BET_CHECK(en.begin == at, file, ": tensor '", en.name, "' begins at ", en.begin, ", leaving a gap after byte ", at);
    at = en.end;
  }
  BET_CHECK(at == buf_size, file, ": the buffer has ", buf_size - at, " bytes past the last tensor (damaged?)");

  for (const Entry& en : entries) {
    Tensor t = Tensor::empty(en.shape, en.dtype);
    if (en.end > en.begin) std::memcpy(t.raw_data(), bytes.data() + buf_start + en.begin, en.end - en.begin);
    out.tensors.emplace_back(en.name, t);
  }
  return out;
}

void export_safetensors(const std::string& path, const NamedTensorList& tensors, const SafetensorsMetadata& metadata) {
  std::string bytes;
  try {
    bytes = encode_safetensors(tensors, metadata);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  atomic_write_file(path, bytes);
}

SafetensorsContents import_safetensors(const std::string& path) { return decode_safetensors(read_file(path), path); }

void export_checkpoint_safetensors(const std::string& path, const Checkpoint& ck) {
  BET_CHECK(ck.quantize.empty(), path, ": an int8 (quantized) model cannot be written as safetensors; export the f32 "
            "checkpoint instead");
  SafetensorsMetadata meta{{"format", "betctl"},
                           {"format_version", std::to_string(kCheckpointFormatVersion)},
                           {"kind", ck.kind},
                           {"config", config_to_json(ck.config).dump()},
                           {"tokenizer", ck.tokenizer.dump()},
                           {"metrics", (ck.metrics.is_null() ? json::object() : ck.metrics).dump()},
                           {"card", (ck.card.is_null() ? json::object() : ck.card).dump()}};
  export_safetensors(path, ck.weights, meta);
}

Checkpoint import_checkpoint_safetensors(const std::string& path, const json* config, const json* tokenizer) {
  SafetensorsContents st = import_safetensors(path);
  auto meta_json = [&](const std::string& key) -> json {
    auto it = st.metadata.find(key);
    if (it == st.metadata.end()) return json();
    return io::parse_json_or_throw(it->second, io::JsonLimits{}, path + ": __metadata__ '" + key + "'");
  };

  Checkpoint ck;
  ck.kind = "production";
  if (config) {
    ck.config = config_from_json(*config, path + ": --config", true);
  } else {
    json c = meta_json("config");
    BET_CHECK(!c.is_null(), path, ": no model config in __metadata__ (exported by PyTorch?); pass --config FILE");
    ck.config = config_from_json(c, path + ": __metadata__");
  }
  if (tokenizer) {
    ck.tokenizer = *tokenizer;
  } else if (json t = meta_json("tokenizer"); !t.is_null()) {
    ck.tokenizer = t;
  } else {
    BET_CHECK(ck.config.vocab_size == 259, path, ": no tokenizer in __metadata__ and vocab_size ",
              ck.config.vocab_size, " is not the byte tokenizer's 259; pass the tokenizer");
    ck.tokenizer = {{"kind", "byte"}, {"vocab_size", 259}};
  }
  BET_CHECK(ck.tokenizer.is_object() && ck.tokenizer.contains("kind"), path, ": tokenizer has no 'kind'");
  for (const char* key : {"metrics", "card"})
    if (json v = meta_json(key); v.is_object()) (key == std::string("metrics") ? ck.metrics : ck.card) = v;

  // Check the tensors against the parameters the config implies (without building the
  // model: a config within bounds may still describe more than this machine holds), so
  // a mismatched config fails here, naming the tensor, rather than at serve time.
  autograd::NoGradGuard ng;
  std::map<std::string, Tensor> by_name;
  for (auto& [n, t] : st.tensors) by_name.emplace(n, t);
  std::set<std::string> used;
  for (const model::ParamSpec& p : model::parameter_specs(ck.config)) {
    const std::string& n = p.name;
    auto it = by_name.find(n);
    if (it == by_name.end()) {
      BET_CHECK(n == "temperature", path, ": tensor '", n, "' of the model is missing");
      ck.weights.emplace_back(n, Tensor::ones({}, DType::F32));
      continue;
    }
    const std::string where = path + ": tensor '" + n + "'";
    BET_CHECK(it->second.shape() == p.shape, where, " has shape ", shape_str(it->second.shape()),
              ", the config's model expects ", shape_str(p.shape));
    ck.weights.emplace_back(n, to_f32(it->second, where));
    used.insert(n);
  }
  for (const auto& [n, t] : st.tensors)
    BET_CHECK(used.count(n), path, ": tensor '", n, "' is not a parameter of the config's model");
  return ck;
}

}  // namespace bet::runtime
