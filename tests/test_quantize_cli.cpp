// `betctl export --quantize int8` end to end: train a small classifier, export it as
// int8, inspect/predict/eval the int8 file, and refuse to resume training from it.
// Drives the betctl binary (argv[1], from tests/meson.build).
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/betctl_driver.h"

namespace fs = std::filesystem;

namespace {

using bet::test::g_betctl;

const bet::test::ScratchDir g_scratch("bet_quantize_cli");
fs::path scratch() { return g_scratch.path(); }

using Result = bet::test::BetctlResult;
Result betctl(const std::vector<std::string>& args) { return bet::test::run_betctl(args, scratch()); }

}  // namespace

TEST_CASE("export --quantize int8: inspect, predict and eval run the int8 file; training from it is refused") {
  REQUIRE_MESSAGE(!g_betctl.empty(), "pass the betctl binary as the first argument");
  const std::string data = (scratch() / "data.jsonl").string();
  {
    std::ofstream f(data);
    for (int i = 0; i < 60; ++i) {
      f << "{\"text\": \"lunch on friday " << i << "? see you at the office\", \"label\": \"ham\"}\n";
      f << "{\"text\": \"WIN A FREE CRUISE " << i << " click here cheap meds\", \"label\": \"spam\"}\n";
    }
  }
  const std::string run = (scratch() / "run").string();
  Result t = betctl({"train", "--data", data, "--task", "classify", "--d-model", "16", "--heads", "2", "--layers", "1",
                     "--max-len", "64", "--steps", "20", "--batch-size", "8", "--out", run, "--threads", "1",
                     "--tokenizer", "byte", "--quiet"});
  CAPTURE(t.err);
  REQUIRE(t.code == 0);
  std::string ckpt;
  for (auto& e : fs::directory_iterator(run + "/checkpoints/training"))
    if (e.path().extension() == ".bet") ckpt = e.path().string();
  REQUIRE(!ckpt.empty());

  const std::string q = (scratch() / "q.bet").string(), f = (scratch() / "f.bet").string();
  Result e = betctl({"export", ckpt, "--version", "1.0.0", "--quantize", "int8", "--out", q, "--json"});
  CAPTURE(e.err);
  REQUIRE(e.code == 0);
  nlohmann::json ej = nlohmann::json::parse(e.out);
  CHECK(ej["quantize"] == "int8");
  CHECK(ej["quantized_linears"].get<int>() > 4);
  REQUIRE(betctl({"export", ckpt, "--version", "1.0.0", "--out", f}).code == 0);
  CHECK(fs::file_size(q) < fs::file_size(f));

  Result i = betctl({"inspect", q});
  REQUIRE(i.code == 0);
  nlohmann::json ij = nlohmann::json::parse(i.out);
  CHECK(ij["quantize"] == "int8");
  bool has_int8 = false, head_f32 = false;
  for (auto& tj : ij["tensors"]) {
    const std::string n = tj["name"];
    if (n.ends_with(".weight.int8")) has_int8 = true;
    if (n == "head.weight") head_f32 = tj["dtype"] == "f32";
  }
  CHECK(has_int8);
  CHECK(head_f32);

  // Re-exporting an int8 file keeps it int8.
  const std::string q2 = (scratch() / "q2.bet").string();
  REQUIRE(betctl({"export", q, "--version", "1.0.1", "--out", q2}).code == 0);
  CHECK(nlohmann::json::parse(betctl({"inspect", q2}).out)["quantize"] == "int8");

  // predict and eval on both; the int8 answers are close to the f32 ones.
  Result pq = betctl({"predict", "--model", q, "--text", "WIN A FREE CRUISE 7 click here"});
  Result pf = betctl({"predict", "--model", f, "--text", "WIN A FREE CRUISE 7 click here"});
  CAPTURE(pq.err);
  REQUIRE(pq.code == 0);
  REQUIRE(pf.code == 0);
  const double cq = nlohmann::json::parse(pq.out)["confidence"], cf = nlohmann::json::parse(pf.out)["confidence"];
  CHECK(std::abs(cq - cf) < 0.02);
  Result ev = betctl({"eval", "--model", q, "--data", data, "--json"});
  CAPTURE(ev.err);
  CHECK(ev.code == 0);

  // safetensors of an int8 model: a usage error.
  Result st = betctl({"export", ckpt, "--version", "1.0.0", "--quantize", "int8", "--format", "safetensors", "--out",
                      (scratch() / "q.safetensors").string()});
  CHECK(st.code == 2);

  // Resuming training from the int8 file is refused with a message that says why.
  Result r = betctl({"train", "--data", data, "--task", "classify", "--resume", q, "--steps", "25", "--out",
                     (scratch() / "run2").string(), "--quiet"});
  CAPTURE(r.err);
  CHECK(r.code != 0);
  CHECK(r.err.find("int8 (quantized) checkpoint is for inference only") != std::string::npos);

  // A truncated int8 file: an error naming the file.
  const std::string bytes = bet::test::read_text(q);
  const std::string tr = (scratch() / "trunc.bet").string();
  std::ofstream(tr, std::ios::binary) << bytes.substr(0, bytes.size() - 100);
  Result pt = betctl({"predict", "--model", tr, "--text", "hello"});
  CHECK(pt.code == 1);
  CHECK(pt.err.find("trunc.bet") != std::string::npos);
}

int main(int argc, char** argv) { return bet::test::run_with_betctl_arg(argc, argv); }
