// The batching inference queue. The event loop submits jobs and never waits; one
// worker thread collects the jobs that arrive together (until max_batch items are
// waiting or max_wait has passed since the oldest arrived), runs the predictor once
// on all of their items, and hands each finished job to the completion callback,
// which the server uses to post it back to the loop.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/server/predictor.h"
#include "runtime/server/prometheus.h"

namespace bet::server {

struct InferenceJob {
  enum class Kind { kPredict, kBatch, kGenerate };
  Kind kind = Kind::kPredict;
  std::vector<PredictRequest> items;  // kPredict: one; kBatch: several
  GenerateRequest generate;           // kGenerate
  // Filled by the worker.
  std::vector<nlohmann::json> results;
  nlohmann::json generated;
  std::string error;  // non-empty when the predictor failed
  int error_status = 500;  // with error: a RequestError's status and code, else 500
  std::string error_code = "internal_error";
  // Opaque to the queue: who asked.
  void* owner = nullptr;
  uint64_t owner_generation = 0;
  std::chrono::steady_clock::time_point enqueued;
};

struct BatchQueueOptions {
  size_t max_batch = 32;                      // items per predict_batch call
  std::chrono::microseconds max_wait{2000};   // how long the oldest job may wait for company
  size_t max_queue_items = 4096;              // submit() refuses beyond this
};

struct BatchQueueMetrics {
  prom::Histogram* batch_size = nullptr;      // items per predict_batch call
  prom::Histogram* batch_seconds = nullptr;   // predictor time per call
  prom::Gauge* queue_depth = nullptr;         // items waiting
};

class BatchQueue {
 public:
  using Completion = std::function<void(std::unique_ptr<InferenceJob>)>;

  BatchQueue(Predictor& predictor, BatchQueueOptions options, Completion on_done,
             BatchQueueMetrics metrics = {});
  ~BatchQueue();  // stop()
  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  // Hands the job back (returns it) when the queue is full or stopping.
  std::unique_ptr<InferenceJob> submit(std::unique_ptr<InferenceJob> job);
  // Runs every job already queued, then joins the worker. Idempotent.
  void stop();
  size_t depth() const;  // items waiting (not yet taken by the worker)

 private:
  void run();
  void run_predict(std::vector<std::unique_ptr<InferenceJob>>& jobs);
  static size_t weight(const InferenceJob& j) { return j.kind == InferenceJob::Kind::kGenerate ? 1 : j.items.size(); }

  Predictor& predictor_;
  BatchQueueOptions options_;
  Completion on_done_;
  BatchQueueMetrics metrics_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<InferenceJob>> queue_;
  size_t queued_items_ = 0;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace bet::server
