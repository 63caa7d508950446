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

#include "engine/dist/launch.h"
#include "platform/device.h"
#include "runtime/checkpoint/checkpoint.h"
#include "tests/betctl_driver.h"

namespace fs = std::filesystem;
using namespace bet;
using namespace bet::runtime;
using bet::test::g_betctl;
using bet::test::read_text;
using bet::test::run_process;
using bet::test::spawn_process;
using bet::test::wait_process;

namespace {

bet::test::ScratchDir g_scratch("betctl_dp");

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
  int layers = 2;
  int d_model = 16;
  int seq_len = 20;
  std::string device = "cpu";
  std::vector<std::string> extra;
};

std::vector<std::string> train_args(const Run& r, const fs::path& out) {
  std::vector<std::string> a{g_betctl, "train", "--steps", std::to_string(r.steps), "--d-model", std::to_string(r.d_model),
                             "--heads", "2", "--layers", std::to_string(r.layers), "--max-len", "24", "--batch-size", "8",
                             "--k-permutations", "2", "--dropout", "0.1", "--threads", "1", "--seed", std::to_string(r.seed),
                             "--warmup", "4", "--lr", "3e-3", "--layer", r.layer, "--out", out.string(),
                             "--quiet", "--log-every", "5", "--device", r.device};
  if (r.task == "classify") {
    a.insert(a.end(), {"--data", classify_data().string(), "--tokenizer", "byte", "--val-split", "0.25"});
  } else {
    a.insert(a.end(), {"--seq-len", std::to_string(r.seq_len)});
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

// The CPU cases run in the CPU configuration; a build with (emulated) GPUs runs the
// GPU case only.
const bool kGpu = bet::cuda_available();

TEST_CASE("1, 2 and 4 CPU ranks reach the same weights on the same global batch (both layers, both tasks)" *
          doctest::skip(kGpu)) {
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

TEST_CASE("gradient accumulation matches one big batch, on one rank and on two" * doctest::skip(kGpu)) {
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

TEST_CASE("a sharded optimizer (ZeRO-1) reaches the same weights and saves the ordinary state" *
          doctest::skip(kGpu)) {
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

TEST_CASE("parameters no rank gives a gradient take no step, as with one rank (bet, pe none)" *
          doctest::skip(kGpu)) {
  // With pe=none the positional debiasing has nothing to act on and gets no gradient:
  // one rank's AdamW skips it (no decay), so the ranks must too, sharded or not.
  Run r;
  r.extra = {"--pe", "none"};
  const Checkpoint ref = train(r, "unused_ref");
  r.nproc = 2;
  CHECK(max_diff(ref, train(r, "unused2")) < 1e-5);
  r.shard = true;
  CHECK(max_diff(ref, train(r, "unused2_shard")) < 1e-5);
}

TEST_CASE("the control: a different global batch does change the weights" * doctest::skip(kGpu)) {
  // Guards the tests above against comparing two runs that ignore their data.
  Run r;
  const Checkpoint ref = train(r, "ctl_ref");
  r.seed = 12;
  CHECK(max_weight_change(ref, train(r, "ctl_seed")) > 1e-3);
}

// The newest training checkpoint of a run folder.
Checkpoint latest_of(const fs::path& out) {
  std::string latest = read_text(out / "checkpoints" / "training" / "latest");
  latest = latest.substr(0, latest.find('\n'));
  return load_checkpoint((out / "checkpoints" / "training" / latest).string());
}

TEST_CASE("a 2-rank run with a sharded optimizer resumes as 1 rank and as 4 ranks, exactly" * doctest::skip(kGpu)) {
  Run r;
  r.nproc = 2;
  r.shard = true;
  r.extra = {"--checkpoint-every", "10", "--keep", "5"};
  const Checkpoint ref = train(r, "resume_src");
  const fs::path mid = g_scratch.path() / "resume_src" / "checkpoints" / "training" / "step-00000010.bet";
  REQUIRE(fs::exists(mid));
  // The sharded state was gathered into the ordinary layout: one tensor per parameter.
  CHECK(load_checkpoint(mid.string()).optimizer.size() == ref.optimizer.size());
  for (int n : {1, 4}) {
    CAPTURE(n);
    Run again;
    again.nproc = n;
    again.shard = n > 1;
    again.extra = {"--resume", mid.string()};
    const Checkpoint resumed = train(again, "resume_as" + std::to_string(n));
    CHECK(resumed.training_state.at("step").get<int64_t>() == 20);
    CHECK(max_diff(ref, resumed) < 1e-5);
  }
}

TEST_CASE("ranks that disagree on the model or the data are refused before the first step" * doctest::skip(kGpu)) {
  // mpirun's MPMD form gives each rank its own command line.
  auto launch = [&](const std::vector<std::string>& rank0, const std::vector<std::string>& rank1,
                    const std::string& name) {
    bet::dist::LaunchOptions opt;
    opt.nproc = 1;
    std::vector<std::string> cmd = bet::dist::mpirun_command(opt, rank0);
    cmd.insert(cmd.end(), {":", "-np", "1"});
    cmd.insert(cmd.end(), rank1.begin(), rank1.end());
    const fs::path err = g_scratch.path() / (name + ".err");
    const int rc = run_process(cmd, "", err.string(), std::chrono::seconds(120));
    return std::make_pair(rc, read_text(err));
  };
  Run r;
  const std::vector<std::string> base = train_args(r, g_scratch.path() / "disagree");
  Run wider = r;
  wider.d_model = 32;
  auto [rc, err] = launch(base, train_args(wider, g_scratch.path() / "disagree"), "disagree_model");
  INFO(err);
  CHECK(rc != 0);
  CHECK(err.find("rank 1 differs from rank 0 in model") != std::string::npos);
  CHECK_FALSE(fs::exists(g_scratch.path() / "disagree" / "checkpoints"));

  Run text = r, other = r;
  text.task = other.task = "classify";
  const fs::path data2 = g_scratch.path() / "texts2.jsonl";
  {
    std::ofstream f(data2);
    f << read_text(classify_data()) << "{\"text\": \"one more win\", \"label\": \"spam\"}\n";
  }
  std::vector<std::string> a1 = train_args(other, g_scratch.path() / "disagree2");
  for (auto& a : a1)
    if (a == classify_data().string()) a = data2.string();
  auto [rc2, err2] = launch(train_args(text, g_scratch.path() / "disagree2"), a1, "disagree_data");
  INFO(err2);
  CHECK(rc2 != 0);
  CHECK(err2.find("rank 1 differs from rank 0 in data") != std::string::npos);
}

// The pid of rank `rank` of the run writing to `out` (0 while it has not started).
pid_t rank_pid(const fs::path& out, int rank) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string cmdline = read_text(e.path() / "cmdline"), env = read_text(e.path() / "environ");
    if (cmdline.find(out.string()) == std::string::npos) continue;
    if (env.find(std::string("OMPI_COMM_WORLD_RANK=") + std::to_string(rank) + '\0') == std::string::npos) continue;
    return pid_t(std::stol(pid));
  }
  return 0;
}

// Starts a long 2-rank run and waits until its ranks have taken steps.
pid_t start_long_run(const fs::path& out, const fs::path& err, const std::vector<std::string>& extra = {}) {
  Run r;
  r.nproc = 2;
  r.steps = 1000000;
  r.extra = extra;
  pid_t pid = spawn_process(train_args(r, out), "", err.string());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (fs::exists(out / "logs" / "metrics.jsonl") && fs::file_size(out / "logs" / "metrics.jsonl") > 0 &&
        rank_pid(out, 1) != 0)
      return pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  kill(pid, SIGKILL);
  FAIL("the run did not start");
  return 0;
}

TEST_CASE("a rank killed mid-run ends the others, naming it" * doctest::skip(kGpu)) {
  const fs::path out = g_scratch.path() / "kill", err = g_scratch.path() / "kill.err";
  const pid_t launcher = start_long_run(out, err);
  REQUIRE(kill(rank_pid(out, 1), SIGKILL) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = wait_process(launcher, std::chrono::seconds(60));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string text = read_text(err);
  INFO(text);
  CHECK(rc != 0);
  CHECK(secs < 30);
  CHECK(text.find("rank 1") != std::string::npos);
  CHECK(rank_pid(out, 0) == 0);  // nothing left behind
}

TEST_CASE("a rank that hangs ends the run within --comm-timeout, naming it" * doctest::skip(kGpu)) {
  const fs::path out = g_scratch.path() / "hang", err = g_scratch.path() / "hang.err";
  const pid_t launcher = start_long_run(out, err, {"--comm-timeout", "4"});
  const pid_t stuck = rank_pid(out, 1);
  REQUIRE(kill(stuck, SIGSTOP) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = wait_process(launcher, std::chrono::seconds(90));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  kill(stuck, SIGKILL);  // in case it outlived the launcher
  const std::string text = read_text(err);
  INFO(text);
  CHECK(rc != 0);
  CHECK(secs < 40);
  CHECK(text.find("did not complete within 4 s") != std::string::npos);
  CHECK(text.find("rank 1 did not answer") != std::string::npos);
}

TEST_CASE("SIGTERM to the launcher checkpoints once, on every rank's step, and stops" * doctest::skip(kGpu)) {
  const fs::path out = g_scratch.path() / "term", err = g_scratch.path() / "term.err";
  const pid_t launcher = start_long_run(out, err);
  REQUIRE(kill(launcher, SIGTERM) == 0);
  const int rc = wait_process(launcher, std::chrono::seconds(60));
  INFO(read_text(err));
  CHECK(rc == 0);
  const Checkpoint ck = latest_of(out);
  const int64_t step = ck.training_state.at("step").get<int64_t>();
  CHECK(step > 0);
  CHECK(step < 1000000);
  int files = 0;
  for (const auto& e : fs::directory_iterator(out / "checkpoints" / "training"))
    files += e.path().extension() == ".bet";
  CHECK(files == 1);
  CHECK(rank_pid(out, 0) == 0);
  CHECK(rank_pid(out, 1) == 0);
}

TEST_CASE("GPU ranks through NCCL (the stand-in on emulated GPUs) reach one GPU's weights" * doctest::skip(!kGpu)) {
  // One GPU per rank: two ranks need two devices (the emulator has two).
  REQUIRE(bet::cuda_device_count() >= 2);
  Run r;
  r.device = "cuda";
  r.layers = 1;
  r.steps = 4;
  r.seq_len = 10;  // the emulator runs every GPU thread as a fiber: keep it small
  const Checkpoint one = train(r, "gpu1");
  r.nproc = 2;
  CHECK(max_diff(one, train(r, "gpu2")) < 1e-5);
  r.shard = true;
  r.grad_accum = 2;
  CHECK(max_diff(one, train(r, "gpu2_shard_acc")) < 1e-5);
}

int main(int argc, char** argv) { return bet::test::run_with_betctl_arg(argc, argv); }
