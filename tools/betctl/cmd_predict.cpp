// `betctl predict` and `betctl generate`: the server's inference path from the
// command line, so both print the same fields for the same input.
#include <fstream>
#include <iostream>
#include <memory>

#include "kernels/cpu/threads.h"
#include "runtime/inference/predictor.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tools/betctl/commands.h"
#include "tools/betctl/device_flag.h"

namespace betctl {

using namespace bet;

void add_predict_commands(CLI::App& app, Registry& registry) {
  {
    auto* cmd = app.add_subcommand("predict", "Predict with calibrated uncertainty (one JSON object per input)");
    auto path = std::make_shared<std::string>();
    auto text = std::make_shared<std::string>();
    auto input = std::make_shared<std::string>();
    auto perms = std::make_shared<int>(1);
    auto mc = std::make_shared<int>(0);
    auto temperature = std::make_shared<double>(0.0);
    auto threads = std::make_shared<int>(0);
    cmd->add_option("--model", *path, "checkpoint")->required();
    auto* t = cmd->add_option("--text", *text, "one text");
    auto* in = cmd->add_option("--input", *input, "file of inputs: one text per line, or JSONL {\"text\"} / {\"chunks\"}");
    t->excludes(in);
    cmd->add_option("--permutations", *perms, "ensemble of K orderings of the input")->check(CLI::Range(1, 64));
    cmd->add_option("--mc-dropout", *mc, "ensemble of K dropout masks")->check(CLI::Range(0, 64));
    cmd->add_option("--temperature", *temperature, "override the calibrated temperature")->check(CLI::NonNegativeNumber);
    cmd->add_option("--threads", *threads, "threads")->check(CLI::NonNegativeNumber);
    static std::string device = "cpu";  // checked while parsing (device_flag.h)
    add_device_option(cmd, device);
    auto json = std::make_shared<bool>(true);
    cmd->add_flag("--json", *json, "JSON output (always)");
    cmd->callback([&registry, path, text, input, perms, mc, temperature, threads] {
      registry.selected = [=] {
        if (*threads > 0) kernels::cpu::set_num_threads(*threads);
        BET_CHECK(!text->empty() || !input->empty(), "predict: give --text or --input");
        inference::ModelPredictor predictor(*path, bet::parse_device(device));
        auto make = [&](const std::string& line, int64_t lineno) {
          server::PredictRequest r;
          r.permutations = *perms;
          r.mc_dropout = *mc;
          if (*temperature > 0) r.temperature = *temperature;
          if (!line.empty() && line[0] == '{') {
            nlohmann::json j;
            try {
              j = nlohmann::json::parse(line);
            } catch (const nlohmann::json::exception& e) {
              fail(*input, ":", lineno, ": invalid JSON (", e.what(), ")");
            }
            if (j.contains("chunks")) r.chunks = j["chunks"].get<std::vector<std::string>>();
            else if (j.contains("text")) r.text = j["text"].get<std::string>();
            else fail(*input, ":", lineno, ": missing field 'text' or 'chunks'");
          } else {
            r.text = line;
          }
          return r;
        };
        if (!text->empty()) {
          std::cout << predictor.predict(make(*text, 0)).dump() << std::endl;
          return 0;
        }
        std::ifstream f(*input);
        BET_CHECK(f.good(), *input, ": cannot open");
        std::string line;
        int64_t n = 0;
        while (std::getline(f, line)) {
          ++n;
          if (line.empty()) continue;
          std::cout << predictor.predict(make(line, n)).dump() << "\n";
        }
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
    cmd->add_option("--temperature", *temperature, "sampling temperature (0: greedy)")->check(CLI::NonNegativeNumber);
    cmd->add_option("--top-k", *top_k, "sample among the k likeliest")->check(CLI::NonNegativeNumber);
    cmd->add_option("--top-p", *top_p, "nucleus sampling mass")->check(CLI::Range(0.0, 1.0));
    cmd->add_option("--seed", *seed, "sampling seed");
    static std::string device = "cpu";
    add_device_option(cmd, device);
    cmd->callback([&registry, path, prompt, max_tokens, cot, temperature, top_k, top_p, seed] {
      registry.selected = [=] {
        inference::ModelPredictor predictor(*path, bet::parse_device(device));
        server::GenerateRequest r;
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
