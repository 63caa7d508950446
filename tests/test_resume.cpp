// Crash safety and exact resume, end to end: `betctl train` is killed with SIGKILL at
// random moments, again and again, and resumed each time. Every checkpoint on disk
// must always load, and the run must finish with weights and optimizer state
// bit-identical to a run never interrupted.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "runtime/checkpoint/checkpoint.h"
#include "tests/betctl_driver.h"

namespace fs = std::filesystem;
using namespace bet::runtime;

namespace {

using bet::test::g_betctl;
using bet::test::spawn_process;
using bet::test::wait_process;

std::vector<std::string> train_args(const std::string& out) {
  return {g_betctl, "train", "--steps", "30", "--checkpoint-every", "2", "--keep", "3", "--d-model", "16",
          "--heads", "2", "--layers", "1", "--seq-len", "12", "--max-len", "16", "--batch-size", "4",
          "--k-permutations", "2", "--dropout", "0.1", "--threads", "1", "--eval-every", "5", "--seed", "5",
          "--early-stop", "loss:50", "--out", out, "--quiet", "--resume", "auto"};
}

// Every .bet file under dir must load (temporaries are allowed to be torn: they are
// never read).
int check_all_checkpoints_load(const fs::path& dir) {
  int n = 0;
  if (!fs::exists(dir)) return 0;
  for (auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.path().extension() != ".bet") continue;
    INFO("checkpoint " << e.path().string());
    CHECK_NOTHROW(load_checkpoint(e.path().string()));
    ++n;
  }
  return n;
}

void check_same_state(const Checkpoint& a, const Checkpoint& b) {
  REQUIRE(a.weights.size() == b.weights.size());
  for (size_t i = 0; i < a.weights.size(); ++i) {
    INFO(a.weights[i].first);
    CHECK(a.weights[i].first == b.weights[i].first);
    REQUIRE(a.weights[i].second.nbytes() == b.weights[i].second.nbytes());
    CHECK(std::memcmp(a.weights[i].second.contiguous().raw_data(), b.weights[i].second.contiguous().raw_data(),
                      a.weights[i].second.nbytes()) == 0);
  }
  REQUIRE(a.optimizer.size() == b.optimizer.size());
  for (size_t i = 0; i < a.optimizer.size(); ++i) {
    INFO(a.optimizer[i].first);
    CHECK(std::memcmp(a.optimizer[i].second.contiguous().raw_data(), b.optimizer[i].second.contiguous().raw_data(),
                      a.optimizer[i].second.nbytes()) == 0);
  }
  // The run state too: step, best metrics, early stopping's count, learning-rate scale.
  CHECK(a.training_state["step"] == b.training_state["step"]);
  CHECK(a.training_state.dump() == b.training_state.dump());
  CHECK(a.metrics.dump() == b.metrics.dump());
}

}  // namespace

TEST_CASE("kill -9 at random moments never leaves a torn checkpoint, and resume is bit-exact") {
  REQUIRE_MESSAGE(!g_betctl.empty(), "pass the betctl binary as the first argument");
  const fs::path root = fs::temp_directory_path() / ("bet_resume_" + std::to_string(::getpid()));
  fs::remove_all(root);
  const std::string ref = (root / "ref").string(), crash = (root / "crash").string();

  // The uninterrupted run, timed so kills land throughout a run.
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(wait_process(spawn_process(train_args(ref))) == 0);
  const double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  Checkpoint reference = load_checkpoint(ref + "/checkpoints/training/step-00000030.bet");

  std::mt19937 rng(1234);
  std::uniform_real_distribution<double> when(0.0, run_s * 0.6);
  int kills = 0;
  for (int attempt = 0; kills < 20 && attempt < 100; ++attempt) {
    pid_t pid = spawn_process(train_args(crash));
    std::this_thread::sleep_for(std::chrono::duration<double>(when(rng)));
    ::kill(pid, SIGKILL);
    int rc = wait_process(pid);
    check_all_checkpoints_load(root / "crash" / "checkpoints");
    if (rc == -SIGKILL) {
      ++kills;
    } else {
      // The run got to the end before the kill: start it over so later kills still
      // land mid-run.
      CHECK(rc == 0);
      fs::remove_all(root / "crash");
    }
  }
  CHECK(kills >= 20);
  // Finish the run (it resumes from wherever the last kill left it).
  REQUIRE(wait_process(spawn_process(train_args(crash))) == 0);
  Checkpoint resumed = load_checkpoint(crash + "/checkpoints/training/step-00000030.bet");
  check_same_state(reference, resumed);
  fs::remove_all(root);
}

int main(int argc, char** argv) { return bet::test::run_with_betctl_arg(argc, argv); }
