// The trainer's step object (runtime/train/train_step.h) and the parts train() is split
// into: the weight-decay rule, the step against the same sequence written out by hand,
// the skipped update of a non-finite step, the learning rate, exact resume from
// (weights, moments, step), early stopping and the NaN guard.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "engine/autocast.h"
#include "engine/error.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/schedule.h"
#include "engine/random.h"
#include "model/bet_model.h"
#include "runtime/checkpoint/checkpoint_manager.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/train/checkpointing.h"
#include "runtime/train/early_stopping.h"
#include "runtime/train/evaluate.h"
#include "runtime/train/nan_guard.h"
#include "runtime/train/run_log.h"
#include "runtime/train/train_step.h"

using namespace bet;
using namespace bet::runtime;

namespace {

model::ModelConfig small_config(model::Task task) {
  model::ModelConfig c;
  c.task = task;
  c.d_model = 16;
  c.heads = 2;
  c.layers = 1;
  c.max_len = 16;
  c.k_permutations = 2;
  c.n_harmonics = 3;
  c.dropout = 0.1;
  if (task == model::Task::Classify) {
    c.num_classes = 2;
    c.labels = {"a", "b"};
  }
  c.validate();
  return c;
}

// A batch of 3 rows (lengths 9, 6, 4) of random tokens, with labels or targets.
Batch small_batch(const model::ModelConfig& c, uint64_t seed) {
  const int64_t B = 3, S = 9;
  Generator g(seed);
  Batch b;
  b.lengths = {9, 6, 4};
  b.indices = {4, 7, 1};
  std::vector<int64_t> ids(size_t(B * S), 0);
  for (int64_t i = 0; i < B; ++i)
    for (int64_t t = 0; t < b.lengths[size_t(i)]; ++t) ids[size_t(i * S + t)] = 3 + int64_t(g.randint(100));
  b.ids = Tensor::from_vector<int64_t>(ids, {B, S});
  if (c.task == model::Task::Classify) {
    std::vector<int64_t> y;
    for (int64_t i = 0; i < B; ++i) y.push_back(int64_t(g.randint(2)));
    b.labels = Tensor::from_vector<int64_t>(y, {B});
  } else {
    std::vector<int64_t> y(size_t(B * S), -100);
    for (int64_t i = 0; i < B; ++i)
      for (int64_t t = 0; t < b.lengths[size_t(i)]; ++t) y[size_t(i * S + t)] = 3 + int64_t(g.randint(100));
    b.targets = Tensor::from_vector<int64_t>(y, {B, S});
  }
  return b;
}

TrainStepConfig step_config(int64_t total = 10) {
  TrainConfig tc;
  tc.seed = 9;
  tc.warmup = 2;
  tc.lr = 1e-2;
  return train_step_config(tc, total);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0;
}

void check_same_model(const model::BetModel& a, const model::BetModel& b) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    INFO(pa[i].first);
    CHECK(same_bits(pa[i].second, pb[i].second));
  }
}

std::string temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("bet_train_step_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(d);
  return d.string();
}

}  // namespace

TEST_CASE("weight decay applies to matrices only: not to biases, norms or scalars") {
  const std::vector<Tensor> params{Tensor::zeros({4, 3}), Tensor::zeros({3}), Tensor::zeros({}),
                                   Tensor::zeros({2, 2, 2})};
  CHECK(weight_decay_mask(params) == std::vector<bool>{true, false, false, true});
  Generator g(1);
  model::BetModel m(small_config(model::Task::LM), g);
  TrainStep step(m, step_config());
  const auto params_m = m.trainable_tensors();
  for (size_t i = 0; i < params_m.size(); ++i) CHECK(step.optimizer().decays(i) == (params_m[i].dim() >= 2));
}

TEST_CASE("a step is context, forward, MDL loss, backward, clipping and AdamW at the scheduled rate") {
  for (model::Task task : {model::Task::Classify, model::Task::LM}) {
    CAPTURE(model::to_string(task));
    const model::ModelConfig cfg = small_config(task);
    Generator g1(3), g2(3);
    model::BetModel a(cfg, g1), b(cfg, g2);
    a.train();
    b.train();
    const TrainStepConfig sc = step_config();
    TrainStep step(a, sc);

    // The same, written out.
    std::vector<Tensor> params = b.trainable_tensors();
    std::vector<bool> decay;
    for (auto& p : params) decay.push_back(p.dim() >= 2);
    optim::AdamWOptions o;
    o.lr = sc.lr;
    o.weight_decay = sc.weight_decay;
    optim::AdamW opt(params, o, decay);
    optim::WarmupCosineSchedule schedule(sc.lr, sc.warmup, sc.total_steps, sc.lr * 0.1);
    for (int64_t n = 0; n < 4; ++n) {
      const Batch batch = small_batch(cfg, 20 + uint64_t(n));
      const StepMetrics m = step.step(batch, n);

      model::SeqContext ctx = batch_context(batch, b);
      ctx.training = true;
      ctx.seed = sc.seed;
      ctx.step = uint64_t(n);
      uint64_t offset = uint64_t(n) << 40;
      ctx.dropout_offset = &offset;
      model::ForwardOutput out = b.forward(batch.ids, ctx);
      // The loss in its split form (train_step.h): backward of the summed CE, then the
      // gradient scaled once by (1 + beta [active]) / N, decided on the whole batch.
      const Tensor& target = task == model::Task::Classify ? batch.labels : batch.targets;
      const model::LossOperands ops = model::loss_operands(out, target, ctx, task);
      Tensor ce = cross_entropy_sum(ops.logits, ops.targets, -100);
      ce.backward();
      model::MDLLossOutput L = model::mdl_from_totals(ce.item(), model::target_counts(ops.targets, ops.logits.size(1)));
      optim::scale_grads(params, model::mdl_gradient_scale(L, sc.mdl_beta));
      const double norm = optim::clip_grad_norm(params, sc.clip);
      opt.set_lr(schedule.lr(n));
      opt.step();
      opt.zero_grad();

      // ... which is model.md's loss: the same value, the same penalty decision.
      const model::MDLLossOutput direct = model::model_loss(out, target, ctx, task, sc.mdl_beta);
      CHECK(m.loss == doctest::Approx(direct.loss.item()).epsilon(1e-6));
      CHECK(m.parts.mdl_active == direct.mdl_active);

      CHECK(m.applied);
      CHECK(m.loss == L.standard_loss + sc.mdl_beta * L.mdl_penalty);
      CHECK(m.grad_norm == norm);
      CHECK(m.lr == schedule.lr(n));
      CHECK(m.tokens == 19);
      CHECK(m.parts.mdl_active == L.mdl_active);
      check_same_model(a, b);
    }
    for (const Tensor& p : step.params()) CHECK_FALSE(p.grad().defined());
  }
}

TEST_CASE("micro-batches (grad_accum) give one batch's step: dropout and relabellings follow the global row") {
  // Each micro-batch is a slice of the batch, padded as the batch is; its dropout words
  // sit where the whole batch's would. So 3 micro-batches of one row reach the weights
  // of one step on 3 rows, up to summation order.
  for (model::Task task : {model::Task::Classify, model::Task::LM}) {
    CAPTURE(model::to_string(task));
    const model::ModelConfig cfg = small_config(task);
    Generator g1(3), g2(3);
    model::BetModel a(cfg, g1), b(cfg, g2);
    a.train();
    b.train();
    TrainStepConfig one = step_config(), three = step_config();
    three.grad_accum = 3;
    TrainStep sa(a, one), sb(b, three);
    for (int64_t n = 0; n < 4; ++n) {
      const Batch batch = small_batch(cfg, 20 + uint64_t(n));
      const StepMetrics ma = sa.step(batch, n), mb = sb.step(batch, n);
      CHECK(mb.loss == doctest::Approx(ma.loss).epsilon(1e-6));
      CHECK(mb.grad_norm == doctest::Approx(ma.grad_norm).epsilon(1e-5));
      CHECK(mb.tokens == ma.tokens);
    }
    auto pa = a.named_parameters(), pb = b.named_parameters();
    double worst = 0;
    for (size_t i = 0; i < pa.size(); ++i) {
      if (pa[i].first.find("attn.k.bias") != std::string::npos) continue;  // see test_data_parallel.cpp
      const auto u = pa[i].second.to_vector<float>(), v = pb[i].second.to_vector<float>();
      for (size_t k = 0; k < u.size(); ++k) worst = std::max(worst, double(std::abs(u[k] - v[k])));
    }
    CHECK(worst < 1e-5);
    // The control: the same micro-batches with dropout laid out per micro-batch (every
    // slice at row 0) would differ; a different seed stands in for it here.
    Generator g3(3);
    model::BetModel c(cfg, g3);
    c.train();
    TrainStepConfig other = three;
    other.seed = 10;
    TrainStep sc(c, other);
    for (int64_t n = 0; n < 4; ++n) sc.step(small_batch(cfg, 20 + uint64_t(n)), n);
    double moved = 0;
    auto pc = c.named_parameters();
    for (size_t i = 0; i < pa.size(); ++i) {
      const auto u = pa[i].second.to_vector<float>(), v = pc[i].second.to_vector<float>();
      for (size_t k = 0; k < u.size(); ++k) moved = std::max(moved, double(std::abs(u[k] - v[k])));
    }
    CHECK(moved > 1e-4);
  }
}

TEST_CASE("a step whose loss is not finite makes no update and leaves no gradient") {
  const model::ModelConfig cfg = small_config(model::Task::Classify);
  Generator g1(4), g2(4);
  model::BetModel a(cfg, g1), ref(cfg, g2);
  a.train();
  TrainStep step(a, step_config());
  step.step(small_batch(cfg, 1), 0);  // moments that are not zero
  Tensor w = a.named_parameters().back().second;
  {
    autograd::NoGradGuard no_grad;
    w.fill_(std::numeric_limits<double>::quiet_NaN());
  }
  std::vector<Tensor> before;
  for (const Tensor& p : a.trainable_tensors()) before.push_back(p.detach().clone());
  optim::StateList state_before;
  for (auto& [n, t] : step.optimizer().state()) state_before.emplace_back(n, t.clone());

  const StepMetrics m = step.step(small_batch(cfg, 2), 1);
  CHECK_FALSE(m.applied);
  CHECK_FALSE(std::isfinite(m.loss));
  const auto after = a.trainable_tensors();
  for (size_t i = 0; i < after.size(); ++i) {
    CHECK(same_bits(after[i], before[i]));
    CHECK_FALSE(after[i].grad().defined());
  }
  const auto state_after = step.optimizer().state();
  REQUIRE(state_after.size() == state_before.size());
  for (size_t i = 0; i < state_after.size(); ++i) {
    INFO(state_after[i].first);
    CHECK(same_bits(state_after[i].second, state_before[i].second));
  }
}

TEST_CASE("the learning rate is the schedule's (warmup, cosine to 10%) times the scale") {
  Generator g(5);
  model::BetModel m(small_config(model::Task::LM), g);
  TrainConfig tc;
  tc.lr = 2e-3;
  tc.warmup = 100;
  TrainStep step(m, train_step_config(tc, 40));  // warmup capped at half the run
  optim::WarmupCosineSchedule schedule(2e-3, 20, 40, 2e-4);
  for (int64_t n : {0, 1, 10, 20, 30, 39, 40, 100}) CHECK(step.lr(n) == schedule.lr(n));
  CHECK(step.lr(40) == doctest::Approx(2e-4));
  step.set_lr_scale(0.5);
  CHECK(step.lr(25) == schedule.lr(25) * 0.5);
  const StepMetrics sm = step.step(small_batch(m.config(), 3), 25);
  CHECK(sm.lr == schedule.lr(25) * 0.5);
}

TEST_CASE("weights, moments and the step number are all a resumed step needs: bit-identical continuation") {
  const model::ModelConfig cfg = small_config(model::Task::LM);
  Generator g1(6), g2(6), g3(99);
  model::BetModel whole(cfg, g1), first(cfg, g2), resumed(cfg, g3);  // `resumed` starts elsewhere
  whole.train();
  first.train();
  resumed.train();
  TrainStep a(whole, step_config()), b(first, step_config()), c(resumed, step_config());
  for (int64_t n = 0; n < 5; ++n) a.step(small_batch(cfg, 40 + uint64_t(n)), n);
  for (int64_t n = 0; n < 3; ++n) b.step(small_batch(cfg, 40 + uint64_t(n)), n);
  model::NamedTensors weights;
  for (auto& [name, t] : first.named_parameters()) weights.emplace_back(name, t.detach().clone());
  optim::StateList moments;
  for (auto& [name, t] : b.optimizer().state()) moments.emplace_back(name, t.clone());
  resumed.load_parameters(weights);
  c.optimizer().load_state(moments);
  for (int64_t n = 3; n < 5; ++n) c.step(small_batch(cfg, 40 + uint64_t(n)), n);
  check_same_model(whole, resumed);
}

TEST_CASE("early stopping: METRIC:PATIENCE, evaluations without improvement counted") {
  CHECK_FALSE(EarlyStopping("").enabled());
  EarlyStopping e("loss:2");
  CHECK(e.enabled());
  CHECK(e.metric() == "val/loss");
  CHECK(e.patience() == 2);
  CHECK(EarlyStopping("val/accuracy:1").metric() == "val/accuracy");
  CHECK_THROWS_WITH_AS(EarlyStopping("loss"), doctest::Contains("is not METRIC:PATIENCE"), Error);
  CHECK_THROWS_WITH_AS(EarlyStopping("loss:x"), doctest::Contains("is not a number"), Error);
  CHECK_THROWS_WITH_AS(EarlyStopping("loss:0"), doctest::Contains("patience must be >= 1"), Error);

  const std::map<std::string, double> vm{{"val/loss", 1.0}};
  int64_t count = 0;
  CHECK_FALSE(e.should_stop(vm, false, count));
  CHECK(count == 1);
  CHECK_FALSE(e.should_stop(vm, true, count));
  CHECK(count == 0);
  CHECK_FALSE(e.should_stop(vm, false, count));
  CHECK(e.should_stop(vm, false, count));
  CHECK(count == 2);
  CHECK_THROWS_WITH_AS(EarlyStopping("f1:3").should_stop(vm, false, count), doctest::Contains("no validation metric"),
                       Error);
  int64_t untouched = 7;
  CHECK_FALSE(EarlyStopping("").should_stop(vm, false, untouched));
  CHECK(untouched == 7);
}

TEST_CASE("milestones: each tracked metric that beats its best gets a checkpoint") {
  const std::string dir = temp_dir("milestones");
  const model::ModelConfig cfg = small_config(model::Task::Classify);
  Generator g(7);
  model::BetModel m(cfg, g);
  TrainStep step(m, step_config());
  auto tok = make_byte_tokenizer();
  CheckpointManager manager(dir);
  RunCheckpoints ck(manager, step, *tok, 9, 10);
  RunState st;
  st.step = 2;
  const std::vector<std::string> tracked{"val/loss", "val/accuracy"};
  CHECK(ck.save_milestones(st, {{"val/loss", 0.7}, {"val/accuracy", 0.5}}, tracked, {}) ==
        std::set<std::string>{"val/loss", "val/accuracy"});
  st.step = 4;
  CHECK(ck.save_milestones(st, {{"val/loss", 0.6}, {"val/accuracy", 0.4}}, tracked, {}) ==
        std::set<std::string>{"val/loss"});
  st.step = 6;
  CHECK(ck.save_milestones(st, {{"val/loss", NAN}, {"val/accuracy", 0.9}}, tracked, {}) ==
        std::set<std::string>{"val/accuracy"});
  CHECK(st.best["val/loss"].get<double>() == 0.6);
  CHECK(st.best["val/accuracy"].get<double>() == 0.9);
  CHECK(manager.milestone_best("loss")["step"] == 4);
  CHECK(manager.milestone_best("accuracy")["step"] == 6);

  // A training checkpoint carries the run state, and reads back.
  st.bad_steps = 1;
  st.evals_without_improvement = 2;
  step.set_lr_scale(0.25);
  ck.save_training(st, {});
  CHECK(ck.last_good() == manager.training_dir() + "/step-00000006.bet");
  const Checkpoint back = load_checkpoint(ck.last_good());
  CHECK(back.training_state["lr_scale"] == 0.25);
  CHECK(back.training_state["seed"] == 9);
  CHECK(back.training_state["total_steps"] == 10);
  const RunState st2 = run_state_from_json(back.training_state);
  CHECK(st2.step == 6);
  CHECK(st2.bad_steps == 1);
  CHECK(st2.evals_without_improvement == 2);
  CHECK(st2.best == st.best);
  std::filesystem::remove_all(dir);
}

TEST_CASE("NaN guard: 3 skipped steps in a row halve the learning rate and go back to the last good checkpoint") {
  const std::string dir = temp_dir("nan_guard");
  const model::ModelConfig cfg = small_config(model::Task::Classify);
  Generator g(8);
  model::BetModel m(cfg, g);
  TrainStep step(m, step_config());
  auto tok = make_byte_tokenizer();
  CheckpointManager manager(dir);
  RunCheckpoints ck(manager, step, *tok, 9, 10);
  RunLog log(dir + "/logs", true);
  NanGuard guard;
  RunState st;
  st.step = 3;
  ck.save_training(st, {});
  const Tensor saved = m.named_parameters()[1].second.detach().clone();
  {
    autograd::NoGradGuard no_grad;
    m.named_parameters()[1].second.fill_(0.5);
  }
  st.step = 5;
  CHECK_FALSE(guard.after_step(false, step, st, ck.last_good(), log));
  CHECK_FALSE(guard.after_step(true, step, st, ck.last_good(), log));  // a good step resets the count
  CHECK_FALSE(guard.after_step(false, step, st, ck.last_good(), log));
  CHECK_FALSE(guard.after_step(false, step, st, ck.last_good(), log));
  CHECK(step.lr_scale() == 1.0);
  CHECK(guard.after_step(false, step, st, ck.last_good(), log));  // the third in a row
  CHECK(st.bad_steps == 4);
  CHECK(step.lr_scale() == 0.5);
  CHECK(st.step == 3);
  CHECK(same_bits(m.named_parameters()[1].second, saved));
  // Without a checkpoint to go back to, the run moves on at the lower rate.
  CHECK_FALSE(guard.after_step(false, step, st, "", log));
  CHECK_FALSE(guard.after_step(false, step, st, "", log));
  CHECK_FALSE(guard.after_step(false, step, st, "", log));
  CHECK(step.lr_scale() == 0.25);
  std::filesystem::remove_all(dir);
}
