// `betctl predict` and `betctl generate`: the server's inference path from the
// command line, so both print the same fields for the same input.
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>

#include "platform/threads.h"
#include "runtime/inference/predictor.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/bounded_json.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tools/betctl/commands.h"
#include "tools/betctl/device_flag.h"
#include "tools/betctl/uncertainty_flag.h"

namespace betctl {

using namespace bet;

namespace {

// The request checks' temperature range (inference::RequestLimits), as a usage error:
// CLI::Range lets NaN through, and a subnormal temperature overflowed the logits.
CLI::Validator temperature_check(bool zero_is_greedy) {
  return CLI::Validator(
      [zero_is_greedy](std::string& s) {
        using L = inference::RequestLimits;
        char* end = nullptr;
        const double t = std::strtod(s.c_str(), &end);
        if (end == s.c_str() || *end) return "not a number: " + s;
        if ((zero_is_greedy && t == 0) || (t >= L::kMinTemperature && t <= L::kMaxTemperature)) return std::string();
        return std::string(zero_is_greedy ? "must be 0 (greedy) or in [" : "must be in [") +
               nlohmann::json(L::kMinTemperature).dump() + ", " + nlohmann::json(L::kMaxTemperature).dump() +
               "], got " + s;
      },
      "T");
}

}  // namespace

void add_predict_commands(CLI::App& app, Registry& registry) {
  {
    auto* cmd = app.add_subcommand("predict", "Predict with calibrated uncertainty (one JSON object per input)");
    auto path = std::make_shared<std::string>();
    auto texts = std::make_shared<std::vector<std::string>>();
    auto input = std::make_shared<std::string>();
    auto perms = std::make_shared<int>(1);
    auto mc = std::make_shared<int>(0);
    auto temperature = std::make_shared<double>(0.0);
    auto threads = std::make_shared<int>(0);
    auto uncertainty = std::make_shared<std::string>();
    using inference::RequestLimits;
    cmd->add_option("--model", *path, "checkpoint")->required();
    auto* t = cmd->add_option("--text", *texts, "a text to predict (repeat for several)");
    auto* in = cmd->add_option("--input", *input, "file of inputs: one text per line, or JSONL {\"text\"} / {\"chunks\"}");
    t->excludes(in);
    // Given neither, an input runs the members of the uncertainty signal.
    auto* perms_opt = cmd->add_option("--permutations", *perms, "ensemble of K orderings of the input")
                          ->check(CLI::Range(1, RequestLimits::kMaxMembers));
    auto* mc_opt = cmd->add_option("--mc-dropout", *mc, "ensemble of K dropout masks")
                       ->check(CLI::Range(0, RequestLimits::kMaxMembers));
    add_uncertainty_option(cmd, *uncertainty,
                           "the uncertainty signal reported as uncertainty.score, SETTING:SIGNAL[@K] (default: the "
                           "one calibrate stored, else single:1-confidence)");
    cmd->add_option("--temperature", *temperature, "override the calibrated temperature")
        ->check(temperature_check(false));
    cmd->add_option("--threads", *threads, "threads")->check(CLI::NonNegativeNumber);
    static std::string device = "cpu";  // checked while parsing (device_flag.h)
    add_device_option(cmd, device);
    auto json = std::make_shared<bool>(true);
    cmd->add_flag("--json", *json, "JSON output (always)");
    cmd->callback([&registry, path, texts, input, perms, mc, temperature, threads, uncertainty, perms_opt, mc_opt] {
      const bool perms_given = perms_opt->count() > 0, mc_given = mc_opt->count() > 0;
      registry.selected = [=] {
        if (*threads > 0) platform::set_num_threads(*threads);
        BET_CHECK(!texts->empty() || !input->empty(), "predict: give --text or --input");
        inference::ModelPredictor predictor(*path, bet::parse_device(device));
        if (!uncertainty->empty())
          if (auto why = predictor.override_uncertainty(inference::UncertaintySignal::parse(*uncertainty)))
            return refuse_uncertainty(*why);
        const RequestLimits limits = predictor.limits();
        // The flags are the defaults; a JSONL line may set its own options, decoded
        // exactly as the server decodes a /v1/predict body.
        auto make = [&](const std::string& line, const std::string& where, bool jsonl) {
          inference::PredictRequest r;
          if (jsonl && !line.empty() && line[0] == '{') {
            io::JsonError je;
            std::optional<nlohmann::json> j = io::parse_json(line, io::JsonLimits{}, &je);
            if (!j) fail(where, ": ", je.message);
            inference::InputIssue issue;
            if (!inference::decode_predict(*j, limits, &r, &issue)) fail(where, ": ", issue.message);
            // A flag given fills the line's missing field, as a body's field would.
            if (perms_given && !j->contains("permutations")) r.permutations = *perms;
            if (mc_given && !j->contains("mc_dropout")) r.mc_dropout = *mc;
            if (perms_given || mc_given) r.signal_members = false;
            if (!j->contains("temperature") && *temperature > 0) r.temperature = *temperature;
          } else {
            r.text = line;
            if (perms_given) r.permutations = *perms;
            if (mc_given) r.mc_dropout = *mc;
            r.signal_members = !perms_given && !mc_given;
            if (*temperature > 0) r.temperature = *temperature;
          }
          return r;
        };
        auto answer = [&](const inference::PredictRequest& r, const std::string& where) {
          try {
            return predictor.predict(r);
          } catch (const inference::InputError& e) {
            fail(where, ": ", e.what(), " (", e.code(), ")");
          }
        };
        if (!texts->empty()) {
          for (size_t i = 0; i < texts->size(); ++i) {
            const std::string where = "--text #" + std::to_string(i + 1);
            inference::PredictRequest r = make((*texts)[i], where, false);
            std::cout << answer(r, where).dump() << "\n";
          }
          std::cout.flush();
          return 0;
        }
        std::ifstream f = runtime::open_input_file(*input);  // names a directory or unreadable file
        std::string line;
        int64_t n = 0;
        while (std::getline(f, line)) {
          ++n;
          if (line.empty()) continue;
          const std::string where = *input + ":" + std::to_string(n);
          std::cout << answer(make(line, where, true), where).dump() << "\n";
        }
        runtime::check_read(f, *input);
        std::cout.flush();
        return 0;
      };
    });
  }
  {
    auto* cmd = app.add_subcommand("generate", "Generate text with an lm model");
    auto path = std::make_shared<std::string>();
    auto prompt = std::make_shared<std::string>();
    auto max_tokens = std::make_shared<int>(0);
    auto cot = std::make_shared<std::string>();
    auto temperature = std::make_shared<double>(1.0);
    auto top_k = std::make_shared<int>(0);
    auto top_p = std::make_shared<double>(1.0);
    auto seed = std::make_shared<uint64_t>(0);
    cmd->add_option("--model", *path, "lm checkpoint")->required();
    cmd->add_option("--prompt", *prompt, "prompt text")->required();
    cmd->add_option("--max-tokens", *max_tokens, "tokens to generate")->check(CLI::Range(1, 1 << 16));
    cmd->add_option("--cot", *cot, "auto: use the model's optimal_length as the budget")->check(CLI::IsMember({"auto"}));
    cmd->add_option("--temperature", *temperature, "sampling temperature (0: greedy)")->check(temperature_check(true));
    cmd->add_option("--top-k", *top_k, "sample among the k likeliest")->check(CLI::NonNegativeNumber);
    cmd->add_option("--top-p", *top_p, "nucleus sampling mass")->check(CLI::Range(0.0, 1.0));
    cmd->add_option("--seed", *seed, "sampling seed");
    static std::string device = "cpu";
    add_device_option(cmd, device);
    cmd->callback([&registry, path, prompt, max_tokens, cot, temperature, top_k, top_p, seed] {
      registry.selected = [=] {
        inference::ModelPredictor predictor(*path, bet::parse_device(device));
        inference::GenerateRequest r;
        r.prompt = *prompt;
        if (*cot == "auto") r.cot_auto = true;
        else r.max_tokens = *max_tokens > 0 ? *max_tokens : 64;
        r.temperature = *temperature;
        if (*top_k > 0) r.top_k = *top_k;
        r.top_p = *top_p;
        r.seed = *seed;
        std::cout << predictor.generate(r).dump() << std::endl;
        return 0;
      };
    });
  }
}

}  // namespace betctl
