// `betctl bench train --nproc 2` end to end on a tiny shape: the one-rank baseline, the
// one-rank reference and the two ranks under mpirun all run, and the JSON report has every field, with sane
// values (positive times, a finite efficiency). Timings are not judged.
#include <doctest/doctest.h>

#include <algorithm>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/dist/launch.h"
#include "tests/betctl_driver.h"

namespace fs = std::filesystem;
using bet::test::g_betctl;
using bet::test::run_process;

namespace {

bet::test::ScratchDir g_scratch("betctl_bench_dp");

std::vector<std::string> bench_args(const fs::path& out) {
  return {g_betctl, "bench", "train", "--nproc", "2", "--steps", "2", "--warmup", "1", "--layer", "bet",
          "--d-model", "16", "--heads", "2", "--layers", "1", "--seq-len", "16", "--batch-size", "4",
          "--k-permutations", "2", "--threads", "2", "--bucket-mb", "0.01", "--format", "json", "--out", out.string()};
}

}  // namespace

TEST_CASE("bench train --nproc 2 reports both configurations") {
  if (bet::dist::find_mpirun().empty()) {
    MESSAGE("skipped: no mpirun on PATH");
    return;
  }
  const fs::path out = g_scratch.path() / "dp.json";
  const fs::path err = g_scratch.path() / "dp.err";
  REQUIRE(run_process(bench_args(out), "", err.string()) == 0);
  std::ifstream f(out);
  REQUIRE(f);
  const nlohmann::json j = nlohmann::json::parse(f);
  REQUIRE(j["tables"].size() == 1);
  const auto& t = j["tables"][0];
  for (const char* k : {"cpu", "cores", "isa", "comparison", "load average"}) {
    CAPTURE(k);
    CHECK(t["meta"].contains(k));
  }
  CHECK(t["meta"]["comparison"].get<std::string>().find("2 ranks x 1 thread against 1 rank x 2 threads") !=
        std::string::npos);
  const auto& rows = t["rows"];
  REQUIRE(rows.size() == 3);
  const auto& one = rows[0];
  const auto& ref = rows[1];
  const auto& two = rows[2];
  CHECK(one["config"] == "1 rank x 2 threads");
  CHECK(ref["config"] == "1 rank x 1 thread");
  CHECK(two["config"] == "2 ranks x 1 thread");
  for (const auto* r : {&one, &ref, &two}) {
    CHECK((*r)["status"] == "ok");
    CHECK((*r)["ms/step"].get<double>() > 0);
    CHECK((*r)["tokens/s"].get<double>() > 0);
    CHECK((*r)["tokens/step"] == 64);
    CHECK((*r)["params"] == one["params"]);
    CHECK(std::isfinite((*r)["final loss"].get<double>()));
    // Same weights, same global batch, same step numbers: the same loss up to float
    // summation order.
    CHECK(std::abs((*r)["final loss"].get<double>() - one["final loss"].get<double>()) < 1e-4);
  }
  CHECK(one["params"].get<int64_t>() > 0);
  CHECK(std::isfinite(two["speedup vs 1 rank x threads/rank"].get<double>()));
  const double eff = two["scaling efficiency"].get<double>();
  CHECK(std::isfinite(eff));
  CHECK(eff > 0);
  CHECK(two["comm wait ms/step"].get<double>() >= 0);
  CHECK(two["exposed comm ms/step"].get<double>() >= 0);
  CHECK(two["exposed comm ms/step"].get<double>() <= two["comm wait ms/step"].get<double>() + 1e-9);
  const double share = two["comm share"].get<double>();
  CHECK(share >= 0);
  CHECK(share <= 1);
  CHECK(two["allreduce ms/step (blocking)"].get<double>() > 0);
  if (two["overlap hidden"].is_number()) {
    CHECK(two["overlap hidden"].get<double>() >= 0);
    CHECK(two["overlap hidden"].get<double>() <= 1);
  } else {
    CHECK(two["overlap hidden"] == "n/a");
  }
  // --bucket-mb 0.01 (10 KiB) splits this model's gradients over several buckets.
  CHECK(two["buckets"].get<int64_t>() > 1);
  CHECK(two["bucket MB"].get<double>() == doctest::Approx(0.01));
  CHECK(two["gradient MB"].get<double>() > 0);
}

TEST_CASE("bench train --nproc refuses what it cannot time") {
  const fs::path out = g_scratch.path() / "bad.json";
  auto args = bench_args(out);
  args.push_back("--peer");
  CHECK(run_process(args) == 2);
  args = bench_args(out);
  args[2] = "ops";  // --nproc belongs to bench train
  CHECK(run_process(args) == 2);
  args = bench_args(out);
  args[std::find(args.begin(), args.end(), "--batch-size") - args.begin() + 1] = "1";  // fewer rows than ranks
  CHECK(run_process(args) == 2);
}

int main(int argc, char** argv) { return bet::test::run_with_betctl_arg(argc, argv); }
