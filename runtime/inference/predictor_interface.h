// What a server needs from a model: the interface the HTTP server calls and
// ModelPredictor (predictor.h) implements; tests put fakes behind it.
//
// Threads: ready() and model_info() are called on the server's event-loop thread (and
// once more on the reload thread after each reload) and must be quick; predict_batch()
// and generate() run on the single inference worker thread; reload() runs on a
// background thread of its own while the worker keeps serving, so it must build the new
// model aside and swap it in atomically, leaving the old one in place when the new file
// is bad.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/inference/request.h"

namespace bet::inference {

// One request's result: an answer, or the reason its input cannot be answered.
struct PredictOutcome {
  nlohmann::json answer;            // label, probabilities, confidence, uncertainty, ...
  std::optional<InputIssue> issue;  // set: `answer` is empty
  bool ok() const { return !issue.has_value(); }
};

class Predictor {
 public:
  virtual ~Predictor() = default;

  // The bounds requests are checked against (request.h); the server passes the ones
  // it was configured with, so a limit is set in one place.
  virtual void set_limits(const RequestLimits&) {}

  // True once a model is loaded and predictions can run (GET /ready).
  virtual bool ready() = 0;
  // GET /v1/model: config, parameter count, version, metrics, calibration. The string
  // field "version" (and "name", if present) also labels the bet_model_info metric.
  virtual nlohmann::json model_info() = 0;
  // One outcome per request, in order. An input the model cannot answer gets an
  // issue in its slot and the others are answered. Throwing fails the whole call
  // (the server answers 500).
  virtual std::vector<PredictOutcome> predict_batch(const std::vector<PredictRequest>& requests) = 0;

  // Called once on the inference worker thread before it takes requests, with the most
  // items one predict_batch call gets: a predictor may reserve there, for that thread,
  // the memory its largest admitted request needs, so that serving makes no system
  // allocation afterwards (ModelPredictor: its worker arena, arena.h). Must not throw
  // for want of memory (serve without the reservation instead). Default: nothing.
  virtual void prepare_worker(size_t /*max_batch*/) {}

  // Language models only: when false, POST /v1/generate answers 400.
  virtual bool can_generate() { return false; }
  // {"text", "tokens", "cot_budget", "stop"}; throws InputError for input it cannot
  // answer, anything else for a failure.
  virtual nlohmann::json generate(const GenerateRequest&) { return nlohmann::json::object(); }

  // SIGHUP: reload the model file. True when the new model now serves; otherwise false
  // with the reason in *why, and the old model keeps serving.
  virtual bool reload(std::string* why) {
    if (why) *why = "this predictor cannot reload";
    return false;
  }
};

}  // namespace bet::inference
