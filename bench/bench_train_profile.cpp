#include "bench/bench_train_profile.h"

#include "bench/timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <unordered_set>

#include "engine/autograd.h"
#include "engine/ops/slice_backward.h"
#include "engine/device.h"
#include "engine/random.h"
#include "runtime/train/evaluate.h"
#include "runtime/train/train_config.h"

namespace bet::bench {

namespace {

double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct OpTime {
  std::string op;
  double s = 0;
  int64_t calls = 0;
};

// Wraps the backward closure of every node reachable from `root` with a timer, keyed
// by op name and shapes (inputs -> output). The graph is rebuilt each step, so this
// runs once per step, between forward and backward.
void instrument_backward(const Tensor& root, std::map<std::string, OpTime>& times) {
  std::unordered_set<autograd::Node*> seen;
  std::vector<Tensor> stack{root};
  while (!stack.empty()) {
    Tensor t = stack.back();
    stack.pop_back();
    const auto& node = t.grad_fn();
    if (!node || !seen.insert(node.get()).second) continue;
    std::string key = std::string(node->name) + " ";
    bool first = true;
    for (const Tensor& in : node->inputs) {
      if (!in.defined()) continue;
      key += (first ? "" : ", ") + shape_str(in.shape());
      first = false;
    }
    key += " -> " + shape_str(t.shape());
    // A slice's backward stays as it is: backprop recognises it by type and gathers
    // the slices' gradients itself (engine/ops/slice_backward.h), so that time counts
    // as "outside" the op closures.
    if (node->backward.target<ops_detail::SliceBackward>()) {
      for (const Tensor& in : node->inputs)
        if (in.defined() && in.grad_fn()) stack.push_back(in);
      continue;
    }
    OpTime* slot = &times[key];
    slot->op = node->name;
    node->backward = [orig = std::move(node->backward), slot](const Tensor& g) {
      auto t0 = Clock::now();
      std::vector<Tensor> r = orig(g);
      slot->s += secs(t0, Clock::now());
      slot->calls++;
      return r;
    };
    for (const Tensor& in : node->inputs)
      if (in.defined() && in.grad_fn()) stack.push_back(in);
  }
}

// Seconds per phase of each step it observes; before backward, instruments the graph
// with per-op timers. Waits for the device at each phase's end, so a GPU's time lands
// in the phase that queued it.
struct PhaseTimes : runtime::StepObserver {
  using Phase = runtime::StepObserver::Phase;
  static constexpr Phase kPhases[] = {Phase::Forward, Phase::Loss,   Phase::Backward,
                                      Phase::Clip,    Phase::Update, Phase::ZeroGrad};
  static const char* name(Phase p) {
    switch (p) {
      case Phase::Forward: return "forward";
      case Phase::Loss: return "loss";
      case Phase::Backward: return "backward";
      case Phase::Clip: return "grad norm + clip";
      case Phase::Update: return "adamw step";
      case Phase::ZeroGrad: return "zero_grad";
    }
    return "?";
  }

  PhaseTimes(Device d, std::map<std::string, OpTime>& op_times) : device(d), ops(op_times) {}
  void start() { last = Clock::now(); }
  void before_backward(const Tensor& loss) override {
    instrument_backward(loss, ops);
    last = Clock::now();  // instrumenting is not the backward's time
  }
  void phase_end(Phase p) override {
    synchronize(device);
    const auto now = Clock::now();
    seconds[p].push_back(secs(last, now));
    last = now;
  }

  Device device;
  std::map<std::string, OpTime>& ops;
  std::map<Phase, std::vector<double>> seconds;
  Clock::time_point last;
};

Table phase_table(const std::string& layer, const PhaseTimes& p) {
  Table tab;
  tab.title = "profile " + layer + ": phases of a step (median ms)";
  double total = 0;
  for (auto ph : PhaseTimes::kPhases) total += median(p.seconds.at(ph));
  for (auto ph : PhaseTimes::kPhases) {
    const double m = median(p.seconds.at(ph));
    tab.add(Row().set("phase", PhaseTimes::name(ph)).set("ms", m * 1e3).set("share", m / total));
  }
  tab.add(Row().set("phase", "total").set("ms", total * 1e3).set("share", 1.0));
  return tab;
}

// Per-op backward time per step: by op name, then the heaviest (op, shapes) entries.
std::vector<Table> op_tables(const std::string& layer, const std::map<std::string, OpTime>& times, int steps,
                             double backward_s) {
  std::map<std::string, OpTime> by_op;
  double timed = 0;
  for (auto& [key, t] : times) {
    auto& o = by_op[t.op];
    o.op = t.op;
    o.s += t.s;
    o.calls += t.calls;
    timed += t.s;
  }
  auto sorted = [](const std::map<std::string, OpTime>& m) {
    std::vector<std::pair<std::string, OpTime>> v(m.begin(), m.end());
    std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.second.s > b.second.s; });
    return v;
  };
  const double n = double(steps);
  Table a;
  a.title = "profile " + layer + ": backward time by op (per step)";
  a.add_meta("backward ms/step (median)", backward_s * 1e3);
  a.add_meta("in op closures", timed / n * 1e3);
  a.add_meta("outside (grad accumulation, slices' gradients, graph walk)", backward_s * 1e3 - timed / n * 1e3);
  for (auto& [name, t] : sorted(by_op))
    a.add(Row()
              .set("op", name)
              .set("calls/step", double(t.calls) / n)
              .set("ms/step", t.s / n * 1e3)
              .set("share of backward", t.s / n / backward_s));
  Table b;
  b.title = "profile " + layer + ": heaviest backward ops by shape (per step)";
  int k = 0;
  for (auto& [key, t] : sorted(times)) {
    if (k++ == 25) break;
    b.add(Row()
              .set("op (input shapes -> output)", key)
              .set("calls/step", double(t.calls) / n)
              .set("ms/step", t.s / n * 1e3)
              .set("share of backward", t.s / n / backward_s));
  }
  return {a, b};
}

// Forward and backward of one module of layer 0 alone, on a random input of its width.
struct ModuleCase {
  std::string name;
  int64_t width;
  std::function<Tensor(const Tensor&)> run;
};

Table module_table(TrainSetup& s, const std::string& layer, int steps, int64_t first_step) {
  const auto& cfg = s.cfg;
  const int64_t B = s.batch.ids.size(0), S = s.batch.ids.size(1), D = cfg.d_model;
  // The training context of the batch, as the trainer's step builds it.
  uint64_t dropout_offset = 0;
  model::SeqContext ctx = runtime::batch_context(s.batch, *s.model);
  ctx.training = true;
  ctx.seed = s.trainer->config().seed;
  ctx.dropout_offset = &dropout_offset;
  auto begin_step = [&](int64_t step) {
    ctx.step = uint64_t(step);
    dropout_offset = uint64_t(step) << 40;
  };
  const Tensor mask = model::attention_mask(ctx);
  std::vector<ModuleCase> cases;
  if (cfg.layer == model::LayerKind::Bet) {
    auto& l = *s.model->bet_layers[0];
    cases = {
        {"stats", D, [&](const Tensor& x) { return l.stats->forward(x, ctx).stats; }},
        {"norm1", D, [&](const Tensor& x) { return l.norm1->forward(x); }},
        {"attn", D, [&](const Tensor& x) { return l.attn->forward(x, ctx, Tensor(), mask).out; }},
        {"norm2", D, [&](const Tensor& x) { return l.norm2->forward(x); }},
        {"cot", D,
         [&](const Tensor& x) {
           auto c = l.cot->forward(x, ctx);
           return add(c.reasoning_entropy, c.optimal_length);
         }},
        {"cot_gate", D + 2, [&](const Tensor& x) { return l.cot_gate->forward(x); }},
        {"stats_gate", D, [&](const Tensor& x) { return l.stats_gate->forward(x); }},
        {"debias", D, [&](const Tensor& x) { return l.debias->forward(x, ctx).out; }},
        {"ffn", D, [&](const Tensor& x) { return l.ffn->forward(x, ctx); }},
        {"norm3", D, [&](const Tensor& x) { return l.norm3->forward(x); }},
        {"whole layer", D, [&](const Tensor& x) { return l.forward(x, ctx, Tensor(), mask).out; }},
    };
  } else {
    auto& l = *s.model->standard_layers[0];
    cases = {
        {"attn", D, [&](const Tensor& x) { return l.attn->forward(x, ctx, Tensor(), mask).out; }},
        {"norm1", D, [&](const Tensor& x) { return l.norm1->forward(x); }},
        {"ffn", D, [&](const Tensor& x) { return l.ffn->forward(x, ctx); }},
        {"norm2", D, [&](const Tensor& x) { return l.norm2->forward(x); }},
        {"whole layer", D, [&](const Tensor& x) { return l.forward(x, ctx, mask).out; }},
    };
  }
  Table tab;
  tab.title = "profile " + layer + ": layer 0 modules alone (median ms, forward with grad + backward)";
  tab.add_meta("note", "each module run on its own random input; 'glue' is the whole layer minus the modules "
                       "(residual adds, dropout sites, concat, gates' tanh)");
  Generator g(7);
  double fsum = 0, bsum = 0;
  for (auto& c : cases) {
    Tensor x = g.normal({B, S, c.width}, 0.0, 1.0, s.model->dtype());
    x.set_requires_grad(true);
    std::vector<double> fw, bw;
    for (int i = 0; i < steps + 1; ++i) {
      begin_step(first_step + i);
      auto t0 = Clock::now();
      Tensor y = c.run(x);
      auto t1 = Clock::now();
      y.backward(Tensor::ones(y.shape(), y.dtype()));
      auto t2 = Clock::now();
      x.zero_grad();
      s.trainer->optimizer().zero_grad();
      if (i == 0) continue;  // warm-up
      fw.push_back(secs(t0, t1));
      bw.push_back(secs(t1, t2));
    }
    const double f = median(fw), b = median(bw);
    if (c.name == "whole layer") {
      tab.add(Row().set("module", "glue").set("forward ms", (f - fsum) * 1e3).set("backward ms", (b - bsum) * 1e3));
    } else {
      fsum += f;
      bsum += b;
    }
    tab.add(Row().set("module", c.name).set("forward ms", f * 1e3).set("backward ms", b * 1e3));
  }
  return tab;
}

}  // namespace

runtime::TrainStepConfig bench_step_config(DType compute) {
  // Warmup 0 and a run too long for the cosine to move: the peak rate throughout.
  runtime::TrainStepConfig c = runtime::train_step_config(runtime::TrainConfig{}, int64_t(1) << 40, compute);
  c.warmup = 0;
  return c;
}

runtime::Batch random_batch(const model::ModelConfig& cfg, int64_t B, int64_t S) {
  Generator g(mix_key({0, 0xbe7c}));
  runtime::Batch b;
  std::vector<int64_t> ids(size_t(B * S));
  for (auto& v : ids) v = 3 + int64_t(g.randint(uint64_t(cfg.vocab_size - 3)));
  b.ids = Tensor::from_vector<int64_t>(ids, {B, S});
  if (cfg.task == model::Task::Classify) {
    std::vector<int64_t> y(static_cast<size_t>(B));
    for (auto& v : y) v = int64_t(g.randint(uint64_t(cfg.num_classes)));
    b.labels = Tensor::from_vector<int64_t>(y, {B});
  } else {
    std::vector<int64_t> y(size_t(B * S));
    for (auto& v : y) v = 3 + int64_t(g.randint(uint64_t(cfg.vocab_size - 3)));
    b.targets = Tensor::from_vector<int64_t>(y, {B, S});
  }
  b.lengths.assign(size_t(B), S);
  for (int64_t i = 0; i < B; ++i) b.indices.push_back(i);
  return b;
}

TrainSetup::TrainSetup(const model::ModelConfig& c, int64_t B, int64_t S, Device dev, DType compute)
    : cfg(c), device(dev) {
  Generator init(mix_key({runtime::TrainConfig{}.seed, 0x1417}));  // as betctl train's init
  model = std::make_unique<model::BetModel>(cfg, init);
  model->to(device);
  model->train();
  batch = random_batch(cfg, B, S);
  trainer = std::make_unique<runtime::TrainStep>(*model, bench_step_config(compute));
}

TrainSetup::~TrainSetup() = default;

runtime::StepMetrics TrainSetup::step(int64_t step, runtime::StepObserver* observer) {
  runtime::StepMetrics m = trainer->step(batch, step, observer);
  synchronize(device);
  return m;
}

ProfileResult profile_training(TrainSetup& s, const std::string& layer, int steps, int64_t first_step) {
  std::map<std::string, OpTime> times;
  PhaseTimes p(s.device, times);
  for (int i = 0; i < steps; ++i) {
    p.start();
    s.step(first_step + i, &p);
  }
  ProfileResult r;
  r.tables.push_back(phase_table(layer, p));
  for (auto& t : op_tables(layer, times, steps, median(p.seconds.at(PhaseTimes::Phase::Backward))))
    r.tables.push_back(std::move(t));
  r.tables.push_back(module_table(s, layer, steps, first_step + steps));
  return r;
}

}  // namespace bet::bench
