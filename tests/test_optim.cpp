// Optimisers, gradient clipping and schedules against PyTorch reference values
// (tests/reference/gen_optim.py -> optim.json), plus the properties a checkpoint needs:
// state save/restore continues bit for bit, results do not depend on thread count.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>

#include "bet_config.h"
#include "tests/reference_data.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/schedule.h"
#include "engine/random.h"
#include "platform/threads.h"

using namespace bet;
using namespace bet::optim;
using nlohmann::json;

namespace {

const json& reference() { return bet::testing::reference_file("optim.json"); }

DType dtype_from(const json& c) { return c.at("dtype").get<std::string>() == "f64" ? DType::F64 : DType::F32; }

Tensor tensor_from(const json& values, const json& shape, DType dt) {
  Shape s = shape.get<Shape>();
  std::vector<double> v = values.get<std::vector<double>>();
  return Tensor::from_vector<double>(v, s).to(dt);
}

std::vector<Tensor> make_params(const json& c) {
  std::vector<Tensor> ps;
  for (size_t i = 0; i < c.at("shapes").size(); ++i) {
    Tensor p = tensor_from(c.at("params")[i], c.at("shapes")[i], dtype_from(c));
    p.set_requires_grad();
    ps.push_back(p);
  }
  return ps;
}

void set_grads(const std::vector<Tensor>& ps, const json& c, size_t step) {
  const json& gs = c.at("grads")[step];
  for (size_t i = 0; i < ps.size(); ++i) {
    Tensor p = ps[i];
    if (gs[i].is_null()) p.zero_grad();
    else p.set_grad(tensor_from(gs[i], c.at("shapes")[i], p.dtype()));
  }
}

// max over elements of |a - b| / (|b| + atol/rtol): <= rtol means every element is
// within rtol relative (or atol absolute near zero).
double worst(const Tensor& a, const std::vector<double>& b, double rtol, double atol) {
  std::vector<double> av = a.to_vector<double>();
  REQUIRE(av.size() == b.size());
  double w = 0;
  for (size_t i = 0; i < av.size(); ++i) {
    double err = std::abs(av[i] - b[i]);
    double tol = rtol * std::abs(b[i]) + atol;
    w = std::max(w, err / tol);
  }
  return w;  // <= 1 passes
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// f32 trajectories agree with torch to 1e-6 relative; f64 to 1e-12.
double rtol_for(DType dt) { return dt == DType::F32 ? 1e-6 : 1e-12; }

std::vector<bool> bools(const json& j) { return j.get<std::vector<bool>>(); }

std::unique_ptr<Optimizer> make_sgd(std::vector<Tensor> ps, const json& c) {
  SGDOptions o;
  o.lr = c.at("lrs")[0];
  o.momentum = c.at("momentum");
  o.dampening = c.at("dampening");
  o.weight_decay = c.at("weight_decay");
  o.nesterov = c.at("nesterov");
  return std::make_unique<SGD>(std::move(ps), o, bools(c.at("decay")));
}

std::unique_ptr<Optimizer> make_adamw(std::vector<Tensor> ps, const json& c) {
  AdamWOptions o;
  o.lr = c.at("lrs")[0];
  o.beta1 = c.at("beta1");
  o.beta2 = c.at("beta2");
  o.eps = c.at("eps");
  o.weight_decay = c.at("weight_decay");
  return std::make_unique<AdamW>(std::move(ps), o, bools(c.at("decay")));
}

// Runs the reference case step by step and checks every parameter after every step.
void check_trajectory(const json& c, Optimizer& opt, const std::vector<Tensor>& ps) {
  const DType dt = dtype_from(c);
  // Parameters are O(1); an update can cancel a value down to ~1e-3, leaving the
  // rounding of the O(1) operands: hence an absolute floor of 1e-2 * rtol.
  const double rtol = rtol_for(dt), atol = rtol * 1e-2;
  for (size_t step = 0; step < c.at("grads").size(); ++step) {
    opt.set_lr(c.at("lrs")[step]);
    set_grads(ps, c, step);
    opt.step();
    for (size_t i = 0; i < ps.size(); ++i) {
      double w = worst(ps[i], c.at("trajectory")[step][i].get<std::vector<double>>(), rtol, atol);
      INFO("step " << step << " param " << i << " dtype " << std::string(dtype_name(dt)));
      CHECK(w <= 1.0);
    }
  }
}

const Tensor& state_tensor(const StateList& s, const std::string& name) {
  for (const auto& [n, t] : s)
    if (n == name) return t;
  FAIL("no state tensor " << name);
  static Tensor none;
  return none;
}

}  // namespace

TEST_CASE("AdamW trajectories match torch.optim.AdamW") {
  for (const json& c : reference().at("adamw")) {
    INFO("beta1 " << c.at("beta1").get<double>() << " dtype " << c.at("dtype").get<std::string>());
    std::vector<Tensor> ps = make_params(c);
    auto opt = make_adamw(ps, c);
    check_trajectory(c, *opt, ps);
    // The moments and per-parameter step counts (param 1 skipped one step: no gradient).
    StateList st = opt->state();
    const DType dt = dtype_from(c);
    for (size_t i = 0; i < ps.size(); ++i) {
      // m and v are formed a little differently in torch 1.13 (mul+add, not lerp), so
      // they get an absolute floor scaled to the gradients (|g| <= 3 * grad_scale).
      const double gs = c.at("grad_scale");
      CHECK(worst(state_tensor(st, "adamw.m." + std::to_string(i)), c.at("m")[i], rtol_for(dt),
                  3 * gs * rtol_for(dt)) <= 1.0);
      CHECK(worst(state_tensor(st, "adamw.v." + std::to_string(i)), c.at("v")[i], rtol_for(dt),
                  9 * gs * gs * rtol_for(dt)) <= 1.0);
    }
    const Tensor& steps = state_tensor(st, "adamw.step");
    CHECK(steps.to_vector<int64_t>() == c.at("steps").get<std::vector<int64_t>>());
  }
}

TEST_CASE("SGD trajectories match torch.optim.SGD (momentum, dampening, nesterov)") {
  for (const json& c : reference().at("sgd")) {
    INFO("momentum " << c.at("momentum").get<double>() << " nesterov " << c.at("nesterov").get<bool>()
                     << " dtype " << c.at("dtype").get<std::string>());
    std::vector<Tensor> ps = make_params(c);
    auto opt = make_sgd(ps, c);
    check_trajectory(c, *opt, ps);
    StateList st = opt->state();
    if (c.contains("momentum_buffer")) {
      for (size_t i = 0; i < ps.size(); ++i)
        CHECK(worst(state_tensor(st, "sgd.momentum." + std::to_string(i)), c.at("momentum_buffer")[i],
                    rtol_for(dtype_from(c)), 1e-3 * rtol_for(dtype_from(c))) <= 1.0);
    } else {
      CHECK(st.size() == 1);  // the step counts only
    }
  }
}

TEST_CASE("AdamW weight decay is decoupled and respects the decay mask") {
  // With zero gradients the Adam update is exactly 0 (m = v = 0), leaving only the
  // decoupled decay p *= (1 - lr*wd), applied in the parameter's precision.
  for (DType dt : {DType::F32, DType::F64}) {
    Generator gen(7);
    Tensor a = gen.uniform({4, 3}, -1, 1, dt).set_requires_grad();
    Tensor b = gen.uniform({3}, -1, 1, dt).set_requires_grad();
    Tensor a0 = a.clone(), b0 = b.clone();
    AdamWOptions o;
    o.lr = 0.1;
    o.weight_decay = 0.3;
    AdamW opt({a, b}, o, {true, false});
    for (int s = 0; s < 3; ++s) {
      a.set_grad(Tensor::zeros(a.shape(), dt));
      b.set_grad(Tensor::zeros(b.shape(), dt));
      opt.step();
    }
    std::vector<double> av0 = a0.to_vector<double>(), av = a.to_vector<double>();
    for (size_t i = 0; i < av.size(); ++i) {
      double expect;
      if (dt == DType::F32) {
        float f = float(av0[i]);
        for (int s = 0; s < 3; ++s) f = f * float(1.0 - 0.1 * 0.3);
        expect = f;
      } else {
        expect = av0[i];
        for (int s = 0; s < 3; ++s) expect = expect * (1.0 - 0.1 * 0.3);
      }
      CHECK(av[i] == expect);
    }
    CHECK(bit_equal(b, b0));  // no decay for a masked parameter
  }
}

TEST_CASE("parameters without a gradient are skipped entirely") {
  Generator gen(3);
  Tensor a = gen.uniform({5}, -1, 1).set_requires_grad();
  Tensor b = gen.uniform({5}, -1, 1).set_requires_grad();
  Tensor b0 = b.clone();
  AdamW opt({a, b}, {});
  a.set_grad(gen.uniform({5}, -1, 1));
  opt.step();
  CHECK(bit_equal(b, b0));  // not even decayed
  CHECK(opt.state()[0].second.to_vector<int64_t>() == std::vector<int64_t>{1, 0});
  opt.zero_grad();
  CHECK_FALSE(a.grad().defined());
}

namespace {

// Runs `steps` steps of the reference case with optimizer `make`, optionally saving the
// state after `cut` steps and continuing in a fresh optimizer over fresh parameters.
template <typename Make>
std::vector<Tensor> run_with_restore(const json& c, Make make, int cut) {
  std::vector<Tensor> ps = make_params(c);
  auto opt = make(ps, c);
  const int n = int(c.at("grads").size());
  for (int step = 0; step < n; ++step) {
    if (step == cut) {
      // The checkpoint: clone params and state, then rebuild everything from it.
      StateList saved;
      for (const auto& [name, t] : opt->state()) saved.emplace_back(name, t.clone());
      std::vector<Tensor> fresh;
      for (const Tensor& p : ps) fresh.push_back(p.detach().clone().set_requires_grad());
      // Scribble on the old state to prove nothing aliases it.
      for (const auto& [name, t] : opt->state()) Tensor(t).fill_(7);
      ps = fresh;
      opt = make(ps, c);
      opt->load_state(saved);
    }
    opt->set_lr(c.at("lrs")[step]);
    set_grads(ps, c, size_t(step));
    opt->step();
  }
  return ps;
}

}  // namespace

TEST_CASE("state save/restore mid-run continues bit-identically") {
  auto check = [](const json& c, auto make) {
    std::vector<Tensor> straight = run_with_restore(c, make, -1);
    for (int cut : {1, 3, 4}) {
      INFO("cut at step " << cut);
      std::vector<Tensor> resumed = run_with_restore(c, make, cut);
      for (size_t i = 0; i < straight.size(); ++i) CHECK(bit_equal(straight[i], resumed[i]));
    }
    // Resuming WITHOUT the state must differ (the check above is not vacuous).
    std::vector<Tensor> ps = make_params(c);
    {
      auto opt = make(ps, c);
      for (size_t step = 0; step < 3; ++step) {
        opt->set_lr(c.at("lrs")[step]);
        set_grads(ps, c, step);
        opt->step();
      }
    }
    auto opt = make(ps, c);
    for (size_t step = 3; step < c.at("grads").size(); ++step) {
      opt->set_lr(c.at("lrs")[step]);
      set_grads(ps, c, step);
      opt->step();
    }
    CHECK_FALSE(bit_equal(ps[0], straight[0]));
  };
  for (const json& c : reference().at("adamw")) check(c, make_adamw);
  for (const json& c : reference().at("sgd"))
    if (c.at("momentum").get<double>() != 0) check(c, make_sgd);
}

TEST_CASE("load_state rejects missing, unknown, misshapen and mistyped tensors") {
  Generator gen(5);
  Tensor a = gen.uniform({2, 3}, -1, 1).set_requires_grad();
  Tensor b = gen.uniform({4}, -1, 1).set_requires_grad();
  AdamW opt({a, b}, {});
  StateList good;
  for (const auto& [n, t] : opt.state()) good.emplace_back(n, t.clone());
  CHECK(good.size() == 5);
  CHECK(good[0].first == "adamw.step");
  CHECK(good[1].first == "adamw.m.0");
  CHECK(good[4].first == "adamw.v.1");
  CHECK_NOTHROW(opt.load_state(good));

  StateList missing(good.begin(), good.end() - 1);
  CHECK_THROWS_AS(opt.load_state(missing), Error);
  StateList unknown = good;
  unknown.emplace_back("adamw.m.2", Tensor::zeros({4}));
  CHECK_THROWS_AS(opt.load_state(unknown), Error);
  StateList shape = good;
  shape[1].second = Tensor::zeros({3, 2});
  CHECK_THROWS_AS(opt.load_state(shape), Error);
  StateList type = good;
  type[2].second = Tensor::zeros({2, 3}, DType::F64);
  CHECK_THROWS_AS(opt.load_state(type), Error);
  StateList dup = good;
  dup.push_back(good[1]);
  CHECK_THROWS_AS(opt.load_state(dup), Error);

  // A failed load changes nothing: one step of a bad load then a good step equals a
  // good step alone.
  StateList bad = good;
  bad[1].second = Tensor::full({2, 3}, 5.0);
  bad.pop_back();
  CHECK_THROWS_AS(opt.load_state(bad), Error);
  CHECK(bit_equal(opt.state()[1].second, good[1].second));
}

TEST_CASE("optimizer arguments are validated") {
  Tensor a = Tensor::zeros({3}).set_requires_grad();
  Tensor no_grad = Tensor::zeros({3});
  CHECK_THROWS_AS(AdamW({no_grad}, {}), Error);
  CHECK_THROWS_AS(AdamW({a, a}, {}), Error);
  CHECK_THROWS_AS(AdamW({a}, {}, {true, false}), Error);
  CHECK_THROWS_AS(AdamW({Tensor::zeros({3}, DType::I64)}, {}), Error);
  SGDOptions nest;
  nest.nesterov = true;
  CHECK_THROWS_AS(SGD({a}, nest), Error);
  nest.momentum = 0.9;
  nest.dampening = 0.1;
  CHECK_THROWS_AS(SGD({a}, nest), Error);
  a.set_grad(Tensor::zeros({4}));
  AdamW opt({a}, {});
  CHECK_THROWS_AS(opt.step(), Error);
}

TEST_CASE("clip_grad_norm matches torch.nn.utils.clip_grad_norm_") {
  for (const json& c : reference().at("clip")) {
    const DType dt = dtype_from(c);
    INFO("max_norm " << c.at("max_norm").get<double>() << " dtype " << std::string(dtype_name(dt)));
    std::vector<Tensor> ps;
    for (size_t i = 0; i < c.at("shapes").size(); ++i) {
      Tensor p = Tensor::zeros(c.at("shapes")[i].get<Shape>(), dt).set_requires_grad();
      p.set_grad(tensor_from(c.at("grads")[i], c.at("shapes")[i], dt));
      ps.push_back(p);
    }
    // A parameter without a gradient is ignored.
    ps.push_back(Tensor::zeros({7}, dt).set_requires_grad());
    const double norm = clip_grad_norm(ps, c.at("max_norm"));
    const double ref = c.at("norm");
    // torch accumulates an f32 norm in f32; ours is accumulated in double.
    CHECK(std::abs(norm - ref) <= rtol_for(dt) * ref);
    for (size_t i = 0; i < c.at("shapes").size(); ++i)
      CHECK(worst(ps[i].grad(), c.at("clipped")[i], 2 * rtol_for(dt), 1e-3 * rtol_for(dt)) <= 1.0);
    CHECK_FALSE(ps.back().grad().defined());
    // After clipping the norm is at most max_norm.
    CHECK(grad_norm(ps) <= c.at("max_norm").get<double>() * (1 + 4 * rtol_for(dt)));
  }
}

TEST_CASE("clip_grad_norm: exact small case, non-finite norms, non-contiguous gradients") {
  Tensor p = Tensor::zeros({2}, DType::F64).set_requires_grad();
  p.set_grad(Tensor::from_vector<double>({3, 4}, {2}));
  CHECK(clip_grad_norm({p}, 10.0) == 5.0);
  CHECK(p.grad().to_vector<double>() == std::vector<double>{3, 4});  // below max: untouched
  CHECK(clip_grad_norm({p}, 1.0) == 5.0);
  CHECK(std::abs(p.grad().to_vector<double>()[0] - 3.0 / (5.0 + 1e-6)) < 1e-15);

  for (double bad : {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
    Tensor q = Tensor::zeros({3}).set_requires_grad();
    q.set_grad(Tensor::from_vector<float>({1.0f, float(bad), 2.0f}, {3}));
    double n = clip_grad_norm({p, q}, 1.0);
    CHECK_FALSE(std::isfinite(n));
    std::vector<float> g = q.grad().to_vector<float>();
    CHECK(g[0] == 1.0f);  // not scaled
    CHECK(g[2] == 2.0f);
  }

  // A gradient set by hand as a transposed view is clipped through the view.
  Tensor w = Tensor::zeros({3, 2}, DType::F64).set_requires_grad();
  Tensor base = Tensor::from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor gt = make_view(base, {3, 2}, {1, 3}, 0);
  w.set_grad(gt);
  const double n = clip_grad_norm({w}, 1.0);
  CHECK(std::abs(n - std::sqrt(91.0)) < 1e-12);
  CHECK(std::abs(base.to_vector<double>()[5] - 6.0 / (n + 1e-6)) < 1e-12);

  CHECK(clip_grad_norm({}, 1.0) == 0.0);
}

TEST_CASE("AdamW, SGD and the gradient norm do not depend on the thread count") {
  const int saved = platform::num_threads();
  // Larger than the parallel grain, so several threads really split the work.
  const Shape big = {3, 40001};
  auto run = [&](int threads, bool adam) {
    platform::set_num_threads(threads);
    Generator gen(11);
    Tensor p = gen.uniform(big, -1, 1).set_requires_grad();
    std::unique_ptr<Optimizer> opt;
    if (adam) {
      opt = std::make_unique<AdamW>(std::vector<Tensor>{p}, AdamWOptions{});
    } else {
      SGDOptions o;
      o.momentum = 0.9;
      o.nesterov = true;
      o.weight_decay = 1e-2;
      opt = std::make_unique<SGD>(std::vector<Tensor>{p}, o);
    }
    double norm = 0;
    for (int s = 0; s < 3; ++s) {
      p.set_grad(gen.uniform(big, -2, 2));
      norm = clip_grad_norm({p}, 50.0);
      opt->step();
    }
    return std::make_pair(p, norm);
  };
  for (bool adam : {true, false}) {
    auto [p1, n1] = run(1, adam);
    auto [p2, n2] = run(2, adam);
    auto [p3, n3] = run(3, adam);
    CHECK(bit_equal(p1, p2));
    CHECK(bit_equal(p1, p3));
    CHECK(n1 == n2);
    CHECK(n1 == n3);
  }
  platform::set_num_threads(saved);
}

TEST_CASE("schedules match LambdaLR with transformers' lambdas") {
  for (const json& c : reference().at("schedules")) {
    const std::string kind = c.at("kind");
    const double base = c.at("base");
    const int64_t warmup = c.at("warmup");
    std::unique_ptr<Schedule> s;
    if (kind == "cosine") s = std::make_unique<WarmupCosineSchedule>(base, warmup, c.at("total"), c.at("min_lr"));
    else s = std::make_unique<ConstantSchedule>(base, warmup);
    for (size_t k = 0; k < c.at("steps").size(); ++k) {
      const int64_t step = c.at("steps")[k];
      const double ref = c.at("lrs")[k];
      INFO(kind << " warmup " << warmup << " step " << step);
      CHECK(std::abs(s->lr(step) - ref) <= 1e-14 * base);
    }
  }
}

TEST_CASE("cosine schedule shape: zero at step 0, peak after warmup, floor at and after the end") {
  WarmupCosineSchedule s(1e-3, 10, 110, 1e-4);
  CHECK(s.lr(0) == 0.0);
  CHECK(s.lr(10) == doctest::Approx(1e-3).epsilon(1e-15));
  CHECK(s.lr(60) == doctest::Approx(0.5 * (1e-3 + 1e-4)).epsilon(1e-12));
  CHECK(s.lr(110) == doctest::Approx(1e-4).epsilon(1e-12));
  // Clamped after the end instead of rising along the cosine again.
  CHECK(s.lr(150) == s.lr(110));
  CHECK(s.lr(100000) == s.lr(110));
  for (int64_t t = 1; t <= 10; ++t) CHECK(s.lr(t) > s.lr(t - 1));
  for (int64_t t = 11; t <= 110; ++t) CHECK(s.lr(t) < s.lr(t - 1));
  CHECK_THROWS_AS(WarmupCosineSchedule(1e-3, 10, 5), Error);
  CHECK_THROWS_AS(WarmupCosineSchedule(1e-3, 0, 5, 2e-3), Error);
  CHECK_THROWS_AS(s.lr(-1), Error);
  ConstantSchedule flat(3e-4);
  CHECK(flat.lr(0) == 3e-4);
  CHECK(flat.lr(12345) == 3e-4);
}
