// Device placement, end to end, on an emulated CUDA device (engine/device.h): the
// model, the trainer, the evaluator, the predictor and the checkpoints run with every
// tensor on "cuda:0", whose memory is host memory and whose kernels are the CPU's.
// So results must be bit-identical to the CPU, and what can fail is the placement
// itself: a tensor left on the CPU trips an op's same-device check, and host code
// reading device memory without copying it first trips check_host_access().
//
// On a machine with a real GPU (CUDA build) emulation switches itself off and the
// same cases run on the GPU, compared with tolerances instead of bit for bit.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/autocast.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"
#include "model/bet_model.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/inference/predictor.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/train/train_step.h"
#include "runtime/train/trainer.h"

using namespace bet;

namespace {

// Before main(): the emulated device count is read once, at the first query.
const bool g_emulate = [] {
  ::setenv("BET_EMULATE_CUDA", "1", 1);
  return true;
}();

const Device kGpu = Device::cuda(0);
bool exact() { return cuda_emulated(); }  // emulated: the CPU's kernels, so bit-identical

std::string tmp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("bet_device_" + std::to_string(::getpid()) + "_" + name)).string();
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

void check_close(const Tensor& a, const Tensor& b, double tol, const std::string& what) {
  const double d = max_abs_diff(a, b);
  INFO(what << ": max |diff| " << d);
  if (exact()) CHECK(d == 0.0);
  else CHECK(d <= tol);
}

// Tolerance for a parameter after `steps` AdamW steps (lr 1e-3) on a real GPU. Softmax
// ignores a per-query constant, so the key bias's gradient is zero up to rounding, and
// AdamW turns that noise into steps of up to lr: it can only be held to 2 x lr x steps.
// (Emulated runs stay bit for bit whatever this says.)
double param_tol(const std::string& name, double tol, int steps) {
  const bool key_bias = name.size() >= 11 && name.compare(name.size() - 11, 11, "attn.k.bias") == 0;
  return key_bias ? std::max(tol, 2 * 1e-3 * steps) : tol;
}

model::ModelConfig small_config(model::Task task, model::LayerKind layer, model::PosEncoding pe) {
  model::ModelConfig c;
  c.task = task;
  c.layer = layer;
  c.pe = pe;
  c.d_model = 16;
  c.heads = 2;
  c.layers = 2;
  c.max_len = 16;
  c.k_permutations = 2;
  c.n_harmonics = 3;
  c.dropout = 0.1;
  if (task == model::Task::Classify) {
    c.num_classes = 3;
    c.labels = {"a", "b", "c"};
  }
  return c;
}

struct StepResult {
  std::vector<double> losses;
  model::NamedTensors params;
};

// Three steps of the trainer's step (dropout, relabellings, MDL loss, clipping, AdamW)
// with the model on `d`.
StepResult train_steps(const model::ModelConfig& cfg, Device d, DType compute = DType::F32) {
  Generator g(7);
  model::BetModel m(cfg, g);
  m.to(d);
  CHECK(m.device() == d);
  m.train();
  runtime::TrainConfig tc;
  tc.seed = 5;
  runtime::TrainStepConfig sc = runtime::train_step_config(tc, 3, compute);
  sc.warmup = 0;  // a full-size update from the first step
  runtime::TrainStep trainer(m, sc);
  const int64_t B = 3, S = 10;
  Generator data(11);
  std::vector<int64_t> ids(size_t(B * S)), y;
  for (auto& v : ids) v = 3 + int64_t(data.randint(200));
  if (cfg.task == model::Task::Classify) {
    for (int64_t b = 0; b < B; ++b) y.push_back(int64_t(data.randint(3)));
  } else {
    for (int64_t i = 0; i < B * S; ++i) y.push_back(3 + int64_t(data.randint(200)));
  }
  runtime::Batch batch;
  batch.ids = Tensor::from_vector<int64_t>(ids, {B, S});
  batch.lengths = {10, 7, 4};
  batch.indices = {0, 1, 2};
  if (cfg.task == model::Task::Classify) batch.labels = Tensor::from_vector<int64_t>(y, {B});
  else batch.targets = Tensor::from_vector<int64_t>(y, {B, S});
  StepResult r;
  for (int64_t step = 0; step < 3; ++step) {
    const runtime::StepMetrics sm = trainer.step(batch, step);
    CHECK(sm.out.logits.device() == d);
    CHECK(sm.applied);
    r.losses.push_back(sm.loss);
  }
  const optim::Optimizer& opt = trainer.optimizer();
  for (auto& [n, p] : m.named_parameters()) {
    CHECK_MESSAGE(p.device() == d, n, " is on ", p.device().str());
    r.params.emplace_back(n, p.to(Device::cpu()));
  }
  for (auto& [n, s] : opt.state())
    if (n != "adamw.step") CHECK_MESSAGE(s.device() == d, n, " is on ", s.device().str());
  return r;
}

}  // namespace

TEST_CASE("a device is available: emulated here, or a real GPU") {
  CHECK(g_emulate);
  REQUIRE(cuda_device_count() >= 1);
  CHECK(parse_device("cuda") == kGpu);
  CHECK(parse_device("cuda:0") == kGpu);
  if (exact()) CHECK_THROWS_WITH_AS(parse_device("cuda:1"), doctest::Contains("no CUDA device available"), Error);
}

TEST_CASE("device tensors: host reads are refused, copies and ops work, mixing devices is an error") {
  Tensor c = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor g = c.to(kGpu);
  CHECK(g.device() == kGpu);
  if (exact()) {
    // The guard: on a real GPU this read would dereference a device pointer.
    CHECK_THROWS_WITH_AS((void)g.data<float>(), doctest::Contains("host code read the memory of a tensor on cuda:0"),
                         Error);
    CHECK_THROWS_WITH_AS((void)g.raw_data(), doctest::Contains("copy it to the CPU first"), Error);
  }
  CHECK(g.to_vector<float>() == c.to_vector<float>());
  CHECK(g.to(Device::cpu()).device().is_cpu());
  CHECK(transpose(g, 0, 1).contiguous().to_vector<float>() == transpose(c, 0, 1).contiguous().to_vector<float>());
  CHECK_THROWS_WITH_AS(add(g, c), doctest::Contains("different devices"), Error);
  CHECK_THROWS_WITH_AS(matmul(g, transpose(c, 0, 1)), doctest::Contains("cuda:0"), Error);
  CHECK_THROWS_WITH_AS(rope(reshape(g, {1, 1, 2, 3}).contiguous(), Tensor::arange(2)), doctest::Contains("different devices"),
                       Error);
  Tensor z = Tensor::zeros({4}, DType::F32, kGpu);
  z.fill_(2.5);
  CHECK(z.to_vector<float>() == std::vector<float>(4, 2.5f));
  Tensor h = Tensor::zeros({2, 3});
  h.copy_(g);  // across devices
  CHECK(h.to_vector<float>() == c.to_vector<float>());
}

TEST_CASE("gradients flow across to(device) and stay on the device of their tensor") {
  Generator gen(3);
  Tensor a = gen.uniform({4, 5}, -1, 1, DType::F32);
  Tensor ag = a.detach().to(kGpu).set_requires_grad(true);
  Tensor ac = a.detach().clone().set_requires_grad(true);
  auto f = [](const Tensor& x) { return sum(mul(softmax(matmul(x, transpose(x, 0, 1)), 1), 3.0)); };
  f(ag).backward();
  f(ac).backward();
  REQUIRE(ag.grad().defined());
  CHECK(ag.grad().device() == kGpu);
  check_close(ag.grad(), ac.grad(), 1e-5, "grad");

  // A CPU leaf used on the device: the gradient comes back to the CPU.
  Tensor leaf = a.detach().clone().set_requires_grad(true);
  sum(mul(leaf.to(kGpu), 2.0)).backward();
  REQUIRE(leaf.grad().defined());
  CHECK(leaf.grad().device().is_cpu());
  CHECK(leaf.grad().to_vector<float>() == std::vector<float>(20, 2.0f));
}

TEST_CASE("Module::to moves every parameter in place; handles held elsewhere follow") {
  Generator g(1);
  model::BetModel m(small_config(model::Task::LM, model::LayerKind::Bet, model::PosEncoding::Sinusoidal), g);
  Tensor held = m.named_parameters().front().second;  // e.g. an optimizer's handle
  const auto before = held.to_vector<float>();
  const bool requires_grad = held.requires_grad();
  m.to(kGpu);
  CHECK(held.device() == kGpu);
  CHECK(held.requires_grad() == requires_grad);
  CHECK(held.is_leaf());
  CHECK(held.to_vector<float>() == before);
  for (auto& [n, p] : m.named_parameters()) CHECK_MESSAGE(p.device() == kGpu, n);
  REQUIRE(m.sin_table.defined());
  CHECK(m.sin_table.device() == kGpu);
  m.to(Device::cpu());
  CHECK(held.device().is_cpu());
  CHECK(held.to_vector<float>() == before);
}

TEST_CASE("training steps on the device match the CPU: every layer kind, task and encoding") {
  using model::LayerKind;
  using model::PosEncoding;
  using model::Task;
  struct Case {
    Task task;
    LayerKind layer;
    PosEncoding pe;
  };
  for (const Case& k : {Case{Task::Classify, LayerKind::Bet, PosEncoding::Rope},
                        Case{Task::LM, LayerKind::Bet, PosEncoding::Rope},
                        Case{Task::LM, LayerKind::Bet, PosEncoding::Sinusoidal},
                        Case{Task::Classify, LayerKind::Bet, PosEncoding::Learned},
                        Case{Task::Classify, LayerKind::Standard, PosEncoding::Rope},
                        Case{Task::LM, LayerKind::Standard, PosEncoding::None}}) {
    const model::ModelConfig cfg = small_config(k.task, k.layer, k.pe);
    CAPTURE(model::to_string(k.task));
    CAPTURE(model::to_string(k.layer));
    CAPTURE(model::to_string(k.pe));
    StepResult cpu = train_steps(cfg, Device::cpu());
    StepResult gpu = train_steps(cfg, kGpu);
    for (size_t i = 0; i < cpu.losses.size(); ++i) {
      if (exact()) CHECK(gpu.losses[i] == cpu.losses[i]);
      else CHECK(gpu.losses[i] == doctest::Approx(cpu.losses[i]).epsilon(1e-4));
    }
    REQUIRE(cpu.params.size() == gpu.params.size());
    for (size_t i = 0; i < cpu.params.size(); ++i)
      check_close(gpu.params[i].second, cpu.params[i].second, param_tol(cpu.params[i].first, 1e-4, 3),
                  cpu.params[i].first);
  }
}

TEST_CASE("bf16 autocast training steps on the device match the CPU's bf16 path") {
  const model::ModelConfig cfg = small_config(model::Task::Classify, model::LayerKind::Bet, model::PosEncoding::Rope);
  StepResult cpu = train_steps(cfg, Device::cpu(), DType::BF16);
  StepResult gpu = train_steps(cfg, kGpu, DType::BF16);
  for (size_t i = 0; i < cpu.losses.size(); ++i) {
    if (exact()) CHECK(gpu.losses[i] == cpu.losses[i]);
    else CHECK(gpu.losses[i] == doctest::Approx(cpu.losses[i]).epsilon(2e-2));  // bf16 GEMMs differ in order
  }
  for (size_t i = 0; i < cpu.params.size(); ++i) {
    CHECK(gpu.params[i].second.dtype() == DType::F32);
    check_close(gpu.params[i].second, cpu.params[i].second, param_tol(cpu.params[i].first, 2e-2, 3), cpu.params[i].first);
  }
}

TEST_CASE("betctl train on the device: same run as the CPU; its checkpoint serves on the CPU and back") {
  auto run = [](const std::string& device, const std::string& out, const std::string& resume = "") {
    runtime::TrainConfig c;
    c.out = out;
    c.steps = 6;
    c.seq_len = 12;
    c.batch_size = 4;
    c.warmup = 2;
    c.eval_every = 3;
    c.checkpoint_every = 3;
    c.quiet = true;
    c.seed = 9;
    c.threads = 1;
    c.synthetic_val = 8;
    c.model.d_model = 16;
    c.model.heads = 2;
    c.model.layers = 1;
    c.model.max_len = 16;
    c.model.k_permutations = 2;
    c.device = device;
    c.resume = resume;
    return runtime::train(c);
  };
  const std::string dc = tmp_path("train_cpu"), dg = tmp_path("train_gpu"), dr = tmp_path("train_resume");
  auto rc = run("cpu", dc);
  auto rg = run("cuda", dg);
  runtime::Checkpoint cc = runtime::load_checkpoint(rc.summary["checkpoint"].get<std::string>());
  runtime::Checkpoint cg = runtime::load_checkpoint(rg.summary["checkpoint"].get<std::string>());
  REQUIRE(cc.weights.size() == cg.weights.size());
  for (size_t i = 0; i < cc.weights.size(); ++i) {
    CHECK(cg.weights[i].second.device().is_cpu());  // files are device-independent
    check_close(cg.weights[i].second, cc.weights[i].second, param_tol(cc.weights[i].first, 1e-4, 6),
                cc.weights[i].first);
  }
  REQUIRE(cc.optimizer.size() == cg.optimizer.size());
  for (size_t i = 0; i < cc.optimizer.size(); ++i)
    check_close(cg.optimizer[i].second, cc.optimizer[i].second, 1e-4, cc.optimizer[i].first);

  // Train on the CPU to step 3, resume on the device: the same end as the device alone.
  const std::string mid = dc + "/checkpoints/training/step-00000003.bet";
  REQUIRE(std::filesystem::exists(mid));
  auto rr = run("cuda", dr, mid);
  runtime::Checkpoint cr = runtime::load_checkpoint(rr.summary["checkpoint"].get<std::string>());
  REQUIRE(cr.weights.size() == cg.weights.size());
  for (size_t i = 0; i < cr.weights.size(); ++i)
    check_close(cr.weights[i].second, cg.weights[i].second, param_tol(cr.weights[i].first, 1e-4, 6),
                "resumed " + cr.weights[i].first);
  for (const auto& d : {dc, dg, dr}) std::filesystem::remove_all(d);
}

TEST_CASE("the predictor on the device answers as on the CPU, ensembles and MC dropout included") {
  const model::ModelConfig cfg = small_config(model::Task::Classify, model::LayerKind::Bet, model::PosEncoding::Rope);
  Generator g(21);
  model::BetModel m(cfg, g);
  m.to(kGpu);  // saved from the device
  const std::string path = tmp_path("predict.bet");
  runtime::save_checkpoint(path, runtime::make_checkpoint(m, nullptr, runtime::make_byte_tokenizer()->to_json(),
                                                          "production"));
  inference::ModelPredictor on_cpu(path), on_gpu(path, kGpu);
  CHECK(on_gpu.model_info()["device"] == "cuda:0");
  std::vector<inference::PredictRequest> reqs;
  for (int k = 0; k < 4; ++k) {
    inference::PredictRequest r;
    r.text = std::string("text number ") + std::to_string(k) + std::string(size_t(k) * 3, 'x');
    r.permutations = k + 1;
    r.mc_dropout = k == 3 ? 4 : 0;
    reqs.push_back(r);
  }
  const auto a = on_cpu.predict_batch(reqs), b = on_gpu.predict_batch(reqs);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    if (exact()) {
      CHECK(a[i].answer == b[i].answer);
    } else {
      const auto& pa = a[i].answer["probabilities"];
      for (auto it = pa.begin(); it != pa.end(); ++it)
        CHECK(b[i].answer["probabilities"][it.key()].get<double>() == doctest::Approx(it.value().get<double>()).epsilon(1e-3));
    }
  }
  REQUIRE(on_gpu.reload(nullptr));  // a reload keeps the device
  CHECK(on_gpu.model_info()["device"] == "cuda:0");
  std::filesystem::remove(path);
}
