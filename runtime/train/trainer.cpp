#include "runtime/train/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <map>
#include <memory>
#include <set>

#include "engine/autocast.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/matmul.h"
#include "platform/threads.h"
#include "model/bet_model.h"
#include "runtime/checkpoint/checkpoint_manager.h"
#include "runtime/train/checkpointing.h"
#include "runtime/train/early_stopping.h"
#include "runtime/train/evaluate.h"
#include "runtime/train/nan_guard.h"
#include "runtime/train/ranks.h"
#include "runtime/train/resume.h"
#include "runtime/train/run_log.h"
#include "runtime/train/train_step.h"
#include "runtime/train/training_data.h"

namespace bet::runtime {

namespace {

std::atomic<bool> g_stop{false};
void on_stop_signal(int) { g_stop.store(true); }

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// How long a run is and when it validates.
struct RunLength {
  int64_t total_steps = 0;
  int64_t batches_per_epoch = 0;  // file data; 0 for the endless synthetic stream
  int64_t eval_every = 0;
};

RunLength run_length(const TrainConfig& cfg, const TrainingData& data) {
  RunLength len;
  len.batches_per_epoch = data.synthetic ? 0 : data.batches_per_epoch(cfg.batch_size);
  len.total_steps = cfg.steps;
  if (cfg.epochs > 0) {
    BET_CHECK(!data.synthetic, "--epochs: synthetic data has no epochs; use --steps");
    len.total_steps = cfg.epochs * len.batches_per_epoch;
  }
  if (len.total_steps <= 0) len.total_steps = data.synthetic ? 200 : 3 * len.batches_per_epoch;
  len.eval_every = cfg.eval_every > 0 ? cfg.eval_every
                   : data.synthetic   ? std::max<int64_t>(len.total_steps / 4, 1)
                                      : len.batches_per_epoch;
  return len;
}

// Throughput of this process's steps (a resumed run counts from its restart).
struct Throughput {
  Clock::time_point t0 = Clock::now();
  int64_t tokens = 0, steps = 0;
  double loss_ema = NAN;

  void add(const StepMetrics& m) {
    steps++;
    tokens += m.tokens;
    loss_ema = std::isfinite(loss_ema) ? 0.95 * loss_ema + 0.05 * m.loss : m.loss;
  }
  double tokens_per_s() const { return double(tokens) / std::max(seconds_since(t0), 1e-9); }
};

// The scalars of a step (train/...), a histogram of the posterior means every tenth
// time, and the progress line.
void log_step(RunLog& log, const StepMetrics& m, const model::BetModel& model, int64_t step, int64_t total,
              int64_t log_every, const Throughput& tp) {
  const double tps = tp.tokens_per_s();
  const double eta = seconds_since(tp.t0) / double(std::max<int64_t>(tp.steps, 1)) * double(total - step);
  const model::MDLLossOutput& L = m.parts;
  std::map<std::string, double> sc{
      {"train/loss", m.loss},
      {"train/standard_loss", L.standard_loss},
      {"train/mdl_penalty", L.mdl_penalty},
      {"train/mdl_active", L.mdl_active ? 1.0 : 0.0},
      {"train/empirical_entropy", L.empirical_entropy},
      {"train/compression_efficiency", L.compression_efficiency},
      {"train/lr", m.lr},
      {"train/grad_norm", m.grad_norm},
      {"train/tokens_per_s", tps},
      {"train/order_dispersion", m.out.attention_dispersion.defined() ? mean(m.out.attention_dispersion).item() : 0.0}};
  if (model.config().layer == model::LayerKind::Bet && !m.out.layers.empty()) {
    Tensor pm = model::at_last_valid(m.out.layers.back().posterior_mean, m.ctx);
    Tensor pv = model::at_last_valid(m.out.layers.back().posterior_variance, m.ctx);
    sc["train/posterior_mean"] = mean(pm).item();
    sc["train/posterior_variance"] = mean(pv).item();
    if (step % (log_every * 10) == 0) log.histogram(step, "train/posterior_mean", pm.to_vector<double>());
  }
  log.scalars(step, sc);
  log.progress(step, total, tp.loss_ema, tps, eta);
}

// Validation: evaluates the model on the validation set, logs the metrics, saves the
// milestones of those that improved, and asks early stopping whether to go on.
class Validation {
 public:
  Validation(const TrainConfig& cfg, const TrainingData& data, TrainStep& step, RunCheckpoints& checkpoints,
             const EarlyStopping& early, RunLog& log)
      : cfg_(cfg), data_(data), step_(step), checkpoints_(checkpoints), early_(early), log_(log) {
    if (early.enabled() && early.metric() != "val/loss" && early.metric() != "val/accuracy")
      tracked_.push_back(early.metric());
  }

  // Returns false when the run is to stop early (the model is then left in eval mode).
  bool run(RunState& st) {
    model::BetModel& model = step_.model();
    const model::Task task = model.config().task;
    model.eval();
    EvalResult r = evaluate(model, data_.val, cfg_.batch_size, data_.synthetic ? &data_.spec : nullptr);
    const auto vm = validation_metrics(r, task, data_.synthetic);
    log_.scalars(st.step, vm);
    last_metrics_ = nlohmann::json::object();
    for (auto& [k, v] : vm) last_metrics_[k] = v;
    std::string line = "eval step " + std::to_string(st.step) + ": loss " + std::to_string(r.loss);
    if (task == model::Task::Classify) line += " accuracy " + std::to_string(r.accuracy);
    if (data_.synthetic) line += " excess over exact Bayes " + std::to_string(r.excess_over_bayes()) + " nats";
    log_.message(line);
    const std::set<std::string> improved = checkpoints_.save_milestones(st, vm, tracked_, last_metrics_);
    if (early_.should_stop(vm, improved.count(early_.metric()) > 0, st.evals_without_improvement)) {
      log_.message("early stop: " + early_.metric() + " did not improve in " + std::to_string(early_.patience()) +
                   " evaluations");
      return false;
    }
    model.train();
    return true;
  }

  // The metrics of the latest evaluation ({} before the first).
  const nlohmann::json& last_metrics() const { return last_metrics_; }

 private:
  const TrainConfig& cfg_;
  const TrainingData& data_;
  TrainStep& step_;
  RunCheckpoints& checkpoints_;
  const EarlyStopping& early_;
  RunLog& log_;
  std::vector<std::string> tracked_{"val/loss", "val/accuracy"};  // metrics with milestones
  nlohmann::json last_metrics_ = nlohmann::json::object();
};

}  // namespace

void install_stop_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // What mpirun forwards from betctl train --nproc's launcher.
  sigaction(SIGUSR1, &sa, nullptr);
}

bool stop_requested() { return g_stop.load(); }

TrainResult train(TrainConfig cfg) {
  if (cfg.threads > 0) platform::set_num_threads(cfg.threads);
  // Parsed here too (betctl validates the flag first): a library caller gets the same
  // "no CUDA device available" error.
  Device device = parse_device(cfg.device);
  const DType compute = parse_precision(cfg.precision);
  BET_CHECK(cfg.batch_size >= 1, "--batch-size must be >= 1");
  BET_CHECK(cfg.lr > 0, "--lr must be positive");
  BET_CHECK(cfg.grad_accum >= 1, "--grad-accum must be >= 1");
  BET_CHECK(cfg.bucket_mb > 0, "--bucket-mb must be positive");
  const EarlyStopping early(cfg.early_stop);
  // The ranks (one unless launched by mpirun). Rank 0 alone writes logs and checkpoints.
  std::unique_ptr<dist::Communicator> comm = run_communicator(device);
  const bool writer = comm->rank() == 0;
  if (cfg.threads <= 0 && comm->size() > 1) platform::set_num_threads(default_threads_per_rank(*comm));
  BET_CHECK(cfg.batch_size >= int64_t(comm->size()) * cfg.grad_accum, "--batch-size ", cfg.batch_size,
            " cannot be split over ", comm->size(), " ranks x --grad-accum ", cfg.grad_accum,
            " micro-batches (it is the global batch: at least ranks x micro-batches)");
  const std::string log_dir = cfg.log_dir.empty() ? cfg.out + "/logs" : cfg.log_dir;
  RunLog log(log_dir, cfg.quiet, writer);
  if (!device.is_cuda()) log.message("cpu kernels: " + kernels::cpu::kernel_isa_summary());
  if (compute == DType::BF16 && !device.is_cuda())
    log.message(std::string("bf16 matmuls on the cpu: ") + kernels::cpu::bf16_matmul_path());
  CheckpointManager manager(cfg.out, cfg.keep);

  // ---- resume: the checkpoint's config and tokenizer win over the flags ----
  ResumePoint resume = find_resume(cfg.resume, manager);
  std::unique_ptr<Tokenizer> tokenizer;
  if (resume.found()) {
    cfg.model = resume.checkpoint.config;
    tokenizer = Tokenizer::from_json(resume.checkpoint.tokenizer);
  }

  std::string data_log;
  TrainingData data = load_data_on_ranks(*comm, cfg, &data_log, std::move(tokenizer));
  if (!data_log.empty()) log.message(data_log.substr(0, data_log.size() - 1));
  const model::ModelConfig& model_cfg = cfg.model;
  model_cfg.validate();
  // Hashing the data is only worth it when there are ranks to compare.
  if (comm->size() > 1) check_ranks_agree(*comm, run_fingerprint(cfg, data));
  if (comm->size() > 1)
    log.message("data parallel: " + std::to_string(comm->size()) + " ranks over " + comm->backend() +
                ", global batch " + std::to_string(cfg.batch_size) + " (" +
                std::to_string(cfg.batch_size / (comm->size() * cfg.grad_accum)) + "+ rows per micro-batch, " +
                std::to_string(cfg.grad_accum) + " per step)");
  // From here on a peer that stops answering ends the run instead of hanging it.
  comm->set_timeout(cfg.comm_timeout);
  const RunLength len = run_length(cfg, data);
  const int64_t total = len.total_steps;

  Generator init_rng(mix_key({cfg.seed, 0x1417}));
  model::BetModel model(model_cfg, init_rng);
  // Initialised on the CPU from the seed (so every device and every rank starts from
  // the same weights), then moved before the optimizer allocates its moments beside them.
  model.to(device);
  TrainStep trainer(model, train_step_config(cfg, total, compute), comm.get());
  RunCheckpoints checkpoints(manager, trainer, *data.tokenizer, cfg.seed, total);
  checkpoints.set_writer(writer);
  RunState st;
  if (resume.found()) {
    st = resume_into(resume, trainer, cfg.seed);
    checkpoints.set_last_good(resume.path);
    log.message("resumed from " + resume.path + " at step " + std::to_string(st.step));
    resume.checkpoint = Checkpoint();  // its tensors are copied in: free them
  }
  Validation validation(cfg, data, trainer, checkpoints, early, log);
  NanGuard nan_guard;

  install_stop_signal_handlers();
  model.train();
  Throughput tp;
  bool stopped_early = false, interrupted = false;
  const int64_t start_step = st.step;
  while (st.step < total) {
    const int64_t n = st.step;
    Batch b = data.synthetic ? data.synthetic_batch(n, cfg.batch_size, cfg.seed)
                             : data.batch(n / len.batches_per_epoch, n % len.batches_per_epoch, cfg.batch_size,
                                          model_cfg.max_len, cfg.seed);
    const StepMetrics m = trainer.step(b, n);
    if (nan_guard.after_step(m.applied, trainer, st, checkpoints.last_good(), log)) continue;
    st.step++;
    if (!m.applied) continue;
    tp.add(m);

    if (st.step % cfg.log_every == 0 || st.step == total) log_step(log, m, model, st.step, total, cfg.log_every, tp);
    if (cfg.checkpoint_every > 0 && st.step % cfg.checkpoint_every == 0)
      checkpoints.save_training(st, validation.last_metrics());
    if ((st.step % len.eval_every == 0 || st.step == total) && !validation.run(st)) {
      stopped_early = true;
      break;
    }
    // Every rank stops at the same step, so the checkpoint below is one global state.
    if (any_rank_stopping(*comm, stop_requested())) {
      interrupted = true;
      break;
    }
  }
  log.finish_progress();
  if (!interrupted && validation.last_metrics().empty()) validation.run(st);
  checkpoints.save_training(st, validation.last_metrics());
  if (interrupted) log.message("interrupted: checkpoint written at step " + std::to_string(st.step));

  const double secs = seconds_since(tp.t0);
  TrainResult res;
  res.writer = writer;
  res.summary = {{"task", model::to_string(model_cfg.task)},
                 {"layer", model::to_string(model_cfg.layer)},
                 {"steps", st.step},
                 {"steps_this_run", st.step - start_step},
                 {"interrupted", interrupted},
                 {"stopped_early", stopped_early},
                 {"seconds", secs},
                 {"tokens_per_s", double(tp.tokens) / std::max(secs, 1e-9)},
                 {"bad_steps", st.bad_steps},
                 {"parameters", model.parameter_count()},
                 {"ranks", comm->size()},
                 {"checkpoint", checkpoints.last_good()},
                 {"metrics", validation.last_metrics()}};
  return res;
}

}  // namespace bet::runtime
