// Checkpoints: exact round trips of model and optimizer, config JSON, the manager's
// three kinds (retention, milestones, resume that skips damaged files, production
// export) and inspect. Safetensors is in test_safetensors.cpp.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <iostream>
#include <sstream>

#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"
#include "model/bet_model.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/checkpoint_manager.h"
#include "runtime/checkpoint/config_json.h"
#include "runtime/io/atomic_file.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/checkpoint_fixtures.h"

using namespace bet;
using namespace bet::runtime;
namespace fs = std::filesystem;
using nlohmann::json;
using namespace bet::testing;

namespace {

// Captures std::cerr for a scope.
struct CaptureCerr {
  std::ostringstream s;
  std::streambuf* old;
  CaptureCerr() : old(std::cerr.rdbuf(s.rdbuf())) {}
  ~CaptureCerr() { std::cerr.rdbuf(old); }
};


}  // namespace
TEST_CASE("checkpoint round trip restores weights and optimizer bit for bit, and training continues identically") {
  const std::string dir = fresh_dir("roundtrip");
  Trained a = make_trained(1, 2);
  a.model->set_temperature(1.7);
  Checkpoint ck = checkpoint_of(a, 2);
  ck.card = {{"name", "tiny"}};
  const std::string path = dir + "/a.bet";
  save_checkpoint(path, ck);

  Checkpoint back = load_checkpoint(path);
  CHECK(back.kind == "training");
  CHECK(back.training_state == ck.training_state);
  CHECK(back.metrics == ck.metrics);
  CHECK(back.card == ck.card);
  CHECK(back.tokenizer == ck.tokenizer);
  CHECK(!back.created_at.empty());
  CHECK(back.created_at.back() == 'Z');
  CHECK(back.versions.contains("betctl"));
  CHECK(back.versions.contains("onednn"));
  CHECK(back.versions.contains("zstd"));
  const model::ModelConfig& c = back.config;
  const model::ModelConfig e = small_config();
  CHECK(c.task == e.task);
  CHECK(c.layer == e.layer);
  CHECK(c.pe == e.pe);
  CHECK(c.vocab_size == e.vocab_size);
  CHECK(c.d_model == e.d_model);
  CHECK(c.heads == e.heads);
  CHECK(c.layers == e.layers);
  CHECK(c.max_len == e.max_len);
  CHECK(c.k_permutations == e.k_permutations);
  CHECK(c.n_harmonics == e.n_harmonics);
  CHECK(c.num_classes == e.num_classes);
  CHECK(c.dropout == e.dropout);
  CHECK(c.tie_embeddings == e.tie_embeddings);
  CHECK(c.inference_seed == e.inference_seed);
  CHECK(c.labels == e.labels);

  // The tensor names in the file: parameters as named, optimizer under "optim.".
  BetContents raw = read_bet_file(path);
  size_t n_optim = 0;
  for (auto& [n, t] : raw.tensors) n_optim += n.rfind("optim.", 0) == 0;
  CHECK(n_optim == a.opt->state().size());
  CHECK(raw.tensors.size() == a.model->named_parameters().size() + n_optim);

  // A fresh model with other weights and a fresh optimizer become the saved ones.
  Trained b = make_trained(99, 0);
  CHECK(!bytes_equal(b.model->named_parameters()[1].second, a.model->named_parameters()[1].second));
  apply_checkpoint(back, *b.model, b.opt.get());
  check_lists_equal(a.model->named_parameters(), b.model->named_parameters());
  check_lists_equal(a.opt->state(), b.opt->state());
  CHECK(b.model->temperature_value() == doctest::Approx(1.7));
  // ... and continue exactly as the original does.
  adamw_step(a);
  adamw_step(b);
  check_lists_equal(a.model->named_parameters(), b.model->named_parameters());
  check_lists_equal(a.opt->state(), b.opt->state());

  // A model of another shape is refused, naming a tensor, and left untouched.
  model::ModelConfig other = small_config();
  other.d_model = 32;
  Trained o = make_trained(5, 0, other);
  Tensor before = o.model->named_parameters()[1].second.clone();
  std::string err = error_of([&] { apply_checkpoint(back, *o.model, o.opt.get()); });
  CHECK(err.find("has shape") != std::string::npos);
  CHECK(bytes_equal(before, o.model->named_parameters()[1].second));
  // Production checkpoints cannot restore an optimizer.
  Checkpoint no_opt = back;
  no_opt.optimizer.clear();
  CHECK_THROWS_WITH_AS(apply_checkpoint(no_opt, *b.model, b.opt.get()), doctest::Contains("optimizer"), Error);
}

TEST_CASE("load_checkpoint rejects damage, a missing config, an unknown kind and foreign files, naming the file") {
  const std::string dir = fresh_dir("bad_headers");
  Trained a = make_trained(3, 1);
  Checkpoint ck = checkpoint_of(a, 1);
  const json header = checkpoint_header(ck);
  const NamedTensorList tensors = checkpoint_tensors(ck);

  auto write_with = [&](const std::string& name, const json& h) {
    const std::string p = dir + "/" + name;
    write_bet_file(p, h, tensors);
    return p;
  };
  json no_config = header;
  no_config.erase("config");
  std::string p = write_with("noconfig.bet", no_config);
  CHECK_THROWS_WITH_AS(load_checkpoint(p), has(p + ": header has no model 'config'"), Error);

  json bad_kind = header;
  bad_kind["kind"] = "snapshot";
  p = write_with("kind.bet", bad_kind);
  CHECK_THROWS_WITH_AS(load_checkpoint(p), has(p + ": unknown checkpoint kind 'snapshot'"), Error);

  json foreign = header;
  foreign.erase("format");
  p = write_with("foreign.bet", foreign);
  CHECK_THROWS_WITH_AS(load_checkpoint(p), doctest::Contains("not a betctl checkpoint"), Error);

  json future = header;
  future["format_version"] = 99;
  p = write_with("future.bet", future);
  CHECK_THROWS_WITH_AS(load_checkpoint(p), doctest::Contains("format_version 99"), Error);

  json bad_field = header;
  bad_field["config"]["heads"] = 3;  // 16 % 3 != 0
  p = write_with("badcfg.bet", bad_field);
  CHECK_THROWS_WITH_AS(load_checkpoint(p), has(p), Error);

  p = dir + "/good.bet";
  save_checkpoint(p, ck);
  REQUIRE_NOTHROW(load_checkpoint(p));
  flip_byte(p, read_file(p).size() / 2);
  CHECK_THROWS_WITH_AS(load_checkpoint(p), has(p), Error);

  Checkpoint weird = ck;
  weird.kind = "snapshot";
  CHECK_THROWS_WITH_AS(save_checkpoint(dir + "/w.bet", weird), doctest::Contains("unknown kind"), Error);
  Checkpoint clash = ck;
  clash.weights.emplace_back("optim.x", Tensor::zeros({1}));
  CHECK_THROWS_WITH_AS(save_checkpoint(dir + "/c.bet", clash), doctest::Contains("reserved prefix"), Error);
}

TEST_CASE("config JSON round trips every field and names the field at fault") {
  model::ModelConfig c;
  c.task = model::Task::LM;
  c.layer = model::LayerKind::Standard;
  c.pe = model::PosEncoding::Learned;
  c.vocab_size = 1003;
  c.d_model = 48;
  c.heads = 6;
  c.layers = 5;
  c.max_len = 77;
  c.k_permutations = 0;
  c.n_harmonics = 3;
  c.num_classes = 7;
  c.dropout = 0.125;
  c.tie_embeddings = true;
  c.inference_seed = (uint64_t(1) << 63) + 5;  // above int64's range
  c.labels = {"x", "y"};
  const json j = config_to_json(c);
  model::ModelConfig r = config_from_json(json::parse(j.dump()));
  CHECK(r.task == c.task);
  CHECK(r.layer == c.layer);
  CHECK(r.pe == c.pe);
  CHECK(r.vocab_size == c.vocab_size);
  CHECK(r.d_model == c.d_model);
  CHECK(r.heads == c.heads);
  CHECK(r.layers == c.layers);
  CHECK(r.max_len == c.max_len);
  CHECK(r.k_permutations == c.k_permutations);
  CHECK(r.n_harmonics == c.n_harmonics);
  CHECK(r.num_classes == c.num_classes);
  CHECK(r.dropout == c.dropout);
  CHECK(r.tie_embeddings == c.tie_embeddings);
  CHECK(r.inference_seed == c.inference_seed);
  CHECK(r.labels == c.labels);
  CHECK(config_equal(r, c));
  r.max_len = 78;
  CHECK(!config_equal(r, c));

  auto with = [&](const char* key, const json& v) {
    json k = j;
    k[key] = v;
    return k;
  };
  CHECK_THROWS_WITH_AS(config_from_json(with("d_model", "big"), "run.json"),
                       doctest::Contains("run.json: config.d_model: expected an integer"), Error);
  CHECK_THROWS_WITH_AS(config_from_json(with("d_model", 48.5)), doctest::Contains("config.d_model"), Error);
  CHECK_THROWS_WITH_AS(config_from_json(with("task", "regress")), doctest::Contains("config.task"), Error);
  CHECK_THROWS_WITH_AS(config_from_json(with("pe", 3)), doctest::Contains("config.pe: expected a string"), Error);
  CHECK_THROWS_WITH_AS(config_from_json(with("tie_embeddings", 1)), doctest::Contains("config.tie_embeddings"), Error);
  CHECK_THROWS_WITH_AS(config_from_json(with("labels", json::array({"a", 2}))), doctest::Contains("config.labels[1]"),
                       Error);
  CHECK_THROWS_WITH_AS(config_from_json(with("inference_seed", -1)), doctest::Contains("config.inference_seed"), Error);
  CHECK_THROWS_WITH_AS(config_from_json(with("d_modle", 48)), doctest::Contains("config.d_modle: unknown field"), Error);
  CHECK_THROWS_WITH_AS(config_from_json(with("heads", 5), "f.json"),
                       doctest::Contains("f.json: config.heads: 5 does not divide d_model 48"),
                       Error);
  json missing = j;
  missing.erase("heads");
  CHECK_THROWS_WITH_AS(config_from_json(missing), doctest::Contains("config.heads: missing"), Error);
  // A hand-written config may leave out fields (they keep their defaults).
  model::ModelConfig p = config_from_json(json{{"d_model", 64}, {"layers", 3}}, "cli", true);
  CHECK(p.d_model == 64);
  CHECK(p.layers == 3);
  CHECK(p.heads == model::ModelConfig{}.heads);
  // Classify labels must name every class.
  model::ModelConfig cl = small_config();
  json cj = config_to_json(cl);
  cj["labels"] = {"a", "b"};
  CHECK_THROWS_WITH_AS(config_from_json(cj), doctest::Contains("config.labels: 2 names for num_classes 3"), Error);
  CHECK_THROWS_WITH_AS(config_from_json(json::array()), doctest::Contains("must be a JSON object"), Error);
}

TEST_CASE("training checkpoints: the newest `keep` remain and latest names the newest") {
  const std::string out = fresh_dir("retention");
  Trained a = make_trained(4, 1);
  CheckpointManager mgr(out, 3);
  make_dirs(mgr.training_dir());
  atomic_write_file(mgr.training_dir() + "/step-00000007.bet.tmp.99999", "torn");  // a crashed writer's
  for (int64_t s : {10, 20, 30, 40, 50}) {
    const std::string p = mgr.save_training(checkpoint_of(a, s), s);
    CHECK(p == mgr.training_dir() + "/" + step_file_name(s));
  }
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(mgr.training_dir())) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"latest", "step-00000030.bet", "step-00000040.bet", "step-00000050.bet"});
  CHECK(read_file(mgr.training_dir() + "/latest") == "step-00000050.bet\n");
  CHECK(load_checkpoint(mgr.training_dir() + "/step-00000050.bet").training_state["step"] == 50);

  // A resumed run that saves an earlier step than files left over keeps what it wrote.
  CheckpointManager one(out, 1);
  one.save_training(checkpoint_of(a, 35), 35);
  CHECK(fs::exists(one.training_dir() + "/step-00000035.bet"));
  CHECK(!fs::exists(one.training_dir() + "/step-00000050.bet"));
  CHECK(read_file(one.training_dir() + "/latest") == "step-00000035.bet\n");

  CHECK(step_file_name(7) == "step-00000007.bet");
  CHECK(parse_step_file_name("step-00000007.bet") == 7);
  CHECK(parse_step_file_name("step-7.bet.tmp.12") == -1);
  CHECK(parse_step_file_name("latest") == -1);
  CHECK_THROWS_AS(CheckpointManager(out, 0), Error);
}

TEST_CASE("milestones improve only on better values, per metric, in either direction") {
  const std::string out = fresh_dir("milestone");
  Trained a = make_trained(6, 1);
  CheckpointManager mgr(out);
  Checkpoint ck = checkpoint_of(a, 0);
  ck.optimizer.clear();
  CHECK(mgr.save_milestone(ck, 1, "loss", 1.0, false));
  CHECK(!mgr.save_milestone(ck, 2, "loss", 1.5, false));
  CHECK(mgr.save_milestone(ck, 3, "loss", 0.5, false));
  CHECK(!mgr.save_milestone(ck, 4, "loss", 0.5, false));  // equal is not better
  CHECK(!mgr.save_milestone(ck, 5, "loss", std::nan(""), false));
  CHECK(mgr.save_milestone(ck, 4, "accuracy", 0.5, true));
  CHECK(!mgr.save_milestone(ck, 5, "accuracy", 0.4, true));
  CHECK(mgr.save_milestone(ck, 6, "accuracy", 0.6, true));
  ck.training_state["step"] = 9;
  CHECK(mgr.save_milestone(ck, "loss", 0.25, false));  // step from training_state

  const std::string ld = mgr.milestone_dir("loss");
  CHECK(fs::exists(ld + "/step-00000001.bet"));  // milestones are kept
  CHECK(!fs::exists(ld + "/step-00000002.bet"));
  CHECK(fs::exists(ld + "/step-00000003.bet"));
  CHECK(fs::exists(ld + "/step-00000009.bet"));
  CHECK(read_file(ld + "/latest") == "step-00000009.bet\n");
  CHECK(mgr.milestone_best("loss")["value"] == 0.25);
  CHECK(mgr.milestone_best("accuracy")["value"] == 0.6);
  CHECK(mgr.milestone_best("accuracy")["step"] == 6);
  CHECK(mgr.milestone_best("f1").is_null());
  CHECK(read_file(mgr.milestone_dir("accuracy") + "/latest") == "step-00000006.bet\n");
  CHECK(load_checkpoint(ld + "/step-00000003.bet").kind == "milestone");

  // The state survives a new manager (a resumed run).
  CheckpointManager again(out);
  CHECK(!again.save_milestone(ck, 10, "accuracy", 0.55, true));
  CHECK_THROWS_WITH_AS(again.save_milestone(ck, 10, "accuracy", 0.1, false), doctest::Contains("higher_is_better"),
                       Error);
  CHECK_THROWS_AS(again.save_milestone(ck, 10, "../evil", 0.1, false), Error);
  Checkpoint no_step = ck;
  no_step.training_state = json::object();
  CHECK_THROWS_WITH_AS(again.save_milestone(no_step, "f1", 0.1, true), doctest::Contains("'step'"), Error);
}

TEST_CASE("find_resume skips a damaged latest with a warning and falls back; empty dir means a fresh start") {
  const std::string out = fresh_dir("resume");
  CheckpointManager mgr(out, 3);
  CHECK(mgr.find_resume("auto") == "");
  CHECK(mgr.find_resume("") == "");

  Trained a = make_trained(8, 1);
  for (int64_t s : {1, 2, 3}) mgr.save_training(checkpoint_of(a, s), s);
  const std::string d = mgr.training_dir();
  Checkpoint got;
  CHECK(mgr.find_resume("auto", &got) == d + "/step-00000003.bet");
  CHECK(got.training_state["step"] == 3);

  const std::string newest = d + "/step-00000003.bet";
  flip_byte(newest, read_file(newest).size() / 2);
  {
    CaptureCerr cap;
    CHECK(mgr.find_resume("auto", &got) == d + "/step-00000002.bet");
    CHECK(cap.s.str().find(newest) != std::string::npos);
    CHECK(cap.s.str().find("warning") != std::string::npos);
  }
  CHECK(got.training_state["step"] == 2);
  // An explicit file is used or refused, never replaced by another.
  CHECK_THROWS_WITH_AS(mgr.find_resume(newest), has(newest), Error);
  CHECK(mgr.find_resume(d + "/step-00000001.bet") == d + "/step-00000001.bet");

  // latest naming a file that is gone, and a truncated one.
  atomic_write_file(d + "/latest", "step-00000077.bet\n");
  const std::string mid = d + "/step-00000002.bet";
  std::string bytes = read_file(mid);
  atomic_write_file(mid, bytes.substr(0, bytes.size() - 9));
  {
    CaptureCerr cap;
    CHECK(mgr.find_resume("auto") == d + "/step-00000001.bet");
    CHECK(cap.s.str().find(mid) != std::string::npos);
  }
  flip_byte(d + "/step-00000001.bet", 20);
  {
    CaptureCerr cap;
    CHECK(mgr.find_resume("auto") == "");
  }
}

TEST_CASE("export_production strips optimizer and training state, keeps the rest, and needs a semantic version") {
  const std::string out = fresh_dir("production");
  Trained a = make_trained(9, 1);
  CheckpointManager mgr(out);
  Checkpoint ck = checkpoint_of(a, 5);
  ck.card = {{"name", "sentiment"}, {"description", "tiny test model"}, {"data", "synthetic"}};
  const std::string p = mgr.export_production(ck, "1.2.0");
  CHECK(p == mgr.production_dir() + "/model-1.2.0.bet");

  BetContents raw = read_bet_file(p);
  for (auto& [n, t] : raw.tensors) CHECK(n.rfind("optim.", 0) != 0);
  Checkpoint prod = load_checkpoint(p);
  CHECK(prod.kind == "production");
  CHECK(prod.optimizer.empty());
  CHECK(prod.training_state.empty());
  CHECK(prod.metrics == ck.metrics);
  CHECK(prod.tokenizer == ck.tokenizer);
  CHECK(prod.config.labels == small_config().labels);
  CHECK(prod.card["version"] == "1.2.0");
  CHECK(prod.card["name"] == "sentiment");
  CHECK(prod.card["description"] == "tiny test model");
  CHECK(prod.card["data"] == "synthetic");
  CHECK(prod.card["metrics"] == ck.metrics);
  CHECK(prod.card["created_at"].get<std::string>().size() == 20);
  check_lists_equal(ck.weights, prod.weights);
  // It serves: a fresh model takes its weights.
  Trained b = make_trained(10, 0);
  apply_checkpoint(prod, *b.model);
  check_lists_equal(a.model->named_parameters(), b.model->named_parameters());

  for (const char* bad : {"1.2", "1", "01.2.3", "1.2.3.4", "v1.2.3", "1.2.x", "", "1.2.3-", "1.2.3-01"}) {
    CAPTURE(bad);
    CHECK(!is_semver(bad));
  }
  for (const char* good : {"0.0.0", "1.2.3", "10.20.30", "1.0.0-rc.1", "1.0.0-alpha-1+build.5", "2.0.0+sha.abc"}) {
    CAPTURE(good);
    CHECK(is_semver(good));
  }
  CHECK_THROWS_WITH_AS(mgr.export_production(ck, "1.2"), doctest::Contains("'1.2' is not a semantic version"), Error);
  CHECK(!fs::exists(mgr.production_dir() + "/model-1.2.bet"));
  CHECK_THROWS_WITH_AS(mgr.export_production(ck, "1.2.0"), doctest::Contains("already exists"), Error);
  CHECK_NOTHROW(mgr.export_production(ck, "1.2.0", "", true));
  const std::string elsewhere = out + "/elsewhere.bet";
  CHECK(mgr.export_production(ck, "1.3.0-rc.1", elsewhere) == elsewhere);
  CHECK(load_checkpoint(elsewhere).card["version"] == "1.3.0-rc.1");
}

TEST_CASE("inspect_checkpoint describes a .bet file") {
  const std::string dir = fresh_dir("inspect");
  Trained a = make_trained(14, 1);
  Checkpoint ck = checkpoint_of(a, 1);
  ck.card = {{"name", "x"}};
  save_checkpoint(dir + "/i.bet", ck);
  json info = inspect_checkpoint(dir + "/i.bet");
  CHECK(info["kind"] == "training");
  CHECK(info["config"] == config_to_json(small_config()));
  CHECK(info["parameter_count"] == a.model->parameter_count());
  CHECK(info["tensors"].size() == ck.weights.size() + ck.optimizer.size());
  CHECK(info["tensors"][0]["name"] == ck.weights[0].first);
  CHECK(info["tensors"][0]["shape"] == ck.weights[0].second.shape());
  CHECK(info["sizes"]["file_bytes"] == fs::file_size(dir + "/i.bet"));
  int64_t fp32 = 0;
  for (auto& [n, t] : ck.weights) fp32 += 4 * t.numel();
  for (auto& [n, t] : ck.optimizer) fp32 += 4 * t.numel();
  CHECK(info["sizes"]["raw_fp32_bytes"] == fp32);
  CHECK(info["training_state"] == ck.training_state);
  CHECK(info["metrics"] == ck.metrics);
  CHECK(info["card"] == ck.card);
  CHECK(info["versions"]["betctl"].is_string());
}

TEST_CASE("config bounds: every field past its bound is refused, naming the field, the value and the bound") {
  const json good = config_to_json(small_config());
  auto error_with = [&](const char* key, const json& v) {
    json j = good;
    j[key] = v;
    return error_of([&] { config_from_json(j, "c.json"); });
  };
  struct Case {
    const char* key;
    json value;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"layers", int64_t(1000000000), "c.json: config.layers: 1000000000 is out of range [1, 256]"},
      {"layers", 1e9, "c.json: config.layers: expected an integer"},
      {"layers", 0, "config.layers: 0 is out of range [1, 256]"},
      {"d_model", int64_t(1) << 31, "config.d_model: 2147483648 is out of range [2, 16384]"},
      {"d_model", -16, "config.d_model: -16 is out of range"},
      {"vocab_size", int64_t(1) << 40, "config.vocab_size: 1099511627776 is out of range [4, 4194304]"},
      {"vocab_size", uint64_t(1) << 63, "config.vocab_size: 9223372036854775808 is out of range"},
      {"heads", 0, "config.heads: 0 is out of range [1, 256]"},
      {"heads", 512, "config.heads: 512 is out of range [1, 256]"},
      {"max_len", 65537, "config.max_len: 65537 is out of range [1, 65536]"},
      {"k_permutations", 65, "config.k_permutations: 65 is out of range [0, 64]"},
      {"k_permutations", -1, "config.k_permutations: -1 is out of range"},
      {"n_harmonics", 61, "config.n_harmonics: 61 is out of range [1, 60]"},
      {"num_classes", 1, "config.num_classes: 1 is out of range [2, 65536]"},
      {"num_classes", 65537, "config.num_classes: 65537 is out of range"},
      {"dropout", 1.0, "config.dropout: 1 is not in [0, 1)"},
      {"dropout", -0.5, "config.dropout: -0.5 is not in [0, 1)"},
      {"labels", json::array({"a", "b", std::string(2000, 'x')}),
       "config.labels[2]: 2000 bytes is over the limit of 1024"},
      {"labels", std::vector<std::string>(70000, "l"), "config.labels: 70000 names is over the limit of 65536"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.key);
    CAPTURE(c.value.dump());
    CHECK(error_with(c.key, c.value).find(c.expect) != std::string::npos);
  }
  // Each field within bounds, together too many parameters: refused by the count.
  json big = good;
  big["d_model"] = 8192;
  big["layers"] = 64;
  big["heads"] = 64;
  const std::string e = error_of([&] { config_from_json(big, "c.json"); });
  CHECK(e.find("c.json: config: ") != std::string::npos);
  CHECK(e.find("parameters (vocab_size 259, d_model 8192, layers 64) is over the limit of 4294967296") !=
        std::string::npos);
  // The model constructor applies the same bounds.
  model::ModelConfig c = small_config();
  c.layers = 1000000000;
  Generator g(0);
  CHECK_THROWS_WITH_AS([&] { model::BetModel m(c, g); }(),
                       doctest::Contains("config.layers: 1000000000 is out of range"), Error);
}

TEST_CASE("parameter_specs lists exactly the parameters BetModel builds, for every layer kind, encoding and task") {
  int n = 0;
  for (auto layer : {model::LayerKind::Bet, model::LayerKind::Standard})
    for (auto pe : {model::PosEncoding::Rope, model::PosEncoding::Sinusoidal, model::PosEncoding::Learned,
                    model::PosEncoding::None})
      for (int task = 0; task < 3; ++task) {  // classify, lm, lm tied
        model::ModelConfig c = small_config();
        c.layer = layer;
        c.pe = pe;
        c.layers = 2;
        if (task > 0) {
          c.task = model::Task::LM;
          c.labels.clear();
          c.tie_embeddings = task == 2;
        }
        if (pe == model::PosEncoding::None) {  // odd widths: d / 2 rounds down
          c.d_model = 21;
          c.heads = 3;
          c.n_harmonics = 1;
        }
        Generator g(1);
        model::BetModel m(c, g);
        const auto params = m.named_parameters();
        const auto specs = model::parameter_specs(c);
        CAPTURE(config_to_json(c).dump());
        REQUIRE(specs.size() == params.size());
        for (size_t i = 0; i < specs.size(); ++i) {
          CHECK(specs[i].name == params[i].first);
          CHECK(specs[i].shape == params[i].second.shape());
        }
        CHECK(model::parameter_count(c) == m.parameter_count());
        ++n;
      }
  CHECK(n == 24);
}

TEST_CASE("load_checkpoint checks the tensor table against the config before allocating any of it") {
  const std::string dir = fresh_dir("tables");
  const model::ModelConfig cfg = small_config();
  const json header = header_for(cfg);
  auto& alloc = CachingAllocator::host();
  // Loads `table` and returns the error; no more than 1 MiB of tensors may be allocated
  // on the way, whatever the table declares.
  auto refused = [&](const std::string& name, const std::vector<CraftedTensor>& table, const json& h) {
    const std::string p = dir + "/" + name;
    atomic_write_file(p, craft_bet(h, table));
    alloc.reset_peak();
    const uint64_t before = alloc.stats().bytes_in_use;
    const std::string e = error_of([&] { load_checkpoint(p); });
    CHECK(alloc.stats().peak_bytes_in_use - before < (uint64_t(1) << 20));
    CHECK(e.rfind(p + ": ", 0) == 0);
    return e;
  };
  const std::vector<CraftedTensor> exact = model_table(cfg);
  const std::string ok = dir + "/ok.bet";
  atomic_write_file(ok, craft_bet(header, exact));
  CHECK(load_checkpoint(ok).weights.size() == exact.size());

  // The decompression bomb: a valid config, and 1 GiB of zeros in a file of kilobytes.
  std::vector<CraftedTensor> t = exact;
  t.push_back({"junk", DType::F32, {int64_t(1) << 28}});
  CHECK(refused("bomb.bet", t, header).find("tensor 'junk' is not a parameter of the config's model") !=
        std::string::npos);
  t = exact;
  t.pop_back();
  CHECK(refused("missing.bet", t, header).find("tensor 'head.bias' of the config's model is missing") !=
        std::string::npos);
  t = exact;
  t[1].shape = {int64_t(1) << 24, 16};  // embed.weight, 1 GiB
  CHECK(refused("shape.bet", t, header)
            .find("tensor 'embed.weight' has shape [16777216, 16], the config's model expects [259, 16]") !=
        std::string::npos);
  t = exact;
  t[1].dtype = DType::F64;
  CHECK(refused("dtype.bet", t, header).find("(a model has one dtype)") != std::string::npos);
  t = exact;
  t[1].dtype = DType::I32;
  CHECK(refused("int.bet", t, header).find("model weights are floating point") != std::string::npos);
  t = exact;
  t.push_back(exact[1]);
  CHECK(refused("twice.bet", t, header).find("tensor 'embed.weight' appears twice") != std::string::npos);

  // Optimizer state: per trainable parameter, with its shape, at most two each, one step count.
  json training = header;
  training["kind"] = "training";
  const int64_t P = int64_t(exact.size()) - 1;  // all but temperature
  std::vector<CraftedTensor> adam = exact;
  adam.push_back({"optim.adamw.step", DType::I64, {P}});
  for (int64_t i = 0; i < P; ++i)
    for (const char* slot : {"m", "v"})
      adam.push_back({std::string("optim.adamw.") + slot + "." + std::to_string(i), DType::F32,
                      exact[size_t(i + 1)].shape});
  const std::string ok_adam = dir + "/adam.bet";
  atomic_write_file(ok_adam, craft_bet(training, adam));
  CHECK(load_checkpoint(ok_adam).optimizer.size() == size_t(2 * P + 1));
  t = adam;
  t.push_back({"optim.adamw.w.0", DType::F32, exact[1].shape});
  CHECK(refused("slots.bet", t, training).find("more than 2 optimizer tensors for parameter 0 ('embed.weight')") !=
        std::string::npos);
  t = adam;
  t.push_back({"optim.adamw.m." + std::to_string(P), DType::F32, {4}});
  CHECK(refused("index.bet", t, training).find("is neither per-parameter optimizer state") != std::string::npos);
  t = adam;
  t.back().shape = {int64_t(1) << 24};
  CHECK(refused("oshape.bet", t, training).find("has shape [16777216], parameter") != std::string::npos);
  CHECK(refused("prod.bet", adam, header).find("production checkpoint carries optimizer tensors") != std::string::npos);

  // inspect reads through the same check.
  CHECK_THROWS_WITH_AS(inspect_checkpoint(dir + "/bomb.bet"), doctest::Contains("'junk' is not a parameter"), Error);
}

TEST_CASE("load_checkpoint decodes from a file mapping: the same tensors as the read() path, bit for bit") {
  Trained a = make_trained(21, 2);
  Checkpoint ck = checkpoint_of(a, 2);
  const std::string path = fresh_dir("mapped") + "/ck.bet";
  save_checkpoint(path, ck);
  Checkpoint loaded = load_checkpoint(path);  // LoadMode::Map underneath
  BetContents mapped = read_bet_file(path, {}, LoadMode::Map);
  BetContents read = read_bet_file(path, {}, LoadMode::Read);
  CHECK(mapped.header == read.header);
  check_lists_equal(read.tensors, mapped.tensors);
  check_lists_equal(ck.weights, loaded.weights);
  check_lists_equal(ck.optimizer, loaded.optimizer);
  CHECK(loaded.training_state == ck.training_state);

  // Refusals name the file through the mapped path too.
  const std::string empty = fresh_dir("mapped-empty") + "/empty.bet";
  atomic_write_file(empty, "");
  CHECK_THROWS_WITH_AS(load_checkpoint(empty), has(empty + ": not a .bet file"), Error);
  CHECK_THROWS_WITH_AS(load_checkpoint(fresh_dir("mapped-dir")), has(": is a directory"), Error);
  std::string bytes = read_file(path);
  const std::string cut = fresh_dir("mapped-cut") + "/cut.bet";
  atomic_write_file(cut, std::string_view(bytes).substr(0, bytes.size() - 7));
  CHECK_THROWS_WITH_AS(load_checkpoint(cut), has(cut + ": "), Error);
}
