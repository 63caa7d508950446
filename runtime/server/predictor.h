// What the HTTP server needs from a model. The server validates request bodies and
// hands over typed requests; the predictor owns the model, its thread safety and its
// response fields (the server only adds "latency_ms").
//
// Threads: ready() and model_info() are called on the event-loop thread (and once
// more on the reload thread after each reload) and must be quick; predict_batch() and
// generate() run on the single inference worker thread; reload() runs on a background
// thread of its own while the worker keeps serving, so it must build the new model
// aside and swap it in atomically (e.g. a shared_ptr exchanged under a mutex), leaving
// the old one in place when the new file is bad.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace bet::server {

struct PredictRequest {
  std::string text;                 // used when chunks is empty
  std::vector<std::string> chunks;  // "chunks": [...]: one document in pieces
  bool return_uncertainty = true;
  std::optional<int> permutations;  // absent: the model's default
  int mc_dropout = 0;               // 0: deterministic; the server applies --default-mc-dropout
  std::optional<double> temperature;  // absent: the model's calibrated temperature
};

struct GenerateRequest {
  std::string prompt;
  std::optional<int> max_tokens;  // exactly one of max_tokens and cot_auto is set
  bool cot_auto = false;          // "cot": "auto": the model's optimal length as budget
  std::optional<double> temperature;
  std::optional<int> top_k;
  std::optional<double> top_p;
  std::optional<uint64_t> seed;
};

class Predictor {
 public:
  virtual ~Predictor() = default;

  // True once a model is loaded and predictions can run (GET /ready).
  virtual bool ready() = 0;
  // GET /v1/model: config, parameter count, version, metrics, calibration. The string
  // field "version" (and "name", if present) also labels the bet_model_info metric.
  virtual nlohmann::json model_info() = 0;
  // One JSON object per request, in order: label, probabilities, confidence,
  // uncertainty (when asked), cot_length, truncated when the text was cut, ...
  // A slot may instead hold {"error": {"code", "message"}} for an input the model
  // cannot answer; the server answers it with status_for_error_code (api.h).
  // Throwing answers every request of the batch with 500.
  virtual std::vector<nlohmann::json> predict_batch(const std::vector<PredictRequest>& requests) = 0;

  // Language models only: when false, POST /v1/generate answers 400.
  virtual bool can_generate() { return false; }
  // {"text", "tokens", "cot_budget"}; throws RequestError (api.h) for input it cannot
  // answer (answered with its status), anything else for a failure (500).
  virtual nlohmann::json generate(const GenerateRequest&) { return nlohmann::json::object(); }

  // SIGHUP: reload the model file. True when the new model now serves.
  virtual bool reload() { return false; }
};

}  // namespace bet::server
