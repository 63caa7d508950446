#include "bench/bench_infer.h"
#include "bench/peer_process.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "bench/load_generator.h"
#include "bench/machine_baselines.h"
#include "bet_config.h"
#include "engine/random.h"
#include "kernels/cpu/matmul_int8.h"
#include "model/module.h"
#include "platform/threads.h"
#include "model/relabelling.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/tokenizer/tokenizer.h"

namespace bet::bench {

using nlohmann::json;

constexpr double kLatencyTargetMs = 5.0;    // one 32-token request (product.md)
constexpr double kLongSpeedupTarget = 10.0; // one 256-token request, x the peer
constexpr double kBatchSpeedupTarget = 2.0; // inference at least 2x PyTorch eager
constexpr double kAgreement = 1e-4;         // |p_ours - p_peer|
constexpr double kInt8SpeedupTarget = 1.8;  // one 256-token request, int8 against f32

// ---- shared with bench serve ----

BenchModel make_bench_model(const std::string& checkpoint, uint64_t seed, Device device) {
  BenchModel b;
  if (!checkpoint.empty()) {
    b.loaded = inference::load_model(checkpoint, device);
    BET_CHECK(b.loaded->model->config().task == model::Task::Classify, checkpoint,
              ": bench infer/serve need a classify model");
    b.description = "checkpoint " + checkpoint;
    return b;
  }
  model::ModelConfig cfg;  // its defaults are product.md's default classifier
  cfg.labels = {"negative", "positive"};
  cfg.validate();
  Generator g(seed);
  auto m = std::make_shared<model::BetModel>(cfg, g, DType::F32);
  m->to(device);
  m->eval();
  b.loaded = inference::wrap_model(m, runtime::make_byte_tokenizer()->to_json(),
                                   json{{"name", "bench-default-classifier"}, {"version", "0.0.0"}});
  b.description = "default classifier (bet, d_model 128, 4 heads, 2 layers, max_len 256, k 3, rope, byte "
                  "tokenizer, 2 classes), initial weights (seed " +
                  std::to_string(seed) + ")";
  return b;
}

void export_for_peer(const BenchModel& m, const std::string& path) {
  runtime::Checkpoint ck =
      runtime::make_checkpoint(*m.loaded->model, nullptr, m.loaded->tokenizer->to_json(), "production");
  runtime::export_checkpoint_safetensors(path, ck);
}

json relabellings_json(const model::BetModel& m, const std::vector<int64_t>& lengths) {
  const model::ModelConfig& cfg = m.config();
  json out = json::object();
  if (cfg.layer != model::LayerKind::Bet || cfg.pe != model::PosEncoding::Rope || cfg.k_permutations == 0)
    return out;
  for (int64_t n0 : lengths) {
    const int64_t n = std::min(n0, cfg.max_len);  // what the model sees after truncation
    json layers = json::array();
    for (int64_t l = 0; l < cfg.layers; ++l) {
      model::SeqContext ctx = m.context({n}, n);
      std::vector<int64_t> ids = model::relabelling_ids(ctx, l, cfg.k_permutations, cfg.max_len,
                                                        cfg.inference_seed)
                                     .to_vector<int64_t>();
      json paths = json::array();
      for (int64_t p = 0; p < cfg.k_permutations; ++p)
        paths.push_back(std::vector<int64_t>(ids.begin() + p * n, ids.begin() + (p + 1) * n));
      layers.push_back(std::move(paths));
    }
    out[std::to_string(n)] = std::move(layers);
  }
  return out;
}

std::string bench_text(int64_t bytes, uint64_t i) {
  uint64_t s = 0x9e3779b97f4a7c15ULL * (i + 1);
  auto next = [&s] {
    s += 0x9e3779b97f4a7c15ULL;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  std::string t;
  t.reserve(size_t(bytes));
  while (int64_t(t.size()) < bytes) {
    if (!t.empty()) t += ' ';
    const int len = 2 + int(next() % 7);
    for (int c = 0; c < len; ++c) t += char('a' + next() % 26);
  }
  t.resize(size_t(bytes));
  if (!t.empty() && t.back() == ' ') t.back() = 'x';
  return t;
}



std::string make_temp_dir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/betctl-bench-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  BET_CHECK(mkdtemp(buf.data()) != nullptr, "bench: cannot create a directory like ", tmpl);
  return buf.data();
}

void remove_tree(const std::string& dir) {
  std::error_code ec;
  if (!dir.empty()) std::filesystem::remove_all(dir, ec);
}


// ---- bench infer ----

namespace {

using Clock = std::chrono::steady_clock;

struct PeerCase {
  std::vector<double> ms, ms8;  // ms8: torch dynamic int8 quantization (--quantize int8)
  std::vector<std::vector<double>> probs;
  std::vector<double> posterior_mean, dispersion, cot;
};

struct Case {
  bool single = true;
  int64_t tokens = 0, batch = 1;
  std::vector<inference::PredictRequest> reqs;
  std::vector<double> ms;     // our timed calls
  std::vector<json> answers;  // our answers to reqs (the sanity check)
  std::vector<double> ms8;     // --quantize int8: the int8 model's timed calls
  std::vector<json> answers8;
  PeerCase peer;
  bool peer_ok = false;
};

struct PeerRun {
  bool ok = false;
  std::string error, torch;
};

double median_of(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// One call as the server makes it, the response text included.
void call(inference::ModelPredictor& pred, Case& c, std::vector<json>* keep) {
  if (c.single) {
    json j = pred.predict(c.reqs[0]);
    std::string text = j.dump();
    if (keep) keep->assign(1, std::move(j));
  } else {
    std::vector<inference::PredictOutcome> v = pred.predict_batch(c.reqs);
    for (const auto& o : v) {
      std::string text = o.answer.dump();
      (void)text;
    }
    if (keep) {
      keep->clear();
      for (auto& o : v) keep->push_back(std::move(o.answer));
    }
  }
}

void time_ours(inference::ModelPredictor& pred, Case& c, int reps, double seconds, int warmup) {
  std::vector<json>& answers = c.answers;
  std::vector<double>& ms = c.ms;
  for (int i = 0; i < warmup; ++i) call(pred, c, answers.empty() ? &answers : nullptr);
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  for (int i = 0; i < reps && (i < 3 || Clock::now() < end); ++i) {
    const auto t0 = Clock::now();
    call(pred, c, nullptr);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
}

// f32 and int8 calls alternating (each pair back to back), so a change in the machine's
// load weighs on both alike.
void time_pair(inference::ModelPredictor& f32, inference::ModelPredictor& int8, Case& c, int reps, double seconds,
               int warmup) {
  for (int i = 0; i < warmup; ++i) {
    call(f32, c, c.answers.empty() ? &c.answers : nullptr);
    call(int8, c, c.answers8.empty() ? &c.answers8 : nullptr);
  }
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  for (int i = 0; i < reps && (i < 3 || Clock::now() < end); ++i) {
    const bool int8_first = i % 2;  // neither side always runs on the other's warm cache
    for (int k = 0; k < 2; ++k) {
      const bool q = (k == 0) == int8_first;
      const auto t0 = Clock::now();
      call(q ? int8 : f32, c, nullptr);
      (q ? c.ms8 : c.ms).push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
  }
}

// Largest |p_f32 - p_int8| over a case's answers.
double int8_disagreement(const Case& c) {
  if (c.answers.size() != c.answers8.size() || c.answers.empty()) return NAN;
  double d = 0;
  for (size_t i = 0; i < c.answers.size(); ++i)
    for (const auto& [label, p] : c.answers[i].at("probabilities").items())
      d = std::max(d, std::abs(p.get<double>() - c.answers8[i].at("probabilities").at(label).get<double>()));
  return d;
}

PeerRun run_peer(std::vector<Case>& cases, const BenchModel& bm, const InferBenchOptions& o, int threads) {
  PeerRun r;
  std::string dir;
  try {
    dir = make_temp_dir();
    const std::string weights = dir + "/model.safetensors", job_path = dir + "/job.json";
    export_for_peer(bm, weights);
    std::vector<int64_t> lengths(o.tokens.begin(), o.tokens.end());
    json job = {{"weights", weights},
                {"threads", threads},
                {"warmup", 3},
                {"relabellings", relabellings_json(*bm.loaded->model, lengths)},
                {"quantize", o.quantize},
                {"cases", json::array()}};
    for (const Case& c : cases) {
      json texts = json::array();
      for (const auto& q : c.reqs) texts.push_back(q.text);
      job["cases"].push_back({{"kind", c.single ? "single" : "batch"},
                              {"tokens", c.tokens},
                              {"texts", texts},
                              {"warmup", c.single ? 3 : 1},
                              {"reps", o.reps},
                              {"seconds", o.seconds}});
    }
    std::ofstream(job_path) << job.dump();
    PeerOutput out = run_peer_script("infer_peer.py", shell_quote(job_path));
    if (!out.ok) {
      r.error = out.error;
    } else {
      try {
        const json& j = out.result;
        const json& jc = j.at("cases");
        BET_CHECK(jc.size() == cases.size(), "the peer answered ", jc.size(), " cases of ", cases.size());
        for (size_t i = 0; i < cases.size(); ++i) {
          PeerCase& pc = cases[i].peer;
          pc.ms = jc[i].at("times_ms").get<std::vector<double>>();
          if (jc[i].contains("times_ms_int8")) pc.ms8 = jc[i]["times_ms_int8"].get<std::vector<double>>();
          pc.probs = jc[i].at("probabilities").get<std::vector<std::vector<double>>>();
          auto nums = [](const json& a) {
            std::vector<double> v;
            for (const auto& x : a) v.push_back(x.is_number() ? x.get<double>() : NAN);
            return v;
          };
          pc.posterior_mean = nums(jc[i].at("posterior_mean"));
          pc.dispersion = nums(jc[i].at("attention_dispersion"));
          pc.cot = nums(jc[i].at("cot_length"));
          cases[i].peer_ok = true;
        }
        r.torch = j.value("torch", "");
        r.ok = true;
      } catch (const std::exception& e) {
        r.error = std::string("unexpected peer output: ") + e.what();
      }
    }
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  remove_tree(dir);
  return r;
}

// Largest |ours - peer| over the answers: probabilities, and the other response numbers
// (Beta posterior mean, attention dispersion: absolute; cot_length: relative).
std::pair<double, double> disagreement(const Case& c, const model::ModelConfig& cfg) {
  double dp = 0, other = 0;
  if (!c.peer_ok || c.answers.size() != c.peer.probs.size()) return {NAN, NAN};
  for (size_t i = 0; i < c.answers.size(); ++i) {
    const json& a = c.answers[i];
    const auto& pp = c.peer.probs[i];
    for (size_t k = 0; k < pp.size(); ++k) {
      const std::string name = k < cfg.labels.size() ? cfg.labels[k] : std::to_string(k);
      dp = std::max(dp, std::abs(a.at("probabilities").at(name).get<double>() - pp[k]));
    }
    auto upd = [&other](double mine, double theirs, bool relative) {
      if (!std::isfinite(theirs)) return;
      double d = std::abs(mine - theirs);
      if (relative) d /= std::max(1.0, std::abs(theirs));
      other = std::max(other, d);
    };
    if (a.contains("uncertainty") && a["uncertainty"].contains("beta"))
      upd(a["uncertainty"]["beta"]["posterior_mean"].get<double>(), c.peer.posterior_mean[i], false);
    upd(a.at("attention_dispersion").get<double>(), c.peer.dispersion[i], false);
    if (a.at("cot_length").is_number()) upd(a["cot_length"].get<double>(), c.peer.cot[i], true);
  }
  return {dp, other};
}

}  // namespace

int run_infer(const BenchOptions& opts, const InferBenchOptions& o) {
  if (!valid_format(opts.format)) {
    std::cerr << "bench infer: unknown format '" << opts.format << "' (md, csv or json)\n";
    return 2;
  }
  if (o.tokens.empty() || o.batch_sizes.empty() || o.reps < 1 || !(o.seconds > 0)) {
    std::cerr << "bench infer: --tokens and --batch-sizes need values; --reps and --seconds must be positive\n";
    return 2;
  }
  for (int64_t v : o.tokens)
    if (v < 1) return std::cerr << "bench infer: --tokens must be >= 1\n", 2;
  for (int64_t v : o.batch_sizes)
    if (v < 1) return std::cerr << "bench infer: --batch-sizes must be >= 1\n", 2;
  if (opts.threads > 0) platform::set_num_threads(opts.threads);
  const int threads = platform::num_threads();
  const std::string load_before = load_average();

  BenchModel bm;
  try {
    bm = make_bench_model(o.model, o.seed, parse_device(opts.device));
  } catch (const std::exception& e) {
    std::cerr << "bench infer: " << e.what() << "\n";
    return 1;
  }
  const model::ModelConfig& cfg = bm.loaded->model->config();
  inference::ModelPredictor pred(bm.loaded);
  const bool q8 = o.quantize == "int8";
  if (!q8 && o.quantize != "none") {
    std::cerr << "bench infer: --quantize is none or int8, not '" << o.quantize << "'\n";
    return 2;
  }
  // The same model with its Linears int8, as `betctl export --quantize int8` makes it
  // (the classifier's head stays f32).
  std::unique_ptr<inference::ModelPredictor> pred8;
  int64_t quantized_linears = 0;
  if (q8) {
    try {
      BET_CHECK(!model::has_int8(*bm.loaded->model),
                "--model is already int8: give the f32 checkpoint it was exported from (the baseline)");
      BET_CHECK(bm.loaded->model->device().is_cpu(), "int8 runs on the cpu only");
      runtime::Checkpoint ck =
          runtime::make_checkpoint(*bm.loaded->model, nullptr, bm.loaded->tokenizer->to_json(), "production");
      std::shared_ptr<model::BetModel> qm(runtime::build_model(ck, "bench model").release());
      qm->eval();
      quantized_linears = model::quantize_int8(*qm, [&cfg](const std::string& name) {
        return cfg.task == model::Task::Classify && name == "head";
      });
      pred8 = std::make_unique<inference::ModelPredictor>(inference::wrap_model(
          qm, bm.loaded->tokenizer->to_json(), json{{"name", "bench-int8"}, {"version", "0.0.0"}}));
    } catch (const std::exception& e) {
      std::cerr << "bench infer --quantize int8: " << e.what() << "\n";
      return 1;
    }
  }

  std::vector<Case> cases;
  for (int64_t n : o.tokens) {
    Case s;
    s.tokens = n;
    inference::PredictRequest q;
    q.text = bench_text(n, 0);
    s.reqs.push_back(q);
    cases.push_back(s);
    for (int64_t B : o.batch_sizes) {
      Case c;
      c.single = false;
      c.tokens = n;
      c.batch = B;
      for (int64_t i = 0; i < B; ++i) {
        q.text = bench_text(n, uint64_t(i));
        c.reqs.push_back(q);
      }
      cases.push_back(std::move(c));
    }
  }

  // With the peer, half of our repetitions run before it and half after, so a change in
  // machine load weighs on both sides alike.
  const int reps1 = o.peer ? (o.reps + 1) / 2 : o.reps;
  const double secs1 = o.peer ? o.seconds / 2 : o.seconds;
  std::string error;
  PeerRun peer;
  try {
    // int8: calls alternate with f32's, in twice the time.
    const double f = pred8 ? 2 : 1;
    for (Case& c : cases) {
      if (pred8) time_pair(pred, *pred8, c, reps1, f * secs1, c.single ? 3 : 1);
      else time_ours(pred, c, reps1, secs1, c.single ? 3 : 1);
    }
    if (o.peer) {
      peer = run_peer(cases, bm, o, threads);
      for (Case& c : cases) {
        if (pred8) time_pair(pred, *pred8, c, o.reps - reps1, f * (o.seconds - secs1), 1);
        else time_ours(pred, c, o.reps - reps1, o.seconds - secs1, 1);
      }
    }
  } catch (const std::exception& e) {
    error = e.what();
  }

  auto num = [](double v) { return std::isfinite(v) ? Value(v) : Value(); };
  Table t;
  t.title = "bench infer";
  t.add_meta("cpu", cpu_model_name())
      .add_meta("device", bm.loaded->model->device().str() + (o.peer ? " (the peer runs on the cpu)" : ""))
      .add_meta("threads", int64_t(threads))
      .add_meta("model", bm.description)
      .add_meta("parameters", bm.loaded->model->parameter_count())
      .add_meta("path", "ModelPredictor as `betctl serve` runs a default /v1/predict (K = 1 member: no orderings, "
                        "no MC dropout; the bet layers' " +
                            std::to_string(cfg.k_permutations) +
                            " attention paths included): tokenize, forward, softmax/temperature, uncertainty, "
                            "JSON text; no HTTP")
      .add_meta("single", "one request per call: p50/p99 over the timed calls")
      .add_meta("batch", "B requests per predict_batch call (one padded forward): req/s = B / median call time")
      .add_meta("timing", "3 warm-up calls (batch: 1), then up to " + std::to_string(o.reps) + " timed calls or " +
                              format_value(Value(o.seconds)) + " s per case" +
                              (o.peer ? " (half before the peer, half after)" : ""))
      .add_meta("peer", !o.peer     ? std::string("not run (--peer)")
                        : peer.ok   ? "bench/peer/infer_peer.py: PyTorch " + peer.torch +
                                        " eager, tests/reference/bet_reference.py on the same weights (safetensors), "
                                        "same texts, same attention relabellings, same threads"
                                    : "unavailable: " + peer.error)
      .add_meta("targets", "single 32 tokens: p50 < 5 ms; single 256 tokens: >= 10x the peer; batch: >= 2x the "
                           "peer; answers agree with the peer to 1e-4")
      .add_meta("load average", load_before + " (start), " + load_average() + " (end)");
  if (q8)
    t.add_meta("int8", std::to_string(quantized_linears) + " Linears int8 (the head f32), " +
                           kernels::cpu::int8_matmul_path() +
                           "; f32 and int8 calls alternate, in the same run. 'int8 x f32' = f32 time / int8 time "
                           "(target >= 1.8 at 256 tokens); 'int8 x torch-dq' = the peer's quantize_dynamic time / "
                           "ours; 'int8 |dp|' = max |p_f32 - p_int8| over the answers");
  if (!error.empty()) t.add_meta("error", error);

  for (const Case& c : cases) {
    std::vector<double> ms = c.ms, pms = c.peer.ms;
    std::sort(ms.begin(), ms.end());
    std::sort(pms.begin(), pms.end());
    const double med = median_of(ms), pmed = median_of(pms);
    const double speedup = c.peer_ok ? (c.single ? percentile(pms, 50) / percentile(ms, 50) : pmed / med) : NAN;
    auto [dp, dother] = disagreement(c, cfg);
    double target = NAN;
    std::string target_text = "-";
    std::vector<std::string> shorts;
    if (c.single && c.tokens == 32) {
      target_text = "p50 < 5 ms";
      if (!(percentile(ms, 50) < kLatencyTargetMs)) shorts.push_back("latency");
    } else if (c.single && c.tokens == 256) {
      target = kLongSpeedupTarget;
    } else if (!c.single) {
      target = kBatchSpeedupTarget;
    }
    if (std::isfinite(target)) {
      target_text = ">= " + std::to_string(int(target)) + "x peer";
      if (c.peer_ok && !(speedup >= target)) shorts.push_back("speedup");
    }
    if (c.peer_ok && !(dp <= kAgreement)) shorts.push_back("agreement");
    if (q8 && c.single && c.tokens == 256) {
      std::vector<double> m8 = c.ms8;
      std::sort(m8.begin(), m8.end());
      target_text += ", int8 >= 1.8x f32";
      if (!(percentile(ms, 50) / percentile(m8, 50) >= kInt8SpeedupTarget)) shorts.push_back("int8 speedup");
    }
    std::string status = !error.empty() ? "error" : shorts.empty() ? "pass" : "short: ";
    for (size_t i = 0; i < shorts.size(); ++i) status += (i ? ", " : "") + shorts[i];
    if (shorts.empty() && !c.peer_ok && std::isfinite(target)) status = "-";

    // Single calls: rates from the p50 call, so the row's figures agree with each other.
    const double mid = c.single ? percentile(ms, 50) : med, pmid = c.single ? percentile(pms, 50) : pmed;
    const Value none;
    Row r;
    r.set("case", c.single ? "single" : "batch")
        .set("tokens", c.tokens)
        .set("batch", c.batch)
        .set("calls", int64_t(ms.size()))
        .set("p50 ms", c.single ? num(percentile(ms, 50)) : none)
        .set("p99 ms", c.single ? num(percentile(ms, 99)) : none)
        .set("ms/call", c.single ? none : num(med))
        .set("req/s", num(double(c.batch) / (mid * 1e-3)))
        .set("peer p50 ms", c.single ? num(percentile(pms, 50)) : none)
        .set("peer p99 ms", c.single ? num(percentile(pms, 99)) : none)
        .set("peer ms/call", c.single ? none : num(pmed))
        .set("peer req/s", num(double(c.batch) / (pmid * 1e-3)))
        .set("speedup", num(c.peer_ok ? pmid / mid : NAN))
        .set("max |dp|", num(dp))
        .set("max |d| other", num(dother));
    if (q8) {
      std::vector<double> m8 = c.ms8, p8 = c.peer.ms8;
      std::sort(m8.begin(), m8.end());
      std::sort(p8.begin(), p8.end());
      const double mid8 = c.single ? percentile(m8, 50) : median_of(m8);
      const double pmid8 = p8.empty() ? NAN : (c.single ? percentile(p8, 50) : median_of(p8));
      r.set("int8 ms", num(mid8))
          .set("int8 x f32", num(mid / mid8))
          .set("int8 |dp|", num(int8_disagreement(c)))
          .set("torch-dq ms", num(pmid8))
          .set("torch-dq x torch", num(pmid / pmid8))
          .set("int8 x torch-dq", num(pmid8 / mid8));
    }
    r.set("target", target_text).set("status", status);
    t.add(std::move(r));
  }
  const int rc = emit({t}, opts);
  return rc ? rc : (error.empty() ? 0 : 1);
}

}  // namespace bet::bench
