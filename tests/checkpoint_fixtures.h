// Fixtures shared by the checkpoint and safetensors tests: a scratch directory, a small
// model with an AdamW that has taken steps, byte-exact comparisons, error capture.
#pragma once
#include <doctest/doctest.h>
#include <errno.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"
#include "model/bet_model.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/io/atomic_file.h"
#include "runtime/tokenizer/tokenizer.h"

namespace bet::testing {

namespace fs = std::filesystem;
using namespace bet::runtime;

// A scratch directory per test binary and process.
inline fs::path test_root() {
  return fs::temp_directory_path() / (std::string("bet_") + program_invocation_short_name + "_" + std::to_string(::getpid()));
}

// Removes this run's files when the test binary exits.
struct RemoveTestRoot {
  ~RemoveTestRoot() {
    std::error_code ec;
    fs::remove_all(test_root(), ec);
  }
};
inline RemoveTestRoot remove_test_root;

inline std::string fresh_dir(const std::string& name) {
  auto dir = test_root() / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

inline model::ModelConfig small_config() {
  model::ModelConfig c;
  c.task = model::Task::Classify;
  c.d_model = 16;
  c.heads = 2;
  c.layers = 1;
  c.max_len = 16;
  c.k_permutations = 2;
  c.n_harmonics = 4;
  c.num_classes = 3;
  c.dropout = 0.0;
  c.labels = {"neg", "neutral", "pos"};
  return c;
}

// A model and an AdamW that has taken `steps` steps, so moments and step counts are
// not their initial values.
struct Trained {
  std::unique_ptr<model::BetModel> model;
  std::unique_ptr<optim::AdamW> opt;
};

inline void adamw_step(Trained& t) {
  Tensor loss;
  for (const Tensor& p : t.model->trainable_tensors()) {
    Tensor l = add(sum(mul(p, p)), mul(sum(p), 0.3));
    loss = loss.defined() ? add(loss, l) : l;
  }
  loss.backward();
  t.opt->step();
  t.opt->zero_grad();
}

inline Trained make_trained(uint64_t seed, int steps, const model::ModelConfig& cfg = small_config()) {
  Generator g(seed);
  Trained t;
  t.model = std::make_unique<model::BetModel>(cfg, g);
  t.opt = std::make_unique<optim::AdamW>(t.model->trainable_tensors());
  for (int i = 0; i < steps; ++i) adamw_step(t);
  return t;
}

inline bool bytes_equal(const Tensor& a0, const Tensor& b0) {
  if (a0.dtype() != b0.dtype() || a0.shape() != b0.shape()) return false;
  Tensor a = a0.contiguous(), b = b0.contiguous();
  return std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

inline void check_lists_equal(const NamedTensorList& a, const NamedTensorList& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].first);
    CHECK(a[i].first == b[i].first);
    CHECK(bytes_equal(a[i].second, b[i].second));
  }
}

inline Checkpoint checkpoint_of(const Trained& t, int64_t step) {
  Checkpoint ck = make_checkpoint(*t.model, t.opt.get(), make_byte_tokenizer()->to_json());
  ck.training_state = {{"step", step}, {"rng", {{"seed", 7}, {"offset", 12345}}}};
  ck.metrics = {{"val/loss", 0.5}};
  return ck;
}

inline void flip_byte(const std::string& path, size_t at) {
  std::string bytes = read_file(path);
  REQUIRE(at < bytes.size());
  bytes[at] = char(bytes[at] ^ 0x40);
  atomic_write_file(path, bytes);
}

// --- Crafted files: files that declare far more than a test may allocate ---

struct CraftedTensor {
  std::string name;
  DType dtype;
  Shape shape;
};

// One zstd frame (content size and checksum set, as encode_bet writes them) of `raw`
// zero bytes, compressed from a small buffer: a GiB of zeros costs no GiB here.
inline std::string zero_frame(uint64_t raw) {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 1);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  ZSTD_CCtx_setPledgedSrcSize(cctx, raw);
  static const std::vector<char> zeros(size_t(1) << 20, 0);
  std::string out;
  std::vector<char> buf(ZSTD_CStreamOutSize());
  uint64_t left = raw;
  for (;;) {
    const size_t n = size_t(std::min<uint64_t>(left, zeros.size()));
    ZSTD_inBuffer in{zeros.data(), n, 0};
    const ZSTD_EndDirective mode = n == left ? ZSTD_e_end : ZSTD_e_continue;
    size_t rest;
    do {
      ZSTD_outBuffer o{buf.data(), buf.size(), 0};
      rest = ZSTD_compressStream2(cctx, &o, &in, mode);
      REQUIRE(!ZSTD_isError(rest));
      out.append(buf.data(), o.pos);
    } while (mode == ZSTD_e_end ? rest != 0 : in.pos < in.size);
    left -= n;
    if (mode == ZSTD_e_end) break;
  }
  ZSTD_freeCCtx(cctx);
  return out;
}

// A .bet file with every checksum right, its header `header` and its tensors all zeros:
// one frame per distinct (dtype, shape), shared by every entry of that kind (the reader
// allows entries to share bytes). The tensors are never materialised, so a test can
// declare gigabytes in a file of kilobytes. Layout as in bet_format.h.
inline std::string craft_bet(const nlohmann::json& header, const std::vector<CraftedTensor>& tensors) {
  auto put_u64 = [](std::string& s, uint64_t v) {
    for (int i = 0; i < 8; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
  };
  auto hex = [](uint64_t v) {
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
    return std::string(b);
  };
  std::string out("BETCKPT1", 8);
  out.append("\x01\0\0\0\0\0\0\0", 8);
  const std::string h = header.dump();
  put_u64(out, h.size());
  out += h;
  put_u64(out, XXH3_64bits(h.data(), h.size()));
  std::map<std::pair<int, Shape>, nlohmann::json> frames;  // -> {offset, compressed_size, checksum}
  nlohmann::json index = nlohmann::json::array();
  for (const CraftedTensor& t : tensors) {
    uint64_t raw = dtype_size(t.dtype);
    for (int64_t d : t.shape) raw *= uint64_t(d);
    nlohmann::json& f = frames[{int(t.dtype), t.shape}];
    if (f.is_null()) {
      const std::string frame = zero_frame(raw);
      f = {{"offset", out.size()},
           {"compressed_size", frame.size()},
           {"checksum", hex(XXH3_64bits(frame.data(), frame.size()))}};
      out += frame;
    }
    index.push_back({{"name", t.name}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"offset", f["offset"]},
                     {"compressed_size", f["compressed_size"]}, {"raw_size", raw}, {"checksum", f["checksum"]}});
  }
  const std::string idx = index.dump();
  std::string footer;
  put_u64(footer, out.size());
  put_u64(footer, idx.size());
  put_u64(footer, XXH3_64bits(idx.data(), idx.size()));
  put_u64(footer, XXH3_64bits(footer.data(), footer.size()));
  footer.append("BETFOOT1", 8);
  return out + idx + footer;
}

// The tensor table of the model `cfg` describes (every parameter, f32).
inline std::vector<CraftedTensor> model_table(const model::ModelConfig& cfg) {
  std::vector<CraftedTensor> t;
  for (const model::ParamSpec& p : model::parameter_specs(cfg)) t.push_back({p.name, DType::F32, p.shape});
  return t;
}

// A production checkpoint header for `cfg` (byte tokenizer), as save_checkpoint writes it.
inline nlohmann::json header_for(const model::ModelConfig& cfg) {
  Checkpoint ck;
  ck.config = cfg;
  ck.kind = "production";
  ck.tokenizer = make_byte_tokenizer()->to_json();
  return checkpoint_header(ck);
}

inline doctest::Contains has(const std::string& s) { return doctest::Contains(s.c_str()); }

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace bet::testing
