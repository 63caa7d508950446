#include "runtime/diagnose/runner.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "engine/error.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/data/dataset.h"
#include "runtime/diagnose/fit.h"
#include "runtime/io/atomic_file.h"

namespace bet::diagnose {

const std::vector<std::string>& experiment_names() {
  static const std::vector<std::string> names = {"bernoulli",   "martingale",  "dispersion", "permutations",
                                                 "pe-ablation", "calibration", "cot"};
  return names;
}

bool DiagnoseRun::all_passed() const {
  return std::all_of(results.begin(), results.end(), [](const ExperimentResult& r) { return r.verdict.passed(); });
}

Sizes sizes_for(bool quick) {
  Sizes s;
  // Quick: tiny models (d_model 32, 32 outcomes, a few hundred steps) so that all seven
  // experiments, eight trainings included, finish in about two minutes on one thread.
  s.lm.d_model = 32;
  s.lm.heads = 2;
  s.lm.layers = 2;
  s.lm.seq_len = 32;
  s.lm.steps = 300;
  s.lm.lr = 3e-3;
  s.lm.warmup = 30;
  s.ablation = s.lm;
  s.ablation.steps = 150;  // it measures order variance, not loss: 11 models must train in under a minute
  s.classifier = s.lm;
  s.classifier.task = model::Task::Classify;
  s.classifier.seq_len = 24;
  s.classifier.steps = 300;
  if (quick) return s;
  // Default: a wider, longer-trained causal model on longer sequences; the ablation keeps
  // the small recipe (eleven models) and trains it longer. About six minutes on one
  // thread of this class of machine, so within ten on two busy cores.
  s.lm.d_model = 48;
  s.lm.heads = 4;
  s.lm.seq_len = 48;
  s.lm.steps = 800;
  s.lm.lr = 2e-3;
  s.lm.warmup = 80;
  s.ablation.steps = 400;
  s.classifier.d_model = 48;
  s.classifier.heads = 4;
  s.classifier.seq_len = 32;
  s.classifier.steps = 600;
  s.classifier.lr = 2e-3;
  s.classifier.warmup = 60;
  s.bernoulli_sequences = 1024;
  s.martingale_prefixes = 192;
  s.martingale_points = 12;
  s.dispersion_prefixes = 24;
  s.dispersion_orderings = 48;
  s.dispersion_points = 9;
  s.permutation_prefixes = 12;
  s.permutation_length = 24;
  s.permutation_repetitions = 96;
  s.ablation_prefixes = 32;
  s.ablation_orderings = 48;
  s.calibration_examples = 1024;
  s.calibration_members = 8;
  s.cot_sequences = 256;
  return s;
}

namespace {

class Runner {
 public:
  Runner(const Options& opt, const Sizes& sizes) : opt_(opt), sizes_(sizes) {
    models_dir_ = (std::filesystem::path(opt.out) / "models").string();
    if (!opt.model_path.empty()) {
      given_ = load_model_file(opt.model_path);
      BET_CHECK(given_->config().task == model::Task::Classify || given_->config().max_len >= 8, opt.model_path,
                ": max_len ", given_->config().max_len, " is too short for the Bernoulli experiments (needs >= 8)");
    }
    BET_CHECK(opt.data_path.empty() || (given_ && given_->config().task == model::Task::Classify),
              "--data: a held-out file is read by the calibration experiment with a --model classifier");
    // Said before anything runs, not after the other experiments of `all`.
    BET_CHECK(!given_ || given_->config().task != model::Task::Classify || !opt.data_path.empty(), "--model ",
              opt.model_path, " is a classifier: give its held-out file with --data");
  }

  ExperimentResult run(const std::string& name) {
    if (name == "bernoulli") {
      auto p = lm_predictor();
      return bernoulli_experiment(*p, sizes_.bernoulli_sequences, length(), opt_.seed + 101, opt_.quick);
    }
    if (name == "martingale") {
      auto p = lm_predictor();
      const int top = length() - 1;  // rows of n + 1 outcomes
      return martingale_experiment(*p, sizes_.martingale_prefixes, log_grid(1, top, sizes_.martingale_points),
                                   opt_.seed + 202);
    }
    if (name == "dispersion") {
      auto p = lm_predictor();
      return dispersion_experiment(*p, sizes_.dispersion_prefixes, sizes_.dispersion_orderings,
                                   log_grid(2, length(), sizes_.dispersion_points), opt_.seed + 303);
    }
    if (name == "permutations") {
      auto p = lm_predictor();
      return permutations_experiment(*p, sizes_.permutation_prefixes,
                                     std::min<int>(sizes_.permutation_length, length()), sizes_.permutation_repetitions,
                                     sizes_.permutation_max_k, opt_.seed + 404);
    }
    if (name == "pe-ablation") return pe_ablation();
    if (name == "calibration") return calibration();
    if (name == "cot") {
      auto p = lm_predictor();
      return cot_experiment(*p, sizes_.cot_sequences, length(), opt_.seed + 505);
    }
    ::bet::fail("diagnose: unknown experiment '", name, "'");
  }

 private:
  void say(const std::string& s) const {
    if (opt_.progress) opt_.progress(s);
  }

  // Outcomes per sequence the Bernoulli experiments read: the built-in model's training
  // length (32 quick, 48 default), or less when a --model's max_len is shorter. A
  // checkpoint does not record the length it was trained on, and `betctl train`'s
  // default (64) is longer than both, so a --model is never read past what it saw.
  int length() { return int(std::min<int64_t>(lm_predictor()->max_outcomes(), sizes_.lm.seq_len)); }

  // The causal model of the Bernoulli experiments: --model when it is one, else the
  // built-in one (trained once, cached).
  std::shared_ptr<ModelOutcomePredictor> lm_predictor() {
    if (lm_) return lm_;
    if (given_ && given_->config().task == model::Task::LM) {
      lm_ = std::make_shared<ModelOutcomePredictor>(given_, std::filesystem::path(opt_.model_path).filename().string());
    } else {
      if (given_) say("--model is a classifier; the Bernoulli experiments use the built-in causal model");
      lm_ = std::make_shared<ModelOutcomePredictor>(cached_model(sizes_.lm, models_dir_, opt_.progress),
                                                    "model (" + sizes_.lm.name() + ")");
    }
    return lm_;
  }

  ExperimentResult pe_ablation() {
    if (given_) say("pe-ablation trains its own models (alike but for pe); --model is not used");
    std::vector<std::shared_ptr<ModelOutcomePredictor>> keep;
    std::vector<AblationModel> models;
    auto add = [&](const ModelSpec& s, const std::string& layer) {
      keep.push_back(std::make_shared<ModelOutcomePredictor>(cached_model(s, models_dir_, opt_.progress), s.name()));
      models.push_back({layer, model::to_string(s.pe), int(s.layers), keep.back().get()});
    };
    // The reference: one-layer standard models, without and with an encoding.
    for (auto pe : {model::PosEncoding::None, model::PosEncoding::Rope}) {
      ModelSpec s = sizes_.ablation;
      s.layer = model::LayerKind::Standard;
      s.pe = pe;
      s.layers = 1;
      add(s, "standard");
    }
    for (int layers : {1, int(sizes_.ablation.layers)})
      for (auto pe : {model::PosEncoding::None, model::PosEncoding::Sinusoidal, model::PosEncoding::Learned,
                      model::PosEncoding::Rope}) {
        ModelSpec s = sizes_.ablation;
        s.pe = pe;
        s.layers = layers;
        add(s, "bet");
      }
    // The explanation, tested: the trained one-layer bet pe=none model with the branches
    // that read earlier positions' prefix-dependent states zeroed (the stats projection,
    // which feeds attention's keys, and the CoT gate, which reads the mean of
    // post-attention states). What is left sees the other tokens as a set.
    ModelSpec s = sizes_.ablation;
    s.pe = model::PosEncoding::None;
    s.layers = 1;
    auto zeroed = load_model_file((std::filesystem::path(models_dir_) / (s.name() + ".bet")).string());
    for (auto& layer : zeroed->bet_layers) {
      layer->stats->proj->weight.fill_(0.0);
      layer->stats->proj->bias.fill_(0.0);
      layer->cot_gate->weight.fill_(0.0);
      layer->cot_gate->bias.fill_(0.0);
    }
    keep.push_back(std::make_shared<ModelOutcomePredictor>(zeroed, s.name() + " (stats, CoT zeroed)"));
    models.push_back({"bet, stats+CoT zeroed", "none", 1, keep.back().get()});
    ExperimentResult r = pe_ablation_experiment(models, sizes_.ablation_prefixes, sizes_.ablation_orderings,
                                                int(sizes_.ablation.seq_len), opt_.seed + 606);
    r.data["recipe"] = sizes_.ablation.recipe();
    return r;
  }

  ExperimentResult calibration() {
    CalibrationInput in;
    if (given_ && given_->config().task == model::Task::Classify) {
      BET_CHECK(!opt_.data_path.empty(), "diagnose calibration: --model ", opt_.model_path,
                " is a classifier; give its held-out file with --data");
      const runtime::Checkpoint ck = runtime::load_checkpoint(opt_.model_path);
      runtime::ReadOptions ro;
      ro.text_field = opt_.text_field;
      ro.label_field = opt_.label_field;
      ro.known_labels = given_->config().labels;
      runtime::TextDataset ds = runtime::read_dataset(opt_.data_path, ro);
      std::vector<std::string> texts;
      std::vector<int64_t> labels;
      const size_t cap = opt_.quick ? size_t(sizes_.calibration_examples) : ds.examples.size();
      for (size_t i = 0; i < ds.examples.size() && i < cap; ++i) {
        texts.push_back(ds.examples[i].text);
        labels.push_back(ds.examples[i].label);
      }
      in = measure_classifier(given_, ck.tokenizer, texts, labels, sizes_.calibration_members, opt_.progress);
      in.source = opt_.model_path + " on " + opt_.data_path + " (" + std::to_string(texts.size()) + " examples" +
                  (texts.size() < ds.examples.size() ? ", the first of " + std::to_string(ds.examples.size()) : "") +
                  ")";
    } else {
      if (given_) say("--model is a causal model; calibration uses the built-in classifier");
      auto m = cached_model(sizes_.classifier, models_dir_, opt_.progress);
      const auto ex = classification_examples(sizes_.calibration_examples, int(sizes_.classifier.seq_len),
                                              opt_.seed * 7777 + 99991);  // never a training seed
      std::vector<std::string> texts;
      std::vector<int64_t> labels;
      for (const auto& e : ex) {
        texts.push_back(outcome_text(e.outcomes));
        labels.push_back(e.label);
        in.reference_prob_one.push_back(bayes_prob_high(e.outcomes));
      }
      auto ref = in.reference_prob_one;
      in = measure_classifier(m, byte_tokenizer_json(), texts, labels, sizes_.calibration_members, opt_.progress);
      in.reference_prob_one = ref;
      in.source = "built-in task: " + std::to_string(texts.size()) + " Bernoulli sequences of " +
                  std::to_string(sizes_.classifier.seq_len) + " outcomes labelled p > 1/2, held out from training, " +
                  "model " + sizes_.classifier.name();
    }
    return calibration_experiment(in, opt_.quick);
  }

  Options opt_;
  Sizes sizes_;
  std::string models_dir_;
  std::shared_ptr<model::BetModel> given_;
  std::shared_ptr<ModelOutcomePredictor> lm_;
};

}  // namespace

std::string render_report(const std::vector<ExperimentResult>& results, const std::string& subtitle) {
  report::Report rep;
  rep.title = "betctl diagnose: the theory's properties, measured";
  rep.subtitle = subtitle;
  for (const auto& r : results) rep.sections.push_back(to_section(r));
  return report::render_html(rep);
}

DiagnoseRun run_diagnose(const std::vector<std::string>& names, const Options& opt, const Sizes& sizes) {
  for (const auto& n : names)
    BET_CHECK(std::find(experiment_names().begin(), experiment_names().end(), n) != experiment_names().end(),
              "diagnose: unknown experiment '", n, "'");
  std::filesystem::create_directories(opt.out);
  const auto t0 = std::chrono::steady_clock::now();
  Runner runner(opt, sizes);
  DiagnoseRun run;
  nlohmann::json summary = nlohmann::json::object();
  for (const auto& name : names) {
    if (opt.progress) opt.progress(name + ": running");
    const auto t = std::chrono::steady_clock::now();
    ExperimentResult r = runner.run(name);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    write_result_files(r, opt.out);
    if (opt.progress) {
      std::string line =
          name + ": " + (r.verdict.passed() ? "pass" : "flagged") + " in " + report::format_number(r.seconds, 3) + " s";
      for (const auto& f : r.verdict.flags) line += "\n  flag: " + f;
      opt.progress(line);
    }
    summary[name] = {{"passed", r.verdict.passed()}, {"flags", r.verdict.flags}, {"seconds", r.seconds}};
    run.results.push_back(std::move(r));
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string subtitle = std::string(opt.quick ? "--quick" : "default sizes") + ", " +
                               report::format_number(run.seconds, 3) + " s" +
                               (opt.model_path.empty() ? "" : ", --model " + opt.model_path) +
                               (opt.data_path.empty() ? "" : ", --data " + opt.data_path);
  run.report_path = (std::filesystem::path(opt.out) / "report.html").string();
  runtime::atomic_write_file(run.report_path, render_report(run.results, subtitle));
  runtime::atomic_write_file(
      (std::filesystem::path(opt.out) / "summary.json").string(),
      nlohmann::json{
          {"experiments", summary}, {"seconds", run.seconds}, {"quick", opt.quick}, {"all_passed", run.all_passed()}}
              .dump(2) +
          "\n");
  return run;
}

}  // namespace bet::diagnose
