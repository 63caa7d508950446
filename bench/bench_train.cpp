#include "bench/bench_train.h"
#include "bench/timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench_train_data.h"
#include "bench/bench_train_profile.h"
#include "bench/machine_baselines.h"
#include "bet_config.h"
#include "bench/peer_process.h"
#include "engine/autocast.h"
#include "engine/device.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/matmul.h"
#include "platform/threads.h"
#if BET_HAVE_CUDA
#include "platform/cuda/runtime.h"
#endif
#include "model/bet_model.h"
#include "model/sufficient_stats.h"

namespace bet::bench {

constexpr double kSpeedupTarget = 2.0;   // x PyTorch eager, both layer kinds
// CPU, f32 (issue targets): standard >= 0.6 and bet >= 0.5 of the FMA peak.
constexpr double kStandardMfuTarget = 0.6;
constexpr double kBetMfuTarget = 0.5;
// On a GPU (issue targets): >= 1.0x PyTorch eager, >= 40% of the card's bf16 peak.
constexpr double kGpuSpeedupTarget = 1.0;
constexpr double kGpuStandardMfuTarget = 0.4;

TrainPlacement train_placement(const BenchOptions& opts, const TrainBenchOptions& t) {
  TrainPlacement p;
  p.device = parse_device(opts.device);
  p.gpu = p.device.is_cuda() && !cuda_emulated();
  p.compute = t.precision == "auto" ? (p.gpu ? DType::BF16 : DType::F32) : parse_precision(t.precision);
  return p;
}

model::ModelConfig train_bench_config(const TrainBenchOptions& t, model::LayerKind layer) {
  model::ModelConfig c;
  c.task = model::parse_task(t.task);
  c.layer = layer;
  c.pe = model::parse_pe(t.pe);
  c.d_model = t.d_model;
  c.heads = t.heads;
  c.layers = t.layers;
  c.k_permutations = t.k_permutations;
  c.max_len = std::max<int64_t>(256, t.seq_len);  // the peer's --max-len rule
  c.dropout = 0.1;
  c.validate();
  return c;
}

std::vector<std::pair<std::string, double>> matmul_flops_forward(const model::ModelConfig& cfg, int64_t B,
                                                                 int64_t S) {
  const double D = double(cfg.d_model), T = double(B * S), h = double(cfg.d_model / 2);
  // Bidirectional context statistics are one vector per sequence, so the stats
  // projection and the CoT MLPs run on B rows; causal ones on every token.
  const double R = cfg.causal() ? T : double(B);
  const bool rope_paths = cfg.layer == model::LayerKind::Bet && cfg.pe == model::PosEncoding::Rope;
  const double P = rope_paths ? double(cfg.k_permutations + 1) : 1.0;
  const double L = double(cfg.layers);
  auto lin = [](double rows, double in, double out) { return 2.0 * rows * in * out; };

  std::vector<std::pair<std::string, double>> f;
  if (cfg.layer == model::LayerKind::Bet) {
    const double m = double(model::SufficientStatsEncoder::num_stats(cfg.d_model));
    f.emplace_back("stats: moment/count/beta linears",
                   L * (lin(T, D, m * h + m + 1) + lin(T, h, 1) * m));
    f.emplace_back("stats: proj", L * lin(R, 2 * m + 2, D));
  }
  f.emplace_back("attn: q, k, v", L * 3 * lin(T, D, D));
  // QK^T and PV per path: B*H products of [S, hd] x [hd, S] and [S, S] x [S, hd].
  f.emplace_back(rope_paths ? "attn: QK^T + PV, " + std::to_string(int64_t(P)) + " paths" : "attn: QK^T + PV",
                 L * P * 2 * (2.0 * double(B) * S * S * D));
  // The output projection is linear, so the paths' combination is projected once
  // (MartingaleAwareAttention::forward); the order-dispersion diagnostic projects the k
  // paths' deviations, forward only: k/3 of a projection in this "3 x forward" count.
  if (rope_paths)
    f.emplace_back("attn: o (1 + spread of " + std::to_string(int64_t(P) - 1) + " paths, forward only)",
                   L * (1.0 + (P - 1.0) / 3.0) * lin(T, D, D));
  else
    f.emplace_back("attn: o", L * lin(T, D, D));
  if (cfg.layer == model::LayerKind::Bet) {
    f.emplace_back("cot: entropy + ratio MLPs", L * 2 * (lin(R, D, h) + lin(R, h, 1)));
    f.emplace_back("cot_gate + stats_gate", L * (lin(T, D + 2, D) + lin(T, D, 1)));
    if (cfg.pe != model::PosEncoding::None) {
      const double nh = double(cfg.n_harmonics);
      f.emplace_back("debias: detector, gate, basis",
                     L * (lin(T, D, h) + lin(T, h, nh) + lin(T, D, D) + lin(T, 2 * nh, D)));
    }
  }
  f.emplace_back("ffn", L * (lin(T, D, 4 * D) + lin(T, 4 * D, D)));
  if (cfg.task == model::Task::Classify)
    f.emplace_back("head", lin(double(B), D, double(cfg.num_classes)));
  else
    f.emplace_back("head", lin(T, D, double(cfg.vocab_size)));
  return f;
}

std::string precision_text(DType compute, bool gpu) {
  if (compute != DType::BF16) return "f32";
  return std::string("bf16 autocast (matmuls), f32 master weights") +
         (gpu ? "" : std::string("; cpu bf16 matmul: ") + kernels::cpu::bf16_matmul_path());
}

double matmul_flops_per_step(const model::ModelConfig& cfg, int64_t B, int64_t S) {
  double fwd = 0;
  for (auto& [name, v] : matmul_flops_forward(cfg, B, S)) fwd += v;
  return 3.0 * fwd;
}

namespace {

// What a timed step is, from the config the bench gives the trainer's step.
std::string step_text(const runtime::TrainStepConfig& c) {
  std::ostringstream o;
  o << "the trainer's step (runtime/train/train_step.h): forward (dropout on) + MDL loss (beta " << c.mdl_beta
    << ") + backward + gradient norm";
  if (c.clip > 0) o << " clipped to " << c.clip;
  o << " + AdamW (lr " << c.lr << ", weight decay " << c.weight_decay
    << " on matrices, no warmup) + zero_grad, on a fixed random batch";
  if (c.clip > 0) o << "; the peer does not clip (one more pass over the gradients here)";
  return o.str();
}

std::string shape_text(const TrainBenchOptions& t) {
  return "d_model " + std::to_string(t.d_model) + ", " + std::to_string(t.layers) + " layers, " +
         std::to_string(t.heads) + " heads, seq " + std::to_string(t.seq_len) + ", batch " +
         std::to_string(t.batch_size) + ", " + t.task + ", pe " + t.pe + ", k " + std::to_string(t.k_permutations);
}

// ---- our side ----

struct OurResult {
  std::vector<double> step_s;  // timed steps
  double final_loss = NAN;
  int64_t params = 0;
  int mdl_active = 0;
};

// ---- the peer ----

struct PeerResult {
  bool ok = false;
  std::string error;  // why it is unavailable
  double ms = NAN, tokens_per_s = NAN;
  double compiled_ms = NAN;  // torch.compile of the same model (GPU runs)
  double native_ms = NAN;  // nn.TransformerEncoderLayer (standard layer, --native)
  std::string native_impl;
  std::string torch;
};

// The standard layer also times PyTorch's own nn.TransformerEncoderLayer (--native).
PeerResult run_peer(const TrainBenchOptions& t, const std::string& layer, int threads, const Device& dev,
                    DType compute) {
  PeerResult r;
  std::ostringstream args;
  args << "--layer " << layer << " --task " << t.task << " --pe " << t.pe << " --d-model " << t.d_model
       << " --layers " << t.layers << " --heads " << t.heads << " --seq " << t.seq_len << " --batch " << t.batch_size
       << " --k-permutations " << t.k_permutations << " --steps " << t.steps << " --warmup " << t.warmup
       << " --threads " << threads << (layer == "standard" ? " --native" : "");
  if (dev.is_cuda() && !cuda_emulated()) args << " --device " << dev.str() << " --compile";
  if (compute == DType::BF16) args << " --bf16";
  PeerOutput out = run_peer_script("train_peer.py", args.str());
  if (!out.ok) {
    r.error = out.error;
    return r;
  }
  try {
    const auto& j = out.result;
    r.ms = j.at("ms_per_step").get<double>();
    r.tokens_per_s = j.at("tokens_per_s").get<double>();
    r.torch = j.value("torch", "");
    if (j.contains("compiled") && j["compiled"].contains("ms_per_step"))
      r.compiled_ms = j["compiled"]["ms_per_step"].get<double>();
    if (j.contains("native")) {
      r.native_ms = j["native"].at("ms_per_step").get<double>();
      r.native_impl = j["native"].value("impl", "");
    }
    r.ok = true;
  } catch (const std::exception& e) {
    r.error = std::string("unexpected peer output: ") + e.what();
  }
  return r;
}

// ---- the table ----

struct LayerRun {
  std::string layer;
  model::ModelConfig cfg;
  OurResult ours;
  PeerResult peer;
  bool peer_run = false;
  std::string error;
};

Row layer_row(const LayerRun& run, const TrainBenchOptions& t, double peak_gflops, bool gpu) {
  auto num = [](double v) { return std::isfinite(v) ? Value(v) : Value(); };
  const double tokens = double(t.batch_size * t.seq_len);
  const double flops = matmul_flops_per_step(run.cfg, t.batch_size, t.seq_len);
  const double s = median(run.ours.step_s);
  const double mfu = flops / s * 1e-9 / peak_gflops;
  const bool standard = run.cfg.layer == model::LayerKind::Standard;
  const double mfu_target = gpu ? (standard ? kGpuStandardMfuTarget : NAN) : (standard ? kStandardMfuTarget : kBetMfuTarget);
  const double speedup_target = gpu ? kGpuSpeedupTarget : kSpeedupTarget;
  const double speedup = run.peer.ok ? run.peer.ms * 1e-3 / s : NAN;
  const double speedup_compiled = run.peer.ok ? run.peer.compiled_ms * 1e-3 / s : NAN;
  const double speedup_native = run.peer.ok ? run.peer.native_ms * 1e-3 / s : NAN;
  // Judged against the faster PyTorch (the same math, or its own layer where timed).
  const double speedup_min = std::isfinite(speedup_native) ? std::min(speedup, speedup_native) : speedup;

  std::string status;
  if (!run.error.empty()) {
    status = "error: " + run.error;
  } else {
    std::vector<std::string> shorts;
    if (std::isfinite(mfu_target) && !(mfu >= mfu_target)) shorts.push_back("mfu");
    if (run.peer.ok && !(speedup_min >= speedup_target)) shorts.push_back("speedup");
    status = shorts.empty() ? (run.peer.ok || std::isfinite(mfu_target) ? "pass" : "-") : "short: ";
    for (size_t i = 0; i < shorts.size(); ++i) status += (i ? ", " : "") + shorts[i];
  }
  std::string peer = !run.peer_run ? "not run (--peer)"
                     : run.peer.ok ? "pytorch " + run.peer.torch + " eager"
                                   : "unavailable: " + run.peer.error;
  Row r;
  r.set("layer", run.layer)
      .set("params", run.ours.params)
      .set("tokens/step", int64_t(tokens))
      .set("ms/step", num(s * 1e3))
      .set("ms/step min", num(run.ours.step_s.empty()
                                  ? NAN
                                  : *std::min_element(run.ours.step_s.begin(), run.ours.step_s.end()) * 1e3))
      .set("tokens/s", num(tokens / s))
      .set("matmul GFLOP/step", flops * 1e-9)
      .set("GFLOP/s", num(flops / s * 1e-9))
      .set("mfu", num(mfu))
      .set("mfu target", num(mfu_target))
      .set("peer", peer)
      .set("peer ms/step", num(run.peer.ms))
      .set("peer tokens/s", num(run.peer.tokens_per_s))
      .set("peer mfu", num(flops / (run.peer.ms * 1e-3) * 1e-9 / peak_gflops))
      .set("speedup vs peer", num(speedup))
      .set("native ms/step", num(run.peer.native_ms))
      .set("speedup vs native", num(speedup_native))
      .set("compiled ms/step", num(run.peer.compiled_ms))
      .set("speedup vs compiled", num(speedup_compiled))
      .set("speedup target", run.peer.ok ? Value(speedup_target) : Value())
      .set("status", status)
      .set("mdl active", int64_t(run.ours.mdl_active))
      .set("final loss", num(run.ours.final_loss));
  return r;
}

Table flops_table(const std::vector<LayerRun>& runs, const TrainBenchOptions& t) {
  Table tab;
  tab.title = "matmul FLOPs per training step (3 x forward)";
  tab.add_meta("shape", shape_text(t));
  for (const auto& run : runs) {
    double total = 0;
    for (auto& [name, f] : matmul_flops_forward(run.cfg, t.batch_size, t.seq_len)) {
      total += f;
      tab.add(Row().set("layer", run.layer).set("component", name).set("GFLOP/step", 3.0 * f * 1e-9));
    }
    tab.add(Row().set("layer", run.layer).set("component", "total").set("GFLOP/step", 3.0 * total * 1e-9));
  }
  return tab;
}

}  // namespace

bool train_options_valid(const BenchOptions& opts, const TrainBenchOptions& t) {
  if (!valid_format(opts.format)) {
    std::cerr << "bench train: unknown format '" << opts.format << "' (md, csv or json)\n";
    return false;
  }
  if (t.layer != "bet" && t.layer != "standard" && t.layer != "both") {
    std::cerr << "bench train: --layer must be bet, standard or both\n";
    return false;
  }
  if (t.steps < 1 || t.warmup < 0 || t.batch_size < 1 || t.seq_len < 1) {
    std::cerr << "bench train: --steps, --batch-size and --seq-len must be >= 1\n";
    return false;
  }
  return true;
}

int run_train(const BenchOptions& opts, const TrainBenchOptions& t) {
  if (!train_options_valid(opts, t)) return 2;
  TrainPlacement place;
  try {
    place = train_placement(opts, t);
  } catch (const std::exception& e) {
    std::cerr << "bench train: " << e.what() << "\n";
    return 2;
  }
  const Device dev = place.device;
  const DType compute = place.compute;
  const bool gpu = place.gpu;
  if (!t.data.empty()) return run_train_data(opts, t, place);
  if (opts.threads > 0) platform::set_num_threads(opts.threads);
  const int threads = platform::num_threads();
  const std::string load_before = load_average();

  // The peak is the fastest repetition; more of them than bench ops takes, since on a
  // shared machine a repetition where every thread has its core is rarer than one where
  // a single thread has. On a GPU: the card's dense bf16 tensor-core peak.
  const TimingPolicy pol = opts.quick ? TimingPolicy{0.1, 5} : TimingPolicy{0.3, 9};
  double peak = 0, peak1 = 0;
  std::string device_text = cpu_model_name();
  if (gpu) {
#if BET_HAVE_CUDA
    const platform::cuda::DeviceInfo info = platform::cuda::device_info(dev.index);
    peak = info.bf16_peak_tflops * 1e3;
    device_text = info.name + " (" + std::to_string(info.sms) + " SMs, " + std::to_string(int(info.clock_mhz)) +
                  " MHz, sm_" + std::to_string(info.major) + std::to_string(info.minor) + ")";
#endif
    if (!(peak > 0)) peak = NAN;  // unknown architecture: no MFU
  } else {
    for (int width : {256, 512}) {
      if (width == 512 && !cpu_has_avx512f()) continue;
      peak = std::max(peak, fma_peak_gflops(0, width, pol));
      if (threads > 1) peak1 = std::max(peak1, fma_peak_gflops(1, width, pol));
    }
  }

  std::vector<LayerRun> runs;
  for (const char* kind : {"bet", "standard"})
    if (t.layer == "both" || t.layer == kind) {
      LayerRun r;
      r.layer = kind;
      try {
        r.cfg = train_bench_config(t, model::parse_layer(kind));
      } catch (const std::exception& e) {
        std::cerr << "bench train: " << e.what() << "\n";
        return 2;
      }
      runs.push_back(r);
    }

  bool failed = false;
  std::vector<ProfileResult> profiles;
  for (auto& run : runs) {
    try {
      TrainSetup s(run.cfg, t.batch_size, t.seq_len, dev, compute);
      run.ours.params = 0;
      for (auto& p : s.trainer->params()) run.ours.params += p.numel();
      int64_t step = 0;
      for (int i = 0; i < t.warmup; ++i) s.step(step++);
      // With the peer, half the timed steps run before it and half after, so a change
      // in machine load during the comparison weighs on both sides alike.
      auto timed = [&](int n) {
        for (int i = 0; i < n; ++i) {
          auto t0 = Clock::now();
          const runtime::StepMetrics m = s.step(step++);
          run.ours.step_s.push_back(seconds_since(t0));
          run.ours.final_loss = m.loss;
          run.ours.mdl_active += m.parts.mdl_active ? 1 : 0;
        }
      };
      const int first = t.peer ? (t.steps + 1) / 2 : t.steps;
      timed(first);
      if (t.peer) {
        run.peer_run = true;
        run.peer = run_peer(t, run.layer, threads, dev, compute);
        timed(t.steps - first);
      }
      if (t.profile) profiles.push_back(profile_training(s, run.layer, t.steps, step));
    } catch (const std::exception& e) {
      run.error = e.what();
      failed = true;
    }
  }

  Table main;
  main.title = "bench train";
  main.add_meta(gpu ? "gpu" : "cpu", device_text)
      .add_meta("device", dev.str() + (dev.is_cuda() && !gpu ? " (emulated: host memory, cpu kernels)" : ""))
      .add_meta("precision", precision_text(compute, gpu))
      .add_meta("kernel isa", gpu ? std::string("-") : kernels::cpu::kernel_isa_summary())
      .add_meta("threads", int64_t(threads));
  if (gpu) main.add_meta("bf16 peak GFLOP/s", peak);
  else
    main.add_meta("fma peak GFLOP/s", peak).add_meta("fma peak 1 thread GFLOP/s", threads > 1 ? Value(peak1) : Value(peak));
  main
      .add_meta("shape", shape_text(t))
      .add_meta("step", step_text(bench_step_config(compute)))
      .add_meta("timing", std::to_string(t.warmup) + " warm-up steps, median of " + std::to_string(t.steps) +
                              " timed steps" + (t.peer ? " (half before the peer, half after)" : ""))
      .add_meta("mfu", gpu ? "3 x forward matmul FLOPs (see the FLOP table) / median step time / dense bf16 peak"
                           : "3 x forward matmul FLOPs (see the FLOP table) / median step time / fma peak (all threads)")
      .add_meta("peer", gpu ? "bench/peer/train_peer.py on the same card: PyTorch eager running the same math "
                              "(tests/reference/bet_reference.py), with torch.autocast(bfloat16) when ours runs bf16, "
                              "and torch.compile of it ('compiled')"
                            : "bench/peer/train_peer.py: PyTorch eager running the same math (tests/reference/"
                        "bet_reference.py, which projects every permutation path as model.md writes it; ours "
                        "projects their combination once); for standard also nn.TransformerEncoderLayer ('native': "
                        "post-LN, ReLU, same loss; no RoPE, so without positional encoding when pe = rope)")
      .add_meta("targets", gpu ? "speedup >= 1x PyTorch eager (aim: torch.compile); mfu >= 0.4 of bf16 peak (standard)"
                               : "speedup >= 2x PyTorch eager (both layers; standard: against the faster of the "
                                 "peer and native); mfu >= 0.6 (standard), >= 0.5 (bet), f32")
      .add_meta("load average", load_before + " (start), " + load_average() + " (end)");
  for (const auto& run : runs) main.add(layer_row(run, t, peak, gpu));

  std::vector<Table> tables{main, flops_table(runs, t)};
  for (auto& p : profiles)
    for (auto& tab : p.tables) tables.push_back(std::move(tab));
  int rc = emit(tables, opts);
  return rc ? rc : (failed ? 1 : 0);
}

}  // namespace bet::bench
