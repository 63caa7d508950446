// The batching inference queue. The event loop submits jobs and never waits.
//
//   intake thread: decodes each job's raw body (options.decode: JSON -> typed requests,
//                  on a thread of its own so that parsing a large body never holds up
//                  the event loop or a forward pass), answers a job that fails to
//                  decode at once, and queues the others, refusing (503) what would
//                  take the queue past max_queue_items;
//   worker thread: collects the jobs that arrive together (until max_batch items are
//                  waiting or max_wait has passed since the oldest arrived), runs the
//                  predictor once on all of their items, and hands each finished job to
//                  the completion callback, which the server uses to post it back to
//                  the loop.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "runtime/inference/predictor_interface.h"
#include "runtime/server/api.h"
#include "runtime/server/prometheus.h"

namespace bet::server {

struct InferenceJob {
  enum class Kind { kPredict, kBatch, kGenerate };
  Kind kind = Kind::kPredict;
  std::string body;                              // raw request body, until decoded
  std::vector<inference::PredictRequest> items;  // kPredict: one; kBatch: several
  inference::GenerateRequest generate;           // kGenerate
  // Filled by the worker.
  std::vector<inference::PredictOutcome> results;
  nlohmann::json generated;
  std::optional<ApiError> error;  // set: the answer is this error (decoding, overload, failure)
  // Opaque to the queue: who asked.
  void* owner = nullptr;
  uint64_t owner_generation = 0;
  std::chrono::steady_clock::time_point enqueued;
};

struct BatchQueueOptions {
  size_t max_batch = 32;                      // items per predict_batch call
  std::chrono::microseconds max_wait{2000};   // how long the oldest job may wait for company
  size_t max_queue_items = 4096;              // beyond this a job is refused (503)
  // The worker calls predictor.prepare_worker(max_batch) before its first job, so the
  // predictor reserves the memory its requests need (off: tests and benches measure
  // serving without the reservation).
  bool prepare_worker = true;
  // Fills items/generate from body, or sets error. Unset: jobs arrive decoded, and
  // submit() hands back a job the queue has no room for.
  std::function<void(InferenceJob&)> decode;
};

struct BatchQueueMetrics {
  prom::Histogram* batch_size = nullptr;      // items per predict_batch call
  prom::Histogram* batch_seconds = nullptr;   // predictor time per call
  prom::Gauge* queue_depth = nullptr;         // items waiting
};

class BatchQueue {
 public:
  using Completion = std::function<void(std::unique_ptr<InferenceJob>)>;

  BatchQueue(inference::Predictor& predictor, BatchQueueOptions options, Completion on_done,
             BatchQueueMetrics metrics = {});
  ~BatchQueue();  // stop()
  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  // Hands the job back (returns it) when the queue is stopping, or (without a decoder)
  // full. With a decoder a full queue answers the job with a 503 error instead.
  std::unique_ptr<InferenceJob> submit(std::unique_ptr<InferenceJob> job);
  // Decodes and runs every job already submitted, then joins the threads. Idempotent.
  void stop();
  size_t depth() const;  // items waiting (not yet taken by the worker)

 private:
  void run_intake();
  void run();
  void run_predict(std::vector<std::unique_ptr<InferenceJob>>& jobs);
  // Queues a decoded job; hands it back when there is no room.
  std::unique_ptr<InferenceJob> enqueue(std::unique_ptr<InferenceJob> job);
  static size_t weight(const InferenceJob& j) { return j.kind == InferenceJob::Kind::kGenerate ? 1 : j.items.size(); }

  inference::Predictor& predictor_;
  BatchQueueOptions options_;
  Completion on_done_;
  BatchQueueMetrics metrics_;

  mutable std::mutex mu_;
  std::condition_variable cv_;         // the worker's
  std::condition_variable intake_cv_;  // the intake thread's
  std::deque<std::unique_ptr<InferenceJob>> intake_;
  std::deque<std::unique_ptr<InferenceJob>> queue_;
  size_t queued_items_ = 0;
  bool intake_stopping_ = false;
  bool stopping_ = false;
  std::thread intake_thread_;
  std::thread worker_;
};

}  // namespace bet::server
