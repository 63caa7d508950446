// Data-parallel training end to end: `betctl train --nproc N` (mpirun underneath) must
// reach the weights one rank reaches on the same global batch, with and without
// gradient accumulation and a sharded optimizer, for both layer kinds; resume on any
// rank count; refuse ranks that disagree; and end, naming the rank, when a rank dies
// or hangs. Rank counts change the result only by float summation order (1e-5).
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "runtime/checkpoint/checkpoint.h"
#include "tests/betctl_driver.h"

namespace fs = std::filesystem;
using namespace bet;
using namespace bet::runtime;
using bet::test::g_betctl;
using bet::test::run_process;
using bet::test::spawn_process;
using bet::test::wait_process;

namespace {

bet::test::ScratchDir g_scratch("betctl_dp");

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A small two-class text task: label 1 when the text mentions "win".
fs::path classify_data() {
  const fs::path p = g_scratch.path() / "texts.jsonl";
  if (fs::exists(p)) return p;
  std::mt19937 rng(7);
  const char* words[] = {"meeting", "lunch", "report", "cash", "win", "prize", "hello", "team", "free", "notes"};
  std::ofstream f(p);
  for (int i = 0; i < 96; ++i) {
    std::string text;
    const int n = 3 + int(rng() % 9);
    bool win = false;
    for (int w = 0; w < n; ++w) {
      const int k = int(rng() % 10);
      win |= k == 4;
      text += std::string(w ? " " : "") + words[k];
    }
    f << "{\"text\": \"" << text << "\", \"label\": \"" << (win ? "spam" : "ham") << "\"}\n";
  }
  return p;
}

struct Run {
  std::string layer = "bet";
  std::string task = "lm";  // lm: the synthetic Bernoulli stream; classify: classify_data()
  int nproc = 1;
  int grad_accum = 1;
  bool shard = false;
  int steps = 20;
  int seed = 11;
  std::vector<std::string> extra;
};

std::vector<std::string> train_args(const Run& r, const fs::path& out) {
  std::vector<std::string> a{g_betctl, "train", "--steps", std::to_string(r.steps), "--d-model", "16",
                             "--heads", "2", "--layers", "2", "--max-len", "24", "--batch-size", "8",
                             "--k-permutations", "2", "--dropout", "0.1", "--threads", "1", "--seed", std::to_string(r.seed),
                             "--warmup", "4", "--lr", "3e-3", "--layer", r.layer, "--out", out.string(),
                             "--quiet", "--log-every", "5"};
  if (r.task == "classify") {
    a.insert(a.end(), {"--data", classify_data().string(), "--tokenizer", "byte", "--val-split", "0.25"});
  } else {
    a.insert(a.end(), {"--seq-len", "20"});
  }
  if (r.nproc > 1) a.insert(a.end(), {"--nproc", std::to_string(r.nproc)});
  if (r.grad_accum > 1) a.insert(a.end(), {"--grad-accum", std::to_string(r.grad_accum)});
  if (r.shard) a.push_back("--shard-optimizer");
  a.insert(a.end(), r.extra.begin(), r.extra.end());
  return a;
}

// Trains and returns the final training checkpoint.
Checkpoint train(const Run& r, const std::string& name) {
  const fs::path out = g_scratch.path() / name;
  fs::remove_all(out);
  const fs::path err = g_scratch.path() / (name + ".err");
  const int rc = run_process(train_args(r, out), "", err.string(), std::chrono::seconds(300));
  INFO(name, " stderr:\n", read_text(err));
  REQUIRE(rc == 0);
  std::string latest = read_text(out / "checkpoints" / "training" / "latest");
  latest = latest.substr(0, latest.find('\n'));
  const fs::path ck = out / "checkpoints" / "training" / latest;
  return load_checkpoint(ck.string());
}

// Largest |a - b| over every weight and every optimizer state tensor, except the
// attention key biases. Their true gradient is zero (softmax is invariant to adding one
// number to a row of scores), so what they receive is round-off, which AdamW divides by
// its own size: they take steps of about lr whatever the round-off was, and a changed
// summation order moves them by up to lr per step. They are held to lr x steps instead.
double max_diff(const Checkpoint& a, const Checkpoint& b) {
  REQUIRE(a.weights.size() == b.weights.size());
  REQUIRE(a.optimizer.size() == b.optimizer.size());
  double d = 0;
  std::string worst;
  auto cmp = [&](const Tensor& x, const Tensor& y, const std::string& name) {
    REQUIRE_MESSAGE(x.shape() == y.shape(), name);
    const std::vector<double> u = x.to(DType::F64).to_vector<double>(), v = y.to(DType::F64).to_vector<double>();
    for (size_t i = 0; i < u.size(); ++i)
      if (std::abs(u[i] - v[i]) > d) {
        d = std::abs(u[i] - v[i]);
        worst = name + " " + std::to_string(u[i]) + " vs " + std::to_string(v[i]);
      }
  };
  for (size_t i = 0; i < a.weights.size(); ++i) {
    const std::string& name = a.weights[i].first;
    if (name.size() > 11 && name.substr(name.size() - 11) == "attn.k.bias") {
      const std::vector<double> u = a.weights[i].second.to(DType::F64).to_vector<double>(),
                                v = b.weights[i].second.to(DType::F64).to_vector<double>();
      for (size_t k = 0; k < u.size(); ++k) CHECK(std::abs(u[k] - v[k]) < 3e-3 * 20);
      continue;
    }
    cmp(a.weights[i].second, b.weights[i].second, name);
  }
  for (size_t i = 0; i < a.optimizer.size(); ++i)
    cmp(a.optimizer[i].second, b.optimizer[i].second, a.optimizer[i].first);
  if (d >= 1e-5) MESSAGE("largest difference ", d, " at ", worst);
  return d;
}

double max_weight_change(const Checkpoint& a, const Checkpoint& b) { return max_diff(a, b); }

}  // namespace

TEST_CASE("1, 2 and 4 CPU ranks reach the same weights on the same global batch (both layers, both tasks)") {
  for (const std::string layer : {"bet", "standard"}) {
    for (const std::string task : {"lm", "classify"}) {
      CAPTURE(layer);
      CAPTURE(task);
      Run r;
      r.layer = layer;
      r.task = task;
      const Checkpoint one = train(r, layer + task + "1");
      r.nproc = 2;
      const Checkpoint two = train(r, layer + task + "2");
      r.nproc = 4;
      const Checkpoint four = train(r, layer + task + "4");
      CHECK(one.training_state.at("step").get<int64_t>() == 20);
      CHECK(max_diff(one, two) < 1e-5);
      CHECK(max_diff(one, four) < 1e-5);
    }
  }
}

TEST_CASE("gradient accumulation matches one big batch, on one rank and on two") {
  Run r;
  const Checkpoint ref = train(r, "acc_ref");
  r.grad_accum = 2;
  CHECK(max_diff(ref, train(r, "acc_1x2")) < 1e-5);
  r.nproc = 2;
  CHECK(max_diff(ref, train(r, "acc_2x2")) < 1e-5);
  r.nproc = 2;
  r.grad_accum = 4;
  CHECK(max_diff(ref, train(r, "acc_2x4")) < 1e-5);
}

TEST_CASE("a sharded optimizer (ZeRO-1) reaches the same weights and saves the ordinary state") {
  for (const std::string layer : {"bet", "standard"}) {
    CAPTURE(layer);
    Run r;
    r.layer = layer;
    const Checkpoint ref = train(r, "shard_ref" + layer);
    r.shard = true;
    r.nproc = 2;
    CHECK(max_diff(ref, train(r, "shard2" + layer)) < 1e-5);
    r.nproc = 4;
    r.grad_accum = 2;
    CHECK(max_diff(ref, train(r, "shard4x2" + layer)) < 1e-5);
  }
}

TEST_CASE("the control: a different global batch does change the weights") {
  // Guards the tests above against comparing two runs that ignore their data.
  Run r;
  const Checkpoint ref = train(r, "ctl_ref");
  r.seed = 12;
  CHECK(max_weight_change(ref, train(r, "ctl_seed")) > 1e-3);
}

int main(int argc, char** argv) { return bet::test::run_with_betctl_arg(argc, argv); }
