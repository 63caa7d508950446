// `betctl serve`: the model behind the epoll HTTP server (runtime/server).
#include <cstdio>
#include <memory>

#include "bet_config.h"
#include "platform/threads.h"
#include "runtime/inference/predictor.h"
#include "runtime/server/auth.h"
#include "runtime/server/server.h"
#include "tools/betctl/commands.h"
#include "tools/betctl/device_flag.h"
#include "tools/betctl/uncertainty_flag.h"

namespace betctl {

using namespace bet;

void add_serve_command(CLI::App& app, Registry& registry) {
  auto* cmd = app.add_subcommand("serve", "Serve predictions over HTTP");
  auto path = std::make_shared<std::string>();
  auto cfg = std::make_shared<server::ServerConfig>();
  auto keys = std::make_shared<std::string>();
  auto rate = std::make_shared<double>(0);  // requests per second; 0: off
  auto wait_us = std::make_shared<int64_t>(2000);
  auto threads = std::make_shared<int>(0);
  auto port = std::make_shared<int>(8080);
  auto uncertainty = std::make_shared<std::string>();
  cmd->add_option("--model", *path, "checkpoint to serve")->required();
  cmd->add_option("--host", cfg->host, "address to bind");
  cmd->add_option("--port", *port, "port (0: ephemeral)")->check(CLI::Range(0, 65535));
  // Both checked while parsing (exit code 2). An empty --api-keys would otherwise read
  // as "no keys" and serve the /v1 routes without auth.
  cmd->add_option("--api-keys", *keys, "file of API keys, one per line")
      ->check(CLI::Validator(
          [](std::string& s) {
            return s.empty() ? std::string("empty path; give a file of API keys, one per line") : std::string();
          },
          ""))
      ->type_name("FILE");
  cmd->add_option_function<std::string>(
         "--rate-limit",
         [rate](const std::string& s) {
           std::string error;
           auto r = server::parse_rate_limit(s, &error);
           if (!r) throw CLI::ValidationError("--rate-limit", error);
           *rate = *r;
         },
         "requests per client: N/s, N/m or N/h, e.g. 50/s")
      ->type_name("N/s|N/m|N/h");
  cmd->add_option("--max-batch", cfg->max_batch, "items per forward pass")->check(CLI::Range(1, 4096));
  cmd->add_option("--max-wait-us", *wait_us, "longest wait to fill a batch")->check(CLI::Range(0, 10000000));
  // At most the queue's capacity (4096 items), so a batch the limit admits is never
  // refused for its size (413 is the one answer to too many texts).
  cmd->add_option("--max-batch-items", cfg->max_batch_items, "texts per /v1/predict/batch")
      ->check(CLI::Range(size_t(1), cfg->max_queue_items));
  cmd->add_option("--max-request-gflop", cfg->max_request_gflop,
                  "estimated work one request may cost (GFLOP); beyond: 413")
      ->check(CLI::Range(0.001, 1e6));
  cmd->add_option("--max-body", cfg->max_body_bytes, "largest request body (bytes)");
  cmd->add_option("--max-text-bytes", cfg->max_text_bytes, "largest text (bytes)");
  cmd->add_option("--max-buffered-body", cfg->max_buffered_body_bytes,
                  "request body bytes held at once, all connections together; beyond: 503 (0: no limit)");
  cmd->add_option_function<int64_t>(
         "--request-timeout-ms",
         [cfg](int64_t ms) { cfg->request_timeout = std::chrono::milliseconds(ms); },
         "longest time from a request's first byte to its complete body; beyond: 408 (default 60000)")
      ->check(CLI::Range(int64_t(1), int64_t(86'400'000)));
  cmd->add_option("--default-mc-dropout", cfg->default_mc_dropout,
                  "MC dropout members for requests without mc_dropout; when above 0 it wins over the members "
                  "of the uncertainty signal")
      ->check(CLI::Range(0, 64));
  add_uncertainty_option(cmd, *uncertainty,
                         "the uncertainty signal answers report as uncertainty.score, SETTING:SIGNAL[@K] (default: "
                         "the one calibrate stored, else single:1-confidence)");
  cmd->add_option("--threads", *threads, "inference threads")->check(CLI::NonNegativeNumber);
  static std::string device = "cpu";  // checked while parsing (device_flag.h)
  add_device_option(cmd, device);
  cmd->callback([&registry, path, cfg, keys, rate, wait_us, threads, port, uncertainty] {
    registry.selected = [=] {
      if (*threads > 0) platform::set_num_threads(*threads);
      cfg->port = uint16_t(*port);
      cfg->max_wait = std::chrono::microseconds(*wait_us);
      cfg->version = BET_VERSION;
      if (!keys->empty()) cfg->api_keys = server::ApiKeys::load_file(*keys).keys();
      cfg->rate_limit = *rate;
      inference::ModelPredictor predictor(*path, bet::parse_device(device));
      if (!uncertainty->empty())
        if (auto why = predictor.override_uncertainty(inference::UncertaintySignal::parse(*uncertainty)))
          return refuse_uncertainty(*why);
      server::HttpServer srv(*cfg, predictor);
      srv.bind();
      server::install_signal_handlers(srv);
      std::fprintf(stderr, "betctl serve: %s on http://%s:%u, uncertainty signal %s\n", path->c_str(),
                   cfg->host.c_str(), unsigned(srv.port()), predictor.uncertainty_signal().to_string().c_str());
      srv.run();
      return 0;
    };
  });
}

}  // namespace betctl
