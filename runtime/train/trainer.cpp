#include "runtime/train/trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <map>

#include "engine/autocast.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/schedule.h"
#include "kernels/cpu/threads.h"
#include "model/bet_model.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/checkpoint_manager.h"
#include "runtime/train/evaluate.h"
#include "runtime/train/run_log.h"
#include "runtime/train/training_data.h"

namespace bet::runtime {

namespace {

std::atomic<bool> g_stop{false};
void on_stop_signal(int) { g_stop.store(true); }

using Clock = std::chrono::steady_clock;

struct Metric {
  std::string name;
  bool higher_is_better;
};

// Validation metrics of a run: what milestones and early stopping track.
std::map<std::string, double> validation_metrics(const EvalResult& r, model::Task task, bool synthetic) {
  std::map<std::string, double> m{{"val/loss", r.loss}, {"val/order_dispersion", r.order_dispersion}};
  if (task == model::Task::Classify) m["val/accuracy"] = r.accuracy;
  if (task == model::Task::LM) {
    m["val/perplexity"] = r.perplexity();
    m["val/bits_per_token"] = r.bits_per_token();
  }
  if (synthetic) m["val/excess_over_bayes"] = r.excess_over_bayes();
  if (std::isfinite(r.posterior_mean)) {
    m["val/posterior_mean"] = r.posterior_mean;
    m["val/posterior_variance"] = r.posterior_variance;
  }
  return m;
}

bool higher_is_better(const std::string& metric) {
  return metric.find("accuracy") != std::string::npos || metric.find("f1") != std::string::npos;
}

std::string metric_key(const std::string& user_name) {
  return user_name.rfind("val/", 0) == 0 ? user_name : "val/" + user_name;
}

}  // namespace

TrainForward train_forward(const model::BetModel& m, const Batch& b, uint64_t seed, int64_t step, DType compute,
                           double mdl_beta, uint64_t* dropout_offset) {
  TrainForward f;
  f.ctx = batch_context(b, m);
  f.ctx.training = true;
  f.ctx.seed = seed;
  f.ctx.step = uint64_t(step);
  *dropout_offset = uint64_t(step) << 40;
  f.ctx.dropout_offset = dropout_offset;
  const Device device = m.device();
  const model::ModelConfig& mc = m.config();
  AutocastGuard autocast(compute);
  f.out = m.forward(b.ids.to(device), f.ctx);
  f.loss = model::model_loss(f.out, (mc.task == model::Task::Classify ? b.labels : b.targets).to(device), f.ctx,
                             mc.task, mdl_beta);
  return f;
}

void install_stop_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool stop_requested() { return g_stop.load(); }

TrainResult train(TrainConfig cfg) {
  if (cfg.threads > 0) kernels::cpu::set_num_threads(cfg.threads);
  // Parsed here too (betctl validates the flag first): a library caller gets the same
  // "no CUDA device available" error.
  const Device device = parse_device(cfg.device);
  const DType compute = parse_precision(cfg.precision);
  BET_CHECK(cfg.batch_size >= 1, "--batch-size must be >= 1");
  BET_CHECK(cfg.lr > 0, "--lr must be positive");
  const std::string log_dir = cfg.log_dir.empty() ? cfg.out + "/logs" : cfg.log_dir;
  RunLog log(log_dir, cfg.quiet);
  CheckpointManager manager(cfg.out, cfg.keep);

  // ---- resume: the checkpoint's config and tokenizer win over the flags ----
  std::string resume_path;
  if (!cfg.resume.empty()) {
    resume_path = cfg.resume == "auto" ? manager.find_resume("auto") : cfg.resume;
    if (cfg.resume != "auto") BET_CHECK(!resume_path.empty(), "--resume: no checkpoint given");
  }
  Checkpoint resumed;
  std::unique_ptr<Tokenizer> tokenizer;
  if (!resume_path.empty()) {
    resumed = load_checkpoint(resume_path);
    BET_CHECK(resumed.kind == "training", resume_path, ": a ", resumed.kind,
              " checkpoint has no optimizer state; resume needs a training checkpoint");
    cfg.model = resumed.config;
    tokenizer = Tokenizer::from_json(resumed.tokenizer);
  }

  std::string data_log;
  TrainingData data = load_training_data(cfg, &data_log, std::move(tokenizer));
  if (!data_log.empty()) log.message(data_log.substr(0, data_log.size() - 1));
  const model::ModelConfig& mc = cfg.model;
  mc.validate();

  Generator init_rng(mix_key({cfg.seed, 0x1417}));
  model::BetModel model(mc, init_rng);
  // Initialised on the CPU from the seed (so every device starts from the same
  // weights), then moved before the optimizer allocates its moments beside them.
  model.to(device);
  std::vector<Tensor> params = model.trainable_tensors();
  std::vector<bool> decay;
  for (auto& p : params) decay.push_back(p.dim() >= 2);  // no decay on biases, norms, scalars
  optim::AdamWOptions ao;
  ao.lr = cfg.lr;
  ao.weight_decay = cfg.weight_decay;
  optim::AdamW opt(params, ao, decay);

  const int64_t bpe = data.synthetic ? 0 : data.batches_per_epoch(cfg.batch_size);
  int64_t total = cfg.steps;
  if (cfg.epochs > 0) {
    BET_CHECK(!data.synthetic, "--epochs: synthetic data has no epochs; use --steps");
    total = cfg.epochs * bpe;
  }
  if (total <= 0) total = data.synthetic ? 200 : 3 * bpe;
  const int64_t eval_every = cfg.eval_every > 0 ? cfg.eval_every : (data.synthetic ? std::max<int64_t>(total / 4, 1) : bpe);
  optim::WarmupCosineSchedule schedule(cfg.lr, std::min(cfg.warmup, total / 2), total, cfg.lr * 0.1);

  // ---- training state (what a checkpoint carries besides weights and moments) ----
  int64_t step = 0, bad_steps = 0, consecutive_bad = 0, evals_without_improvement = 0;
  double lr_scale = 1.0;
  nlohmann::json best = nlohmann::json::object();
  std::string last_good;  // newest training checkpoint written or loaded by this run
  if (!resume_path.empty()) {
    model.load_parameters(resumed.weights);
    opt.load_state(resumed.optimizer);
    const auto& ts = resumed.training_state;
    step = ts.at("step").get<int64_t>();
    bad_steps = ts.value("bad_steps", int64_t(0));
    lr_scale = ts.value("lr_scale", 1.0);
    best = ts.value("best", nlohmann::json::object());
    evals_without_improvement = ts.value("evals_without_improvement", int64_t(0));
    BET_CHECK(ts.value("seed", cfg.seed) == cfg.seed, resume_path, ": was trained with --seed ", ts.value("seed", cfg.seed),
              ", not ", cfg.seed, "; exact resume needs the same seed");
    last_good = resume_path;
    log.message("resumed from " + resume_path + " at step " + std::to_string(step));
  }
  std::string early_metric;
  int64_t patience = 0;
  if (!cfg.early_stop.empty()) {
    auto colon = cfg.early_stop.find(':');
    BET_CHECK(colon != std::string::npos, "--early-stop: '", cfg.early_stop, "' is not METRIC:PATIENCE");
    early_metric = metric_key(cfg.early_stop.substr(0, colon));
    try {
      patience = std::stoll(cfg.early_stop.substr(colon + 1));
    } catch (...) {
      fail("--early-stop: patience in '", cfg.early_stop, "' is not a number");
    }
    BET_CHECK(patience >= 1, "--early-stop: patience must be >= 1");
  }

  auto make_checkpoint = [&](const std::string& kind, const nlohmann::json& metrics) {
    Checkpoint ck;
    ck.kind = kind;
    ck.config = mc;
    ck.tokenizer = data.tokenizer->to_json();
    for (auto& [n, t] : model.named_parameters()) ck.weights.emplace_back(n, t);
    if (kind == "training") ck.optimizer = opt.state();
    ck.training_state = {{"step", step},
                         {"bad_steps", bad_steps},
                         {"lr_scale", lr_scale},
                         {"best", best},
                         {"evals_without_improvement", evals_without_improvement},
                         {"seed", cfg.seed},
                         {"total_steps", total}};
    ck.metrics = metrics;
    return ck;
  };
  auto save_training = [&](const nlohmann::json& metrics) {
    last_good = manager.save_training(make_checkpoint("training", metrics), step);
  };

  nlohmann::json last_metrics = nlohmann::json::object();
  auto run_validation = [&]() -> bool {  // returns false to stop early
    model.eval();
    EvalResult r = evaluate(model, data.val, cfg.batch_size, data.synthetic ? &data.spec : nullptr);
    auto vm = validation_metrics(r, mc.task, data.synthetic);
    log.scalars(step, vm);
    last_metrics = nlohmann::json::object();
    for (auto& [k, v] : vm) last_metrics[k] = v;
    std::string line = "eval step " + std::to_string(step) + ": loss " + std::to_string(r.loss);
    if (mc.task == model::Task::Classify) line += " accuracy " + std::to_string(r.accuracy);
    if (data.synthetic) line += " excess over exact Bayes " + std::to_string(r.excess_over_bayes()) + " nats";
    log.message(line);
    bool improved_early = false;
    std::vector<std::string> tracked{"val/loss", "val/accuracy"};
    if (!early_metric.empty() && early_metric != "val/loss" && early_metric != "val/accuracy")
      tracked.push_back(early_metric);
    for (const std::string& name : tracked) {
      auto it = vm.find(name);
      if (it == vm.end() || !std::isfinite(it->second)) continue;
      const bool hib = higher_is_better(name);
      const bool better = !best.contains(name) || (hib ? it->second > best[name].get<double>()
                                                       : it->second < best[name].get<double>());
      if (better) {
        best[name] = it->second;
        std::string metric = name.substr(4);
        manager.save_milestone(make_checkpoint("milestone", last_metrics), metric, it->second, hib);
      }
      if (name == early_metric && better) improved_early = true;
    }
    if (!early_metric.empty()) {
      BET_CHECK(vm.count(early_metric), "--early-stop: no validation metric '", early_metric, "'");
      evals_without_improvement = improved_early ? 0 : evals_without_improvement + 1;
      if (evals_without_improvement >= patience) {
        log.message("early stop: " + early_metric + " did not improve in " + std::to_string(patience) + " evaluations");
        return false;
      }
    }
    model.train();
    return true;
  };

  install_stop_signal_handlers();
  model.train();
  const auto t0 = Clock::now();
  int64_t tokens_seen = 0, steps_this_run = 0;
  double loss_ema = NAN;
  bool stopped_early = false, interrupted = false;
  const int64_t start_step = step;
  while (step < total) {
    Batch b = data.synthetic ? data.synthetic_batch(step, cfg.batch_size, cfg.seed)
                             : data.batch(step / bpe, step % bpe, cfg.batch_size, mc.max_len, cfg.seed);
    uint64_t dropout_offset = 0;
    TrainForward f = train_forward(model, b, cfg.seed, step, compute, cfg.mdl_beta, &dropout_offset);
    const model::SeqContext& ctx = f.ctx;
    const model::ForwardOutput& out = f.out;
    const model::MDLLossOutput& L = f.loss;
    L.loss.backward();
    const double norm = cfg.clip > 0 ? optim::clip_grad_norm(params, cfg.clip) : optim::grad_norm(params);
    const double loss = L.loss.item();
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      // NaN/Inf guard: skip the update; after 3 in a row go back to the last good
      // checkpoint with half the learning rate.
      opt.zero_grad();
      bad_steps++;
      consecutive_bad++;
      log.message("step " + std::to_string(step) + ": non-finite loss or gradient, update skipped");
      if (consecutive_bad >= 3) {
        lr_scale *= 0.5;
        consecutive_bad = 0;
        if (!last_good.empty()) {
          Checkpoint ck = load_checkpoint(last_good);
          model.load_parameters(ck.weights);
          opt.load_state(ck.optimizer);
          step = ck.training_state.at("step").get<int64_t>();
          log.message("reloaded " + last_good + ", learning rate scale now " + std::to_string(lr_scale));
          continue;
        }
      }
      step++;
      continue;
    }
    consecutive_bad = 0;
    opt.set_lr(schedule.lr(step) * lr_scale);
    opt.step();
    opt.zero_grad();
    step++;
    steps_this_run++;
    tokens_seen += b.tokens();
    loss_ema = std::isfinite(loss_ema) ? 0.95 * loss_ema + 0.05 * loss : loss;

    if (step % cfg.log_every == 0 || step == total) {
      const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      const double tps = double(tokens_seen) / std::max(secs, 1e-9);
      const double eta = secs / double(std::max<int64_t>(steps_this_run, 1)) * double(total - step);
      std::map<std::string, double> sc{{"train/loss", loss},
                                       {"train/standard_loss", L.standard_loss},
                                       {"train/mdl_penalty", L.mdl_penalty},
                                       {"train/mdl_active", L.mdl_active ? 1.0 : 0.0},
                                       {"train/empirical_entropy", L.empirical_entropy},
                                       {"train/compression_efficiency", L.compression_efficiency},
                                       {"train/lr", opt.lr()},
                                       {"train/grad_norm", norm},
                                       {"train/tokens_per_s", tps},
                                       {"train/order_dispersion", out.attention_dispersion.defined()
                                                                      ? mean(out.attention_dispersion).item()
                                                                      : 0.0}};
      if (mc.layer == model::LayerKind::Bet && !out.layers.empty()) {
        Tensor pm = model::at_last_valid(out.layers.back().posterior_mean, ctx);
        Tensor pv = model::at_last_valid(out.layers.back().posterior_variance, ctx);
        sc["train/posterior_mean"] = mean(pm).item();
        sc["train/posterior_variance"] = mean(pv).item();
        if (step % (cfg.log_every * 10) == 0) log.histogram(step, "train/posterior_mean", pm.to_vector<double>());
      }
      log.scalars(step, sc);
      log.progress(step, total, loss_ema, tps, eta);
    }
    if (cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0) save_training(last_metrics);
    if (step % eval_every == 0 || step == total) {
      if (!run_validation()) {
        stopped_early = true;
        break;
      }
    }
    if (stop_requested()) {
      interrupted = true;
      break;
    }
  }
  log.finish_progress();
  if (!interrupted && last_metrics.empty()) run_validation();
  save_training(last_metrics);
  if (interrupted) log.message("interrupted: checkpoint written at step " + std::to_string(step));

  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  TrainResult res;
  res.summary = {{"task", model::to_string(mc.task)},
                 {"layer", model::to_string(mc.layer)},
                 {"steps", step},
                 {"steps_this_run", step - start_step},
                 {"interrupted", interrupted},
                 {"stopped_early", stopped_early},
                 {"seconds", secs},
                 {"tokens_per_s", double(tokens_seen) / std::max(secs, 1e-9)},
                 {"bad_steps", bad_steps},
                 {"parameters", model.parameter_count()},
                 {"checkpoint", last_good},
                 {"metrics", last_metrics}};
  return res;
}

}  // namespace bet::runtime
