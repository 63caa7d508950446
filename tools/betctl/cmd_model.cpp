// Commands over model files: inspect, export, import, eval, calibrate.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>

#include "platform/threads.h"
#include "tools/betctl/device_flag.h"
#include "model/bet_model.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/checkpoint_manager.h"
#include "runtime/checkpoint/config_json.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/data/dataset.h"
#include "runtime/eval/calibration.h"
#include "runtime/eval/prior_shift.h"
#include "runtime/eval/metrics.h"
#include "runtime/inference/signal_choice.h"
#include "runtime/inference/signal_report.h"
#include "runtime/inference/uncertainty.h"
#include "runtime/io/atomic_file.h"
#include "runtime/train/evaluate.h"
#include "runtime/train/training_data.h"
#include "tools/betctl/commands.h"
#include "tools/betctl/uncertainty_flag.h"

namespace betctl {

using namespace bet;
using namespace bet::runtime;

namespace {

struct LoadedModel {
  Checkpoint ck;
  std::unique_ptr<model::BetModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

LoadedModel load_model(const std::string& path, Device device = Device::cpu()) {
  LoadedModel m;
  m.ck = load_checkpoint(path);
  m.model = build_model(m.ck, path);  // out of memory is an error naming the file
  m.model->to(device);
  m.model->eval();
  m.tokenizer = Tokenizer::from_json(m.ck.tokenizer);
  return m;
}

// Validation-style encoding of a labelled file for a loaded model.
std::vector<EncodedSequence> load_eval_data(const LoadedModel& m, const std::string& path, const std::string& text_field,
                                            const std::string& label_field, bool skip_bad) {
  const auto& cfg = m.model->config();
  ReadOptions ro;
  ro.text_field = text_field;
  ro.label_field = label_field;
  ro.skip_bad = skip_bad;
  ro.need_labels = cfg.task == model::Task::Classify;
  if (ro.need_labels) ro.known_labels = cfg.labels;
  TextDataset ds = read_dataset(path, ro);
  std::vector<std::string> texts;
  std::vector<int64_t> labels;
  for (auto& e : ds.examples) {
    texts.push_back(e.text);
    labels.push_back(e.label);
  }
  return encode_examples(*m.tokenizer, texts, labels, cfg.task, cfg.max_len);
}

// The texts and label indices (in `labels`' order) of a labelled file.
struct LabelledTexts {
  std::vector<std::string> texts;
  std::vector<int64_t> labels;
};
LabelledTexts read_labelled_texts(const std::string& path, const std::string& text_field,
                                  const std::string& label_field, bool skip_bad, const std::vector<std::string>& labels) {
  ReadOptions ro;
  ro.text_field = text_field;
  ro.label_field = label_field;
  ro.skip_bad = skip_bad;
  ro.need_labels = true;
  ro.known_labels = labels;
  TextDataset ds = read_dataset(path, ro);
  LabelledTexts out;
  for (auto& e : ds.examples) {
    out.texts.push_back(std::move(e.text));
    out.labels.push_back(e.label);
  }
  return out;
}

// --positive-label as an index (binary F1); a two-class model defaults to its second label.
EvalOptions eval_options(const model::ModelConfig& cfg, const std::string& positive) {
  EvalOptions eo;
  if (!positive.empty()) {
    auto it = std::find(cfg.labels.begin(), cfg.labels.end(), positive);
    BET_CHECK(it != cfg.labels.end(), "--positive-label: '", positive, "' is not one of the model's labels");
    eo.positive_label = int64_t(it - cfg.labels.begin());
  } else if (cfg.num_classes == 2) {
    eo.positive_label = 1;
  }
  return eo;
}

void print_signals(const nlohmann::json& rows) {
  std::printf("\n%-13s %-24s %8s %8s %11s %8s %8s %8s\n", "setting", "signal", "accuracy", "nll", "error_auroc",
              "aurc", "acc@80%", "acc@90%");
  auto num = [](const nlohmann::json& v) { return v.is_number() ? v.get<double>() : NAN; };
  for (const auto& row : rows)
    std::printf("%-13s %-24s %8.4f %8.4f %11.4f %8.4f %8.4f %8.4f\n", row["setting"].get<std::string>().c_str(),
                row["signal"].get<std::string>().c_str(), num(row["accuracy"]), num(row["nll"]),
                num(row["error_auroc"]), num(row["aurc"]), num(row["accuracy_at_80"]), num(row["accuracy_at_90"]));
}

// Per-example class probabilities, softmax(logits / temperature) row by row (EvalResult's
// logits carry the model's stored temperature already; calibrate passes a new one).
RowMatrix probabilities(const EvalResult& r, int64_t classes, double temperature = 1.0) {
  std::vector<double> flat;
  flat.reserve(r.logits.size() * size_t(classes));
  for (const auto& row : r.logits)
    for (double p : inference::softmax(row, temperature)) flat.push_back(p);
  return RowMatrix(std::move(flat), classes);
}

// `eval --adapt-prior`: the same report after label-shift re-weighting (prior_shift.h),
// with the report before it kept under "before_prior_shift".
nlohmann::json prior_adapted_report(const RowMatrix& p, const EvalResult& r, const model::ModelConfig& cfg,
                                    const std::string& positive, const nlohmann::json& metrics,
                                    const std::string& path, const nlohmann::json& before) {
  const nlohmann::json* cal = metrics.contains("calibration") ? &metrics["calibration"] : nullptr;
  BET_CHECK(cal && cal->contains("class_prior") && cal->contains("mean_prediction") && cal->contains("examples"),
            path,
            ": --adapt-prior needs the training prior and mean prediction that `betctl calibrate` stores; calibrate "
            "this model first");
  auto numbers = [&](const char* key) {
    const nlohmann::json& a = (*cal)[key];
    BET_CHECK(a.is_array() && int64_t(a.size()) == cfg.num_classes, path, ": metrics.calibration.", key,
              ": expected ", cfg.num_classes, " numbers");
    std::vector<double> v;
    for (const auto& x : a) {
      BET_CHECK(x.is_number(), path, ": metrics.calibration.", key, ": expected numbers, got ", x.dump());
      v.push_back(x.get<double>());
    }
    return v;
  };
  const std::vector<double> train_prior = numbers("class_prior"), reference_mean = numbers("mean_prediction");
  BET_CHECK((*cal)["examples"].is_number_integer(), path, ": metrics.calibration.examples: expected an integer");
  const int64_t reference_examples = (*cal)["examples"].get<int64_t>();
  const ShiftTest test = detect_prior_shift(p, reference_mean, reference_examples);
  nlohmann::json shift = {{"training_prior", train_prior}, {"shift_z", test.z}, {"max_abs_z", test.max_abs_z},
                          {"threshold", test.threshold}, {"shifted", test.shifted}, {"adapted", false}};
  if (!test.shifted) {  // no evidence of a shift: re-weighting could only add noise
    nlohmann::json out = before;
    out["prior_shift"] = shift;
    return out;
  }
  const PriorShiftFit fit = estimate_prior_em(p, train_prior);
  nlohmann::json out = evaluate(reweight_prior(p, train_prior, fit.prior), r.labels, eval_options(cfg, positive)).to_json();
  out["temperature"] = before.value("temperature", 1.0);
  nlohmann::json b;
  for (const char* k : {"accuracy", "nll", "ece", "brier", "error_auroc", "f1"})
    if (before.contains(k)) b[k] = before[k];
  out["before_prior_shift"] = b;
  shift["adapted"] = true;
  shift["estimated_prior"] = fit.prior;
  shift["iterations"] = fit.iterations;
  shift["converged"] = fit.converged;
  out["prior_shift"] = shift;
  return out;
}

}  // namespace

void add_model_commands(CLI::App& app, Registry& registry) {
  {
    auto* cmd = app.add_subcommand("inspect", "Describe a checkpoint (.bet or .safetensors)");
    auto path = std::make_shared<std::string>();
    cmd->add_option("checkpoint", *path, "file")->required();
    auto json = std::make_shared<bool>(true);
    cmd->add_flag("--json", *json, "print JSON (the default)");
    cmd->callback([&registry, path] {
      registry.selected = [path] {
        std::cout << inspect_checkpoint(*path).dump(2) << std::endl;
        return 0;
      };
    });
  }
  {
    auto* cmd = app.add_subcommand("export", "Write a production model (no optimizer state) with a version");
    auto path = std::make_shared<std::string>();
    auto version = std::make_shared<std::string>();
    auto format = std::make_shared<std::string>("bet");
    auto out = std::make_shared<std::string>();
    auto json = std::make_shared<bool>(false);
    auto quantize = std::make_shared<std::string>("none");
    cmd->add_option("checkpoint", *path, "source checkpoint")->required();
    cmd->add_option("--version", *version, "semantic version X.Y.Z")->required();
    cmd->add_option("--quantize", *quantize,
                    "none | int8: int8 weights per output channel for every Linear but a classifier's head, "
                    "activations quantised per row at run time (inference only: predict, serve, eval)")
        ->check(CLI::IsMember({"none", "int8"}));
    cmd->add_option("--format", *format, "bet | safetensors")->check(CLI::IsMember({"bet", "safetensors"}));
    cmd->add_option("--out", *out, "output file (default: the run's checkpoints/production/)");
    cmd->add_flag("--json", *json, "print the result as JSON");
    cmd->callback([&registry, path, version, format, out, json, quantize] {
      if (*quantize == "int8" && *format == "safetensors")
        throw CLI::ValidationError("--quantize", "int8 is written as .bet only (--format bet)");
      registry.selected = [=] {
        Checkpoint ck = load_checkpoint(*path);
        int64_t quantized = -1;
        if (*quantize == "int8" && ck.quantize.empty()) {
          // Quantise the model's Linears and snapshot it again. A classifier's head
          // (D -> classes, one GEMV per text) stays f32: int8 buys nothing there and its
          // error would go straight into the calibrated logits.
          // The int8 kernels take f32 activations: a model of another dtype would never
          // run them (it would serve its own dtype over twice-rounded weights).
          for (const auto& [n, t] : ck.weights)
            BET_CHECK(t.dtype() == DType::F32, "export --quantize int8: ", *path, " holds ", dtype_name(t.dtype()),
                      " weights ('", n, "'); int8 is quantised from an f32 checkpoint");
          std::unique_ptr<model::BetModel> m = build_model(ck, *path);
          const bool classify = ck.config.task == model::Task::Classify;
          quantized = model::quantize_int8(*m, [classify](const std::string& name) { return classify && name == "head"; });
          Checkpoint q = make_checkpoint(*m, nullptr, ck.tokenizer, "production");
          q.metrics = ck.metrics;
          q.card = ck.card;
          q.training_state = ck.training_state;
          ck = std::move(q);
        }
        std::string written;
        if (*format == "safetensors") {
          BET_CHECK(!out->empty(), "export: --format safetensors needs --out FILE");
          export_checkpoint_safetensors(*out, production_checkpoint(ck, *version));
          written = *out;
        } else {
          // The run directory is two levels above checkpoints/<kind>/file.bet.
          std::filesystem::path run = std::filesystem::path(*path).parent_path().parent_path().parent_path();
          CheckpointManager mgr(run.empty() ? "." : run.string(), 3);
          written = mgr.export_production(ck, *version, *out);
        }
        nlohmann::json res{{"path", written}, {"version", *version}, {"quantize", ck.quantize.empty() ? "none" : ck.quantize}};
        if (quantized >= 0) res["quantized_linears"] = quantized;
        if (*json) std::cout << res.dump() << std::endl;
        else
          std::printf("exported %s version %s%s\n", written.c_str(), version->c_str(),
                      ck.quantize.empty() ? "" : (" (" + ck.quantize + ")").c_str());
        return 0;
      };
    });
  }
  {
    auto* cmd = app.add_subcommand("import", "Build a .bet model from a safetensors file");
    auto path = std::make_shared<std::string>();
    auto config = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    cmd->add_option("file", *path, "model.safetensors")->required();
    cmd->add_option("--model-config", *config, "JSON model config (when the file carries none)");
    cmd->add_option("--out", *out, "output .bet file")->required();
    cmd->callback([&registry, path, config, out] {
      registry.selected = [=] {
        nlohmann::json cfg;
        if (!config->empty()) {
          try {
            cfg = nlohmann::json::parse(read_file(*config));
          } catch (const nlohmann::json::exception& e) {
            fail(*config, ": not valid JSON: ", e.what());
          }
        }
        Checkpoint ck = import_checkpoint_safetensors(*path, config->empty() ? nullptr : &cfg);
        ck.kind = "production";
        save_checkpoint(*out, ck);
        std::printf("imported %s -> %s\n", path->c_str(), out->c_str());
        return 0;
      };
    });
  }
  {
    auto* cmd = app.add_subcommand("eval", "Evaluate a model (or a deep ensemble of several) on labelled data");
    auto paths = std::make_shared<std::vector<std::string>>();
    auto data = std::make_shared<std::string>();
    auto text_field = std::make_shared<std::string>("text");
    auto label_field = std::make_shared<std::string>("label");
    auto positive = std::make_shared<std::string>();
    auto batch = std::make_shared<int64_t>(32);
    auto threads = std::make_shared<int>(0);
    auto skip_bad = std::make_shared<bool>(false);
    auto json = std::make_shared<bool>(false);
    auto signals = std::make_shared<int>(0);
    auto adapt_prior = std::make_shared<bool>(false);
    cmd->add_option("--model", *paths,
                    "checkpoint; give several classifiers (--model A --model B ...) to evaluate their deep "
                    "ensemble (probabilities averaged)")
        ->required();
    cmd->add_option("--data", *data, "JSONL / CSV / TSV / text")->required();
    cmd->add_option("--signals", *signals,
                    "classifiers: also rank errors by every uncertainty signal, with K-member ensembles "
                    "(orderings, MC dropout, both): error AUROC, AURC, accuracy at 80/90% coverage")
        ->check(CLI::Range(2, inference::RequestLimits::kMaxMembers));
    cmd->add_flag("--adapt-prior", *adapt_prior,
                  "classifiers: when the model's mean prediction on --data differs from its mean on the calibration "
                  "data beyond sampling noise, estimate the class prior of --data from its own predictions (EM, no "
                  "labels used) and re-weight them from the calibration data's prior to it (label shift)");
    cmd->add_option("--text-field", *text_field, "text field");
    cmd->add_option("--label-field", *label_field, "label field");
    cmd->add_option("--positive-label", *positive, "label for binary F1");
    cmd->add_option("--batch-size", *batch, "sequences per forward")->check(CLI::Range(1, 1 << 20));
    cmd->add_option("--threads", *threads, "threads")->check(CLI::NonNegativeNumber);
    cmd->add_flag("--skip-bad", *skip_bad, "skip malformed records");
    cmd->add_flag("--json", *json, "print JSON");
    static std::string eval_device = "cpu";  // checked while parsing (device_flag.h)
    add_device_option(cmd, eval_device);
    cmd->callback([&registry, paths, data, text_field, label_field, positive, batch, threads, skip_bad, json,
                   signals, adapt_prior] {
      registry.selected = [=] {
        if (*adapt_prior && (paths->size() > 1 || *signals > 0)) {
          std::fprintf(stderr, "betctl: error: --adapt-prior: one --model and no --signals (the ensemble and the "
                               "signal report are not re-weighted yet)\n");
          return 2;
        }
        if (*threads > 0) platform::set_num_threads(*threads);
        const Device device = parse_device(eval_device);
        nlohmann::json out;
        if (paths->size() > 1) {
          // A deep ensemble: every model answers every text; their probabilities averaged.
          std::vector<std::unique_ptr<inference::ModelPredictor>> owned;
          std::vector<inference::ModelPredictor*> models;
          for (const std::string& p : *paths) {
            owned.push_back(std::make_unique<inference::ModelPredictor>(p, device));
            models.push_back(owned.back().get());
          }
          const model::ModelConfig& cfg = models[0]->current()->model->config();
          BET_CHECK(cfg.task == model::Task::Classify, "eval: a deep ensemble needs classifiers; ", paths->front(),
                    " is a language model");
          const LabelledTexts d = read_labelled_texts(*data, *text_field, *label_field, *skip_bad, cfg.labels);
          inference::EnsembleResult e = inference::deep_ensemble(models, d.texts, d.labels, size_t(*batch));
          out = evaluate(RowMatrix(e.probabilities), d.labels, eval_options(cfg, *positive)).to_json();
          out["members"] = *paths;
          out["signals"] = inference::signal_report_json(e.signals);
        } else {
          LoadedModel m = load_model(paths->front(), device);
          auto seqs = load_eval_data(m, *data, *text_field, *label_field, *skip_bad);
          EvalResult r = evaluate(*m.model, seqs, *batch);
          const model::ModelConfig& cfg = m.model->config();
          if (cfg.task == model::Task::Classify) {
            const RowMatrix probs = probabilities(r, cfg.num_classes);
            out = evaluate(probs, r.labels, eval_options(cfg, *positive)).to_json();
            out["temperature"] = m.model->temperature_value();
            if (*adapt_prior) out = prior_adapted_report(probs, r, cfg, *positive, m.ck.metrics, paths->front(), out);
            if (*signals > 0) {
              const LabelledTexts d = read_labelled_texts(*data, *text_field, *label_field, *skip_bad, cfg.labels);
              inference::ModelPredictor predictor(paths->front(), device);
              out["signals"] = inference::signal_report_json(
                  inference::signal_report(predictor, d.texts, d.labels, *signals, size_t(*batch)));
            }
          } else {
            out = {{"loss", r.loss}, {"perplexity", r.perplexity()}, {"bits_per_token", r.bits_per_token()},
                   {"tokens", r.n}};
          }
        }
        if (*json) {
          std::cout << out.dump(2) << std::endl;
        } else {
          for (auto it = out.begin(); it != out.end(); ++it)
            if (it.value().is_number()) std::printf("%-24s %.6f\n", it.key().c_str(), it.value().get<double>());
          if (out.contains("signals")) print_signals(out["signals"]);
        }
        return 0;
      };
    });
  }
  {
    auto* cmd = app.add_subcommand("calibrate", "Fit the logit temperature on held-out data and store it");
    auto path = std::make_shared<std::string>();
    auto data = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    auto text_field = std::make_shared<std::string>("text");
    auto label_field = std::make_shared<std::string>("label");
    auto json = std::make_shared<bool>(false);
    auto uncertainty = std::make_shared<std::string>();
    auto signals = std::make_shared<int>(inference::UncertaintySignal::kDefaultMembers);
    cmd->add_option("--model", *path, "checkpoint")->required();
    cmd->add_option("--data", *data, "validation data of the training distribution (never the test set)")->required();
    cmd->add_option("--out", *out, "calibrated checkpoint to write")->required();
    cmd->add_option("--text-field", *text_field, "text field");
    cmd->add_option("--label-field", *label_field, "label field");
    add_uncertainty_option(cmd, *uncertainty,
                           "also store the model's uncertainty signal, SETTING:SIGNAL[@K], measured on --data; auto: "
                           "the one that ranks errors best there (highest error AUROC)",
                           /*allow_auto=*/true);
    auto* signals_opt = cmd->add_option("--signals", *signals, "with --uncertainty auto: members of the ensembles compared")
                            ->check(CLI::Range(2, inference::RequestLimits::kMaxMembers));
    cmd->add_flag("--json", *json, "print JSON");
    static std::string calibrate_device = "cpu";
    add_device_option(cmd, calibrate_device);
    cmd->callback([&registry, path, data, out, text_field, label_field, json, uncertainty, signals, signals_opt] {
      const bool signals_given = signals_opt->count() > 0;
      registry.selected = [=] {
        if (signals_given && *uncertainty != "auto") {
          std::fprintf(stderr, "betctl: error: --signals: only with --uncertainty auto (a named signal says its "
                               "members after '@')\n");
          return 2;
        }
        LoadedModel m = load_model(*path, parse_device(calibrate_device));
        const model::ModelConfig cfg = m.model->config();
        BET_CHECK(cfg.task == model::Task::Classify, "calibrate: only classify models have labels");
        std::optional<inference::UncertaintySignal> named;
        if (!uncertainty->empty() && *uncertainty != "auto") {
          named = inference::UncertaintySignal::parse(*uncertainty);
          if (auto why = inference::why_not_offered(*named, cfg)) return refuse_uncertainty(*why);
        }
        m.model->set_temperature(1.0);  // fit on raw logits
        auto seqs = load_eval_data(m, *data, *text_field, *label_field, false);
        EvalResult r = evaluate(*m.model, seqs, 32);
        TemperatureFit fit = fit_temperature(RowMatrix(r.logits), r.labels);
        Checkpoint ck = m.ck;
        for (auto& [name, t] : ck.weights)
          if (name == "temperature") t = Tensor::scalar(fit.temperature);
        // The calibration data's class shares stand for the training distribution's prior:
        // `eval --adapt-prior` re-weights from them to the prior it estimates on new data.
        // Its mean prediction (at the fitted temperature) is the reference `--adapt-prior`
        // tests new data against before it re-weights anything.
        ck.metrics["calibration"] = {{"temperature", fit.temperature},
                                     {"nll_before", fit.nll_before},
                                     {"nll_after", fit.nll_after},
                                     {"data", *data},
                                     {"examples", r.labels.size()},
                                     {"class_prior", class_shares(r.labels, cfg.num_classes)},
                                     {"mean_prediction", mean_prediction(probabilities(r, cfg.num_classes, fit.temperature))}};
        nlohmann::json res = {{"temperature", fit.temperature}, {"nll_before", fit.nll_before},
                              {"nll_after", fit.nll_after}, {"out", *out}};
        std::optional<inference::SignalChoice> choice;
        if (!uncertainty->empty()) {
          // Measured as served: the predictor's answers at the temperature just fitted.
          m.model->set_temperature(fit.temperature);
          inference::ModelPredictor predictor(inference::wrap_model(
              std::shared_ptr<const model::BetModel>(std::move(m.model)), m.ck.tokenizer, m.ck.card));
          const LabelledTexts d = read_labelled_texts(*data, *text_field, *label_field, false, cfg.labels);
          if (named) {
            choice = inference::SignalChoice{};
            choice->signal = *named;
            choice->examples = d.texts.size();
            for (const auto& row : inference::setting_report(predictor, d.texts, d.labels, named->setting,
                                                             named->members))
              if (row.report.signal == inference::to_string(named->kind)) {
                choice->measured = row;
                choice->errors = size_t(std::llround((1.0 - row.accuracy) * double(d.texts.size())));
                if (std::isnan(row.report.error_auroc))
                  choice->note = "the calibration data has no errors (or no right answers) in this setting, so "
                                 "the signal's error AUROC is undefined";
              }
          } else {
            choice = inference::choose_signal(inference::signal_report(predictor, d.texts, d.labels, *signals),
                                              *signals, d.texts.size(), cfg);
          }
          ck.metrics["calibration"]["uncertainty"] = inference::signal_choice_json(*choice, !named);
          res["uncertainty"] = ck.metrics["calibration"]["uncertainty"];
        }
        save_checkpoint(*out, ck);
        if (*json) {
          std::cout << res.dump(2) << std::endl;
          return 0;
        }
        std::printf("temperature %.4f (NLL %.4f -> %.4f), written to %s\n", fit.temperature, fit.nll_before,
                    fit.nll_after, out->c_str());
        if (choice) {
          const double auroc = choice->measured ? choice->measured->report.error_auroc : NAN;
          const double aurc = choice->measured ? choice->measured->report.aurc : NAN;
          std::printf("uncertainty signal %s: error AUROC %.4f, AURC %.4f on %zu examples (%zu errors)%s\n",
                      choice->signal.to_string().c_str(), auroc, aurc, choice->examples, choice->errors,
                      named ? "" : (", the best of " + std::to_string(choice->candidates) + " signals").c_str());
          if (!choice->note.empty()) std::printf("note: %s\n", choice->note.c_str());
        }
        return 0;
      };
    });
  }
}

}  // namespace betctl
