// Flag values the CLI must refuse as usage errors (exit code 2, one line naming the
// flag and what it accepts) before any work starts, and the file arguments that must
// fail with the path and the reason rather than be read as empty. Drives the betctl
// binary (argv[1], from tests/meson.build).
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/betctl_driver.h"


namespace fs = std::filesystem;

namespace {

using bet::test::g_betctl;

const bet::test::ScratchDir g_scratch("bet_cli_flags");
fs::path scratch() { return g_scratch.path(); }

// Runs betctl with `args`; returns the exit code and what it printed.
using Result = bet::test::BetctlResult;
Result betctl(const std::vector<std::string>& args) { return bet::test::run_betctl(args, scratch()); }

std::string write_file(const std::string& name, const std::string& contents) {
  const std::string p = (scratch() / name).string();
  std::ofstream(p, std::ios::binary) << contents;
  return p;
}

// No model behind serve: every flag is checked while parsing, before the model loads,
// so a flag that passes fails later on the missing model with exit code 1 instead.
const std::string kNoModel = "/nonexistent/model.bet";

}  // namespace

TEST_CASE("serve --rate-limit: only N/s, N/m, N/h; anything else is a usage error naming the flag") {
  REQUIRE_MESSAGE(!g_betctl.empty(), "pass the betctl binary as the first argument");
  for (const char* bad : {"5abc", "50", "-5/s", "nan", "nan/s", "inf/s", "0/s", "1e-12/s", "5/d", "", "0.5/h",
                          "2000000/s"}) {
    CAPTURE(bad);
    Result r = betctl({"serve", "--model", kNoModel, "--rate-limit", bad});
    CAPTURE(r.err);
    CHECK(r.code == 2);
    CHECK(r.err.find("--rate-limit") != std::string::npos);
    CHECK(r.err.find("N/s, N/m or N/h") != std::string::npos);
  }
  // The same from a --config file (subcommand options go in its section).
  const std::string toml = write_file("serve.toml", "[serve]\nrate-limit = \"5abc\"\n");
  Result r = betctl({"serve", "--model", kNoModel, "--config", toml});
  CAPTURE(r.err);
  CHECK(r.code == 2);
  // Accepted forms get past parsing (and fail on the missing model).
  for (const char* good : {"50/s", "50/m", "1.5/h", "0.25/s"}) {
    CAPTURE(good);
    Result g = betctl({"serve", "--model", kNoModel, "--rate-limit", good});
    CAPTURE(g.err);
    CHECK(g.code == 1);
    CHECK(g.err.find("nonexistent") != std::string::npos);
  }
}

TEST_CASE("serve --api-keys: an empty path is a usage error; a file without keys or a directory is refused") {
  REQUIRE_MESSAGE(!g_betctl.empty(), "pass the betctl binary as the first argument");
  Result empty_flag = betctl({"serve", "--model", kNoModel, "--api-keys", ""});
  CAPTURE(empty_flag.err);
  CHECK(empty_flag.code == 2);
  CHECK(empty_flag.err.find("--api-keys") != std::string::npos);

  // Keys load before the model, so these fail on the key file, not the model.
  const std::string no_keys = write_file("no_keys.txt", "# keys go here\n\n");
  Result r = betctl({"serve", "--model", kNoModel, "--api-keys", no_keys});
  CAPTURE(r.err);
  CHECK(r.code == 1);
  CHECK(r.err.find(no_keys + ": no API keys") != std::string::npos);
  const std::string dir = (scratch() / "keys_dir").string();
  fs::create_directories(dir);
  Result d = betctl({"serve", "--model", kNoModel, "--api-keys", dir});
  CAPTURE(d.err);
  CHECK(d.code == 1);
  CHECK(d.err.find(dir + ": is a directory") != std::string::npos);
}

TEST_CASE("train: shape flags have upper bounds; --tokenizer spm-train:VOCAB is a whole number in range") {
  REQUIRE_MESSAGE(!g_betctl.empty(), "pass the betctl binary as the first argument");
  const std::string out = (scratch() / "run").string();
  const std::vector<std::vector<std::string>> refused = {
      {"--max-len", "8193"},          {"--max-len", "1048576"},          {"--max-len", "0"},
      {"--d-model", "16384"},         {"--heads", "512"},                {"--layers", "512"},
      {"--seq-len", "9000"},          {"--tokenizer", "spm-train:8000abc"}, {"--tokenizer", "spm-train:1000000"},
      {"--tokenizer", "spm-train:4"}, {"--tokenizer", "spm-train:"},     {"--tokenizer", "bpe"},
  };
  for (const auto& flag : refused) {
    CAPTURE(flag[0]);
    CAPTURE(flag[1]);
    Result r = betctl({"train", flag[0], flag[1], "--out", out, "--quiet"});
    CAPTURE(r.err);
    CHECK(r.code == 2);
    CHECK(r.err.find(flag[0]) != std::string::npos);
  }
  // The bound itself is accepted: one tiny step at --max-len 8192.
  Result ok = betctl({"train", "--max-len", "8192", "--steps", "1", "--d-model", "16", "--heads", "2", "--layers", "1",
                      "--seq-len", "8", "--batch-size", "2", "--threads", "1", "--out", out, "--quiet"});
  CAPTURE(ok.err);
  CHECK(ok.code == 0);
}

TEST_CASE("train --data: a directory is an error naming the path, not an empty file") {
  REQUIRE_MESSAGE(!g_betctl.empty(), "pass the betctl binary as the first argument");
  const std::string dir = (scratch() / "data_dir.jsonl").string();
  fs::create_directories(dir);
  Result r = betctl({"train", "--data", dir, "--out", (scratch() / "run2").string(), "--quiet"});
  CAPTURE(r.err);
  CHECK(r.code == 1);
  CHECK(r.err.find(dir + ": is a directory") != std::string::npos);
}

int main(int argc, char** argv) { return bet::test::run_with_betctl_arg(argc, argv); }
