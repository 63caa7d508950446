// Fixtures shared by the checkpoint and safetensors tests: a scratch directory, a small
// model with an AdamW that has taken steps, byte-exact comparisons, error capture.
#pragma once
#include <doctest/doctest.h>
#include <errno.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

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
