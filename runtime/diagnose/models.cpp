#include "runtime/diagnose/models.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <random>

#include "engine/error.h"
#include "engine/random.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/data/batching.h"
#include "runtime/data/synthetic.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/train/train_step.h"

namespace bet::diagnose {

std::string ModelSpec::name() const {
  return (task == model::Task::LM ? "lm-" : "cls-") + std::string(layer == model::LayerKind::Bet ? "" : "std-") +
         model::to_string(pe) + "-L" + std::to_string(layers) + "-d" + std::to_string(d_model) + "-n" +
         std::to_string(seq_len) + "-s" + std::to_string(steps) + "-seed" + std::to_string(seed);
}

model::ModelConfig ModelSpec::config() const {
  model::ModelConfig c;
  c.task = task;
  c.layer = layer;
  c.pe = pe;
  c.vocab_size = 259;  // the byte tokenizer's, as `betctl train` gives synthetic models
  c.d_model = d_model;
  c.heads = heads;
  c.layers = layers;
  c.max_len = seq_len + 1;  // BOS + outcomes
  c.k_permutations = k_permutations;
  c.dropout = 0.0;  // the theory's quantities are about the deterministic predictive
  if (task == model::Task::Classify) {
    c.num_classes = 2;
    c.labels = {"low", "high"};
    c.dropout = 0.1;  // so the calibration table's MC-dropout signals have masks to draw
  }
  return c;
}

nlohmann::json ModelSpec::recipe() const {
  return {{"diagnose_spec", name()}, {"steps", steps}, {"batch_size", batch_size},         {"lr", lr},
          {"warmup", warmup},        {"seed", seed},   {"k_permutations", k_permutations}, {"heads", heads}};
}

std::vector<ClassExample> classification_examples(int count, int length, uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0xc1a55ULL);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<ClassExample> out(static_cast<size_t>(count));
  for (auto& e : out) {
    e.p = u(rng);  // Beta(1, 1)
    e.label = e.p > 0.5 ? 1 : 0;
    for (int t = 0; t < length; ++t) e.outcomes.push_back(u(rng) < e.p ? 1 : 0);
  }
  return out;
}

double bayes_prob_high(const std::vector<int>& outcomes) {
  // P(p > 1/2 | h of t) with p | data ~ Beta(h + 1, t - h + 1) equals P(Bin(t + 1, 1/2) <= h).
  int h = 0;
  for (int x : outcomes) h += x;
  const int n = int(outcomes.size()) + 1;
  double s = 0, log_c = 0;  // log C(n, j), built up term by term
  for (int j = 0; j <= h; ++j) {
    if (j > 0) log_c += std::log(double(n - j + 1)) - std::log(double(j));
    s += std::exp(log_c - n * std::log(2.0));
  }
  return std::min(1.0, s);
}

std::string outcome_text(const std::vector<int>& outcomes) {
  std::string s;
  for (int x : outcomes) s.push_back(char(x ? 1 : 0));
  return s;
}

nlohmann::json byte_tokenizer_json() { return runtime::make_byte_tokenizer()->to_json(); }

std::shared_ptr<model::BetModel> train_model(const ModelSpec& spec, const Progress& progress) {
  const model::ModelConfig cfg = spec.config();
  Generator init(mix_key({spec.seed, 0x1417}));
  auto m = std::make_shared<model::BetModel>(cfg, init);
  runtime::TrainStepConfig tc;
  tc.lr = spec.lr;
  tc.warmup = spec.warmup;
  tc.total_steps = spec.steps;
  tc.weight_decay = 0.01;
  tc.clip = 1.0;
  tc.mdl_beta = 0.1;  // betctl train's defaults
  tc.seed = spec.seed;
  runtime::TrainStep step(*m, tc);
  m->train();
  runtime::SyntheticSpec syn;
  syn.length = spec.seq_len;
  const auto t0 = std::chrono::steady_clock::now();
  auto last_report = t0;
  double loss = NAN;
  for (int64_t n = 0; n < spec.steps; ++n) {
    std::vector<runtime::EncodedSequence> seqs(size_t(spec.batch_size));
    std::vector<int64_t> idx(size_t(spec.batch_size));
    if (spec.task == model::Task::LM) {
      for (int64_t r = 0; r < spec.batch_size; ++r) {
        seqs[size_t(r)].ids = runtime::synthetic_sequence(syn, spec.seed, uint64_t(n * spec.batch_size + r));
        idx[size_t(r)] = r;
      }
    } else {
      const auto ex =
          classification_examples(int(spec.batch_size), int(spec.seq_len), spec.seed * 1000003 + uint64_t(n));
      for (int64_t r = 0; r < spec.batch_size; ++r) {
        for (int x : ex[size_t(r)].outcomes) seqs[size_t(r)].ids.push_back(runtime::kFirstTokenId + x);
        seqs[size_t(r)].label = ex[size_t(r)].label;
        idx[size_t(r)] = r;
      }
    }
    runtime::Batch b = spec.task == model::Task::LM ? runtime::make_lm_batch(seqs, idx, cfg.max_len)
                                                    : runtime::make_classify_batch(seqs, idx, cfg.max_len);
    for (int64_t r = 0; r < spec.batch_size; ++r) b.indices[size_t(r)] = n * spec.batch_size + r;
    loss = step.step(b, n).loss;
    const auto now = std::chrono::steady_clock::now();
    if (progress && (now - last_report > std::chrono::seconds(2) || n + 1 == spec.steps)) {
      last_report = now;
      char buf[160];
      std::snprintf(buf, sizeof buf, "training %s: step %lld/%lld, loss %.4f, %.1f s", spec.name().c_str(),
                    static_cast<long long>(n + 1), static_cast<long long>(spec.steps), loss,
                    std::chrono::duration<double>(now - t0).count());
      progress(buf);
    }
  }
  m->eval();
  return m;
}

std::shared_ptr<model::BetModel> load_model_file(const std::string& path) {
  runtime::Checkpoint ck = runtime::load_checkpoint(path);
  std::shared_ptr<model::BetModel> m(runtime::build_model(ck, path).release());
  m->eval();
  return m;
}

std::shared_ptr<model::BetModel> cached_model(const ModelSpec& spec, const std::string& models_dir,
                                              const Progress& progress) {
  const std::string path = (std::filesystem::path(models_dir) / (spec.name() + ".bet")).string();
  if (std::filesystem::exists(path)) {
    try {
      runtime::Checkpoint ck = runtime::load_checkpoint(path);
      if (ck.training_state.value("diagnose", nlohmann::json()) == spec.recipe()) {
        std::shared_ptr<model::BetModel> m(runtime::build_model(ck, path).release());
        m->eval();
        if (progress) progress("reusing " + path);
        return m;
      }
      if (progress) progress(path + " was trained differently; training it again");
    } catch (const std::exception& e) {
      if (progress) progress(std::string("cannot reuse ") + path + " (" + e.what() + "); training it again");
    }
  }
  auto m = train_model(spec, progress);
  std::filesystem::create_directories(models_dir);
  runtime::Checkpoint ck = runtime::make_checkpoint(*m, nullptr, byte_tokenizer_json(), "production");
  ck.training_state = {{"diagnose", spec.recipe()}, {"step", spec.steps}};
  ck.card = {{"name", spec.name()}, {"description", "trained by betctl diagnose on its built-in task"}};
  runtime::save_checkpoint(path, ck);
  return m;
}

}  // namespace bet::diagnose
