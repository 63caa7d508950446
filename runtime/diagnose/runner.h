// `betctl diagnose`: picks the models (given with --model, or trained here and cached in
// OUT/models/), runs the experiments asked for at quick or default size, and writes
// OUT/NAME.json, OUT/NAME*.csv, OUT/summary.json and OUT/report.html.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/diagnose/experiments.h"
#include "runtime/diagnose/models.h"

namespace bet::diagnose {

struct Options {
  std::string out;         // output folder
  bool quick = false;      // every experiment small: all of them in <= 3 minutes on 2 cores
  std::string model_path;  // --model: an lm model (Bernoulli experiments) or a classifier (calibration)
  std::string data_path;   // --data: a held-out labelled file for the --model classifier
  std::string text_field = "text", label_field = "label";
  uint64_t seed = 1;
  Progress progress;  // one line at a time (stderr in the CLI); may be empty
};

// In report order: bernoulli, martingale, dispersion, permutations, pe-ablation,
// calibration, cot.
const std::vector<std::string>& experiment_names();

// What each experiment's sizes are (quick or default); exposed so tests can shrink them.
struct Sizes {
  ModelSpec lm;          // the causal model the Bernoulli experiments read
  ModelSpec ablation;    // the pe-ablation recipe (pe and layers varied)
  ModelSpec classifier;  // the calibration experiment's built-in classifier
  int bernoulli_sequences = 256;
  int martingale_prefixes = 128, martingale_points = 10;
  int dispersion_prefixes = 16, dispersion_orderings = 32, dispersion_points = 8;
  int permutation_prefixes = 8, permutation_length = 16, permutation_repetitions = 64, permutation_max_k = 64;
  int ablation_prefixes = 16, ablation_orderings = 32;
  int calibration_examples = 256, calibration_members = 4;
  int cot_sequences = 128;
};
Sizes sizes_for(bool quick);

struct DiagnoseRun {
  std::vector<ExperimentResult> results;
  double seconds = 0;
  std::string report_path;
  bool all_passed() const;
};

// Runs `names` (each one of experiment_names()) with `sizes`, writing the files.
// Throws bet::Error for what cannot be run (a file, a model of the wrong kind).
DiagnoseRun run_diagnose(const std::vector<std::string>& names, const Options& opt, const Sizes& sizes);

// The classifier's answers on held-out texts (calibration.cpp).
CalibrationInput measure_classifier(std::shared_ptr<const model::BetModel> m, const nlohmann::json& tokenizer,
                                    const std::vector<std::string>& texts, const std::vector<int64_t>& labels,
                                    int members, const Progress& progress);

// The HTML report of these results.
std::string render_report(const std::vector<ExperimentResult>& results, const std::string& subtitle);

}  // namespace bet::diagnose
