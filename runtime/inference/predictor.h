// Inference: what `betctl predict` prints and what the server's /v1/predict and
// /v1/generate answer (product.md "Server", model.md "Uncertainty at inference").
//
// A ModelPredictor holds one loaded model (weights once, eval mode, no gradients) and
// answers requests in batches. Each request is an ensemble of K members, K =
// max(permutations, mc_dropout, 1):
//   - member k reads the k-th ordering of the input's units (tokens, or whole chunks when
//     the request gives "chunks"); member 0 is the original order, member k >= 1 a
//     permutation drawn from the Philox stream keyed by (inference_seed, k, n units).
//     Orderings are used only when permutations > 1.
//   - with mc_dropout > 0 member k also runs with dropout at the model's dropout sites
//     (everything else as in eval; attention relabellings keep their inference keys)
//     and the k-th mask of the request's dropout stream, keyed by the model's inference seed.
// So an answer is a pure function of (model, request): the same alone, in any batch,
// in any order, on any thread count.
//
// The uncertainty signal (uncertainty_signal.h): each answer with uncertainty names one,
// "uncertainty": {..., "signal": "mc_dropout:epistemic@8", "score": x}, the score being
// that signal's value in the same answer (null when the request's own members cannot
// give it). The signal is the one `betctl calibrate --uncertainty` stored in the
// checkpoint, else single:1-confidence, unless overridden (--uncertainty on serve and
// predict). A request that gives neither permutations nor mc_dropout
// (PredictRequest::signal_members) runs the members the signal needs.
//
// Batching: every member of every deterministic request (mc_dropout = 0) goes into one
// padded forward (split only when it would exceed a token budget); a Monte Carlo request
// runs its K members as one unpadded [K, n] forward of its own, because the model's
// dropout stream is shared by the whole batch, so a mask folded beside other requests
// would depend on them.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/bet_model.h"
#include "runtime/inference/arena.h"
#include "runtime/inference/predictor_interface.h"
#include "runtime/inference/request.h"
#include "runtime/inference/uncertainty_signal.h"
#include "runtime/tokenizer/tokenizer.h"

namespace bet::inference {

constexpr int kTopTokens = 5;               // lm: next-token candidates returned
constexpr int64_t kForwardTokenBudget = 16384;  // rows x padded length per forward

// The order in which member k reads n units: the identity for k = 0, else a permutation
// drawn from the Philox stream keyed by (inference_seed, k, n).
std::vector<int64_t> member_ordering(uint64_t inference_seed, int64_t k, int64_t n);

// A model ready to serve: immutable once built, shared by the requests running on it.
struct LoadedModel {
  std::shared_ptr<const model::BetModel> model;
  std::shared_ptr<const runtime::Tokenizer> tokenizer;
  std::string path;          // the checkpoint it came from ("" when built in memory)
  nlohmann::json info;       // GET /v1/model
  // The checkpoint's metrics.calibration.uncertainty.signal, else single:1-confidence.
  UncertaintySignal uncertainty;
};

// Reads a checkpoint and builds the model in its weights' dtype, eval mode, on `device`
// (files are device-independent). Throws bet::Error naming the file and what is wrong.
std::shared_ptr<const LoadedModel> load_model(const std::string& checkpoint_path, Device device = Device::cpu());
// Wraps a model already in memory (tests, bench). `tokenizer_json` as Tokenizer::to_json.
std::shared_ptr<const LoadedModel> wrap_model(std::shared_ptr<const model::BetModel> m,
                                              const nlohmann::json& tokenizer_json, const nlohmann::json& card = {});

class ModelPredictor : public Predictor {
 public:
  ModelPredictor() = default;  // not ready until reload(path) succeeds
  explicit ModelPredictor(const std::string& checkpoint_path, Device device = Device::cpu());
  explicit ModelPredictor(std::shared_ptr<const LoadedModel> loaded);

  bool ready() override;
  nlohmann::json model_info() override;

  // The bounds every request is checked against (check_predict, check_generate and the
  // request's cost on the loaded model); RequestLimits{} until set.
  void set_limits(const RequestLimits& limits) override;
  RequestLimits limits() const;

  // One request; throws InputError for input it cannot answer.
  nlohmann::json predict(const PredictRequest& req);
  // Several requests, answered together and in order. An input the model cannot answer
  // gets its issue in its slot (the others are answered), so one client's bad text
  // never fails the requests batched beside it.
  std::vector<PredictOutcome> predict_batch(const std::vector<PredictRequest>& requests) override;

  // The calling thread becomes the inference worker: its forwards (of at most max_batch
  // x the uncertainty signal's permutations rows each) take their tensors from an arena
  // (arena.h) sized now for the loaded model's largest forward, and again for a
  // reloaded model before its first request. Other threads' requests do not use it.
  void prepare_worker(size_t max_batch) override;
  const WorkerArena& worker_arena() const { return worker_arena_; }

  bool can_generate() override;
  // lm models: {"text", "tokens", "cot_budget", "stop"}; throws InputError otherwise.
  nlohmann::json generate(const GenerateRequest& req) override;

  // Loads `path` into a new model and swaps it in; a bad file throws and the old model
  // keeps serving. Requests already running finish on the model they started with.
  void reload(const std::string& path);
  // SIGHUP: reloads the current file; false with the reason (old model kept) when that fails.
  bool reload(std::string* why) override;

  std::shared_ptr<const LoadedModel> current() const;

  // --uncertainty: the signal answers report instead of the model's own, on this model
  // and every model reloaded later (a reload whose model cannot give it fails, and the
  // old model keeps serving). Returns why the loaded model cannot give it, changing
  // nothing, or nullopt once set.
  std::optional<std::string> override_uncertainty(const UncertaintySignal& signal);
  // The signal answers report now: the override, else the loaded model's own.
  UncertaintySignal uncertainty_signal() const;

 private:
  // The signal answers on `L` report (the model a request started on, which a reload
  // may have replaced since).
  UncertaintySignal signal_for(const LoadedModel& L) const;

  mutable std::mutex mu_;  // guards the pointers below, never held while computing
  std::shared_ptr<const LoadedModel> loaded_;
  std::string path_;
  Device device_;  // where reloads put the model
  RequestLimits limits_;
  std::optional<UncertaintySignal> uncertainty_override_;
  WorkerArena worker_arena_;  // used on the worker thread only
};

}  // namespace bet::inference
